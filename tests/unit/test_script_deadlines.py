"""Every remote script ends by itself: pulumi-command kills no hanging command (it has no timeout),
so a hung Docker engine on one host would hang `pulumi up` and `pulumi destroy` for ever. Each
script runs here for real with a `docker` on its PATH that never answers."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from components.remote import SCRIPTS_DIR

# The scripts that are run against a hung engine here, with the environment and stdin they need.
# (provision-host.sh changes the machine it runs on; it is checked by the rule below only.)
HUNG = {
    "swarm-init.sh": ({"ADVERTISE_ADDR": "192.0.2.1", "SWARM_PORT": "2377"}, ""),
    "swarm-join.sh": ({"ADVERTISE_ADDR": "192.0.2.2", "MANAGER_ADDR": "192.0.2.1", "SWARM_PORT": "2377",
                       "CLUSTER_ID": "c1", "JOIN_DEADLINE": "5"}, "SWMTKN-x\n"),
    "swarm-leave.sh": ({}, ""),
    "swarm-node.sh": ({"NODE_ID": "n1", "ROLE": "manager", "NODE_DEADLINE": "5", "LABELS": "mds.ingest=true"}, ""),
    "swarm-node-retire.sh": ({"NODE_ID": "n1", "DRAIN_DEADLINE": "5"}, ""),
    "swarm-forget.sh": ({"LEAVE_DEADLINE": "5", "WAIT_FOR_DOWN": "1"}, ""),
    "cratedb-schema.sh": ({"SERVICE": "cratedb", "EXPECTED_NODES": "3", "DEADLINE": "5"}, "table x\t{}\t[]\n"),
    "ingest-image.sh": ({"IMAGE": "mds-ingest:abc", "BASE_IMAGE": "debian:bookworm-slim"}, ""),
}


def test_every_script_that_calls_docker_bounds_it():
    for path in sorted(SCRIPTS_DIR.glob("*.sh")):
        text = path.read_text()
        calls = [line for line in text.splitlines() if re.search(r"(^|[\s(|;&`$])docker\s", line) and not line.lstrip().startswith("#")]
        if calls:
            assert 'docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }' in text, path.name
            assert text.index("docker() {") < text.index("main() {"), path.name
        for line in text.splitlines():  # commands that wait on a daemon or a network, bounded too
            command = re.sub(r'"[^"$]*"', '""', line)  # not the words of a message
            if re.search(r"\b(apt-get (update|install)|systemctl (re)?start|service \S+ start|\$pm\" install|pip\" install)", command):
                assert "timeout " in line, f"{path.name}: {line.strip()}"
        assert "xargs -r docker" not in text, f"{path.name}: xargs would run docker past the bound"


@pytest.fixture
def hung_docker(tmp_path):
    """A PATH whose `docker` never answers (and `timeout` is the real one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text("#!/bin/sh\nexec sleep 3600\n")
    fake.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("script", sorted(HUNG))
def test_a_script_ends_by_itself_when_the_engine_hangs(script, hung_docker):
    env, stdin = HUNG[script]
    if script == "ingest-image.sh":
        stdin = subprocess.run("tar -cz --files-from /dev/null | base64", shell=True, capture_output=True, text=True,
                               check=True).stdout
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPTS_DIR / script)], input=stdin, capture_output=True, text=True,
                            env={"PATH": hung_docker, "HOST_NAME": "h1", "DOCKER_TIMEOUT": "1", **env}, timeout=60)
    took = time.monotonic() - started
    assert result.returncode != 0, f"{script} claimed success against a hung engine: {result.stdout}"
    assert took < 30, f"{script} took {took:.0f} s"
    assert "error" in result.stderr or result.returncode == 124, result.stderr
