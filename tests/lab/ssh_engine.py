"""The SSH stand-in engine: deploy the real Pulumi program onto lab hosts without a Pulumi CLI.

CI cannot have the Pulumi engine or its provider plugins (they are built from fetched sources,
which a project never ships), so there this stands in for the engine and for the pulumi-command
provider only (where they are on PATH, tests/lab/pulumi_engine.py runs the real engine instead): the program (`__main__.py`) runs under mocks, and every
`command:remote:Command` it declares is executed for real, over SSH, with exactly the `create`,
`update`, `delete` and `stdin` inputs that the program gave it. Like the engine it keeps state
between runs: an unchanged command does not run again, a changed one runs its `update`, a command
the program no longer declares runs its `delete`, dependents before their dependencies.

Commands run over SSH; the Docker provider's networks, configs, secrets and services are created
with the docker CLI on the manager (tests/lab/docker_cli.py); random passwords get random values.
Other resources (TLS) are mocked. Resources the test names in `not_run` (CrateDB's service: its
image cannot be pulled here), and everything that depends on them, are recorded as skipped.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from dataclasses import dataclass

from tests.lab import docker_cli
from tests.lab.harness import LabError, LabHost
from tests.program import Declared, RecordingMocks, plain, run_program

COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"  # on this machine, as pulumi-command runs it (image shipping)


@dataclass
class Ran:
    name: str
    step: str  # create | update | delete
    stdout: str
    seconds: float


class SshEngine(RecordingMocks):
    real = False  # a stand-in: tests/lab/pulumi_engine.py is the real engine

    def __init__(self, hosts_by_address: dict[str, LabHost], not_run: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.hosts_by_address = hosts_by_address
        self.state: dict[str, Declared] = {}  # what the last run left, in creation order
        self.log: list[Ran] = []
        self.rerun_all = False
        self.not_run = not_run
        self.skipped: set[str] = set()  # not created: named in not_run, or depending on such
        self._lock = threading.Lock()

    # -- the engine's side -------------------------------------------------------------------
    def up(self, config: dict, *, rerun_all: bool = False) -> dict:
        """`pulumi up`: run the program, apply changes, delete what it no longer declares."""
        self.declared = {}
        self.options = {}
        self.rerun_all = rerun_all
        self.replaced: list[Declared] = []  # configs and secrets whose successors exist: removed last
        outputs = run_program(self, config, stack="lab")
        for old in self.replaced:
            self._manager(old).ssh(docker_cli.delete_command(old), timeout=120)
        gone = [name for name in self.state if name not in self.declared]
        for name in reversed(gone):  # creation order respects dependencies; delete in reverse
            self._delete(self.state.pop(name))
        # Keep creation order: the previous resources that stay, then the new ones.
        self.state = {n: self.declared[n] for n in self.state if n in self.declared} | {
            n: d for n, d in self.declared.items() if n not in self.state
        }
        return outputs

    def destroy(self) -> None:
        """`pulumi destroy`: every delete step, dependents first."""
        for name in reversed(list(self.state)):
            self._delete(self.state.pop(name))

    # -- the provider's side (called by the mock monitor, from several threads at once) ------
    def outputs_for(self, resource: Declared) -> dict:
        if resource.typ == "random:index/randomPassword:RandomPassword":
            before = self.state.get(resource.name)
            return before.outputs if before else {**resource.inputs, "result": secrets.token_hex(16)}
        if resource.typ not in (COMMAND, LOCAL_COMMAND) and resource.typ not in docker_cli.KINDS:
            return dict(resource.inputs)
        blocked = [d for d in resource.depends_on if d in self.skipped]
        if resource.name in self.not_run or blocked:
            with self._lock:
                self.skipped.add(resource.name)
            return {**resource.inputs, "stdout": "", "stderr": "", "skipped": f"not run here ({blocked or 'named'})"}
        if resource.typ in docker_cli.KINDS:
            return self._docker(resource)
        before = self.state.get(resource.name)
        unchanged = before is not None and before.inputs == resource.inputs
        if unchanged and not self.rerun_all:
            return before.outputs
        step = "create" if before is None else "update"
        command = resource.inputs.get(step) or resource.inputs["create"]
        if resource.typ == LOCAL_COMMAND:
            return {**resource.inputs, "stdout": self._run_here(resource, step, plain(command)), "stderr": ""}
        stdout = self._run(resource, step, command, resource.inputs.get("stdin"))
        return {**resource.inputs, "stdout": stdout, "stderr": ""}

    def _delete(self, resource: Declared) -> None:
        if resource.outputs.get("skipped"):
            return
        if resource.typ == COMMAND and resource.inputs.get("delete"):
            # As pulumi-command: the delete step gets the stdin stored with the resource.
            self._run(resource, "delete", resource.inputs["delete"], resource.inputs.get("stdin"))
        elif resource.typ in docker_cli.KINDS:
            self._manager(resource).ssh(docker_cli.delete_command(resource), timeout=120)

    # -- the Docker provider's side ------------------------------------------------------------
    def _manager(self, resource: Declared) -> LabHost:
        provider = self.declared.get(resource.provider.split("::")[-2]) or self.state[resource.provider.split("::")[-2]]
        address = plain(provider.inputs)["host"].removeprefix("ssh://").split("@")[1].rsplit(":", 1)[0]
        return self.hosts_by_address[address]

    def _docker(self, resource: Declared) -> dict:
        before = self.state.get(resource.name)
        if before is not None and before.inputs == resource.inputs and not before.outputs.get("skipped"):
            resource.physical_id = before.physical_id
            return before.outputs
        manager = self._manager(resource)
        if before is not None and not before.outputs.get("skipped"):
            if docker_cli.replaced_create_first(resource):
                with self._lock:
                    self.replaced.append(before)
            else:
                manager.ssh(docker_cli.delete_command(before), timeout=120)  # replace: the lab does not roll
        command, stdin = docker_cli.create_command(resource)
        started = time.monotonic()
        result = manager.ssh(command, input=stdin, check=False, timeout=300)
        if result.returncode != 0:
            raise LabError(f"{resource.name}: {command[:200]} failed: {result.stderr.decode()[-1500:]}")
        resource.physical_id = result.stdout.decode().strip().splitlines()[-1]
        with self._lock:
            self.log.append(Ran(resource.name, "docker", resource.physical_id, time.monotonic() - started))
        return {**resource.inputs, "name": docker_cli.name_of(resource)}

    def _run_here(self, resource: Declared, step: str, command: str) -> str:
        interpreter = plain(resource.inputs).get("interpreter") or ["/bin/sh", "-c"]
        started = time.monotonic()
        result = subprocess.run([*interpreter, command], cwd=plain(resource.inputs).get("dir"), capture_output=True,
                                text=True, timeout=1800)
        if result.returncode != 0:
            raise LabError(f"{resource.name} {step} failed here ({result.returncode}): {result.stderr[-1500:]}")
        with self._lock:
            self.log.append(Ran(resource.name, step, result.stdout, time.monotonic() - started))
        return result.stdout.rstrip("\n")

    def _run(self, resource: Declared, step: str, command: str, stdin: str | None) -> str:
        connection = plain(resource.inputs["connection"])
        host = self.hosts_by_address[connection["host"]]
        # The lab reaches hosts as root on port 22 with the key the stack config holds.
        assert connection["user"] == "root" and int(connection["port"]) == 22, connection
        assert connection["privateKey"] == host.key_file.read_text(), "the command would use another key"
        started = time.monotonic()
        result = host.ssh(plain(command), input=plain(stdin), check=False, timeout=600)
        stdout = result.stdout.decode()
        if result.returncode != 0:
            raise LabError(f"{resource.name} {step} failed on {host.name} ({result.returncode}): "
                           f"{result.stderr.decode()[-1500:]}{stdout[-500:]}")
        with self._lock:
            self.log.append(Ran(resource.name, step, stdout, time.monotonic() - started))
        return stdout

