"""The contract of the backup statements: what the schema step (components/cratedb.py) and
`snapshot.sh` send for the repository and its snapshots, and what they rely on in the answers.

Against the CrateDB contract double by default; against a real CrateDB when MDS_CRATEDB_URL is set,
which also needs MDS_CRATEDB_REPO_PATH: a directory inside the node's `path.repo` (an fs repository
must live there). Everything is made under names of this run's own and dropped afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from components.cratedb import repository_sql
from stack.model import BackupSettings
from tests.contract.test_cratedb_contract import REAL, Crate, crate  # noqa: F401  (the fixture)

SNAPSHOT_SH = (Path(__file__).resolve().parents[2] / "components" / "cratedb_files" / "snapshot.sh").read_text()


@pytest.fixture(scope="module")
def repo(crate):  # noqa: F811
    if REAL and not os.environ.get("MDS_CRATEDB_REPO_PATH"):
        pytest.skip("a real CrateDB needs MDS_CRATEDB_REPO_PATH, a directory inside its path.repo")
    base = os.environ.get("MDS_CRATEDB_REPO_PATH", "/snapshots").rstrip("/")
    name = f"mds_contract_{secrets.token_hex(4)}"
    yield name, f"{base}/{name}"
    crate.sql(f"DROP REPOSITORY {name}")


def statements(name: str, location: str) -> tuple[str, str, str]:
    create, alter, finished = repository_sql(BackupSettings(type="fs", location="/unused"), {})
    return tuple(s.replace("mds_backups", name).replace("/snapshots/mds", location) for s in (create, alter, finished))


def found(crate: Crate, query: str) -> int:  # noqa: F811
    return crate.ok(query)["rowcount"]


def test_the_repository_is_created_once_found_as_configured_and_altered_in_place(crate, repo):  # noqa: F811
    name, location = repo
    create, alter, finished = statements(name, location)
    assert crate.sql(create)[0] == 200
    assert found(crate, finished) == 1  # the schema step's "already as configured": nothing to do
    status, answer = crate.sql(create)
    assert status == 409, answer  # no IF NOT EXISTS: the step's conflict path takes over
    moved = location + "_moved"
    assert crate.sql(alter.replace(location, moved))[0] == 200
    assert found(crate, finished) == 0  # settings differ: the next schema run alters it back
    assert found(crate, finished.replace(location, moved)) == 1


def test_snapshot_statements_and_the_answers_snapshot_sh_reads(crate, repo):  # noqa: F811
    name, location = repo
    create, _, _ = statements(name, location)
    crate.sql(create)
    snapshot = "mds-20261201-0000"
    sent = {
        "take": f'CREATE SNAPSHOT {name}."{snapshot}" ALL WITH (wait_for_completion = true)',
        "state": f"SELECT state FROM sys.snapshots WHERE repository = '{name}' AND name = '{snapshot}'",
        "beyond": f"SELECT name FROM sys.snapshots WHERE repository = '{name}' AND state = 'SUCCESS' "
                  "ORDER BY started DESC LIMIT 10000 OFFSET 1",
        "newest": f"SELECT max(started) FROM sys.snapshots WHERE repository = '{name}' AND state = 'SUCCESS'",
        "drop": f'DROP SNAPSHOT {name}."{snapshot}"',
    }
    # The same statements as snapshot.sh writes them (its shell variables in place of the values).
    for stmt in sent.values():
        shape = re.escape(stmt.replace(name, "§R").replace(snapshot, "§N").replace("OFFSET 1", "OFFSET §K"))
        shape = shape.replace("§R", r"\$\{repo\}").replace("§N", r"\$\{?(name|1)\}?").replace("§K", r"\$\{BACKUP_KEEP\}")
        shape = shape.replace('"', r'\\\\\\"')  # the script writes \\\" for a quote inside its JSON
        assert re.search(shape, SNAPSHOT_SH), stmt
    assert crate.sql(sent["newest"])[1]["rows"] == [[None]]  # none yet: the script then drops no failed one
    assert crate.sql(sent["take"])[0] == 200
    assert crate.ok(sent["state"])["rows"] == [["SUCCESS"]]
    assert crate.ok(sent["beyond"])["rows"] == []  # one snapshot, keep 1: nothing beyond
    (newest,) = crate.ok(sent["newest"])["rows"][0]
    assert isinstance(newest, int) and newest > 1_700_000_000_000  # epoch milliseconds
    failed = crate.ok(f"SELECT name FROM sys.snapshots WHERE repository = '{name}' AND state IN ('FAILED', 'PARTIAL') "
                      f"AND started < {newest}")
    assert failed["rows"] == []
    assert crate.sql(sent["take"])[0] == 409  # a slot taken already
    assert crate.sql(sent["drop"])[0] == 200
    assert crate.ok(sent["state"])["rows"] == []
