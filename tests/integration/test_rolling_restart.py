"""A rolling restart of CrateDB on a deployed stack, as `pulumi up` does it when a node's settings
change: `docker service update --force cratedb` while the load generator writes through every
ingest endpoint. Swarm replaces one task at a time (update_config), and each stopping node waits
for GREEN first (start-crate.sh's shutdown gate), so the cluster is never RED, never misses more
than one node, keeps acknowledging writes, and stores every acknowledged reading exactly once."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.under_load import Load, health

LOAD_SECONDS = 900  # longer than the restart: acknowledgements are watched throughout it
UPDATE_WITHIN_S = 1500


def test_a_rolling_restart_keeps_writes_acknowledged_and_loses_nothing(stack, tmp_path):
    crate_hosts = [h for h in stack.hosts_for("cratedb") if "ingest" in h.services]
    if len(crate_hosts) < 3:
        pytest.skip("a rolling restart under load needs at least 3 hosts carrying CrateDB and the ingest")
    manager = stack.hosts[next(i for i, h in enumerate(stack.outputs["hosts"]) if h["role"] == "manager")]
    assert health(stack, crate_hosts[0]) == "GREEN", "the cluster must be GREEN before the test"
    load = Load(stack, tmp_path, "rolling", LOAD_SECONDS, rate=500)
    time.sleep(15)
    started = time.monotonic()
    manager.ssh("sudo -n docker service update --force --detach cratedb")
    states, nodes_seen, update_state = [], [], ""
    while time.monotonic() - started < UPDATE_WITHIN_S:
        update_state = json.loads(manager.ssh(
            "sudo -n docker service inspect -f '{{json .UpdateStatus}}' cratedb") or "null") or {}
        for host in crate_hosts:  # whichever node answers
            state = health(stack, host)
            if state is not None:
                states.append(state)
                status, body = stack.sql("SELECT count(*) FROM sys.nodes", host=host)
                if status == 200:
                    nodes_seen.append(body["rows"][0][0])
                break
        else:
            states.append(None)
        if update_state.get("State") in ("completed", "paused", "rollback_completed"):
            break
        time.sleep(3)
    took = time.monotonic() - started
    assert update_state.get("State") == "completed", f"the rolling update ended {update_state} after {took:.0f} s"
    deadline = time.monotonic() + 600
    while health(stack, crate_hosts[0]) != "GREEN":
        assert time.monotonic() < deadline, "not GREEN within 600 s after the update"
        time.sleep(5)
    pause = load.longest_pause()
    load.run.process.terminate()  # the load generator stops cleanly: its batches in flight are delivered
    acked, stored, missing = load.check_stored(crate_hosts[0])
    print(f"\nrolling restart of {len(crate_hosts)} nodes: {took:.0f} s; health seen {sorted(set(map(str, states)))}, "
          f"fewest nodes {min(nodes_seen)}; longest pause in acknowledgements {pause:.1f} s; "
          f"acknowledged {acked}, stored {stored}, missing {missing}")
    assert "RED" not in states and None not in states
    assert min(nodes_seen) >= len(crate_hosts) - 1  # one node at a time
    assert pause < 15  # writes acknowledged throughout (agents would see 503s at most briefly)
    assert missing == 0 and acked > 10_000

