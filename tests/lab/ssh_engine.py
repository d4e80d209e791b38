"""Deploy the real Pulumi program onto lab hosts without a Pulumi CLI.

There is no Pulumi engine or provider plugin on these machines, so this stands in for the engine
and for the pulumi-command provider only: the program (`__main__.py`) runs under mocks, and every
`command:remote:Command` it declares is executed for real, over SSH, with exactly the `create`,
`update`, `delete` and `stdin` inputs that the program gave it. Like the engine it keeps state
between runs: an unchanged command does not run again, a changed one runs its `update`, a command
the program no longer declares runs its `delete`, dependents before their dependencies.

Only commands run. Every other resource (the Docker provider's networks, configs and services,
random passwords) is mocked, so a command that depends on one of them (the CrateDB schema needs a
running CrateDB) is not run either: it is recorded as skipped, and the tests say which.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from tests.lab.harness import LabError, LabHost
from tests.program import Declared, RecordingMocks, plain, run_program

COMMAND = "command:remote:Command"


@dataclass
class Ran:
    name: str
    step: str  # create | update | delete
    stdout: str
    seconds: float


class SshEngine(RecordingMocks):
    def __init__(self, hosts_by_address: dict[str, LabHost]) -> None:
        super().__init__()
        self.hosts_by_address = hosts_by_address
        self.state: dict[str, Declared] = {}  # what the last run left, in creation order
        self.log: list[Ran] = []
        self.rerun_all = False
        self.skipped: set[str] = set()  # commands not run: they depend on mocked resources
        self._lock = threading.Lock()

    # -- the engine's side -------------------------------------------------------------------
    def up(self, config: dict, *, rerun_all: bool = False) -> dict:
        """`pulumi up`: run the program, apply changes, delete what it no longer declares."""
        self.declared = {}
        self.options = {}
        self.rerun_all = rerun_all
        outputs = run_program(self, config, stack="lab")
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

    def steps(self, step: str | None = None) -> list[Ran]:
        return [r for r in self.log if step is None or r.step == step]

    # -- the provider's side (called by the mock monitor, from several threads at once) ------
    def outputs_for(self, resource: Declared) -> dict:
        if resource.typ == "random:index/randomPassword:RandomPassword":
            before = self.state.get(resource.name)
            return before.outputs if before else {**resource.inputs, "result": secrets.token_hex(16)}
        if resource.typ != COMMAND:
            return dict(resource.inputs)
        mocked = [d for d in resource.depends_on if d in self.declared and self.declared[d].typ != COMMAND
                  and not self.declared[d].typ.startswith("mds:")]
        if mocked:
            with self._lock:
                self.skipped.add(resource.name)
            return {**resource.inputs, "stdout": "", "stderr": "", "skipped": f"depends on mocked {mocked}"}
        before = self.state.get(resource.name)
        unchanged = before is not None and before.inputs == resource.inputs
        if unchanged and not self.rerun_all:
            return before.outputs
        step = "create" if before is None else "update"
        command = resource.inputs.get(step) or resource.inputs["create"]
        stdout = self._run(resource, step, command, resource.inputs.get("stdin"))
        return {**resource.inputs, "stdout": stdout, "stderr": ""}

    def _delete(self, resource: Declared) -> None:
        if resource.typ == COMMAND and resource.inputs.get("delete") and not resource.outputs.get("skipped"):
            self._run(resource, "delete", resource.inputs["delete"], None)

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

