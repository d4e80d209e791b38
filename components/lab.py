"""The lab stack's simulated bare-metal hosts: containers running sshd and dockerd on the local
Docker engine, from the same image the lab test tier uses (components/lab-host).

Each host gets a fixed address on a bridge of its own and publishes SSH, the ingest and Grafana on
127.0.0.1 (so the lab works where container addresses are not reachable); its /var/lib/docker is a
volume (overlay2 needs one), and every host mounts one shared volume at /srv/shared. The SSH key is generated here. `pulumi destroy` removes the
containers, volumes, network and image it made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from stack.model import LAB_GRAFANA_PORT, LAB_INGEST_PORT, LAB_SSH_PORT, LabSettings

HOST_IMAGE_DIR = Path(__file__).parent / "lab-host"
LABEL = "mds.lab"
SHARED_DIR = "/srv/shared"
# Where --privileged is refused (docs/operations.md, "The lab"): every capability but SYS_RESOURCE, no seccomp or
# AppArmor profile, all devices, and the host's cgroup tree writable for the inner engine.
CAPABILITY_WORKAROUND = {
    "capabilities": docker.ContainerCapabilitiesArgs(adds=["ALL"], drops=["SYS_RESOURCE"]),
    "security_opts": ["seccomp=unconfined", "systempaths=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
    "cgroupns_mode": "host",
}


def host_image_tag(base_image: str, directory: Path = HOST_IMAGE_DIR) -> str:
    """The lab-host image's tag: a hash of what it is built from, so that a changed Dockerfile or
    base image reaches the hosts (a new tag replaces the containers; a fixed tag would not)."""
    digest = hashlib.sha256(base_image.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(b"\0" + str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return f"mds-lab-host:{digest.hexdigest()[:16]}"


@dataclass(frozen=True, kw_only=True)
class LabArgs:
    settings: LabSettings
    host_names: tuple[str, ...]  # lab1..labN, as the stack config names them


class Lab(pulumi.ComponentResource):
    private_key: pulumi.Output[str]  # secret: the stack's SSH key for the simulated hosts
    containers: list[docker.Container]

    def __init__(self, name: str, args: LabArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:lab:Lab", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=child)
        self.private_key = pulumi.Output.secret(key.private_key_openssh)
        # A RemoteImage with a build: `pulumi destroy` removes the image it built (keep_locally is
        # false); docker.Image leaves it behind.
        image = docker.RemoteImage(
            f"{name}-host-image",
            name=host_image_tag(settings.base_image),
            build=docker.RemoteImageBuildArgs(context=str(HOST_IMAGE_DIR), build_args={"BASE_IMAGE": settings.base_image},
                                              label={LABEL: "stack"}),
            keep_locally=False,
            opts=child,
        )
        network = docker.Network(
            f"{name}-network", name="mds-lab", driver="bridge",
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=settings.subnet)],
            labels=[docker.NetworkLabelArgs(label=LABEL, value="stack")], opts=child,
        )
        isolation = {"privileged": True} if settings.privileged else CAPABILITY_WORKAROUND
        # One volume in every host at SHARED_DIR, as an NFS export would be: fs backups need a
        # directory all CrateDB hosts share.
        shared = docker.Volume(f"{name}-shared", name="mds-lab-shared",
                               labels=[docker.VolumeLabelArgs(label=LABEL, value="stack")], opts=child)
        self.containers = []
        for i, host in enumerate(args.host_names):
            volume = docker.Volume(f"{name}-{host}-docker", name=f"mds-lab-{host}-docker",
                                   labels=[docker.VolumeLabelArgs(label=LABEL, value="stack")], opts=child)
            volumes = [docker.ContainerVolumeArgs(volume_name=volume.name, container_path="/var/lib/docker"),
                       docker.ContainerVolumeArgs(volume_name=shared.name, container_path=SHARED_DIR)]
            if not settings.privileged:
                volumes.append(docker.ContainerVolumeArgs(host_path="/sys/fs/cgroup", container_path="/sys/fs/cgroup"))
            self.containers.append(docker.Container(
                f"{name}-{host}",
                name=f"mds-lab-{host}",
                hostname=host,
                image=image.image_id,
                init=True,
                envs=[key.public_key_openssh.apply(lambda k: f"LAB_AUTHORIZED_KEY={k.strip()}")],
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id, ipv4_address=settings.address(i))],
                ports=[docker.ContainerPortArgs(internal=inside, external=outside + i + 1, ip="127.0.0.1")
                       for inside, outside in ((22, LAB_SSH_PORT), (8080, LAB_INGEST_PORT), (3000, LAB_GRAFANA_PORT))],
                tmpfs={"/run": "rw"},  # as on real hosts: a restart finds no stale pid files
                volumes=volumes,
                restart="unless-stopped",
                labels=[docker.ContainerLabelArgs(label=LABEL, value="stack")],
                # The provider turns systempaths=unconfined into empty masked and read-only paths
                # and reads the options back without it (kreuzwerker v4.5.0, which pulumi-docker 5.1
                # bridges): without this, every `up` would replace every host.
                opts=child.merge(pulumi.ResourceOptions(ignore_changes=["securityOpts"])),
                **isolation,
            ))
        self.register_outputs({"containers": [c.name for c in self.containers]})
