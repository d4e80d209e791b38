"""After `pulumi destroy` (opt-in: MDS_AFTER_DESTROY=1, with the outputs saved before the destroy):
nothing of the stack is left and the hosts have left the swarm."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("MDS_AFTER_DESTROY") != "1",
                                reason="opt-in: set MDS_AFTER_DESTROY=1 after `pulumi destroy`")


def test_nothing_of_the_stack_is_left(stack):
    if "labSshPrivateKey" in stack.outputs:  # the lab's hosts themselves must be gone
        # (label mds.lab=stack, components/lab.py; the lab test tier's own carry mds.lab=tests)
        for kind in ("container", "network", "volume", "image"):  # the host image it built too
            left = subprocess.run(["docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []),
                                   "--filter", "label=mds.lab=stack"], capture_output=True, text=True, check=True).stdout.split()
            assert not left, f"lab {kind}s left: {left}"
        return
    for host in stack.hosts:
        info = json.loads(host.ssh("sudo -n docker info --format '{{json .Swarm}}'"))
        assert info["LocalNodeState"] == "inactive", f"{host.name} is still in a swarm"
        assert not host.ssh("sudo -n docker ps -q --filter label=com.docker.swarm.service.name").split()
