"""How a component runs one of its script files on a host over SSH.

Each script travels inside the command (`bash -c <script>`), with its environment as `env`
arguments in front: pulumi-command's `environment` needs AcceptEnv on the SSH server. Secrets never
go into the command (sudo logs it): scripts that need one read it from stdin (delete steps get the
stored stdin too). The lab tier runs these very strings over real SSH.

What the provider does with a change (pulumi-command 1.2.1, provider/pkg/provider/common/inputs.go
and remote/command.go): `triggers` are replaceOnChanges, so a changed trigger replaces the command
and runs the old one's `delete` (for the swarm: drain, demote, leave); a changed `create`/`update`
text, `stdin` or `connection` is an in-place update. The script text is part of every command, so
an edited script is an update already: no command here has a script digest as a trigger.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pulumi
import pulumi_command as command

from stack.config import AgentSpec, HostSpec

SCRIPTS_DIR = Path(__file__).parent / "scripts"


@dataclass(frozen=True)
class Script:
    """A script file beside the components, by file name."""

    name: str

    @cached_property
    def text(self) -> str:
        return (SCRIPTS_DIR / self.name).read_text()

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def command(self, env: Mapping[str, str], *, sudo: bool) -> str:
        """The shell command that runs this script with `env` set (values are plain text)."""
        assignments = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
        runner = ["sudo", "-n"] if sudo else []
        return " ".join([*runner, "env", *assignments, "bash", "-c", shlex.quote(self.text), self.name])

    def command_output(self, env: Mapping[str, pulumi.Input[str]], *, sudo: bool) -> pulumi.Output[str]:
        """`command` for environments that hold Outputs (a node id known only after a join)."""
        return pulumi.Output.all(**env).apply(lambda resolved: self.command(resolved, sudo=sudo))


def remote_command(name: str, **kwargs) -> command.remote.Command:
    """A `command.remote.Command` that does not send the previous stdout to the host on update and
    delete (`addPreviousOutputInEnv` is on by default: for `swarm init` that would be the join
    tokens, in the environment of every later run)."""
    return command.remote.Command(name, add_previous_output_in_env=False, **kwargs)


def needs_sudo(host: HostSpec | AgentSpec) -> bool:
    return host.ssh_user != "root"


def connection(host: HostSpec | AgentSpec, private_key: pulumi.Input[str]) -> command.remote.ConnectionArgs:
    """SSH connection to a host; its host key is verified when the stack config gives it."""
    return command.remote.ConnectionArgs(
        host=host.address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=private_key,
        host_key=host.host_key,
        dial_error_limit=20,  # a host that is still booting gets about five minutes
        per_dial_timeout=15,
    )
