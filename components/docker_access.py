"""How the Docker provider reaches the swarm manager: `ssh://`, with the stack's key and host keys.

The provider's ssh transport runs the operator's own `ssh` client, so the key goes into a 0600 file
and the host key into a known_hosts file, both below MDS_STATE_DIR (default `.mds/<stack>`).
A host key from the stack config is enforced; without one the first key seen is kept (accept-new).
Simulated lab hosts get new host keys whenever their containers are made anew: they are not checked
(only there).

The provider's configuration, paths included, is kept in the stack's state, and `pulumi destroy`
and `pulumi refresh` use it without running the program: from a checkout where the program never
ran, those files are missing. `--run-program` runs the program first, which writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from stack.config import HostSpec


def state_dir() -> Path:
    return Path(os.environ.get("MDS_STATE_DIR", Path(".mds") / pulumi.get_stack())).absolute()


def _write_private(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def docker_host(host: HostSpec) -> str:
    return f"ssh://{host.ssh_user}@{host.address}:{host.ssh_port}"


def ssh_opts(host: HostSpec, private_key: pulumi.Input[str], *, simulated: bool = False) -> pulumi.Output[list[str]]:
    directory = state_dir()
    known_hosts = directory / "known_hosts"
    if simulated:
        known_hosts, checking = Path("/dev/null"), "no"
    elif host.host_key:
        name = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
        _write_private(known_hosts, f"{name} {host.host_key}")
        checking = "yes"
    else:
        checking = "accept-new"
    key_file = pulumi.Output.secret(private_key).apply(lambda key: _write_private(directory / "ssh_key", key))
    return key_file.apply(lambda path: [
        "-i", path, "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", f"StrictHostKeyChecking={checking}", "-o", "BatchMode=yes",
    ])
