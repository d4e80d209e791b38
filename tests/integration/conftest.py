"""The post-deploy tier: tests against a deployed stack, read from its outputs.

The outputs come from `pulumi stack output --json --show-secrets`, saved to a file named by
MDS_STACK_OUTPUTS (or from the Pulumi CLI directly when MDS_STACK names a stack). SSH reaches the
hosts with the key in MDS_SSH_KEY_FILE, or the operator's ssh-agent and ssh config.
Without a deployed stack every test here skips with a one-line reason.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


LAB_KEY_FILE: dict[str, str] = {}  # the lab stack's generated key, written from its outputs


@dataclass(frozen=True)
class StackHost:
    name: str
    address: str
    user: str
    port: int
    services: tuple[str, ...]

    def ssh(self, command: str, *, input: str | None = None, timeout: float = 120) -> str:
        key = os.environ.get("MDS_SSH_KEY_FILE") or LAB_KEY_FILE.get("path")
        args = ["ssh", "-o", "BatchMode=yes", "-p", str(self.port)] + (["-i", key] if key else [])
        if LAB_KEY_FILE:  # lab hosts get new host keys with every `pulumi up`
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        result = subprocess.run([*args, f"{self.user}@{self.address}", command], input=input,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{self.name}: `{command[:80]}` failed: {result.stderr[-500:]}")
        return result.stdout


class DeployedStack:
    def __init__(self, outputs: dict) -> None:
        self.outputs = outputs
        self.hosts = [StackHost(h["name"], h["address"], h["sshUser"], int(h["sshPort"]), tuple(h["services"]))
                      for h in outputs["hosts"]]
        self.passwords: dict[str, str] = outputs.get("cratedbPasswords", {})

    def hosts_for(self, service: str) -> list[StackHost]:
        return [h for h in self.hosts if service in h.services]

    def sql(self, stmt: str, *, user: str | None = None, host: StackHost | None = None,
            args: list | None = None) -> tuple[int, dict]:
        """Run one statement over CrateDB's HTTP endpoint from inside a CrateDB container:
        as the local superuser, or as `user` with its password (Basic auth)."""
        host = host or self.hosts_for("cratedb")[0]
        auth = f"-u {shlex.quote(user)}:{shlex.quote(self.passwords[user])}" if user else ""
        body = json.dumps({"stmt": stmt} | ({"args": args} if args is not None else {}))
        out = host.ssh(
            "sudo -n docker exec -i $(sudo -n docker ps -q -f label=com.docker.swarm.service.name=cratedb | head -n1) "
            f"curl -s -w '\\n%{{http_code}}' {auth} -H 'Content-Type: application/json' --data-binary @- "
            "http://127.0.0.1:4200/_sql", input=body)
        text, _, status = out.rstrip("\n").rpartition("\n")
        try:
            return int(status), json.loads(text)
        except json.JSONDecodeError:
            return int(status), {"text": text}


def _load_outputs() -> dict | None:
    if os.environ.get("MDS_STACK_OUTPUTS"):
        return json.loads(Path(os.environ["MDS_STACK_OUTPUTS"]).read_text())
    if os.environ.get("MDS_STACK") and shutil.which("pulumi"):
        out = subprocess.run(["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", os.environ["MDS_STACK"]],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    return None


@pytest.fixture(scope="session")
def stack() -> DeployedStack:
    outputs = _load_outputs()
    if outputs is None:
        pytest.skip("no deployed stack: set MDS_STACK_OUTPUTS to `pulumi stack output --json --show-secrets` of one")
    if "labSshPrivateKey" in outputs and not os.environ.get("MDS_SSH_KEY_FILE"):
        key = Path(tempfile.mkdtemp()) / "lab_key"
        key.write_text(outputs["labSshPrivateKey"])
        key.chmod(0o600)
        LAB_KEY_FILE["path"] = str(key)
    return DeployedStack(outputs)
