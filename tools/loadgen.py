"""The load generator: `python -m tools.loadgen --endpoints URL,... --tokens FILE --rate 5000 --seconds 60`.

Simulates one agent per token (make them with `python -m ingest.tokens <device>`), each posting
batches at its share of the target rate through every ingest endpoint with failover, retrying a
batch until it is acknowledged (never dropping it). Prints a line every second and a summary:
sent, acknowledged, rejected, retried, latency p50/p99. `--record FILE` writes every acknowledged
key (device, sensor, ts) as a JSON line; `--check-crate http://user:password@host:4200` compares
the acknowledged readings with what CrateDB holds at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from pi.delivery import Acknowledged, Backoff, Delivery, Retry

SENSOR = "load"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.acknowledged = self.rejected = self.retried = self.requests = 0
        self.latencies: list[float] = []
        self.acked_by_device: dict[str, int] = {}
        self.pending = 0  # readings of batches still unacknowledged at the end

    def line(self, elapsed: float) -> str:
        with self.lock:
            recent, self.latencies = self.latencies, []
        p50, p99 = percentiles(recent)
        return (f"t={elapsed:6.1f}s sent={self.sent} acked={self.acknowledged} rejected={self.rejected} "
                f"retried={self.retried} p50={p50:.1f}ms p99={p99:.1f}ms")


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(0.99 * len(values)))] * 1000


def simulated_agent(token: str, endpoints: tuple[str, ...], rate: float, batch: int, until: list[float], stats: Stats,
                    record, ca_file: str | None, all_latencies: list[float]) -> None:
    """`until[0]`: when to stop sending new batches (SIGTERM moves it to now); the batch in
    flight is still delivered."""
    device = token.split(".")[1]
    delivery = Delivery(endpoints, token, timeout_s=10, ca_file=ca_file)
    backoff = Backoff(base_s=0.2, cap_s=5.0)
    interval = batch / rate
    next_at, last_ts = time.monotonic(), 0
    while time.monotonic() < until[0]:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        now = time.time_ns() // 1_000_000
        readings = []
        for i in range(batch):  # strictly increasing ts: every reading has its own key
            last_ts = max(now, last_ts + 1)
            readings.append({"ts": last_ts, "sensor": SENSOR, "value": float(i)})
        with stats.lock:
            stats.sent += batch
        while True:
            started = time.perf_counter()
            outcome = delivery.send(readings)
            if isinstance(outcome, Acknowledged):
                latency = time.perf_counter() - started
                with stats.lock:
                    stats.acknowledged += batch
                    stats.acked_by_device[device] = stats.acked_by_device.get(device, 0) + batch
                    stats.latencies.append(latency)
                    all_latencies.append(latency)
                    if record:
                        record.write("".join(json.dumps([device, SENSOR, r["ts"]]) + "\n" for r in readings))
                backoff.reset()
                break
            if isinstance(outcome, Retry):
                with stats.lock:
                    stats.retried += 1
                if time.monotonic() >= until[0] + 60:  # give up after a minute past the end; reported as pending
                    with stats.lock:
                        stats.pending += batch
                    break
                time.sleep(backoff.next_delay(outcome.after_s))
                continue
            with stats.lock:
                stats.rejected += batch
            print(f"{device}: rejected {outcome.status} {outcome.reason}", file=sys.stderr)
            break
    delivery.close()


def check_crate(url: str, devices: list[str], started_ms: int, acked: dict[str, int]) -> bool:
    """Compare the acknowledged readings of each simulated agent with the rows in CrateDB."""
    parts = urlsplit(url)
    auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode() if parts.username else None

    def sql(stmt: str, args: list) -> dict:
        request = urllib.request.Request(f"{parts.scheme}://{parts.hostname}:{parts.port or 4200}/_sql",
                                         data=json.dumps({"stmt": stmt, "args": args}).encode(),
                                         headers={"Content-Type": "application/json"} | ({"Authorization": f"Basic {auth}"} if auth else {}))
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    sql("REFRESH TABLE doc.readings", [])
    rows = sql("SELECT agent, count(*) FROM doc.readings WHERE agent = ANY(?) AND sensor = ? AND ts >= ? GROUP BY agent",
               [devices, SENSOR, started_ms])["rows"]
    stored = {agent: count for agent, count in rows}
    ok = True
    for device in devices:
        missing = acked.get(device, 0) - stored.get(device, 0)
        ok &= missing <= 0
        print(f"check {device}: acknowledged {acked.get(device, 0)}, in CrateDB {stored.get(device, 0)}"
              + (f", MISSING {missing}" if missing > 0 else ""))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, help="comma-separated ingest URLs (every host)")
    parser.add_argument("--tokens", type=Path, required=True, help="a file with one device token per line")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings per second, all agents together")
    parser.add_argument("--batch", type=int, default=100, help="readings per request")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ca", help="CA bundle for https endpoints (the stack's ingestCaCertificate)")
    parser.add_argument("--record", type=Path, help="write each acknowledged key as a JSON line")
    parser.add_argument("--check-crate", help="http://user:password@host:4200: compare with CrateDB at the end")
    args = parser.parse_args(argv)
    tokens = [t.strip() for t in args.tokens.read_text().splitlines() if t.strip()]
    if not tokens or not all(t.startswith("mds1.") for t in tokens):
        parser.error(f"--tokens: {args.tokens} must hold device tokens (mds1.<device>.<signature>), one per line")
    if args.rate <= 0 or args.batch < 1 or args.seconds <= 0:
        parser.error("--rate, --batch and --seconds must be positive")
    endpoints = tuple(e.strip().rstrip("/") for e in args.endpoints.split(",") if e.strip())
    stats, all_latencies = Stats(), []
    record = open(args.record, "w") if args.record else None
    started, started_ms = time.monotonic(), time.time_ns() // 1_000_000
    until = [started + args.seconds]  # SIGTERM ends the run early, cleanly: in-flight batches finish, the record is whole
    signal.signal(signal.SIGTERM, lambda *_: until.__setitem__(0, time.monotonic()))
    threads = [threading.Thread(target=simulated_agent, daemon=True, args=(
        token, endpoints, args.rate / len(tokens), args.batch, until, stats, record, args.ca, all_latencies)) for token in tokens]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        print(stats.line(time.monotonic() - started), flush=True)
    if record:
        record.close()
    elapsed = time.monotonic() - started
    p50, p99 = percentiles(all_latencies)
    print(f"done: {len(tokens)} agents, {elapsed:.1f} s, sent {stats.sent}, acknowledged {stats.acknowledged} "
          f"({stats.acknowledged / elapsed:.0f}/s), rejected {stats.rejected}, retried {stats.retried}, "
          f"pending {stats.pending}, latency p50 {p50:.1f} ms p99 {p99:.1f} ms", flush=True)
    ok = stats.rejected == 0 and stats.pending == 0
    if args.check_crate:
        ok &= check_crate(args.check_crate, [t.split(".")[1] for t in tokens], started_ms, stats.acked_by_device)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
