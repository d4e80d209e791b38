"""Run the ingest service: `python -m ingest` (settings from the environment, see settings.py).

With INGEST_WORKERS > 1 this process forks that many workers that share the port (SO_REUSEPORT:
the kernel spreads connections over them), forwards SIGTERM to them and waits for each to finish
what it accepted. One Python process is bound to one core by the GIL; the queue limit is shared
out and the Prometheus metrics are summed over the workers. If a worker dies, the others are
stopped and the service exits non-zero: Swarm restarts the task, agents fail over meanwhile.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import os
import signal
import ssl
import sys
import tempfile
from pathlib import Path

from ingest.settings import Settings, SettingsError

log = logging.getLogger("ingest")

# Swarm's default stop grace period is 10 s; in-flight batches get most of it.
SHUTDOWN_TIMEOUT_S = 8
# A queued reading is a few container objects that live until its insert returns, so at the
# default threshold (700) the collector ran every few requests and rescanned the whole queue
# (`python -m tools.bench.ingest`, batch 1000: 166k -> 234k readings/s). Readings form no cycles:
# collect after 50,000 net new containers, and never rescan what exists after start-up.
GC_THRESHOLDS = (50_000, 20, 100)
# Large bodies are parsed in a thread (flow.py) beside the event loop, which answers the other
# requests meanwhile: it waits for the GIL until the parser lets go, after at most this long
# (Python's default is 5 ms). Bulk inserts run in the loop itself (cratedb_runner.py).
GIL_SWITCH_INTERVAL_S = 0.0005


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    # Imported here: a worker must see PROMETHEUS_MULTIPROC_DIR before prometheus_client loads.
    from aiohttp import web

    from ingest.app import SERVER_OPTIONS, create_app

    context = None
    if settings.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    app = create_app(settings)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    web.run_app(app, host=settings.bind, port=settings.port, ssl_context=context, reuse_port=reuse_port or None,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None, print=None, **SERVER_OPTIONS)


PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """A worker gets SIGTERM when the supervisor dies, even by SIGKILL (Linux), and finishes
    what it accepted: no orphan keeps serving the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive the supervisor", ctypes.get_errno())
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(1)


def supervise(settings: Settings) -> int:
    worker_settings = dataclasses.replace(settings, queue_rows=max(1, settings.queue_rows // settings.workers))
    with tempfile.TemporaryDirectory(prefix="ingest-metrics-") as metrics_dir:
        workers = set()
        supervisor = os.getpid()
        for _ in range(settings.workers):
            pid = os.fork()
            if pid == 0:
                die_with(supervisor)
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
                try:
                    serve(worker_settings, reuse_port=True)
                    code = 0
                except BaseException:  # noqa: BLE001 - a worker must never return into the supervisor's loop
                    log.exception("worker failed")
                    code = 1
                os._exit(code)
            workers.add(pid)
        log.info("ingest: %d workers on port %d: %s", len(workers), settings.port, ", ".join(map(str, sorted(workers))))
        stopping = False

        def stop(signum: int, _frame) -> None:
            nonlocal stopping
            stopping = True
            for worker in workers:
                try:
                    os.kill(worker, signum)
                except ProcessLookupError:  # reaped just now
                    pass

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        code = 0
        while workers:
            pid, status = os.wait()
            workers.discard(pid)
            for live_gauge in Path(metrics_dir).glob(f"gauge_live*_{pid}.db"):
                live_gauge.unlink()  # a gone worker's queue depth no longer counts
            if not stopping:
                log.error("worker %d exited (%s); stopping the others", pid, describe(status))
                code = 1
                stop(signal.SIGTERM, None)
        return code


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"ingest: bad setting: {e}", file=sys.stderr)
        return 2
    if settings.workers == 1:
        serve(settings)
        return 0
    return supervise(settings)


if __name__ == "__main__":
    raise SystemExit(main())
