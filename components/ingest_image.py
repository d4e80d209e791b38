"""The ingest service's image: prebuilt (pulled or shipped), or the image of `ingest/` (tag =
content hash), built on every ingest host or built here and shipped, so a deployment needs no
registry."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shlex
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pulumi
import pulumi_command as command

from components.docker_access import SshAccess
from components.hosts import Host
from components.images import ServiceImage, prebuilt_image, ship_to_hosts
from components.ingest_wheels import wheels
from components.remote import Script, Step, remote_command
from stack import state_dir
from stack.model import IngestSettings

SOURCE = Path(__file__).resolve().parents[1] / "ingest"
BUILD = Script("ingest-image.sh")


def build_context(extra_ca: bytes = b"") -> bytes:
    """ingest/ as a reproducible tar (sorted, no times or owners), plus the extra CA bundle and the
    wheels of its requirements (components/ingest_wheels.py: the build needs no PyPI)."""
    files = sorted(p for p in SOURCE.iterdir() if p.is_file() and p.name != "extra-ca.crt" and p.suffix != ".pyc")
    packages = [(f"wheels/{name}", data) for name, data in wheels(SOURCE / "requirements.txt").items()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(p.name, p.read_bytes()) for p in files] + [("extra-ca.crt", extra_ca)] + packages:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_tag(base_image: str, context: bytes) -> str:
    """The content hash of what the image is built from."""
    digest = hashlib.sha256(base_image.encode() + b"\0" + context).hexdigest()
    return f"mds-ingest:{digest[:16]}"


def ingest_image(name: str, settings: IngestSettings, *, hosts: Sequence[Host], ssh: SshAccess,
                 opts: pulumi.ResourceOptions) -> ServiceImage:
    """The image the ingest service names, and what puts it on each of its hosts."""
    if settings.image is not None:
        return prebuilt_image(name, "ingest", source=settings.image_source, reference=settings.image,
                              registry_reference=settings.image, hosts=hosts, ssh=ssh, opts=opts)
    extra_ca = Path(settings.extra_ca_file).read_bytes() if settings.extra_ca_file else b""
    tar = build_context(extra_ca)
    image = image_tag(settings.base_image, tar)
    if settings.build == "hosts":
        context = base64.b64encode(gzip.compress(tar, mtime=0)).decode() + "\n"
        return ServiceImage(image, {host.spec.name: [remote_command(
            f"{name}-image-{host.spec.name}", connection=host.connection,
            run=Step(BUILD, {"HOST_NAME": host.spec.name, "IMAGE": image, "BASE_IMAGE": settings.base_image},
                     host.sudo),
            data=context,
            opts=opts.merge(pulumi.ResourceOptions(depends_on=[host.provision])),
        )] for host in hosts})
    # Built here (needs a Docker engine, and buildx for other platforms), then shipped: the
    # hosts need neither a base image nor PyPI.
    context_file = state_dir() / f"ingest-context-{image.split(':')[1]}.tar"
    if not context_file.exists():
        context_file.parent.mkdir(parents=True, exist_ok=True)
        context_file.write_bytes(tar)
    builds = {}
    for platform in settings.platforms or (None,):
        tag = image if platform is None else f"{image}-{platform.split('/')[1]}"
        builder = ["docker", "build"] if platform is None else ["docker", "buildx", "build", "--platform", platform, "--load"]
        stack_label = f"mds.stack={pulumi.get_project()}/{pulumi.get_stack()}"
        build = shlex.join([*builder, "-q", "--build-arg", f"BASE_IMAGE={settings.base_image}",
                            "--label", f"mds.content={image.split(':')[1]}", "--label", stack_label, "-t", tag, "-"])
        # The images this stack built here before, for older content, go: each edit of ingest/
        # left one behind (an update runs create again, never delete).
        older = (f"docker image ls --filter label={stack_label} --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | "
                 f"grep -v ':{image.split(':')[1]}' | xargs -r docker image rm >/dev/null 2>&1 || true")
        builds[tag] = command.local.Command(
            f"{name}-build-{platform.split('/')[1] if platform else 'here'}",
            create=f"docker image inspect {tag} >/dev/null 2>&1 || {build} < {shlex.quote(str(context_file))} >&2 && "
                   f"{{ {older}; }} && docker image inspect -f '{{{{.Id}}}}' {tag}",
            delete=f"docker image rm {tag} >/dev/null 2>&1 || true",  # destroy leaves no image it made here
            interpreter=["/bin/bash", "-c"],
            opts=opts,
        )
    shipped = ship_to_hosts(f"{name}-ship", reference=image, local=list(builds), hosts=hosts, ssh=ssh,
                            opts=opts, after=list(builds.values()))
    on_host = {host: [ship] for host, ship in shipped.items()}
    if len(builds) > 1:  # an image per architecture: the service names the tag (components/images.py)
        return ServiceImage(image, on_host)
    (only,) = builds.values()
    return ServiceImage(only.stdout.apply(lambda out: out.strip().splitlines()[-1]), on_host)
