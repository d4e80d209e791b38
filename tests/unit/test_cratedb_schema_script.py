"""cratedb-schema.sh, run for real against the CrateDB contract double (tests/cratedb_double.py).

The script talks to CrateDB through `docker exec <crate container> curl`; here a stand-in `docker`
on PATH runs that curl against the double. What is tested is the script: its waits, the 409 paths,
idempotence and its report. CrateDB's own answers are the double's (see its docstring).
"""

import base64
import os
import re
import stat
import subprocess
import threading
import time

import pytest

from tests.cratedb_double import CrateDouble, CrateState
from tests.program import plain
from tests.unit.conftest import hosts

FAKE_DOCKER = """#!/usr/bin/env bash
case "$1" in
  ps) echo fake-crate-container ;;
  exec) shift 3; args=("$@"); exec "${args[@]/http:\\/\\/127.0.0.1:4200/$CRATE_URL}" ;;
  *) echo "fake docker: $*" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def schema_command(deploy):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups"}}})
    schema = declared["cratedb-schema"]
    return schema.inputs["create"], plain(schema.inputs["stdin"])


def on_current_settings(command: str, nodes: int = 3, **state) -> CrateState:
    """The double's nodes, started with the settings version this command waits for (crate.yml's
    node attribute, components/cratedb.py)."""
    version = re.search(r"SETTINGS_VERSION=(\w+)", command).group(1)
    return CrateState(nodes=nodes, node_attributes={"mds_settings": version}, **state)


def run(command, stdin, crate, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CRATE_URL": crate.url}
    return subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_first_run_creates_everything_and_second_run_changes_nothing(schema_command, tmp_path):
    command, stdin = schema_command
    with CrateDouble(on_current_settings(command, 3)) as crate:
        first = run(command, stdin, crate, tmp_path)
        assert first.returncode == 0, first.stderr
        report = first.stdout.strip()
        assert report.startswith("cratedb-schema node1: changed: ")
        for item in ("table doc.readings", "user admin", "user ingest", "user grafana",
                     "privilege DML on doc.readings to ingest", "privilege DQL on doc.readings to ingest",
                     "privilege DQL on sys to grafana", "repository mds_backups", "replicas of doc.readings: 1"):
            assert item in report
        assert set(crate.state.users) == {"admin", "ingest", "grafana"}

        second = run(command, stdin, crate, tmp_path)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "cratedb-schema node1: unchanged"
        # The second run set the passwords again (409 -> ALTER USER) and left the repository alone.
        assert sum(s.startswith("ALTER USER") for s in crate.state.statements) == 3
        assert not any(s.startswith(("DROP REPOSITORY", "ALTER REPOSITORY")) for s in crate.state.statements)
        assert sum(s.startswith("CREATE REPOSITORY") for s in crate.state.statements) == 1


def test_a_changed_backup_location_alters_the_repository_and_keeps_its_snapshots(deploy, tmp_path):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups"}}})
    command, stdin = declared["cratedb-schema"].inputs["create"], plain(declared["cratedb-schema"].inputs["stdin"])
    with CrateDouble(on_current_settings(command, 3)) as crate:
        assert run(command, stdin, crate, tmp_path).returncode == 0
        crate.state.repositories["mds_backups"][1]["location"] = "/snapshots/elsewhere"  # as an older stack left it
        crate.state.snapshots["mds_backups", "mds-20261130-0000"] = {"state": "SUCCESS", "started": 1}
        again = run(command, stdin, crate, tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "cratedb-schema node1: changed: altered repository mds_backups"
        assert crate.state.repositories["mds_backups"] == ("fs", {"location": "/snapshots/mds", "compress": "true"})
        assert ("mds_backups", "mds-20261130-0000") in crate.state.snapshots
        assert not any(s.startswith("DROP REPOSITORY") for s in crate.state.statements)


def test_a_changed_replica_count_reaches_the_existing_table(deploy, tmp_path):
    """CREATE TABLE IF NOT EXISTS keeps a table as it is; the ALTER step applies the new count."""
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"replicas": 1}})
    command, stdin = declared["cratedb-schema"].inputs["create"], plain(declared["cratedb-schema"].inputs["stdin"])
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"replicas": 2}})
    stdin_two = plain(declared["cratedb-schema"].inputs["stdin"])
    with CrateDouble(on_current_settings(command, 3)) as crate:
        assert run(command, stdin, crate, tmp_path).returncode == 0 and crate.state.replicas["doc.readings"] == "1"
        again = run(command, stdin_two, crate, tmp_path)
        assert again.returncode == 0 and crate.state.replicas["doc.readings"] == "2"
        assert "changed: replicas of doc.readings: 2" in again.stdout


def test_changed_password_is_applied(schema_command, tmp_path):
    command, stdin = schema_command
    with CrateDouble(on_current_settings(command)) as crate:
        run(command, stdin, crate, tmp_path)
        crate.state.users["ingest"] = "an-older-password-000"
        assert run(command, stdin, crate, tmp_path).returncode == 0
        assert crate.state.users["ingest"] == "generated-cratedb-password-ingest"


def test_a_failing_step_fails_without_printing_secrets(schema_command, tmp_path):
    command, stdin = schema_command
    broken = stdin.replace("GRANT DML, DQL ON TABLE doc.readings TO ingest", "GRANT NONSENSE TO ingest")
    with CrateDouble(on_current_settings(command)) as crate:
        result = run(command, broken, crate, tmp_path)
    assert result.returncode != 0
    # A step without a secret says what CrateDB said; no step ever prints a password.
    assert "grant: GRANT NONSENSE TO ingest: HTTP 400: " in result.stderr and "SQLParseException" in result.stderr
    assert "generated-cratedb-password" not in result.stdout + result.stderr


def test_a_failing_step_with_a_password_does_not_show_crate_s_message(schema_command, tmp_path):
    command, stdin = schema_command
    broken = stdin.replace("CREATE USER ingest WITH", "CREATE USER ingest WITH BROKEN")
    with CrateDouble(on_current_settings(command)) as crate:
        result = run(command, broken, crate, tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().endswith("user ingest: HTTP 400")
    assert "generated-cratedb-password" not in result.stdout + result.stderr


def test_waits_for_every_node_then_gives_up_with_a_reason(schema_command, tmp_path):
    command, stdin = schema_command
    command = command.replace("DEADLINE=1800", "DEADLINE=4")
    with CrateDouble(on_current_settings(command, 2)) as crate:
        result = run(command, stdin, crate, tmp_path)
    assert result.returncode != 0
    assert "2 of 3 CrateDB nodes run the current settings after 4 s" in result.stderr
    assert crate.state.users == {}  # nothing applied to a cluster that is not whole


def test_waits_until_a_rolling_update_has_restarted_every_node(schema_command, tmp_path):
    """After an edit of crate.yml (here: backups added, so path.repo), Swarm rolls the nodes one by
    one while the schema step already runs: an fs repository created on a node without path.repo
    fails. The step waits until every node reports the new settings (seen on the real engine)."""
    command, stdin = schema_command
    with CrateDouble(on_current_settings(command, nodes_on_old_settings=3)) as crate:
        def roll():
            for left in (2, 1, 0):
                time.sleep(1)
                crate.state.nodes_on_old_settings = left
        rolling = threading.Thread(target=roll)
        rolling.start()
        result = run(command, stdin, crate, tmp_path)
        rolling.join()
    assert result.returncode == 0, result.stderr
    assert crate.state.nodes_on_old_settings == 0 and "repository mds_backups" in result.stdout


def test_every_node_starts_with_the_settings_version_the_schema_step_waits_for(deploy):
    from components.cratedb import settings_version
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups"}}})
    crate_yml = base64.b64decode(plain(declared["cratedb-crate-yml"].inputs["data"])).decode()
    version = settings_version(crate_yml)
    assert f"node.attr.mds_settings: {version}" in crate_yml and f"SETTINGS_VERSION={version}" in declared["cratedb-schema"].inputs["create"]
    declared, _ = deploy({"hosts": hosts(3)})  # other settings, another version
    assert f"SETTINGS_VERSION={version}" not in declared["cratedb-schema"].inputs["create"]


# The first task stops after three requests (a rolling update replaced it): `docker exec` on it
# fails as Docker does, `docker inspect` says it is not running, and `docker ps` finds the new one.
ROLLING_DOCKER = """#!/usr/bin/env bash
count_file="$STATE_DIR/execs"
case "$1" in
  ps) if [ -f "$STATE_DIR/stopped" ]; then echo new-task; else echo old-task; fi ;;
  inspect) if [ "${@: -1}" = old-task ] && [ -f "$STATE_DIR/stopped" ]; then echo false; else echo true; fi ;;
  exec)
    if [ "$3" = old-task ]; then
      n=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$count_file"
      if [ "$n" -gt 3 ]; then touch "$STATE_DIR/stopped"; echo "Error response from daemon: Container old-task is not running" >&2; exit 1; fi
    fi
    shift 3; args=("$@"); exec "${args[@]/http:\\/\\/127.0.0.1:4200/$CRATE_URL}" ;;
  *) echo "fake docker: $*" >&2; exit 1 ;;
esac
"""


def test_a_task_that_stops_during_the_run_is_replaced_by_the_new_one(schema_command, tmp_path):
    """A rolling update running at the same time stops the task the script picked: it asks the new
    task and finishes within its deadline (it failed with "Container … is not running")."""
    command, stdin = schema_command
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(ROLLING_DOCKER)
    (bin_dir / "docker").chmod(stat.S_IRWXU)
    with CrateDouble(on_current_settings(command, 3)) as crate:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CRATE_URL": crate.url, "STATE_DIR": str(tmp_path)}
        result = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "stopped").exists()  # the old task did stop midway
        assert "the CrateDB task old-task stopped" in result.stderr
        assert set(crate.state.users) == {"admin", "ingest", "grafana"} and "doc.readings" in crate.state.replicas
