"""Benchmark against a real CrateDB: `python -m tools.bench.cratedb --crate http://127.0.0.1:4200
[--replicas 0] [--seconds 5] [--connections 32] [--workers 2]` (from the repository root). For a
cluster, name every node: `--crate http://a:4200,http://b:4200,http://c:4200 --replicas 1`.

For batches of 1, 100 and 1000 readings, side by side in one run: rows stored by the `crate`
client's bulk inserts straight into CrateDB, and the same rows through the real ingest server
(`python -m ingest`, acknowledged only after CrateDB stored them), each from a load process of its
own with the same number of connections. Prints readings/s, p50/p99 acknowledgement latency and
the ratio ingest/direct, and where the ingest's requests spent their time (its stage histograms:
read, decode, parse, queue, database, answer), so that its own share shows beside CrateDB's. It
makes a table and a user of its own through the superuser (trusted on loopback) and drops them
afterwards; every row has a new key, so every acknowledged row is stored.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import secrets
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from crate.client.http import Client

from tools.bench.ingest import SECRET, run_load, stage_breakdown, stage_counts, start_ingest
from ingest.rows import insert_statement

READINGS_SQL = Path(__file__).resolve().parents[2] / "components" / "sql" / "readings.sql"


def ddl(table: str, replicas: int) -> str:
    lines = [line for line in READINGS_SQL.read_text().splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).replace("doc.readings", table).replace("{replicas}", f"'{replicas}'")


def _direct_process(urls: list[str], user: str, password: str, table: str, batch: int, seconds: float, threads: int, first: int, out) -> None:
    stmt = insert_statement(table)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    now = int(time.time() * 1000) - 60_000

    def worker(n: int) -> None:
        nonlocal errors
        client = Client(urls, username=user, password=password, timeout=30, compress=False)
        agent, done = f"direct-{first + n}", 0
        while time.perf_counter() < deadline:
            rows = [[now + done + i, agent, "temperature", {"num": 20.0}, "celsius", None] for i in range(batch)]
            started = time.perf_counter()
            results = client.sql(stmt, bulk_parameters=rows)["results"]
            with lock:
                if all(r.get("rowcount") == 1 for r in results):
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
            done += batch
        client.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put((latencies, errors, time.perf_counter() - started))


def run_direct(urls: list[str], user: str, password: str, table: str, batch: int, seconds: float, connections: int) -> dict:
    """Two load processes (the GIL would cap one), `connections` threads in all."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    tag = time.time_ns() // 1_000_000
    processes = [multiprocessing.Process(target=_direct_process, args=(
        urls, user, password, table, batch, seconds, connections // 2, tag * 100 + p * connections, queue)) for p in range(2)]
    for process in processes:
        process.start()
    parts = [queue.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    latencies = sorted(lat for part in parts for lat in part[0])
    elapsed = max(part[2] for part in parts)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"readings/s": len(latencies) * batch / elapsed, "p50 ms": pct(0.5), "p99 ms": pct(0.99),
            "errors": sum(part[1] for part in parts)}


def superuser(url: str, stmt: str) -> None:
    Client([url]).sql(stmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crate", required=True, help="CrateDB HTTP endpoints, comma-separated, whose superuser is "
                                                        "trusted from here")
    parser.add_argument("--replicas", type=int, default=0, help="number_of_replicas of the benchmark's table")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="INGEST_WORKERS")
    args = parser.parse_args()
    urls = [u.rstrip("/") for u in args.crate.split(",")]
    url = urls[0]
    nodes = len(Client([url]).sql("SELECT name FROM sys.nodes")["rows"])
    version = orjson.loads(urllib.request.urlopen(url + "/", timeout=10).read())["version"]["number"]
    tag = secrets.token_hex(4)
    table, user, password = f"bench_{tag}.readings", f"bench_{tag}", secrets.token_urlsafe(18)
    superuser(url, ddl(table, args.replicas))
    superuser(url, f"CREATE USER {user} WITH (password = '{password}')")
    superuser(url, f"GRANT DML, DQL ON TABLE {table} TO {user}")
    root = Path(__file__).resolve().parents[2]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; CrateDB {version} at "
          f"{','.join(urls)} ({nodes} node{'s' if nodes > 1 else ''}, {args.replicas} replicas); {args.seconds:.0f} s per run, {args.connections} connections, "
          f"{args.workers} ingest workers")
    print(f"{'batch':>6} {'path':>7} {'readings/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'ingest/direct':>14}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "secret").write_bytes(SECRET)
            Path(tmp, "password").write_text(password)
            server, ingest_url = start_ingest(root, tmp, args.workers, ",".join(urls), user=user, table=table)
            try:
                run_load(ingest_url, 10, 1.0)  # warm up
                for batch in (1, 100, 1000):
                    direct = run_direct(urls, user, password, table, batch, args.seconds, args.connections)
                    before = stage_counts(ingest_url)
                    through = run_load(ingest_url, batch, args.seconds, connections=args.connections)
                    stages = stage_breakdown(before, stage_counts(ingest_url))
                    ratio = through["readings/s"] / direct["readings/s"] if direct["readings/s"] else float("nan")
                    for path, r, shown in (("direct", direct, ""), ("ingest", through, f"{ratio:.2f}")):
                        print(f"{batch:>6} {path:>7} {r['readings/s']:>11.0f} {r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f} "
                              f"{r['errors']:>7} {shown:>14}", flush=True)
                    print(f"{'':>15}through the ingest, ms mean/p50/p99 per stage: {stages}", flush=True)
            finally:
                server.terminate()
                server.wait(timeout=15)
    finally:
        superuser(url, f"DROP USER IF EXISTS {user}")
        superuser(url, f"DROP TABLE IF EXISTS {table}")


if __name__ == "__main__":
    main()
