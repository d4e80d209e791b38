"""The one file that touches Pulumi's configuration: read it once, secrets as secret Outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from stack.constants import PROJECT
from stack.errors import ConfigError, key
from stack.images import verify_images
from stack.model import Secrets, StackConfig
from stack.parse import parse
from stack.secrets import BACKUP_KEY_NAMES, INGEST_SECRET_NAMES, PASSWORD_USERS, check_password, check_s3_key

SECTIONS = ("hosts", "lab", "cratedb", "ingest", "grafana", "agents")


def state_dir() -> Path:
    """Files the program keeps on this machine between runs (the SSH key the operator's `ssh`
    uses, known host keys, archives already verified): MDS_STATE_DIR, else `.mds/<stack>`."""
    return Path(os.environ.get("MDS_STATE_DIR", Path(".mds") / pulumi.get_stack())).absolute()


def load() -> StackConfig:
    cfg = pulumi.Config(PROJECT)
    raw = {name: cfg.get_object(name) for name in SECTIONS} | {"dataRoot": cfg.get("dataRoot")}
    private_key = cfg.get_secret("sshPrivateKey")
    if raw["hosts"] is None and raw["lab"] is None:
        raise ConfigError(f"{key('hosts')} is missing: list the hosts of the stack (docs/operations.md)")
    if private_key is None and raw["lab"] is None:
        raise ConfigError(f"{key('sshPrivateKey')} is missing: set it with "
                          f"`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`")

    def secret(name: str, check=None):
        value = cfg.get_secret(name)
        return value if value is None or check is None else value.apply(lambda v: check(v, name))

    secrets = Secrets(
        grafana_admin_password=secret("grafanaAdminPassword", check_password),
        grafana_smtp_password=secret("grafanaSmtpPassword"),
        passwords={user: v for user in PASSWORD_USERS if (v := secret(f"{user}Password", check_password)) is not None},
        backup_keys={name: v for name in BACKUP_KEY_NAMES if (v := secret(name, check_s3_key)) is not None},
        ingest={name: v for name in INGEST_SECRET_NAMES if (v := secret(name)) is not None},
    )
    config = parse({k: v for k, v in raw.items() if v is not None}, ssh_private_key=private_key, secrets=secrets)
    return verify_images(config, state_dir() / "archives.json")
