"""How the operator's machine reaches the hosts over SSH with its own `ssh` client: the Docker
provider (`ssh://` to the swarm manager) and the image shipping (components/images.py).

Both run the operator's own `ssh` client, so the key goes into a 0600 file and the host keys into
a known_hosts file, both below MDS_STATE_DIR (default `.mds/<stack>`).
A host key from the stack config is enforced; without one the first key seen is kept (accept-new).
Simulated lab hosts get new host keys whenever their containers are made anew: they are not checked
(only there).

The provider's configuration, paths included, is kept in the stack's state, and `pulumi destroy`
and `pulumi refresh` use it without running the program: from a checkout where the program never
ran, those files are missing. `--run-program` runs the program first, which writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from stack import state_dir
from stack.model import HostSpec


@dataclass(frozen=True)
class SshAccess:
    """How this machine logs in to the stack's hosts: the stack's key (secret) and whether the
    hosts are the lab's simulated ones (whose host keys are not checked)."""
    private_key: Any  # pulumi.Input[str]
    simulated: bool = False


def _write_private(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def docker_host(host: HostSpec) -> str:
    return f"ssh://{host.ssh_user}@{host.address}:{host.ssh_port}"


def _remember_host_key(known_hosts: Path, name: str, host_key: str) -> None:
    """Put this host's key into the stack's known_hosts file, keeping the other hosts' lines."""
    lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    kept = [line for line in lines if line.split(" ", 1)[0] != name]
    _write_private(known_hosts, "\n".join([*kept, f"{name} {host_key}"]))


def ssh_opts(host: HostSpec, private_key: pulumi.Input[str], *, simulated: bool = False) -> pulumi.Output[list[str]]:
    directory = state_dir()
    known_hosts = directory / "known_hosts"
    if simulated:
        known_hosts, checking = Path("/dev/null"), "no"
    elif host.host_key:
        _remember_host_key(known_hosts, host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}",
                           host.host_key)
        checking = "yes"
    else:
        checking = "accept-new"
    key_file = pulumi.Output.secret(private_key).apply(lambda key: _write_private(directory / "ssh_key", key))
    return key_file.apply(lambda path: [
        "-i", path, "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", f"StrictHostKeyChecking={checking}", "-o", "BatchMode=yes",
    ])


def ssh_command(host: HostSpec, private_key: pulumi.Input[str], *, simulated: bool = False) -> pulumi.Output[list[str]]:
    """The operator's `ssh` to a host, as the Docker provider runs it, with bounded waits: a host
    that stops answering fails the transfer instead of hanging `pulumi up`."""
    return ssh_opts(host, private_key, simulated=simulated).apply(lambda options: [
        "ssh", *options, "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
        "-p", str(host.ssh_port), f"{host.ssh_user}@{host.address}",
    ])
