"""The roll-up job (components/cratedb_files/rollup.py) against a real CrateDB: its statements run,
every minute and hour row equals what the raw rows it summarizes give (min, max, sum, count, the
last value and its time, the readings of any type), late readings update their buckets, and runs
repeated or at the same time write the same rows. In a schema of its own, dropped afterwards.

Needs MDS_CRATEDB_URL: the contract double does not aggregate, so in CI these tests skip."""

from __future__ import annotations

import importlib.util
import re
import random
import secrets
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.contract.test_cratedb_contract import REAL, Crate, readings_ddl

pytestmark = pytest.mark.skipif(not REAL, reason="needs a real CrateDB (MDS_CRATEDB_URL): the double runs no aggregation")
ROOT = Path(__file__).resolve().parents[2]
MARGIN_MS, LAG_MS = 2_000, 60_000


def load_job():
    spec = importlib.util.spec_from_file_location("rollup_job", ROOT / "components" / "cratedb_files" / "rollup.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules["rollup_job"] = job
    spec.loader.exec_module(job)
    job.URL = REAL + "/_sql"
    return job


def rollup_ddl(schema: str) -> list[str]:
    text = (ROOT / "components" / "sql" / "rollups.sql").read_text().replace("doc.", f"{schema}.").replace("{replicas}", "'0'")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.fixture(scope="module")
def schema():
    crate, name = Crate(REAL), f"mds_rollup_{secrets.token_hex(3)}"
    crate.ok(readings_ddl(f"{name}.readings"))
    for ddl in rollup_ddl(name):
        crate.ok(ddl)
    yield crate, name
    for table in ("readings", "readings_1m", "readings_1h", "rollup_status"):
        crate.ok(f"DROP TABLE IF EXISTS {name}.{table}")


def insert(crate: Crate, schema: str, rows: list) -> None:
    crate.ok(f"INSERT INTO {schema}.readings (ts, agent, sensor, reading, unit, meta) VALUES (?, ?, ?, ?, ?, ?)",
             bulk_args=rows)
    crate.ok(f"REFRESH TABLE {schema}.readings")


def expected(rows: list, bucket_ms: int, before: int) -> dict:
    """What the roll-up of these raw rows must hold, per (agent, sensor, bucket)."""
    out: dict = {}
    for ts, agent, sensor, reading, _, _ in rows:
        bucket = ts // bucket_ms * bucket_ms
        if bucket >= before:
            continue
        e = out.setdefault((agent, sensor, bucket), {"values": [], "readings": 0})
        e["readings"] += 1
        if "num" in reading:
            e["values"].append((ts, reading["num"]))
    return out


def stored(crate: Crate, table: str) -> dict:
    body = crate.ok(f'SELECT agent, sensor, bucket, "min", "max", "sum", "count", "last", last_ts, readings FROM {table}')
    return {(a, s, b): (lo, hi, total, n, last, last_ts, readings) for a, s, b, lo, hi, total, n, last, last_ts, readings in body["rows"]}


def same(have: dict, want: dict) -> None:
    """Equal rows; the sum only to its last bits, which depend on the order CrateDB adds the shards'
    parts in."""
    assert set(have) == set(want), set(have) ^ set(want)
    for key, (lo, hi, total, n, last, last_ts, readings) in have.items():
        assert (lo, hi, n, last, last_ts, readings) == want[key][:2] + want[key][3:], key
        assert total == (None if want[key][2] is None else pytest.approx(want[key][2], rel=1e-12)), key


def check(crate: Crate, table: str, rows: list, bucket_ms: int, before: int) -> int:
    want, have = expected(rows, bucket_ms, before), stored(crate, table)
    assert set(have) == set(want), (set(want) ^ set(have))
    for key, e in want.items():
        lo, hi, total, n, last, last_ts, readings = have[key]
        values = [v for _, v in e["values"]]
        assert readings == e["readings"] and n == len(values), key
        if values:
            newest = max(e["values"])
            assert (lo, hi, last, last_ts) == (min(values), max(values), newest[1], newest[0]), key
            assert total == pytest.approx(sum(values), rel=1e-12), key  # the mean is total / n
        else:
            assert (lo, hi, total, last, last_ts) == (None, None, None, None, None), key
    return len(want)


def raw_rows(now: int, agents: int = 4, hours: float = 2.5) -> list:
    rng = random.Random(7)
    rows, ts = [], now - int(hours * 3_600_000)
    while ts < now - 5_000:
        for a in range(agents):
            rows.append([ts + a, f"agent-{a}", "temperature", {"num": round(rng.uniform(-5, 40), 3)}, "celsius", {}])
            if rng.random() < 0.05:
                rows.append([ts + a, f"agent-{a}", "door", {"txt": rng.choice(["open", "shut"])}, None, {}])
        ts += rng.randint(2_000, 20_000)
    return rows


def test_every_roll_up_row_equals_the_raw_rows_it_summarizes(schema):
    crate, name = schema
    job, now = load_job(), int(time.time() * 1000)
    rows = raw_rows(now)
    insert(crate, name, rows)
    minutes, hours = job.run_all(now, LAG_MS, MARGIN_MS, 10_000, name)
    assert minutes["watermark"] == (now - LAG_MS) // 60_000 * 60_000 and minutes["buckets"] > 100
    assert hours["watermark"] == minutes["watermark"] // 3_600_000 * 3_600_000
    assert check(crate, f"{name}.readings_1m", rows, 60_000, minutes["watermark"]) > 100
    assert check(crate, f"{name}.readings_1h", rows, 3_600_000, hours["watermark"]) >= 4
    status = crate.ok(f"SELECT resolution, watermark, last_run_buckets FROM {name}.rollup_status ORDER BY 1")["rows"]
    assert status == [["1h", hours["watermark"], hours["buckets"]], ["1m", minutes["watermark"], minutes["buckets"]]]


def test_late_readings_are_rolled_up_by_when_they_arrived(schema):
    """An agent offline for two hours delivers then: its readings belong to buckets long complete."""
    crate, name = schema
    job = load_job()
    time.sleep(MARGIN_MS / 1000 + 0.5)  # rows younger than the margin wait for the next run
    job.run_all(int(time.time() * 1000), LAG_MS, MARGIN_MS, 10_000, name)  # up to date
    before, now = stored(crate, f"{name}.readings_1m"), int(time.time() * 1000)
    late = [[now - 2 * 3_600_000 + 7_000 + i, "agent-offline", "temperature", {"num": 50.0 + i}, "celsius", {}]
            for i in range(3)]
    insert(crate, name, late)
    time.sleep(MARGIN_MS / 1000 + 0.5)
    minutes, hours = job.run_all(int(time.time() * 1000), LAG_MS, MARGIN_MS, 10_000, name)
    assert minutes["late"] == 1 and hours["late"] >= 1, (minutes, hours)
    after = stored(crate, f"{name}.readings_1m")
    bucket = late[0][0] // 60_000 * 60_000
    assert after[("agent-offline", "temperature", bucket)] == (50.0, 52.0, 153.0, 3, 52.0, late[2][0], 3)
    same({k: v for k, v in after.items() if k[0] != "agent-offline"}, before)  # nothing else changed
    hour = stored(crate, f"{name}.readings_1h")[("agent-offline", "temperature", late[0][0] // 3_600_000 * 3_600_000)]
    assert hour[:4] == (50.0, 52.0, 153.0, 3)


def test_runs_repeated_or_at_the_same_time_write_the_same_rows(schema):
    crate, name = schema
    job = load_job()
    now = int(time.time() * 1000)
    threads = [threading.Thread(target=job.run_all, args=(now, LAG_MS, MARGIN_MS, 10_000, name)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = (stored(crate, f"{name}.readings_1m"), stored(crate, f"{name}.readings_1h"))
    crate.ok(f"DELETE FROM {name}.rollup_status")  # as if no run had happened: all again from the oldest row
    crate.ok(f"REFRESH TABLE {name}.rollup_status")
    job.run_all(now, LAG_MS, MARGIN_MS, 10_000, name)
    crate.ok(f"REFRESH TABLE {name}.readings_1m")
    again = (stored(crate, f"{name}.readings_1m"), stored(crate, f"{name}.readings_1h"))
    for old, new in zip(first, again):
        same(new, old)


@pytest.mark.parametrize("interval_ms", [60_000, 300_000, 3_600_000])
def test_panels_through_the_roll_ups_show_what_the_raw_readings_show_up_to_now(schema, interval_ms):
    """The dashboards' roll-up queries, for a range ending now, give per interval the same counts
    and means as the raw readings alone: no gap and no dip at the recent end."""
    from components.grafana_dashboards import dashboards
    from stack.model import AlertSettings
    crate, name = schema
    load_job().run_all(int(time.time() * 1000), LAG_MS, MARGIN_MS, 10_000, name)
    now = int(time.time() * 1000)
    frm, to = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t / 1000)) for t in (now - 4 * 3_600_000, now)]
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in dashboards(AlertSettings())["sensors.json"]["panels"]}
    for title in ("Values over time", "Readings per minute"):
        sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{frm}' AND '{to}'", panels[title])
        sql = sql.replace("$__interval_ms", str(interval_ms)).replace("doc.", f"{name}.")
        through_rollups = crate.ok(sql)["rows"]
        raw_only = crate.ok(re.sub(r"coalesce\(\(SELECT watermark FROM [\w.]+ WHERE resolution = '1[mh]'\), 0\)", "0", sql))["rows"]
        assert [row[:-1] for row in through_rollups] == [row[:-1] for row in raw_only], title
        assert [row[-1] for row in through_rollups] == pytest.approx([row[-1] for row in raw_only], rel=1e-9), title
        assert through_rollups and through_rollups[-1][0] >= (now - 2 * interval_ms - LAG_MS) // interval_ms * interval_ms, title
