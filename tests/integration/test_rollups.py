"""Roll-ups on a deployed stack: the job in the CrateDB tasks keeps the minute and hour tables up to
date, and a closed minute's row equals what the raw readings of that minute give."""

from __future__ import annotations

import time

import pytest

from stack.constants import READINGS_TABLE, ROLLUP_STATUS_TABLE, ROLLUP_TABLES

WITHIN_S = 420  # the job's first run waits 120 s after a node starts, then runs every minute


def test_the_minute_roll_up_follows_now_and_equals_the_raw_readings(stack):
    deadline = time.monotonic() + WITHIN_S
    while True:
        status, body = stack.sql(f"SELECT watermark, extract(epoch from now()) * 1000 FROM {ROLLUP_STATUS_TABLE} "
                                 "WHERE resolution = '1m'")
        if status == 200 and body["rows"] and body["rows"][0][0] and body["rows"][0][1] - body["rows"][0][0] < 300_000:
            watermark = body["rows"][0][0]
            break
        assert time.monotonic() < deadline, f"no minute roll-up within 5 min of now after {WITHIN_S} s: {status} {body}"
        time.sleep(10)
    bucket = watermark - 120_000  # a closed minute, two before the watermark
    status, rolled = stack.sql(f'SELECT agent, sensor, "count", "min", "max", readings FROM {ROLLUP_TABLES["1m"]} '
                               "WHERE bucket = ? ORDER BY 1, 2", args=[bucket])
    assert status == 200, rolled
    status, raw = stack.sql(f"SELECT agent, sensor, count(reading['num']), min(reading['num']), max(reading['num']), count(*) "
                            f"FROM {READINGS_TABLE} WHERE ts >= ? AND ts < ? GROUP BY 1, 2 ORDER BY 1, 2",
                            args=[bucket, bucket + 60_000])
    assert status == 200, raw
    if not raw["rows"]:
        pytest.skip("no reading in the minute checked (a stack without an agent sending)")
    assert rolled["rows"] == raw["rows"]
