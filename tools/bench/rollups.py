"""Roll-ups against a real CrateDB: `python -m tools.bench.rollups --crate http://127.0.0.1:4200
[--sensors 100] [--raw-hours 24] [--history-days 365] [--repeat 20] [--reuse]` (from the repository root).

In a schema of its own (mds_bench_rollups, kept for --reuse), made from the stack's own table
definitions, it loads a fleet directly in CrateDB (generate_series, no client in between): raw
readings of every sensor at 10 Hz for the last --raw-hours, and minute-level history before that
for --history-days (hours aggregated from those minutes). Then it runs the roll-up job
(components/cratedb_files/rollup.py) until it has caught up with the raw readings, and measures a
run with one new minute. Then the Sensors dashboard's two trend panels, macros expanded as Grafana
expands them: over a day through the roll-ups and over the raw readings alone, over 30 days and a
year through the roll-ups. Prints the volume, the job's cost and each query's p50/p99 and max.
The superuser of a node on this machine (trusted from loopback) is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "mds_bench_rollups"
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def sql(url: str, stmt: str, args: list | None = None) -> dict:
    request = urllib.request.Request(url + "/_sql", data=json.dumps({"stmt": stmt, **({"args": args} if args else {})}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"CrateDB refused {stmt[:200]}: {e.read()[:500]!r}") from None


def ddl() -> list[str]:
    def statements(name: str) -> list[str]:
        text = (ROOT / "components" / "sql" / name).read_text().replace("doc.", f"{SCHEMA}.").replace("{replicas}", "'0'")
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]
    return statements("readings.sql") + statements("rollups.sql")


def load_job():
    spec = importlib.util.spec_from_file_location("rollup_bench", ROOT / "components" / "cratedb_files" / "rollup.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules["rollup_bench"] = job
    spec.loader.exec_module(job)
    return job


def load(url: str, sensors: int, raw_hours: int, history_days: int, raw_from: int) -> None:
    s = SCHEMA
    started, rows = time.monotonic(), 0
    for hour in range(raw_hours):  # raw: 10 Hz per sensor, one hour per statement
        t0 = raw_from + hour * HOUR
        rows += sql(url, f"INSERT INTO {s}.readings (ts, agent, sensor, reading, unit, meta) "
                         f"SELECT g.t, 'agent-' || (n.i % 10), 'sensor-' || n.i, "
                         f"{{num = 20 + n.i % 7 + (g.t % 600000) / 100000.0}}, 'celsius', {{}} "
                         f"FROM generate_series({t0}, {t0 + HOUR - 100}, 100) AS g(t) "
                         f"CROSS JOIN generate_series(0, {sensors - 1}) AS n(i)")["rowcount"]
        print(f"  raw: {rows:,} rows, {rows / (time.monotonic() - started):,.0f} rows/s", end="\r", flush=True)
    print()
    started, history = time.monotonic(), 0
    for day0 in range(0, history_days, 30):  # minute history before the raw readings, 30 days a statement
        start = raw_from - (min(day0 + 30, history_days)) * DAY
        end = raw_from - day0 * DAY
        history += sql(url, f'INSERT INTO {s}.readings_1m (bucket, agent, sensor, "min", "max", "sum", "count", "last", '
                            f"last_ts, readings, updated) SELECT g.t, 'agent-' || (n.i % 10), 'sensor-' || n.i, "
                            f"19.0 + n.i % 7, 26.0 + n.i % 7, 600 * (22.5 + n.i % 7), 600, 22.5 + n.i % 7, g.t + 59900, 600, now() "
                            f"FROM generate_series({start}, {end - MINUTE}, {MINUTE}) AS g(t) "
                            f"CROSS JOIN generate_series(0, {sensors - 1}) AS n(i)")["rowcount"]
        print(f"  minute history: {history:,} rows, {history / (time.monotonic() - started):,.0f} rows/s", end="\r", flush=True)
    print()
    sql(url, f"REFRESH TABLE {s}.readings_1m")
    hours = sql(url, f'INSERT INTO {s}.readings_1h (bucket, agent, sensor, "min", "max", "sum", "count", "last", last_ts, '
                     f'readings, updated) SELECT date_trunc(\'hour\', bucket), agent, sensor, min("min"), max("max"), '
                     f'sum("sum"), sum("count"), max_by("last", last_ts), max(last_ts), sum(readings), now() '
                     f"FROM {s}.readings_1m WHERE bucket < {raw_from} GROUP BY 1, 2, 3")["rowcount"]
    print(f"  hours from the history: {hours:,} rows")
    for table in ("readings", "readings_1m", "readings_1h"):
        sql(url, f"REFRESH TABLE {s}.{table}")
    # The roll-ups stand at the start of the raw readings: the job has their day to roll up.
    sql(url, f"INSERT INTO {s}.rollup_status (resolution, watermark, seen_until) VALUES ('1m', ?, ?), ('1h', ?, ?)",
        [raw_from, int(time.time() * 1000), raw_from, int(time.time() * 1000)])
    sql(url, f"REFRESH TABLE {s}.rollup_status")


def volume(url: str) -> str:
    parts = []
    for table in ("readings", "readings_1m", "readings_1h"):
        count = sql(url, f"SELECT count(*) FROM {SCHEMA}.{table}")["rows"][0][0]
        size = sql(url, "SELECT sum(size) FROM sys.shards WHERE schema_name = ? AND table_name = ? AND primary",
                   [SCHEMA, table])["rows"][0][0] or 0
        parts.append(f"{table} {count:,} rows, {size / 2**20:,.0f} MiB")
    return "; ".join(parts)


def panel_queries() -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from components.grafana_dashboards import dashboards
    from stack.model import AlertSettings
    panels = dashboards(AlertSettings())["sensors.json"]["panels"]
    return {p["title"]: p["targets"][0]["rawSql"] for p in panels if p["title"] in ("Values over time", "Readings per minute")}


def expand(sql_text: str, frm: int, to: int, interval_ms: int, raw_only: bool) -> str:
    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t / 1000)) for t in (frm, to)]
    text = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{iso[0]}' AND '{iso[1]}'", sql_text)
    text = text.replace("$__interval_ms", str(interval_ms)).replace("doc.", f"{SCHEMA}.")
    if raw_only:  # the same panel as before the roll-ups: every interval from the raw readings
        text = re.sub(r"coalesce\(\(SELECT watermark FROM [\w.]+ WHERE resolution = '1[mh]'\), 0\)", "0", text)
    return text


def timed(url: str, stmt: str, repeat: int) -> list[float]:
    sql(url, stmt)  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        sql(url, stmt)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.rollups", description=__doc__.splitlines()[0])
    parser.add_argument("--crate", default="http://127.0.0.1:4200")
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--raw-hours", type=int, default=24)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep the loaded schema from an earlier run")
    args = parser.parse_args()
    url, job = args.crate.rstrip("/"), load_job()
    job.URL = url + "/_sql"
    now = int(time.time() * 1000)
    raw_from = (now - args.raw_hours * HOUR) // HOUR * HOUR
    exists = sql(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?", [SCHEMA])["rows"][0][0]
    if not (args.reuse and exists):
        for table in ("readings", "readings_1m", "readings_1h", "rollup_status"):
            sql(url, f"DROP TABLE IF EXISTS {SCHEMA}.{table}")
        for statement in ddl():
            sql(url, statement)
        print(f"loading {args.sensors} sensors: {args.raw_hours} h of raw readings at 10 Hz, {args.history_days} days of minutes")
        load(url, args.sensors, args.raw_hours, args.history_days, raw_from)
    version = sql(url, "SELECT version['number'] FROM sys.nodes LIMIT 1")["rows"][0][0]
    nodes = sql(url, "SELECT count(*) FROM sys.nodes")["rows"][0][0]
    print(f"{platform.machine()}, CrateDB {version}, {nodes} node(s); {volume(url)}")

    catch_up = []
    while True:  # the job, until the minutes and hours follow now
        done = job.run_all(int(time.time() * 1000), 60_000, 10_000, 1440, SCHEMA)
        catch_up.append(done)
        if done[0]["buckets"] <= 1 and done[1]["buckets"] == 0:
            break
    print("roll-up job catching up: " + "; ".join(
        f"run {i + 1}: 1m {d[0]['buckets']} buckets {d[0]['rows']:,} rows {d[0]['ms']:,.0f} ms, "
        f"1h {d[1]['buckets']} buckets {d[1]['ms']:,.0f} ms" for i, d in enumerate(catch_up)))
    steady = []
    raw_end = sql(url, f"SELECT max(ts) FROM {SCHEMA}.readings")["rows"][0][0] // MINUTE * MINUTE
    watermark = sql(url, f"SELECT watermark FROM {SCHEMA}.rollup_status WHERE resolution = '1m'")["rows"][0][0]
    for k in range(5):  # one minute of raw readings rolled up again, as every minute in service
        sql(url, f"UPDATE {SCHEMA}.rollup_status SET watermark = ? WHERE resolution = '1m'", [raw_end - (k + 1) * MINUTE])
        sql(url, f"REFRESH TABLE {SCHEMA}.rollup_status")
        steady.append(job.run_all(int(time.time() * 1000), 60_000, 10_000, 1, SCHEMA)[0]["ms"])
    sql(url, f"UPDATE {SCHEMA}.rollup_status SET watermark = ? WHERE resolution = '1m'", [watermark])
    sql(url, f"REFRESH TABLE {SCHEMA}.rollup_status")
    print(f"roll-up job, one minute of {args.sensors} sensors at 10 Hz ({args.sensors * 600:,} raw rows): "
          f"median {statistics.median(steady):,.0f} ms, max {max(steady):,.0f} ms")

    now = int(time.time() * 1000)
    cases = [("1 day", DAY, 60_000), ("30 days", 30 * DAY, 1_800_000), ("1 year", 365 * DAY, 43_200_000)]
    print(f"{'panel':<22} {'range':>8} {'source':<34} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for title, text in panel_queries().items():
        for name, span, interval in cases:
            runs = [("through the roll-ups", False)] + ([("raw readings only (as before)", True)] if span <= args.raw_hours * HOUR else [])
            for source, raw_only in runs:
                times = timed(url, expand(text, now - span, now, interval, raw_only), args.repeat)
                p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
                print(f"{title:<22} {name:>8} {source:<34} {statistics.median(times):>9.1f} {p99:>9.1f} {times[-1]:>9.1f}")


if __name__ == "__main__":
    main()
