"""One bare-metal host: reached over SSH and prepared for the stack by `provision-host.sh`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_command as command

from components.remote import Script, Step, connection, needs_sudo, remote_command
from stack.model import HostSpec
from stack.constants import DATA_DIRS, VM_MAX_MAP_COUNT

PROVISION = Script("provision-host.sh")


@dataclass(frozen=True, kw_only=True)
class HostArgs:
    spec: HostSpec
    ssh_private_key: Any  # pulumi.Input[str], secret
    data_root: str
    backup_dir: str | None = None  # fs backups: the shared directory CrateDB's snapshots go to


def provision_env(spec: HostSpec, data_root: str, backup_dir: str | None = None) -> dict[str, str]:
    """The environment of provision-host.sh: only the data directories of the services it carries."""
    dirs = " ".join(f"{service}={owner}" for service, owner in DATA_DIRS.items() if service in spec.services)
    backup = {"BACKUP_DIR": backup_dir, "BACKUP_OWNER": DATA_DIRS["cratedb"]} if backup_dir and "cratedb" in spec.services else {}
    return {**backup,
        "HOST_NAME": spec.name,
        "DATA_ROOT": data_root,
        "DATA_DIRS": dirs,
        "VM_MAX_MAP_COUNT": str(VM_MAX_MAP_COUNT),
        # The Docker provider reaches the engine over SSH as this user, without sudo.
        "SSH_USER": spec.ssh_user,
    }


class Host(pulumi.ComponentResource):
    """Docker installed and running, vm.max_map_count set, data directories owned right.

    `pulumi destroy` leaves Docker and the data directories in place: the data cannot be collected
    twice, and the engine may serve other things on the host.
    """

    spec: HostSpec
    connection: command.remote.ConnectionArgs
    provisioned: pulumi.Output[str]  # the script's one-line report

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:hosts:Host", name, None, opts)
        self.spec = args.spec
        self.sudo = needs_sudo(args.spec)
        self.connection = connection(args.spec, args.ssh_private_key)
        self.provision = remote_command(
            f"{name}-provision",
            connection=self.connection,
            # Runs again in place when the script changes; a host is never replaced.
            run=Step(PROVISION, provision_env(args.spec, args.data_root, args.backup_dir), self.sudo),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.provisioned = self.provision.stdout
        self.register_outputs({"provisioned": self.provisioned})
