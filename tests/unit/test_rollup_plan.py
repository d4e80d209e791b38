"""What one run of the roll-up job (components/cratedb_files/rollup.py) takes on: its buckets
forward from the watermark, bounded, and the window of source rows it looks at for late data."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from components.cratedb import FILES

spec = importlib.util.spec_from_file_location("rollup_job_plan", FILES / "rollup.py")
job = importlib.util.module_from_spec(spec)
sys.modules["rollup_job_plan"] = job
spec.loader.exec_module(job)
MINUTES, HOURS = job.resolutions("doc")
M, H = 60_000, 3_600_000
NOW = 1_800_000_000_000 + 37_000  # 37 s into a minute


def plan(resolution=MINUTES, status=None, oldest=None, **kw):
    return job.plan(resolution, NOW, status, oldest, **({"lag_ms": 60_000, "margin_ms": 10_000, "max_buckets": 1440} | kw))


def test_the_first_run_starts_at_the_oldest_row_and_looks_at_no_late_rows():
    step = plan(oldest=NOW - 5 * M - 123)
    assert step.start == (NOW - 5 * M) // M * M and step.upper == (NOW - 60_000) // M * M
    assert step.seen_from == step.seen_to == NOW - 10_000  # nothing before the first run is late


def test_an_empty_table_starts_at_now_minus_the_lag():
    step = plan(oldest=None)
    assert step.start == step.upper == (NOW - 60_000) // M * M


def test_a_run_resumes_at_its_watermark_and_looks_at_rows_written_since():
    step = plan(status=(NOW - 10 * M // M * M, NOW - 70_000))
    assert (step.start, step.seen_from, step.seen_to) == (NOW - 10 * M // M * M, NOW - 70_000, NOW - 10_000)


def test_a_backlog_is_caught_up_in_bounded_runs():
    oldest = NOW - 365 * 24 * H
    step = plan(oldest=oldest, max_buckets=1440)
    assert step.upper - step.start == 1440 * M  # a day of minutes, not a year


def test_hours_stop_at_the_minutes_watermark_and_never_move_back():
    minutes_done = NOW - 3 * H - 5 * M
    step = plan(HOURS, status=(NOW - 6 * H // H * H, NOW - 30_000), ceiling_ms=minutes_done)
    assert step.upper == minutes_done // H * H
    behind = plan(HOURS, status=(NOW - H // H * H, NOW - 30_000), ceiling_ms=NOW - 3 * H)
    assert behind.upper == behind.start  # the minutes are behind: nothing forward, no step back


@pytest.mark.parametrize("lag_s", [0, 60, 3600])
def test_no_bucket_closer_to_now_than_the_lag_is_rolled_up(lag_s):
    step = plan(oldest=NOW - 10 * H, lag_ms=lag_s * 1000, max_buckets=10**6)
    assert step.upper <= NOW - lag_s * 1000 and step.upper % M == 0
