import re

import pytest

from tests.program import Declared, RecordingMocks, command_data, is_secret, plain, run_program  # noqa: F401

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nunit-test-key\n-----END OPENSSH PRIVATE KEY-----\n"


class UnitMocks(RecordingMocks):
    """Commands answer the way their scripts do: a status line, then the data line."""

    def outputs_for(self, resource: Declared) -> dict:
        outputs = dict(resource.inputs)
        if resource.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"generated-{resource.name}"
        if resource.typ.startswith("tls:"):
            for pem in ("privateKeyPem", "certPem", "certRequestPem", "privateKeyOpenssh"):
                outputs[pem] = f"-----PEM {pem} of {resource.name}-----"
            outputs["publicKeyOpenssh"] = f"ssh-ed25519 AAAA{resource.name}\n"
        if resource.typ == "command:remote:Command":
            if resource.name.endswith("swarm-init"):
                data = ('{"node_id": "node-init", "cluster_id": "cluster-1", "manager_token": "SWMTKN-manager", '
                        '"worker_token": "SWMTKN-worker"}')
            elif m := re.search(r"-join-(.+)$", resource.name):
                data = f'{{"node_id": "node-{m.group(1)}"}}'
            else:
                data = ""
            outputs["stdout"] = f"{resource.name}: unchanged\n{data}".strip()
            outputs["stderr"] = ""
        if resource.typ == "command:local:Command":  # an image built here prints its id last
            outputs["stdout"] = local_id(resource.name) if "-build-" in resource.name else f"{resource.name}: shipped"
            outputs["stderr"] = ""
        if resource.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = local_id(resource.inputs["name"])
        return outputs


def hosts(count: int, **overrides) -> list[dict]:
    return [{"name": f"node{i + 1}", "address": f"192.0.2.{11 + i}", **overrides} for i in range(count)]


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Where the program writes the Docker provider's key and known_hosts files."""
    monkeypatch.setenv("MDS_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


LOCAL_IMAGES = {"crate:6.4.3", "grafana/grafana:13.0.1"}


def local_id(reference: str) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


@pytest.fixture(autouse=True)
def local_engine(monkeypatch):
    """This machine's Docker engine as components/images.py asks it for the id of an image it
    ships (`imageSource: local`): it holds LOCAL_IMAGES, each with the id local_id(reference)."""
    from components import images
    from stack import ConfigError
    held = set(LOCAL_IMAGES)

    def image_id(reference: str, where: str) -> str:
        if reference not in held:
            raise ConfigError(f"{where}: local, but this machine's Docker engine has no image {reference}")
        return local_id(reference)

    monkeypatch.setattr(images, "local_image_id", image_id)
    return held


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



def ingest_processes() -> list[int]:
    """Running `python -m ingest` processes started from this checkout (Linux /proc)."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.joinpath("cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"ingest"] \
                    and Path(proc / "cwd").resolve() == root and "Z" not in proc.joinpath("stat").read_text().split()[2]:
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_ingest_process_outlives_the_tests():
    before = set(ingest_processes())
    yield
    import time
    deadline = time.monotonic() + 10  # a worker told to stop finishes what it accepted first
    while (left := set(ingest_processes()) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"ingest processes left running by the tests: {sorted(left)}"
