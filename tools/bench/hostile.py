"""Hostile load beside innocent clients: `python -m tools.bench.hostile [--seconds 30] [--workers 1]`
(from the repository root).

Starts the CrateDB contract double (tests/cratedb_double.py, not CrateDB) and the real ingest
server, then runs Telegraf-like innocent clients (each posts a line-protocol batch of 500 points
every 0.5 s with Telegraf's default 5 s timeout) twice in one run: alone, then beside hostile
loops that send, over and over, 8 MiB of bad lines, 8 MiB of newlines, one line of 700k fields,
2 MiB of empty gzip members, 5000-digit numbers, and hold connections with half a request head or
half a body. Prints, for both phases, the innocent requests' p50, p99 and max, their timeouts and
errors, what the hostile requests were answered, and the ingest process tree's peak resident size.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import platform
import re
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from ingest import tokens
from tools.bench.ingest import SECRET, start_services

INNOCENT_TIMEOUT_S = 5.0  # Telegraf's outputs.influxdb_v2 default
MB = 2 ** 20


def hostile_bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    now = int(time.time() * 1000)
    return {
        "8 MiB of bad lines": (b"x\n" * (4 * MB - 1), {}),
        "8 MiB of newlines": (b"\n" * (8 * MB - 1), {}),
        "one line, 700k fields": (b"m " + b",".join(b"f%d=1" % i for i in range(700_000)), {}),
        "2 MiB of empty gzip members": (gzip.compress(b"") * (2 * MB // 20), {"Content-Encoding": "gzip"}),
        "5000-digit numbers": (b"\n".join(b"m v=%si %d" % (b"9" * 5000, now - i) for i in range(500)), {}),
    }


def innocent_body(client: int, round_: int) -> bytes:
    now = int(time.time() * 1000)
    return "\n".join(f"cpu,host=h{client},core={i % 8} usage={i % 100}.5 {now - 500 + i}" for i in range(500)).encode()


class Phase:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.timeouts = self.errors = 0
        self.hostile: dict[str, dict[int, int]] = {}
        self.lock = threading.Lock()


def post(port: int, body: bytes, headers: dict[str, str], token: str, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/api/v2/write?precision=ms", body=body,
                           headers={"Authorization": f"Token {token}", **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def innocent(port: int, client: int, until: float, phase: Phase) -> None:
    token = tokens.issue(SECRET, f"innocent-{client}")
    round_, next_at = 0, time.monotonic()
    while time.monotonic() < until:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 0.5
        started = time.perf_counter()
        try:
            status = post(port, innocent_body(client, round_), {}, token, INNOCENT_TIMEOUT_S)
            with phase.lock:
                phase.latencies.append(time.perf_counter() - started)
                phase.errors += status != 204
        except (TimeoutError, socket.timeout):
            with phase.lock:
                phase.timeouts += 1
        except OSError:
            with phase.lock:
                phase.errors += 1
        round_ += 1


def hostile(port: int, until: float, phase: Phase, bodies: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    token = tokens.issue(SECRET, "hostile")
    while time.monotonic() < until:
        for name, (body, headers) in bodies.items():
            try:
                status = post(port, body, headers, token, 60)
            except OSError:
                status = 0
            with phase.lock:
                counts = phase.hostile.setdefault(name, {})
                counts[status] = counts.get(status, 0) + 1


def half_requests(port: int, until: float, phase: Phase, count: int) -> None:
    """Connections that send half a head or half a body and wait; opened again once closed."""
    heads = [b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nAuthor",
             b"POST /api/v2/write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nm v=1"]
    open_ = []
    while time.monotonic() < until:
        while len(open_) < count:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(heads[len(open_) % 2])
                sock.setblocking(False)
                open_.append(sock)
            except OSError:
                break
        time.sleep(0.5)
        for sock in list(open_):
            try:
                if sock.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                pass
            sock.close()
            open_.remove(sock)
            with phase.lock:
                counts = phase.hostile.setdefault("half-sent requests", {})
                counts["closed by the server"] = counts.get("closed by the server", 0) + 1
    for sock in open_:
        sock.close()


def peak_rss_mb(pid: int) -> float:
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return max(int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text()).group(1)) / 1024 for p in pids)


def run_phase(port: int, seconds: float, clients: int, with_hostile: bool) -> Phase:
    phase, until = Phase(), time.monotonic() + seconds
    threads = [threading.Thread(target=innocent, args=(port, c, until, phase)) for c in range(clients)]
    if with_hostile:
        bodies = hostile_bodies()
        threads += [threading.Thread(target=hostile, args=(port, until, phase, bodies)) for _ in range(2)]
        threads.append(threading.Thread(target=half_requests, args=(port, until, phase, 200)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return phase


def report(name: str, phase: Phase) -> str:
    lat = sorted(phase.latencies)
    pct = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: float("nan"))
    line = (f"{name:<22} innocent requests {len(lat):>5}  p50 {statistics.median(lat) * 1000 if lat else float('nan'):7.1f} ms"
            f"  p99 {pct(0.99):7.1f} ms  max {pct(1.0):7.1f} ms  timeouts {phase.timeouts}  errors {phase.errors}")
    for what, counts in sorted(phase.hostile.items()):
        line += f"\n{'':<24}hostile {what}: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
    return line


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=20, help="innocent clients")
    parser.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "secret").write_text(SECRET.decode())
        Path(tmp, "password").write_text("bench-password")
        double, server, url = start_services(root, tmp, args.workers)
        port = int(url.split(":")[2].split("/")[0])
        try:
            alone = run_phase(port, args.seconds, args.clients, with_hostile=False)
            rss_alone = peak_rss_mb(server.pid)
            beside = run_phase(port, args.seconds, args.clients, with_hostile=True)
            rss_beside = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            double.terminate()
            server.wait(timeout=30)
            double.wait(timeout=30)
    print(f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{args.workers} ingest worker(s), the CrateDB contract double, {args.seconds:g} s per phase, "
          f"{args.clients} innocent clients (500 points every 0.5 s, {INNOCENT_TIMEOUT_S:g} s timeout)")
    print(report("alone", alone) + f"\n{'':<24}peak RSS of the ingest: {rss_alone:.0f} MB")
    print(report("beside hostile loops", beside) + f"\n{'':<24}peak RSS of the ingest: {rss_beside:.0f} MB")


if __name__ == "__main__":
    main()
