"""Secret settings: which there are, and what a password or key may hold."""

from __future__ import annotations

import re

from stack.errors import ConfigError, key

PASSWORD_USERS = ("admin", "ingest", "grafana")  # mds:<user>Password
BACKUP_KEY_NAMES = ("backupAccessKey", "backupSecretKey")
INGEST_SECRET_NAMES = ("ingestTokenSecret", "edenJwtSecret", "ingestTlsCert", "ingestTlsKey")
_PASSWORD = re.compile(r"^[A-Za-z0-9._~+=@#%^*!,-]{16,128}$")
_S3_VALUE = re.compile(r"^[A-Za-z0-9._/:-]+$")


def check_password(value: str, name: str) -> str:
    """Passwords travel inside SQL and provisioning files: a safe alphabet keeps them intact
    (no quotes, backslashes or `$`, which Grafana's file provider would expand)."""
    if not _PASSWORD.match(value):
        raise ConfigError(f"{key(name)}: not allowed; use 16 to 128 characters of letters, digits and ._~+=@#%^*!,- "
                          f"(or leave it unset and the stack generates one)")
    return value


def check_s3_key(value: str, name: str) -> str:
    if not _S3_VALUE.match(value.replace("+", "").replace("=", "")):
        raise ConfigError(f"{key(name)}: not allowed; S3 keys are letters, digits and ._/:-+=")
    return value
