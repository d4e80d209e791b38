import re

import pytest

from tests.program import Declared, RecordingMocks, run_program

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nunit-test-key\n-----END OPENSSH PRIVATE KEY-----\n"


class UnitMocks(RecordingMocks):
    """Commands answer the way their scripts do: a status line, then the data line."""

    def outputs_for(self, resource: Declared) -> dict:
        outputs = dict(resource.inputs)
        if resource.typ == "command:remote:Command":
            if resource.name.endswith("-init"):
                data = '{"node_id": "node-init", "manager_token": "SWMTKN-manager", "worker_token": "SWMTKN-worker"}'
            elif m := re.search(r"-join-(.+)$", resource.name):
                data = f'{{"node_id": "node-{m.group(1)}"}}'
            else:
                data = ""
            outputs["stdout"] = f"{resource.name}: unchanged\n{data}".strip()
            outputs["stderr"] = ""
        return outputs


def hosts(count: int, **overrides) -> list[dict]:
    return [{"name": f"node{i + 1}", "address": f"192.0.2.{11 + i}", **overrides} for i in range(count)]


@pytest.fixture
def deploy():
    """Run the Pulumi program with a stack config; returns (declared resources by name, outputs)."""

    def run(config: dict):
        mocks = UnitMocks()
        outputs = run_program(mocks, {"sshPrivateKey": SSH_KEY, **config})
        return mocks.declared, outputs

    return run


@pytest.fixture
def deploy_without_key():
    def run(config: dict):
        mocks = UnitMocks()
        return mocks.declared, run_program(mocks, config)

    return run


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value in mock inputs


def is_secret(value) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def plain(value):
    """The value under Pulumi's secret marker, recursively."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
