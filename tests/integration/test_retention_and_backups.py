"""Retention and snapshots on a deployed stack, one pass of each script run now inside a CrateDB
task (they otherwise run once a day and every `everyHours`): an old month's partition is dropped
and the current ones are kept; a snapshot of the current slot is taken and listed as SUCCESS.
A stack that keeps every month, or has no backups, skips the part it does not have."""

from __future__ import annotations

import json
import re
import time

import pytest


def task_env(stack) -> dict[str, str]:
    host = stack.hosts_for("cratedb")[0]
    env = json.loads(host.ssh("sudo -n docker service inspect -f '{{json .Spec.TaskTemplate.ContainerSpec.Env}}' cratedb"))
    return dict(item.split("=", 1) for item in env)


def in_task(stack, command: str) -> str:
    host = stack.hosts_for("cratedb")[0]
    return host.ssh("sudo -n docker exec $(sudo -n docker ps -q -f label=com.docker.swarm.service.name=cratedb | head -n1) "
                    f"sh -c '{command}'", timeout=900)


def test_retention_drops_old_months_and_keeps_the_rest(stack):
    kept = dict(entry.split("=", 1) for entry in task_env(stack).get("RETENTION_TABLES", "").split())
    months = int(kept.get("doc.readings", "0"))  # retention.sh's `table=months` list
    if months == 0:
        pytest.skip("this stack keeps every month of raw readings (mds:cratedb.retentionMonths is 0)")
    device = f"retention-{int(time.time())}"
    old_ms = int((time.time() - (months + 2) * 31 * 86400) * 1000)
    status, body = stack.sql("INSERT INTO doc.readings (ts, agent, sensor, reading) VALUES (?, ?, 'old', {num = 1}), "
                             "(now(), ?, 'new', {num = 2})", args=[old_ms, device, device])
    assert status == 200 and body["rowcount"] == 2, body
    stack.sql("REFRESH TABLE doc.readings")
    report = in_task(stack, "RETENTION_FIRST_DELAY=0 RETENTION_ONCE=1 /mds/retention.sh")
    assert "retention: dropped partitions of doc.readings older than" in report, report
    stack.sql("REFRESH TABLE doc.readings")
    status, body = stack.sql("SELECT sensor FROM doc.readings WHERE agent = ? ORDER BY 1", args=[device])
    assert status == 200 and body["rows"] == [["new"]], body


def test_a_snapshot_of_the_current_slot_is_taken(stack):
    env = task_env(stack)
    if "BACKUP_REPOSITORY" not in env:
        pytest.skip("this stack has no backups (mds:cratedb.backup is not set)")
    report = in_task(stack, "BACKUP_FIRST_DELAY=0 BACKUP_ONCE=1 /mds/snapshot.sh")
    assert re.search(r"snapshot: (took|\S+ not taken here|\S+ exists already)", report), report
    status, body = stack.sql("SELECT name, state FROM sys.snapshots WHERE repository = ? ORDER BY started DESC LIMIT 1",
                             args=[env["BACKUP_REPOSITORY"]])
    assert status == 200 and body["rows"] and body["rows"][0][1] == "SUCCESS", body
    print(f"\nsnapshot {body['rows'][0][0]}: {report.strip().splitlines()[-1]}")
