"""The `cratedb` section: its settings, backups and roll-ups, and the rules between them and the
hosts (replicas below the number of CrateDB hosts, an image repository with the version as tag)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stack.checks import ABSOLUTE_PATH, IMAGE_REPO, keys_of, known_fields, read
from stack.errors import ConfigError, key
from stack.images import parse_image_source
from stack.model import BACKUP_KEYS, BackupSettings, CrateDbSettings, RollupSettings


def parse_cratedb(raw: Any, node_count: int, default_source: str) -> CrateDbSettings:
    where = key("cratedb")
    known_fields(raw, where, keys_of(CrateDbSettings, "imageSource", "rollups", "backup"))
    values = read(CrateDbSettings, raw, where, replicas=1 if node_count > 1 else 0)
    settings = CrateDbSettings(
        **values, image_source=parse_image_source(raw, where, default_source),
        rollups=RollupSettings(**read(RollupSettings, known_fields(raw.get("rollups", {}), f"{where}.rollups",
                                                                   keys_of(RollupSettings)), f"{where}.rollups")),
        backup=parse_backup(raw["backup"]) if raw.get("backup") is not None else None,
    )
    image_is_a_repository(settings)
    replicas_fit_the_hosts(settings, node_count)
    return settings


def image_is_a_repository(settings: CrateDbSettings) -> None:
    image = settings.image
    if not isinstance(image, str) or not IMAGE_REPO.match(image) or image.endswith(":" + settings.version):
        raise ConfigError(f"{key('cratedb')}.image: {image!r} is not an image repository (the tag comes from version), such as crate")


def replicas_fit_the_hosts(settings: CrateDbSettings, node_count: int) -> None:
    if settings.replicas >= node_count:
        raise ConfigError(
            f"{key('cratedb')}.replicas: {settings.replicas} replicas need at least {settings.replicas + 1} CrateDB hosts, "
            f"and only {node_count} host(s) carry cratedb; lower replicas or add hosts"
        )


def parse_backup(raw: Any) -> BackupSettings:
    where = key("cratedb.backup")
    if not isinstance(raw, Mapping) or raw.get("type") not in BACKUP_KEYS:
        raise ConfigError(f"{where}: set type to fs or s3, got {raw!r}")
    kind = raw["type"]
    unknown = sorted(set(raw) - set(BACKUP_KEYS[kind]))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for type {kind}; allowed: {', '.join(BACKUP_KEYS[kind])}")
    backup = BackupSettings(type=kind, **read(BackupSettings, raw, where))
    required = "location" if kind == "fs" else "bucket"
    if not getattr(backup, required):
        raise ConfigError(f"{where}.{required} is missing: a {kind} repository needs it")
    if kind == "fs" and not ABSOLUTE_PATH.match(backup.location):
        raise ConfigError(f"{where}.location: {backup.location!r} must be an absolute path on storage every CrateDB host shares")
    return backup
