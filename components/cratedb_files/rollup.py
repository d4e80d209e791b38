#!/usr/bin/env python3
"""Keep the roll-ups of doc.readings (components/sql/rollups.sql) up to date, in every CrateDB task.

Each run, per resolution (minutes from the raw rows, then hours from the minutes):
- forward: the buckets from the watermark to `now - ROLLUP_LAG_S` (at most ROLLUP_MAX_BUCKETS of
  them, so a year of backlog is caught up over many bounded runs) are aggregated from their source
  and upserted, keyed by (agent, sensor, bucket);
- late data: source rows that arrived since the last run (raw rows by `received`, minute rows by
  `updated`, never by their own time: an agent offline for a day delivers a day late) but belong
  to buckets before the watermark make those buckets be aggregated again, whole;
- the status row (doc.rollup_status) gets the new watermark and the run's figures.
Every write recomputes whole buckets from their source, so a run repeated, or the same run on two
nodes at once, writes the same rows. Source rows younger than ROLLUP_MARGIN_S are left to the next
run: a row becomes visible to queries about a second after it was written.

Runs as the superuser over loopback (trusted there, like retention.sh), with the standard library
only (the crate image has Python 3). ROLLUP_ONCE=1: one run now (tests, and by hand).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

URL = os.environ.get("CRATE_SQL_URL", "http://127.0.0.1:4200/_sql")
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
UPSERT = ('ON CONFLICT (agent, sensor, bucket, month) DO UPDATE SET "min" = excluded."min", "max" = excluded."max", '
          '"sum" = excluded."sum", "count" = excluded."count", "last" = excluded."last", last_ts = excluded.last_ts, '
          'readings = excluded.readings, updated = excluded.updated')
COLUMNS = '(bucket, agent, sensor, "min", "max", "sum", "count", "last", last_ts, readings, updated)'


@dataclass(frozen=True)
class Resolution:
    name: str  # 1m | 1h
    table: str
    bucket_ms: int
    source: str
    source_time: str  # the source's time column
    source_changed: str  # the column that says when a source row was written
    unit: str  # date_trunc unit
    aggregates: str  # the select list after bucket, agent, sensor

    def upsert(self, where: str) -> str:
        return (f"INSERT INTO {self.table} {COLUMNS} SELECT date_trunc('{self.unit}', {self.source_time}), agent, sensor, "
                f"{self.aggregates}, now() FROM {self.source} WHERE {where} GROUP BY 1, 2, 3 {UPSERT}")


NUMERIC = "reading['num'] IS NOT NULL"


def resolutions(schema: str) -> tuple[Resolution, Resolution]:
    """Minutes from the raw rows, hours from the minutes, in `schema` (doc in the stack)."""
    minutes = Resolution(
        "1m", f"{schema}.readings_1m", MINUTE_MS, f"{schema}.readings", "ts", "received", "minute",
        f"min(reading['num']), max(reading['num']), sum(reading['num']), count(reading['num']), "
        f"max_by(reading['num'], ts) FILTER (WHERE {NUMERIC}), max(ts) FILTER (WHERE {NUMERIC}), count(*)")
    hours = Resolution(
        "1h", f"{schema}.readings_1h", HOUR_MS, f"{schema}.readings_1m", "bucket", "updated", "hour",
        'min("min"), max("max"), sum("sum"), sum("count"), max_by("last", last_ts), max(last_ts), sum(readings)')
    return minutes, hours


@dataclass(frozen=True)
class Plan:
    start: int  # the watermark: buckets from here ...
    upper: int  # ... to here (exclusive) are aggregated forward; upper == start: none
    seen_from: int  # source rows written from here ...
    seen_to: int  # ... to here (exclusive) are looked at for late buckets


def floor(ms: int, bucket_ms: int) -> int:
    return ms // bucket_ms * bucket_ms


def plan(resolution: Resolution, now_ms: int, status: tuple[int, int] | None, oldest_ms: int | None, *,
         lag_ms: int, margin_ms: int, max_buckets: int, ceiling_ms: int | None = None) -> Plan:
    """What one run does: from the status (watermark, seen_until) or, the first time, from the
    oldest source row; never past `now - lag`, nor past `ceiling_ms` (the hours stop at the minutes'
    watermark), nor more than `max_buckets` buckets."""
    limit = floor(now_ms - lag_ms, resolution.bucket_ms)
    if ceiling_ms is not None:
        limit = min(limit, floor(ceiling_ms, resolution.bucket_ms))
    if status is None:
        start = floor(oldest_ms, resolution.bucket_ms) if oldest_ms is not None else limit
        start = min(start, limit)
        seen_from = now_ms - margin_ms  # nothing before the first run is late: it is all ahead
    else:
        start, seen_from = status
    upper = max(start, min(limit, start + max_buckets * resolution.bucket_ms))
    return Plan(start=start, upper=upper, seen_from=seen_from, seen_to=max(seen_from, now_ms - margin_ms))


class CrateError(RuntimeError):
    pass


def sql(stmt: str, args: list | None = None) -> dict:
    body = json.dumps({"stmt": stmt, **({"args": args} if args is not None else {})}).encode()
    request = urllib.request.Request(URL, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        error = json.loads(e.read() or b"{}").get("error", {})
        raise CrateError(f"{error.get('code', e.code)} {error.get('message', '')[:300]}") from None


def status_table(resolution: Resolution) -> str:
    return resolution.table.rsplit(".", 1)[0] + ".rollup_status"


def status_of(resolution: Resolution) -> tuple[int, int] | None:
    rows = sql(f"SELECT watermark, seen_until FROM {status_table(resolution)} WHERE resolution = ?", [resolution.name])["rows"]
    return (rows[0][0], rows[0][1]) if rows and rows[0][0] is not None else None


def run(resolution: Resolution, now_ms: int, *, lag_ms: int, margin_ms: int, max_buckets: int,
        ceiling_ms: int | None = None) -> dict:
    """One run of one resolution; what it did."""
    started = time.monotonic()
    status = status_of(resolution)
    oldest = None
    if status is None:
        oldest = sql(f"SELECT min({resolution.source_time}) FROM {resolution.source}")["rows"][0][0]
    step = plan(resolution, now_ms, status, oldest, lag_ms=lag_ms, margin_ms=margin_ms, max_buckets=max_buckets,
                ceiling_ms=ceiling_ms)
    rows = 0
    if step.upper > step.start:
        rows += sql(resolution.upsert(f"{resolution.source_time} >= ? AND {resolution.source_time} < ?"),
                    [step.start, step.upper])["rowcount"]
    late = [b for (b,) in sql(
        f"SELECT DISTINCT date_trunc('{resolution.unit}', {resolution.source_time}) FROM {resolution.source} "
        f"WHERE {resolution.source_changed} >= ? AND {resolution.source_changed} < ? AND {resolution.source_time} < ? "
        "ORDER BY 1", [step.seen_from, step.seen_to, step.start])["rows"]]
    if late:
        rows += sql(resolution.upsert(
            f"{resolution.source_time} >= ? AND {resolution.source_time} < ? "
            f"AND date_trunc('{resolution.unit}', {resolution.source_time}) = ANY(?)"),
            [late[0], late[-1] + resolution.bucket_ms, late])["rowcount"]
    sql(f"REFRESH TABLE {resolution.table}")
    took_ms = (time.monotonic() - started) * 1000
    sql(f"INSERT INTO {status_table(resolution)} (resolution, watermark, seen_until, last_run, last_run_ms, last_run_buckets, "
        "last_run_late_buckets, last_run_rows) VALUES (?, ?, ?, now(), ?, ?, ?, ?) ON CONFLICT (resolution) DO UPDATE SET "
        "watermark = excluded.watermark, seen_until = excluded.seen_until, last_run = excluded.last_run, "
        "last_run_ms = excluded.last_run_ms, last_run_buckets = excluded.last_run_buckets, "
        "last_run_late_buckets = excluded.last_run_late_buckets, last_run_rows = excluded.last_run_rows",
        [resolution.name, step.upper, step.seen_to, took_ms, (step.upper - step.start) // resolution.bucket_ms,
         len(late), rows])
    sql(f"REFRESH TABLE {status_table(resolution)}")
    return {"resolution": resolution.name, "watermark": step.upper, "buckets": (step.upper - step.start) // resolution.bucket_ms,
            "late": len(late), "rows": rows, "ms": round(took_ms, 1)}


def run_all(now_ms: int, lag_ms: int, margin_ms: int, max_buckets: int, schema: str = "doc") -> list[dict]:
    minutes, hours = resolutions(schema)
    done = run(minutes, now_ms, lag_ms=lag_ms, margin_ms=margin_ms, max_buckets=max_buckets)
    return [done, run(hours, now_ms, lag_ms=lag_ms, margin_ms=margin_ms, max_buckets=max(1, max_buckets // 60),
                      ceiling_ms=done["watermark"])]


def main() -> int:
    lag_ms = int(float(os.environ.get("ROLLUP_LAG_S", "60")) * 1000)
    margin_ms = int(float(os.environ.get("ROLLUP_MARGIN_S", "10")) * 1000)
    max_buckets = int(os.environ.get("ROLLUP_MAX_BUCKETS", "1440"))
    every_s = float(os.environ.get("ROLLUP_EVERY_S", "60"))
    once = os.environ.get("ROLLUP_ONCE") == "1"
    time.sleep(float(os.environ.get("ROLLUP_FIRST_DELAY", "120")))  # let the node join its cluster first
    while True:
        try:
            done = run_all(int(time.time() * 1000), lag_ms, margin_ms, max_buckets, os.environ.get("ROLLUP_SCHEMA", "doc"))
            if once or any(d["late"] for d in done):
                print("rollup: " + "; ".join(f"{d['resolution']}: {d['buckets']} buckets, {d['late']} late, "
                                            f"{d['rows']} rows, {d['ms']} ms" for d in done), flush=True)
        except (CrateError, OSError, ValueError) as e:  # no master yet, a node restarting: next run
            print(f"rollup: run failed, next in {every_s:g} s: {e}", file=sys.stderr, flush=True)
            if once:
                return 1
        if once:
            return 0
        time.sleep(every_s)


if __name__ == "__main__":
    sys.exit(main())
