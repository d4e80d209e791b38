"""snapshot.sh (what every CrateDB node runs for scheduled backups), run for real against the CrateDB
contract double (tests/cratedb_double.py, not CrateDB): which snapshots it takes and which it drops."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cratedb_double import CrateDouble, CrateState

SCRIPT = Path(__file__).resolve().parents[2] / "components" / "cratedb_files" / "snapshot.sh"
REPO = "mds_backups"


def slot_name(every_hours: int = 24) -> str:
    period = every_hours * 3600
    return "mds-" + time.strftime("%Y%m%d-%H%M", time.gmtime(int(time.time()) // period * period))


def run_once(crate: CrateDouble, keep: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRATE_SQL_URL": f"{crate.url}/_sql", "BACKUP_REPOSITORY": REPO, "BACKUP_KEEP": str(keep),
           "BACKUP_EVERY_HOURS": "24", "BACKUP_FIRST_DELAY": "0", "BACKUP_ONCE": "1"}
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def snapshots(**states: tuple[str, int]) -> dict:
    return {(REPO, name.replace("_", "-")): {"state": state, "started": started} for name, (state, started) in states.items()}


@pytest.fixture
def crate():
    with CrateDouble(CrateState()) as double:
        yield double


def names(crate: CrateDouble) -> set[str]:
    return {name for repo, name in crate.state.snapshots}


def test_failed_snapshots_never_push_out_the_good_ones(crate):
    """Counting every snapshot, three failures in a row would have dropped both good ones."""
    crate.state.snapshots = snapshots(good_1=("SUCCESS", 1000), good_2=("SUCCESS", 2000), bad_1=("FAILED", 3000),
                                      bad_2=("PARTIAL", 4000), bad_3=("FAILED", 5000))
    result = run_once(crate, keep=2)
    assert result.returncode == 0, result.stderr
    assert names(crate) == {slot_name(), "good-2"}  # the new one and the newest good one; failures gone
    assert f"snapshot: took {REPO}.{slot_name()}" in result.stdout
    assert "dropped mds_backups.good-1 (keeping the newest 2 that succeeded)" in result.stdout


def test_while_the_repository_fails_every_good_snapshot_stays(crate):
    crate.state.failing_snapshots = True
    crate.state.snapshots = snapshots(good_1=("SUCCESS", 1000), good_2=("SUCCESS", 2000), bad_1=("FAILED", 3000))
    result = run_once(crate, keep=2)
    assert result.returncode == 0, result.stderr
    assert names(crate) == {"good-1", "good-2", "bad-1", slot_name()}  # nothing succeeded since: nothing dropped
    assert crate.state.snapshots[REPO, slot_name()]["state"] == "FAILED"
    assert "not taken here" in result.stdout


def test_a_slot_whose_snapshot_failed_is_taken_again(crate):
    crate.state.snapshots = {(REPO, slot_name()): {"state": "FAILED", "started": 1000}}
    result = run_once(crate, keep=3)
    assert result.returncode == 0, result.stderr
    assert crate.state.snapshots[REPO, slot_name()]["state"] == "SUCCESS"
    assert "it ended FAILED; taking it again" in result.stdout


def test_a_slot_already_taken_is_left_alone(crate):
    crate.state.snapshots = {(REPO, slot_name()): {"state": "SUCCESS", "started": 1000}}
    result = run_once(crate, keep=3)
    assert result.returncode == 0 and result.stdout == f"snapshot: {REPO}.{slot_name()} exists already (SUCCESS)\n"
    assert not any(s.startswith(("CREATE SNAPSHOT", "DROP SNAPSHOT")) for s in crate.state.statements)
