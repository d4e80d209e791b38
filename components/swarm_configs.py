"""Swarm configs (the services' files) and secrets (their passwords and keys)."""

from __future__ import annotations

import base64
import hashlib

import pulumi
import pulumi_docker as docker


def hashed_config(name: str, service: str, file_name: str, text: str, opts: pulumi.ResourceOptions) -> docker.ServiceConfig:
    """Swarm configs are immutable: the name carries a content hash, so an edit makes a new config
    (created before the old one is deleted, so the service always references one that exists)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return docker.ServiceConfig(
        name,
        name=f"{service}-{file_name.replace('.', '-')}-{digest}",
        data=base64.b64encode(text.encode()).decode(),
        opts=opts,
    )


SECRETS_DIR = "/run/secrets"  # where a task finds its Swarm secrets


def swarm_secret(name: str, value: pulumi.Input[str], opts: pulumi.ResourceOptions) -> docker.Secret:
    """A Swarm secret holding a secret value. Secrets are immutable too: a new value replaces the
    secret, and the old one must go first, since both carry the same name in the swarm."""
    return docker.Secret(
        name,
        data=pulumi.Output.secret(value).apply(lambda v: base64.b64encode(v.encode()).decode()),
        opts=opts.merge(pulumi.ResourceOptions(delete_before_replace=True)),
    )
