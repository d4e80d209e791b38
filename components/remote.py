"""How a component runs one of its script files on a host over SSH.

The command line is short: `env K=V … bash -c <loader> <step> <script>`. The script itself
travels on stdin, ahead of the command's own data: pulumi-command prints the whole command line
with every failure (remote/commandOutputs.go: `running %q`), and a script of several KB there
buried the one line that says why. Scripts find their data on stdin after the loader has read
the script off it. The delete step gets the stored stdin of the create step (the provider keeps
it), so the stdin carries the delete script too and the loader picks one by step.

Environment values go into the command as `env` arguments: pulumi-command's `environment` needs
AcceptEnv on the SSH server. Secrets never go into the command (sudo logs it): scripts that need
one read it from stdin. The lab tier runs these very commands over real SSH.

What the provider does with a change (pulumi-command 1.2.1, provider/pkg/provider/common/inputs.go
and remote/command.go): `triggers` are replaceOnChanges, so a changed trigger replaces the command
and runs the old one's `delete` (for the swarm: drain, demote, leave); a changed `create`/`update`
text, `stdin` or `connection` is an in-place update. An edited script changes the stdin, so it is
an update already: no command here has a script digest as a trigger.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pulumi
import pulumi_command as command

from stack.model import AgentSpec, HostSpec

SCRIPTS_DIR = Path(__file__).parent / "scripts"

# Reads two scripts off stdin (each: its line count, then its lines), runs the one of this step
# ($0: run or delete) with the script's name as $0, and leaves the rest of stdin to it. bash reads
# a pipe byte by byte, so nothing of the data is consumed early.
LOADER = ('IFS= read -r n; mapfile -n "$n" run; IFS= read -r n; del=(); [ "$n" = 0 ] || mapfile -n "$n" del; '
          '[ "$0" != delete ] || run=("${del[@]}"); printf -v s %s "${run[@]}"; exec bash -c "$s" "$1"')


@dataclass(frozen=True)
class Script:
    """A script file beside the components, by file name."""

    name: str

    @cached_property
    def text(self) -> str:
        text = (SCRIPTS_DIR / self.name).read_text()
        return text if text.endswith("\n") else text + "\n"


def _framed(script: Script | None) -> str:
    if script is None:
        return "0\n"
    return f"{script.text.count(chr(10))}\n{script.text}"


@dataclass(frozen=True)
class Step:
    """One step of a remote command: a script, its environment (plain text or Outputs) and sudo."""

    script: Script
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    sudo: bool = False

    def command_line(self, env: Mapping[str, str], step: str = "run") -> str:
        assignments = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
        runner = ["sudo", "-n"] if self.sudo else []
        return " ".join([*runner, "env", *assignments, "bash", "-c", shlex.quote(LOADER), step, self.script.name])

    def command(self, step: str = "run") -> pulumi.Output[str]:
        return pulumi.Output.all(**self.env).apply(lambda resolved: self.command_line(resolved, step))


def stdin_of(run: Script, delete: Script | None = None, data: str = "") -> str:
    """What a command's stdin holds: the run script, the delete script, then the command's data."""
    return _framed(run) + _framed(delete) + data


def standalone(step: Step, env: Mapping[str, str], data: str = "") -> tuple[str, str]:
    """(command line, stdin) that run one script over SSH outside Pulumi, as a command would."""
    return step.command_line(env), stdin_of(step.script, None, data)


def remote_command(name: str, *, run: Step, delete: Step | None = None, data: pulumi.Input[str] | None = None,
                   **kwargs) -> command.remote.Command:
    """A `command.remote.Command` whose create and update steps run `run` and whose delete step
    runs `delete`, with `data` on stdin after the scripts. It does not send the previous stdout to
    the host on update and delete (`addPreviousOutputInEnv` is on by default: for `swarm init` that
    would be the join tokens, in the environment of every later run)."""
    run_command = run.command("run")
    scripts = stdin_of(run.script, delete.script if delete else None)
    stdin = scripts if data is None else pulumi.Output.from_input(data).apply(lambda d: scripts + d)
    return command.remote.Command(
        name, add_previous_output_in_env=False, create=run_command, update=run_command,
        delete=delete.command("delete") if delete else None, stdin=stdin, **kwargs)


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
