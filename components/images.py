"""How a service's image reaches its hosts when they cannot, or should not, pull it.

With `imageSource: local` or `{archives: [...]}`, `pulumi up` ships the image over SSH from this
machine (components/ship_image.py): one `command:local:Command` per host, each after the one
before, so an image travels to one host at a time (different images may travel at once). A host
whose engine has the image by id gets nothing; a second `up` runs no command at all, unless the
image's id changed (rebuilt under the same tag): the ids are the commands' triggers.

The service then names the image by its id when every host gets the same image (one archive, or
this machine's engine): a Swarm task whose image is an id is never pulled (moby
daemon/cluster/executor/container/adapter.go, pullImage), and the provider reads the id back as
written. With one archive per architecture, the ids differ, so the service names the tag: each
task's engine then tries the registry first and, offline, logs that and uses the image it has.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command

from components.docker_access import SshAccess, ssh_command
from components.hosts import Host
from stack import ConfigError, key, state_dir
from stack.model import ImageSource

PROJECT_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceImage:
    """An image as its service names it, and what puts it on each host before the host is labelled
    for the service (components/service_images.py)."""
    reference: pulumi.Input[str]
    on_host: Mapping[str, Sequence[pulumi.Resource]]  # host name -> commands; none when hosts pull it

    @property
    def commands(self) -> list[pulumi.Resource]:
        return [c for commands in self.on_host.values() for c in commands]


def local_image_id(reference: str, where: str) -> str:
    """The id of an image of this machine's Docker engine; a ConfigError naming `where` without it."""
    try:
        result = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", reference],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"{where}: local, but this machine's Docker engine does not answer ({e})") from None
    if result.returncode != 0:
        raise ConfigError(f"{where}: local, but this machine's Docker engine has no image {reference}; "
                          f"pull or load it here first (docker pull {reference}, or docker load -i FILE)")
    return result.stdout.strip()


def ship_to_hosts(name: str, *, reference: str, archives: Sequence[str] = (), local: Sequence[str] = (),
                  hosts: Sequence[Host], ssh: SshAccess, opts: pulumi.ResourceOptions,
                  after: Sequence[pulumi.Resource] = (),
                  image_ids: Sequence[str] = ()) -> dict[str, command.local.Command]:
    """One ship command per host (host name -> command), each after the one before. `image_ids`:
    what the hosts must hold; a new id (an image rebuilt under the same tag) ships again."""
    shipped: list[command.local.Command] = []
    for host in hosts:
        def line(ssh: list[str], host_name: str = host.spec.name) -> str:
            words = [sys.executable, "-m", "components.ship_image", "--host", host_name, "--ssh", json.dumps(ssh),
                     "--reference", reference, "--cache", str(state_dir() / "archives.json")]
            words += [w for path in archives for w in ("--archive", path)]
            words += [w for ref in local for w in ("--local", ref)]
            return shlex.join(words)

        # The command names the key file, not the key: it need not be secret.
        create = pulumi.Output.unsecret(ssh_command(host.spec, ssh.private_key, simulated=ssh.simulated)).apply(line)
        shipped.append(command.local.Command(
            f"{name}-{host.spec.name}",
            create=create,
            update=create,
            triggers=list(image_ids),
            dir=str(PROJECT_DIR),
            logging=command.local.Logging.STDOUT_AND_STDERR,  # bytes per host, while they flow
            opts=opts.merge(pulumi.ResourceOptions(depends_on=[host.provision, *after, *shipped[-1:]])),
        ))
    return {host.spec.name: ship for host, ship in zip(hosts, shipped)}


def prebuilt_image(name: str, section: str, *, source: ImageSource, reference: str, registry_reference: str,
                   hosts: Sequence[Host], ssh: SshAccess, opts: pulumi.ResourceOptions) -> ServiceImage:
    """An image made elsewhere: pulled by each host from its registry, or shipped to them."""
    if not source.shipped:
        return ServiceImage(registry_reference, {})
    ids = shipped_ids(section, source, reference)
    shipped = ship_to_hosts(f"{name}-ship", reference=reference, archives=source.archives,
                            local=[reference] if source.kind == "local" else [], hosts=hosts, ssh=ssh,
                            opts=opts, image_ids=ids)
    # One id for every host: the service names it (see the module docstring); else the tag.
    return ServiceImage(ids[0] if len(ids) == 1 else reference, {host: [ship] for host, ship in shipped.items()})


def shipped_ids(section: str, source: ImageSource, reference: str) -> list[str]:
    """The ids of the images a shipped source puts on the hosts. The ship command names only the
    tag: without the ids, an image rebuilt under the same tag was never shipped while the service
    named its new id, and Swarm rolled the service back ("No such image"; real engine, lab stack)."""
    if source.kind == "local":
        return [local_image_id(reference, f"{key(section)}.imageSource")]
    return sorted({image.image_id for image in source.verified})
