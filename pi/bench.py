"""Sampling jitter and CPU use of the real agent: `python -m pi.bench [--seconds 60] [--interval-ms 100]`.

Starts `python -m pi.agent` (random sensor) delivering to a small HTTP receiver in this process,
then prints the spacing of the sampled timestamps against the schedule (jitter p50/p99/max, ticks
missed) and the agent process's CPU use (Linux /proc).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval-ms", type=int, default=100)
    args = parser.parse_args()
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
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp, "token")
        token.write_text("mds1.bench.unsigned\n")
        token.chmod(0o600)
        config = Path(tmp, "agent.toml")
        config.write_text(f'[agent]\ninterval_ms = {args.interval_ms}\nstate_dir = "{tmp}/state"\n'
                          f'[ingest]\nendpoints = ["http://127.0.0.1:{server.server_address[1]}"]\ntoken_file = "{token}"\n'
                          '[[sensors]]\ntype = "random"\n')
        agent = subprocess.Popen([sys.executable, "-m", "pi.agent", "--config", str(config)],
                                 cwd=Path(__file__).resolve().parents[1], stderr=subprocess.DEVNULL)
        time.sleep(2)  # started, first batch out
        cpu_before, started = cpu_seconds(agent.pid), time.monotonic()
        first = len(timestamps)
        time.sleep(args.seconds)
        cpu = (cpu_seconds(agent.pid) - cpu_before) / (time.monotonic() - started)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    server.shutdown()
    ts = timestamps[first:]
    deviations = sorted(abs(b - a - args.interval_ms) for a, b in zip(ts, ts[1:]))
    missed = sum(round((b - a) / args.interval_ms) - 1 for a, b in zip(ts, ts[1:]) if b - a > 1.5 * args.interval_ms)
    p99 = deviations[min(len(deviations) - 1, int(0.99 * len(deviations)))]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.seconds:.0f} s at {1000 / args.interval_ms:g} Hz, random sensor, local receiver")
    print(f"samples {len(ts)}, ticks missed {missed}; spacing vs {args.interval_ms} ms: jitter p50 "
          f"{statistics.median(deviations):.0f} ms, p99 {p99} ms, max {deviations[-1]} ms (ms resolution)")
    print(f"agent CPU: {cpu * 100:.2f} % of one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
