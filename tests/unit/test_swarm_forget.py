"""swarm-forget.sh run for real against a `docker` that answers like a manager while other hosts
are forgotten at the same time (`pulumi destroy` deletes independent resources in parallel)."""

from __future__ import annotations

import os
import subprocess

from components.remote import SCRIPTS_DIR

# lab1 and lab3 are listed; lab3's entry is removed by another host's forget between the listing
# and its inspection; lab2 (the host forgotten here) is Down.
MANAGER = """#!/usr/bin/env bash
case "$1 $2" in
  "node ls") printf 'id-lab1\\nid-lab3\\nid-lab2\\n' ;;
  "node inspect")
    case "${@: -1}" in
      id-lab1) echo "id-lab1 lab1 ready" ;;
      id-lab2) echo "id-lab2 lab2 down" ;;
      *) echo "Error: No such node: ${@: -1}" >&2; exit 1 ;;
    esac ;;
  "node rm") echo "$3" >> "$REMOVED" ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


def test_a_node_removed_meanwhile_by_another_host_s_forget_is_not_an_error(tmp_path):
    """On the real engine, destroy failed: lab3's entry vanished between `node ls` and `node
    inspect`, and the script took Docker's "No such node" for a manager that does not answer."""
    (tmp_path / "docker").write_text(MANAGER)
    (tmp_path / "docker").chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPTS_DIR / "swarm-forget.sh")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "HOST_NAME": "lab2",
                                 "WAIT_FOR_DOWN": "1", "LEAVE_DEADLINE": "5", "REMOVED": str(tmp_path / "removed")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "swarm-forget lab2: changed: removed node id-lab2"
    assert (tmp_path / "removed").read_text() == "id-lab2\n"
