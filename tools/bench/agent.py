"""Sampling jitter and CPU use of the real agent: `python -m tools.bench.agent [--seconds 60] [--interval-ms 100]`.

Starts `python -m pi.agent` (random sensor) delivering to a small HTTP receiver in this process,
once per buffer durability (crash, power-cut: pi/buffer.py), one after the other, and prints for
each the spacing of the sampled timestamps against the schedule (jitter p50/p99/max, ticks
missed), the agent process's CPU use and the bytes it wrote to storage (Linux /proc), and what
one tick's `Buffer.put` takes on this disk (p50/p99 of 300 puts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def put_latency_ms(durability: str, directory: str) -> tuple[float, float]:
    from pi.buffer import Buffer
    buffer = Buffer(Path(directory, f"put-{durability}.db"), durability=durability)
    times = []
    for i in range(300):
        started = time.perf_counter()
        buffer.put([{"ts": 1_800_000_000_000 + i, "sensor": "random", "value": 0.5, "unit": None}])
        times.append((time.perf_counter() - started) * 1000)
    buffer.close()
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times))]


def run_agent(durability: str, seconds: float, interval_ms: int) -> dict:
    timestamps: list[int] = []

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            readings = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["readings"]
            timestamps.extend(r["ts"] for r in readings)
            body = json.dumps({"stored": len(readings)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(dir=os.environ.get("MDS_BENCH_DIR")) as tmp:
        token = Path(tmp, "token")
        token.write_text("mds1.bench.unsigned\n")
        token.chmod(0o600)
        config = Path(tmp, "agent.toml")
        config.write_text(f'[agent]\ninterval_ms = {interval_ms}\nstate_dir = "{tmp}/state"\ndurability = "{durability}"\n'
                          f'[ingest]\nendpoints = ["http://127.0.0.1:{server.server_address[1]}"]\ntoken_file = "{token}"\n'
                          '[[sensors]]\ntype = "random"\n')
        agent = subprocess.Popen([sys.executable, "-m", "pi.agent", "--config", str(config)],
                                 cwd=Path(__file__).resolve().parents[2], stderr=subprocess.DEVNULL)
        time.sleep(2)  # started, first batch out
        cpu_before, bytes_before, started = cpu_seconds(agent.pid), written_bytes(agent.pid), time.monotonic()
        first = len(timestamps)
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        cpu = (cpu_seconds(agent.pid) - cpu_before) / elapsed
        written = (written_bytes(agent.pid) - bytes_before) / elapsed
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        put_p50, put_p99 = put_latency_ms(durability, tmp)
    server.shutdown()
    ts = timestamps[first:]
    deviations = sorted(abs(b - a - interval_ms) for a, b in zip(ts, ts[1:]))
    return {"samples": len(ts), "missed": sum(round((b - a) / interval_ms) - 1 for a, b in zip(ts, ts[1:])
                                              if b - a > 1.5 * interval_ms),
            "p50": statistics.median(deviations), "p99": deviations[min(len(deviations) - 1, int(0.99 * len(deviations)))],
            "max": deviations[-1], "cpu": cpu * 100, "written": written / 1024, "put_p50": put_p50, "put_p99": put_p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--durability", default="crash,power-cut", help="buffer modes to run, comma-separated")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.seconds:.0f} s at {1000 / args.interval_ms:g} Hz per mode, random sensor, local receiver; "
          f"state on {os.environ.get('MDS_BENCH_DIR') or tempfile.gettempdir()}")
    print(f"{'durability':>10} {'samples':>7} {'missed':>6} {'jitter p50':>10} {'p99':>4} {'max':>4} "
          f"{'CPU %':>6} {'KiB/s written':>13} {'put p50 ms':>10} {'put p99 ms':>10}")
    for durability in args.durability.split(","):
        r = run_agent(durability, args.seconds, args.interval_ms)
        print(f"{durability:>10} {r['samples']:>7} {r['missed']:>6} {r['p50']:>10.0f} {r['p99']:>4} {r['max']:>4} "
              f"{r['cpu']:>6.2f} {r['written']:>13.1f} {r['put_p50']:>10.3f} {r['put_p99']:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
