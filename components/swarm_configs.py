"""Swarm configs for the services' files."""

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
