"""Swarm configs (the services' files) and secrets (their passwords and keys), and how the stack's
Swarm objects agree with the Docker provider: names, durations and images as it reads them back."""

from __future__ import annotations

import base64

import pulumi
import pulumi_docker as docker


def swarm_config(name: str, text: str, opts: pulumi.ResourceOptions) -> docker.ServiceConfig:
    """A Swarm config holding one file of a service. Configs are immutable: an edit replaces the
    config. No `name` is given, so the provider names each one anew (autonaming) and the
    replacement is created before the old one is deleted. With a `name` set, the Terraform bridge
    deletes first (`nameRequiresDeleteBeforeReplace`, pulumi-terraform-bridge pkg/tfbridge/schema.go),
    and Docker refuses to delete a config a service still uses: every edit failed `pulumi up`."""
    return docker.ServiceConfig(name, data=base64.b64encode(text.encode()).decode(), opts=opts)


SECRETS_DIR = "/run/secrets"  # where a task finds its Swarm secrets


def swarm_secret(name: str, value: pulumi.Input[str], opts: pulumi.ResourceOptions) -> docker.Secret:
    """A Swarm secret holding a secret value. Secrets are immutable too: a new value replaces the
    secret. No `name` is given, so the provider names each one anew (pulumi-docker autonaming: the
    resource name plus a random suffix) and the replacement is created before the old one is
    deleted: the services move to the new secret in a rolling update, then the old one goes.
    Deleting first would fail while a service uses the secret, or stop every task at once."""
    return docker.Secret(
        name,
        data=pulumi.Output.secret(value).apply(lambda v: base64.b64encode(v.encode()).decode()),
        opts=opts,
    )


def fixed_name(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """Options of a Swarm object whose name is fixed (a service: its DNS name on the overlay; the
    network): a replacement (a changed name, mode or network of a service; any change of a network)
    deletes the old one first, or the new one would collide with it by name."""
    return opts.merge(pulumi.ResourceOptions(delete_before_replace=True))


def go_duration(seconds: int) -> str:
    """A duration as the Docker provider reads it back from a service (Go's Duration.String() with
    a trailing `0s` or `0m` cut: 600 -> `10m`, 90 -> `1m30s`). Written any other way (`600s`), every
    `pulumi up` would see a change and update the service (roll every task)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s" if minutes else f"{secs}s"
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def warn_unpinned(config_key: str, image: str, resource: pulumi.Resource) -> None:
    """A registry image without a digest: Docker pins the digest it finds when it creates the
    service, the provider reads that back, and every later `pulumi up` updates the service."""
    pulumi.log.warn(f"{config_key}.digest is not set: Docker will pin {image} to the digest it finds, and every later "
                    f"`pulumi up` will then update the service and restart its tasks. Set {config_key}.digest to the "
                    f"image's sha256 digest (`docker buildx imagetools inspect {image}`).", resource=resource)


def restart_always(delay_seconds: int) -> docker.ServiceTaskSpecRestartPolicyArgs:
    """Restart a task whenever it ends, after a delay. The provider reads an unset `window` back
    as `0s` (seen on the real engine): left out, every `pulumi up` would update the service."""
    return docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay=go_duration(delay_seconds), window=go_duration(0))
