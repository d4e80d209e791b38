"""swarm-node-retire.sh run for real against a `docker` that answers like a manager whose drained
node still runs a task (CrateDB waiting at its shutdown gate for GREEN)."""

from __future__ import annotations

import os
import subprocess

from components.remote import SCRIPTS_DIR

# The node's task keeps running for RUNNING_FOR calls of `node ps` after the drain.
MANAGER = """#!/usr/bin/env bash
calls=$(cat "$CALLS" 2>/dev/null || echo 0)
case "$1 $2" in
  "node inspect")
    case "$4" in
      *ID*) echo n2 ;;
      *Availability*) [ -e "$DRAINED" ] && echo drain || echo active ;;
      *Role*) echo worker ;;
    esac ;;
  "node update") touch "$DRAINED" ;;
  "node ps")
    echo $((calls + 1)) > "$CALLS"
    echo "Shutdown 2 hours ago"  # an earlier task of the node
    if [ "$calls" -lt "$RUNNING_FOR" ]; then echo "Running 5 minutes ago"; else echo "Shutdown 1 second ago"; fi ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


def retire(tmp_path, running_for: int, deadline: int = 30) -> subprocess.CompletedProcess:
    (tmp_path / "docker").write_text(MANAGER)
    (tmp_path / "docker").chmod(0o755)
    return subprocess.run(["bash", str(SCRIPTS_DIR / "swarm-node-retire.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "HOST_NAME": "lab4",
                               "NODE_ID": "n2", "DRAIN_DEADLINE": str(deadline), "RUNNING_FOR": str(running_for),
                               "CALLS": str(tmp_path / "calls"), "DRAINED": str(tmp_path / "drained")})


def test_the_host_leaves_only_after_its_drained_tasks_have_stopped(tmp_path):
    """On the real engine the drain returned in 0.25 s: the script waited on the tasks' desired
    state, which a drain sets to Shutdown at once, while CrateDB still ran at its shutdown gate."""
    result = retire(tmp_path, running_for=3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "swarm-node-retire lab4: changed: drained"
    assert int((tmp_path / "calls").read_text()) == 4  # three times still running, then stopped


def test_a_task_that_never_stops_fails_at_the_deadline(tmp_path):
    result = retire(tmp_path, running_for=1000, deadline=2)
    assert result.returncode == 1
    assert "tasks still run on the node after 2 s" in result.stderr
