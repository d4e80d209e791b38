"""Sensor agents on the Pis (or any Linux box) listed in `mds:agents`, installed over SSH.

Each agent gets the package `pi/`, a config naming every ingest endpoint, its own device token
(issued from the stack's token secret: the device id is the agent's name) and the stack CA when the
ingest speaks TLS. `agent-install.sh` puts it under a hardened systemd unit; `pulumi destroy` runs
`agent-remove.sh`, which keeps a buffer that still holds unacknowledged readings.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command

from components.remote import Script, Step, connection, needs_sudo, remote_command
from ingest import tokens
from stack.model import AgentSpec

PACKAGE = Path(__file__).resolve().parents[1] / "pi"
UNIT = Path(__file__).parent / "agent_files" / "mds-agent.service"
INSTALL = Script("agent-install.sh")
REMOVE = Script("agent-remove.sh")


@dataclass(frozen=True, kw_only=True)
class AgentsArgs:
    agents: Sequence[AgentSpec]
    ssh_private_key: Any  # the stack's key, secret
    endpoints: pulumi.Input[Sequence[str]]  # every ingest endpoint
    token_secret: pulumi.Input[str]  # the ingest's token secret (secret)
    ca_certificate: pulumi.Input[str] | None = None  # the stack CA when the ingest serves TLS


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for these values
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} into the agent's config")


def agent_toml(agent: AgentSpec, endpoints: Sequence[str], with_ca: bool) -> str:
    lines = ["# Written by the machine data stack (components/agents.py); `pulumi up` overwrites it.",
             "[agent]", f"interval_ms = {agent.interval_ms}", 'state_dir = "/var/lib/mds-agent"', "",
             "[ingest]", f"endpoints = {_toml_value(list(endpoints))}", 'token_file = "/etc/mds-agent/token"']
    if with_ca:
        lines.append('ca_file = "/etc/mds-agent/ca.pem"')
    for sensor in agent.sensors:
        lines += ["", "[[sensors]]"] + [f"{k} = {_toml_value(v)}" for k, v in sensor.items()]
    return "\n".join(lines) + "\n"


def package_files() -> list[tuple[str, bytes]]:
    """pi/ as it is installed: Python files only, sorted."""
    files = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return [(f"pi/{p.relative_to(PACKAGE)}", p.read_bytes()) for p in files]


def bundle(agent: AgentSpec, endpoints: Sequence[str], token: str, ca: str | None) -> str:
    """The install script's stdin: a reproducible tar.gz, base64 (it carries the token: secret)."""
    files = package_files() + [("agent.toml", agent_toml(agent, endpoints, bool(ca)).encode()),
                               ("token", (token + "\n").encode()), ("ca.pem", (ca or "").encode()),
                               ("mds-agent.service", UNIT.read_bytes())]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(raw.getvalue(), mtime=0)).decode()


class Agents(pulumi.ComponentResource):
    installed: dict[str, pulumi.Output[str]]  # agent name -> the install script's report

    def __init__(self, name: str, args: AgentsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:agents:Agents", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.installed = {}
        for agent in args.agents:
            sudo = needs_sudo(agent)
            stdin = pulumi.Output.secret(pulumi.Output.all(args.endpoints, args.token_secret, args.ca_certificate).apply(
                lambda values, a=agent: bundle(a, values[0], tokens.issue(values[1].encode(), a.name), values[2])))
            resource = remote_command(
                f"{name}-{agent.name}",
                connection=connection(agent, args.ssh_private_key),
                # An update runs in place: a new config or package restarts the agent, nothing is removed.
                run=Step(INSTALL, {"AGENT_NAME": agent.name}, sudo),
                delete=Step(REMOVE, {"AGENT_NAME": agent.name}, sudo),
                data=stdin,
                logging=command.remote.Logging.STDOUT,  # the report names files, never the token
                opts=child,
            )
            self.installed[agent.name] = resource.stdout
        self.register_outputs({"installed": self.installed})
