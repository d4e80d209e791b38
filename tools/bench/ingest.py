"""Benchmark: `python -m tools.bench.ingest [--seconds 5] [--connections 32] [--workers 1,2]` (from the
repository root).

Starts the CrateDB contract double (tests/cratedb_double.py, not CrateDB; it keeps only the keys of
what it stored, `--keys-only`) and the real ingest server as processes, then drives the server from
a load process with batches of 1, 100 and 1000 readings: first as fast as it answers (closed loop,
each connection one request at a time), then paced at half that request rate. In the same run it
measures how fast the same bodies are merely JSON-parsed, and parsed and validated (and the same
readings as line protocol parsed and validated), in one process: the ceilings for a Python
service; and at batch 1000 the same readings as JSON and as InfluxDB line protocol
(`POST /api/v2/write`), alternating, three runs each. Each run also reports the CPU that the
server, the double and the load process used (100 % = one core), which shows where the cores went.
It does all this for the service with 1 and with 2 worker processes, one after the other. Prints a
table; the last line is `ingest: <N> readings/s at batch 1000, p99 <X> ms` (X at half the maximum
rate) for the last worker count.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson

from ingest import line_protocol, tokens
from ingest.payload import accepted_window, parse_batch

SECRET = b"bench-token-secret-with-32-characters"
CONNECTIONS = 32  # default; each keeps one request outstanding


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_bodies(batch: int, count: int = 64) -> list[bytes]:
    """The same readings as `bodies`, in InfluxDB line protocol (one field per line, ms precision)."""
    now = int(time.time() * 1000)
    return ["\n".join(f"s{b}-{i % 8},unit=celsius value={20.0 + i % 10} {now - 60_000 + i}" for i in range(batch)).encode()
            for b in range(count)]


def bodies(batch: int, count: int = 64) -> list[bytes]:
    """Distinct bodies (their keys differ), timestamps inside the accepted window. Sent again by
    the same device, a body would be a retry (nothing new stored, keys read back): each pass over
    the bodies comes from a device of its own (`heads`)."""
    now = int(time.time() * 1000)
    return [orjson.dumps({"readings": [
        {"ts": now - 60_000 + i, "sensor": f"s{b}-{i % 8}", "value": 20.0 + i % 10, "unit": "celsius"}
        for i in range(batch)]}) for b in range(count)]


class Heads:
    """Request heads, one device per pass over the bodies (a pass = one use of every body)."""

    def __init__(self, url: str, passes_from: int) -> None:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        scheme, self.kind = ("Token", b"text/plain") if "/write" in parts.path else ("Bearer", b"application/json")
        self.prefix = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {scheme} "
        self.first, self.tokens = passes_from, {}

    def request(self, body: bytes, length: bytes, n: int) -> bytes:
        if n not in self.tokens:
            self.tokens = {n: (self.prefix + tokens.issue(SECRET, f"bench-{self.first + n}")).encode()}
        return (self.tokens[n] + b"\r\nContent-Type: " + self.kind + b"\r\nContent-Length: " + length + b"\r\n\r\n"
                + body)


CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


class _HttpConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive client, one request at a time: the load process shares the
    machine's cores with the server, so it should spend as little CPU per request as it can
    (aiohttp's client needed about as much CPU per request as the server)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.answer: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        if self.buffer[9:12] == b"204":  # no body, and no Content-Length
            status, self.buffer = 204, self.buffer[head_end + 4:]
            self.answer.set_result(status)
            return
        length = CONTENT_LENGTH.search(self.buffer, 0, head_end)
        if length is None:  # the ingest sends one with every other answer
            self.answer.set_exception(RuntimeError(f"answer without Content-Length: {self.buffer[:head_end]!r}"))
            return
        end = head_end + 4 + int(length.group(1))
        if len(self.buffer) >= end:
            status, self.buffer = int(self.buffer[9:12]), self.buffer[end:]
            self.answer.set_result(status)

    def connection_lost(self, exc) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc or ConnectionError("the server closed the connection"))

    async def request(self, raw: bytes) -> int:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.answer


async def _load(url: str, batch: int, seconds: float, rate: float | None, connections: int, out) -> None:
    parts = urllib.parse.urlsplit(url)
    requests = [(body, str(len(body)).encode()) for body in (line_bodies(batch) if "/write" in url else bodies(batch))]
    heads = Heads(url, time.time_ns() // 1_000_000)  # device numbers no earlier run used
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    interval = connections / rate if rate else 0.0
    loop = asyncio.get_running_loop()

    async def worker(n: int) -> None:
        nonlocal errors
        _, connection = await loop.create_connection(_HttpConnection, parts.hostname, parts.port)
        next_at = time.perf_counter() + (interval * n / connections)
        i = n
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
            started = time.perf_counter()
            body, length = requests[i % len(requests)]
            if await connection.request(heads.request(body, length, i // len(requests))) in (200, 204):
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
            i += connections
        connection.transport.close()

    cpu_started = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    elapsed = time.perf_counter() - started
    out.put((len(latencies), errors, elapsed, latencies, (time.process_time() - cpu_started) / elapsed))


def _load_process(url: str, batch: int, seconds: float, rate: float | None, connections: int, out) -> None:
    asyncio.run(_load(url, batch, seconds, rate, connections, out))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children, e.g. the ingest's workers (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:  # gone meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(c)) for c in children)


def run_load(url: str, batch: int, seconds: float, rate: float | None = None, watch: dict[str, int] | None = None,
             connections: int = CONNECTIONS) -> dict:
    """One measured run from a load process of its own; `watch` names processes whose CPU use to report."""
    watch = watch or {}
    queue: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load_process, args=(url, batch, seconds, rate, connections, queue))
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    wall_started = time.perf_counter()
    process.start()
    ok, errors, elapsed, latencies, load_cpu = queue.get(timeout=seconds + 120)
    wall = time.perf_counter() - wall_started
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / wall for name, pid in watch.items()}
    process.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests/s": ok / elapsed, "readings/s": ok * batch / elapsed, "p50 ms": pct(0.50),
            "p99 ms": pct(0.99), "errors": errors, "cpu": {**cpu, "load": load_cpu}}


STAGE_LINE = re.compile(r'^ingest_stage_seconds_(bucket|sum|count)\{(?:le="([^"]+)",)?stage="(\w+)"(?:,le="([^"]+)")?\} (\S+)$')


def stage_counts(url: str) -> dict:
    """The ingest's per-stage histograms (ingest_stage_seconds, summed over its workers)."""
    import urllib.request
    metrics = urllib.request.urlopen(url.rsplit("/", 2)[0] + "/metrics", timeout=10).read().decode()
    counts: dict = {}
    for line in metrics.splitlines():
        if m := STAGE_LINE.match(line):
            kind, le1, stage, le2, value = m.groups()
            counts[stage, kind, le1 or le2] = float(value)
    return counts


def stage_breakdown(before: dict, after: dict) -> str:
    """Per stage, over the requests between two scrapes: mean, and p50/p99 as the upper bound of the
    histogram bucket they fall in (so '<=5' means at most 5 ms)."""
    parts = []
    for stage in ("read", "decode", "parse", "queue", "database", "answer"):
        count = after.get((stage, "count", None), 0) - before.get((stage, "count", None), 0)
        if not count:
            continue
        mean = (after[stage, "sum", None] - before.get((stage, "sum", None), 0)) / count * 1000
        buckets = sorted((float(le), after[k] - before.get(k, 0)) for k in after
                         if k[0] == stage and k[1] == "bucket" and k[2] != "+Inf" for le in [k[2]])

        def bound(q: float) -> str:
            return next((f"<={le * 1000:g}" for le, n in buckets if n >= q * count), ">10000")
        parts.append(f"{stage} {mean:.2f}/{bound(0.5)}/{bound(0.99)}")
    return "  ".join(parts)


def parse_ceilings(batch: int, seconds: float = 1.5) -> tuple[float, float, float]:
    """Readings/s that JSON parsing alone, JSON parsing plus validation, and line protocol parsing
    plus validation (the same readings) reach in this process."""
    now = int(time.time() * 1000)
    window = accepted_window(now, 86_400, 300)

    def rate(work, payloads: list[bytes]) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for body in payloads:
                work(body)
                done += batch
        return done / (time.perf_counter() - started)

    json_bodies = bodies(batch)
    return (rate(orjson.loads, json_bodies),
            rate(lambda body: parse_batch(orjson.loads(body), "bench", window=window, limit=10_000), json_bodies),
            rate(lambda body: line_protocol.parse_points(body, "bench", precision="ms", now_ms=now, window=window,
                                                         limit=10_000),
                 line_bodies(batch)))


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited: {process.stdout.read() if process.stdout else ''}")
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen within 20 s")


def start_ingest(root: Path, tmp: str, workers: int, crate_url: str, *, user: str = "ingest",
                 table: str = "doc.readings") -> tuple[subprocess.Popen, str]:
    """`python -m ingest` on a free port, writing to `crate_url` (password in tmp/password)."""
    ingest_port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, env={
        **os.environ, "INGEST_BIND": "127.0.0.1", "INGEST_PORT": str(ingest_port), "INGEST_CRATE_URLS": crate_url,
        "INGEST_TOKEN_SECRET_FILE": f"{tmp}/secret", "INGEST_CRATE_PASSWORD_FILE": f"{tmp}/password",
        "INGEST_CRATE_USER": user, "INGEST_TABLE": table, "INGEST_QUEUE_ROWS": "1000000", "INGEST_WORKERS": str(workers)})
    wait_for_port(ingest_port, server, "the ingest server")
    wait_for_listeners(ingest_port, workers)
    return server, f"http://127.0.0.1:{ingest_port}/v1/readings"


def start_services(root: Path, tmp: str, workers: int) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    crate_port = free_port()
    double = subprocess.Popen([sys.executable, "-m", "tests.cratedb_double", "--port", str(crate_port), "--keys-only",
                               "--user", "ingest:bench-password"], cwd=root, stdout=subprocess.DEVNULL)
    wait_for_port(crate_port, double, "the contract double")
    server, url = start_ingest(root, tmp, workers, f"http://127.0.0.1:{crate_port}")
    return double, server, url


def wait_for_listeners(port: int, count: int) -> None:
    """Until `count` sockets listen on the port: each ingest worker binds its own (Linux)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        if sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A") >= count:  # 0A: LISTEN
            return
        time.sleep(0.1)
    raise SystemExit(f"{count} ingest workers did not listen within 20 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="load connections, one request each at a time")
    parser.add_argument("--workers", default="1,2", help="INGEST_WORKERS settings to compare, e.g. 1,2")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    root = Path(__file__).resolve().parents[2]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.seconds:.0f} s per run, {args.connections} connections; database: the contract double, not CrateDB")
    print(f"{'workers':>7} {'batch':>6} {'mode':>10} {'requests/s':>11} {'readings/s':>11} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'errors':>7} {'CPU % server/double/load':>25} {'JSON-only readings/s':>21} {'+validate':>10}"
          f" {'line protocol +validate':>24}")
    ceilings = {batch: parse_ceilings(batch) for batch in (1, 100, 1000)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "secret").write_bytes(SECRET)
        Path(tmp, "password").write_text("bench-password")
        for workers in worker_counts:
            double, server, url = start_services(root, tmp, workers)
            try:
                run_load(url, 10, 1.0)  # warm up
                watch = {"server": server.pid, "double": double.pid}
                for batch in (1, 100, 1000):
                    full = run_load(url, batch, args.seconds, watch=watch, connections=args.connections)
                    before = stage_counts(url)
                    half = run_load(url, batch, args.seconds, rate=full["requests/s"] / 2, watch=watch,
                                    connections=args.connections)
                    half["stages"] = stage_breakdown(before, stage_counts(url))
                    results[workers, batch] = (full, half)
                    for mode, r in (("max", full), ("half rate", half)):
                        cpu = "/".join(f"{r['cpu'][k] * 100:.0f}" for k in ("server", "double", "load"))
                        json_only, validated, line = ceilings[batch]
                        ceiling = f"{json_only:>21.0f} {validated:>10.0f} {line:>24.0f}" if mode == "max" else ""
                        print(f"{workers:>7} {batch:>6} {mode:>10} {r['requests/s']:>11.0f} {r['readings/s']:>11.0f} "
                              f"{r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f} {r['errors']:>7} {cpu:>25} {ceiling}", flush=True)
                    print(f"{'':>26}stages at half rate, ms mean/p50/p99: {half['stages']}", flush=True)
                # The same readings as InfluxDB line protocol (POST /api/v2/write) beside JSON, alternating
                # (this machine's speed drifts between runs): the medians of three runs each.
                line_url = url.replace("/v1/readings", "/api/v2/write?org=o&bucket=b&precision=ms")
                pairs = [(run_load(url, 1000, args.seconds, watch=watch, connections=args.connections),
                          run_load(line_url, 1000, args.seconds, watch=watch, connections=args.connections))
                         for _ in range(3)]
                for name, runs in (("JSON", [p[0] for p in pairs]), ("line proto", [p[1] for p in pairs])):
                    r = {k: statistics.median(run[k] for run in runs) for k in ("requests/s", "readings/s", "p50 ms", "p99 ms")}
                    errors = sum(run["errors"] for run in runs)
                    print(f"{workers:>7} {1000:>6} {name:>10} {r['requests/s']:>11.0f} {r['readings/s']:>11.0f} "
                          f"{r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f} {errors:>7} {'median of 3, alternating':>25}", flush=True)
                    results[workers, name] = r
            finally:
                for process in (server, double):
                    process.terminate()
                    process.wait(timeout=15)
    full, half = results[worker_counts[-1], 1000]
    line, json_ = results[worker_counts[-1], "line proto"], results[worker_counts[-1], "JSON"]
    print(f"line protocol: {line['readings/s']:.0f} readings/s at batch 1000 beside JSON's {json_['readings/s']:.0f} "
          f"(ratio {line['readings/s'] / json_['readings/s']:.2f}, medians of 3 alternating runs)")
    print(f"ingest: {full['readings/s']:.0f} readings/s at batch 1000, p99 {half['p99 ms']:.1f} ms "
          f"({worker_counts[-1]} worker{'s' if worker_counts[-1] > 1 else ''})")


if __name__ == "__main__":
    main()
