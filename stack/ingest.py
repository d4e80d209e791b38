"""The `ingest` section, and its rules: platforms only for a local build, an image source only for
a prebuilt image, at least one Eden role, the CA file readable, provided TLS with its secrets."""

from __future__ import annotations

import os
from collections.abc import Set
from typing import Any

from stack.checks import keys_of, known_fields, read
from stack.errors import ConfigError, key
from stack.images import parse_image_source
from stack.model import IngestSettings


def parse_ingest(raw: Any, default_build: str) -> IngestSettings:
    where = key("ingest")
    known_fields(raw, where, keys_of(IngestSettings, "imageSource"))
    if "imageSource" in raw and raw.get("image") is None:
        raise ConfigError(f"{where}.imageSource applies to {where}.image, which is not set; the image built from "
                          f"ingest/ is shipped with build: local")
    settings = IngestSettings(**read(IngestSettings, raw, where, build=default_build),
                              image_source=parse_image_source(raw, where, "registry"))
    if settings.platforms and settings.build != "local":
        raise ConfigError(f"{where}.platforms: set build: local too (the hosts build for their own platform)")
    if settings.extra_ca_file is not None and (not isinstance(settings.extra_ca_file, str)
                                               or not os.path.isfile(settings.extra_ca_file)):
        raise ConfigError(f"{where}.extraCaFile: {settings.extra_ca_file!r} is not a readable file (a PEM bundle on this machine)")
    if not settings.eden_roles:
        raise ConfigError(f"{where}.edenRoles: an empty list would refuse every Eden device; list the roles they send "
                          "(the original agents send the `role` of their config, e.g. sensor)")
    return settings


def provided_tls_has_its_secrets(settings: IngestSettings, secret_names: Set[str]) -> None:
    if settings.tls == "provided" and not {"ingestTlsCert", "ingestTlsKey"} <= secret_names:
        raise ConfigError(f"{key('ingest')}.tls is 'provided': set the secrets ingestTlsCert and ingestTlsKey "
                          "(pulumi config set --secret ingestTlsCert < cert.pem)")
