"""Run the real Pulumi program (`__main__.py`) under `pulumi.runtime.set_mocks`.

There is no Pulumi CLI on the machines this project is tested on, so the program runs in-process
against a mock monitor: unit tests record what it declares; the lab tier's engine also executes it.
"""

from __future__ import annotations

import asyncio
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mds"


@dataclass
class Declared:
    """One resource as the program declared it, with the options that the engine would see."""

    typ: str
    name: str
    inputs: dict
    outputs: dict = field(default_factory=dict)
    parent: str = ""  # name of the parent resource ("" for the stack)
    depends_on: tuple[str, ...] = ()  # names of explicit and input dependencies
    secret_outputs: tuple[str, ...] = ()
    delete_before_replace: bool = False
    ignore_changes: tuple[str, ...] = ()
    provider: str = ""  # provider reference "urn::id" of a resource with an explicit provider
    physical_id: str = ""  # the id of what an engine created for real


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource; subclasses decide what a resource's outputs are."""

    def __init__(self) -> None:
        self.declared: dict[str, Declared] = {}
        self.options: dict[str, dict] = {}  # by name, filled by RecordingMonitor

    def outputs_for(self, resource: Declared) -> dict:
        return dict(resource.inputs)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        resource = Declared(args.typ, args.name, dict(args.inputs), **self.options.get(args.name, {}))
        resource.provider = args.provider or ""
        self.declared[args.name] = resource
        resource.outputs = self.outputs_for(resource)
        # An engine that creates the thing for real sets its real id.
        return [resource.physical_id or f"{args.name}-id", resource.outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    """Keeps the resource options that `MockResourceArgs` leaves out (parents, dependencies, secrets)."""

    def RegisterResource(self, request):
        name_of = lambda urn: urn.rsplit("::", 1)[-1]  # noqa: E731
        dependencies = set(request.dependencies)
        for deps in request.propertyDependencies.values():
            dependencies.update(deps.urns)
        self.mocks.options[request.name] = {
            "parent": "" if not request.parent or request.parent.split("::")[2].endswith("pulumi:pulumi:Stack")
            else name_of(request.parent),
            "depends_on": tuple(sorted(name_of(u) for u in dependencies)),
            "secret_outputs": tuple(request.additionalSecretOutputs),
            "delete_before_replace": request.deleteBeforeReplace,
            "ignore_changes": tuple(request.ignoreChanges),
        }
        response = super().RegisterResource(request)
        if not request.custom:
            self.mocks.declared[request.name] = Declared(request.type, request.name, {}, **self.mocks.options[request.name])
        return response


def program_config(values: dict[str, Any], secret_keys: tuple[str, ...] = ("sshPrivateKey",)) -> dict[str, str]:
    """Stack config as the CLI hands it to the program: `mds:`-prefixed keys, objects as JSON."""
    return {
        f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()
    }


def run_program(mocks: RecordingMocks, config: dict[str, Any], *, stack: str = "test") -> dict[str, Any]:
    """Run __main__.py to completion; return its exported outputs as plain values."""
    settings.ROOT.set(None)  # a fresh root stack, so outputs of an earlier run do not linger
    asyncio.set_event_loop(asyncio.new_event_loop())  # an earlier asyncio.run() leaves none behind
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    pulumi.runtime.set_all_config(program_config(config), secret_keys=[f"{PROJECT}:sshPrivateKey"])
    exported: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        outputs = settings.get_root_resource().outputs
        return pulumi.Output.all(**outputs).apply(exported.update)

    run()
    return exported


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker around a secret value in mock inputs


def is_secret(value) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def plain(value):
    """The value under Pulumi's secret markers, recursively."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def command_data(inputs: dict) -> str:
    """A remote command's own data: its stdin after the two scripts the loader reads first
    (components/remote.py)."""
    stdin = plain(inputs["stdin"])
    for _ in range(2):
        count, _, stdin = stdin.partition("\n")
        for _ in range(int(count)):
            _, _, stdin = stdin.partition("\n")
    return stdin
