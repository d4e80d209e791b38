"""Settings from the environment, read once at start. A bad value stops the service with a message
naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson


class SettingsError(ValueError):
    pass


def _bad(var: str, raw: str, allowed: str):
    raise SettingsError(f"{var}: {raw[:80]!r} is not {allowed}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    crate_urls: tuple[str, ...] = ()  # fixed list of CrateDB HTTP endpoints, or
    crate_dns: str | None = None  # a name resolving to every CrateDB node (tasks.cratedb)
    crate_port: int = 4200
    crate_user: str = "ingest"
    crate_password: str = field(default="", repr=False)
    token_secret: bytes = field(default=b"", repr=False)
    eden_jwt_secret: bytes | None = field(default=None, repr=False)
    eden_roles: frozenset[str] = frozenset({"sensor"})  # the `role` claims accepted (eden-server's ACL)
    eden_issuers: frozenset[str] = frozenset()  # the `iss` claims accepted; empty: any
    revoked_devices: frozenset[str] = frozenset()
    table: str = "doc.readings"
    node_name: str | None = None  # this host's name: the CrateDB node on it is preferred
    bind: str | None = None  # address to listen on; None: every interface
    port: int = 8080
    tls_cert: str | None = None
    tls_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this
    body_timeout_s: float = 60.0  # and its body within this
    max_connections: int = 1024  # open connections per worker; more are answered 503 and closed
    large_body_budget_bytes: int = 32 * 1024 * 1024  # large bodies (> 256 KiB) held at once per worker
    max_batch_readings: int = 10_000
    flush_rows: int = 5_000  # rows per bulk insert at most
    linger_ms: float = 5.0  # longest wait for company behind an insert in flight
    max_inflight: int = 4  # bulk inserts in flight at once (per worker)
    queue_rows: int = 200_000  # readings waiting for CrateDB before new batches get 429 (all workers)
    workers: int = 1  # server processes sharing the port
    write_timeout_s: float = 10.0
    max_past_s: float = 30 * 86400  # oldest accepted timestamp, relative to now
    max_future_s: float = 300.0  # clock skew tolerated ahead of now
    retention_months: int = 0  # with retention, nothing older than the oldest month it keeps
    retry_after_s: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def read_file(var: str) -> str | None:
            path = env.get(var)
            if not path:
                return None
            try:
                return Path(path).read_text().strip()
            except OSError as e:
                raise SettingsError(f"{var}: cannot read {path}: {e.strerror}") from e

        def number(var: str, default, kind=int):
            raw = env.get(var)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{var}: {raw!r} is not a {kind.__name__}") from None
            if value <= 0:
                raise SettingsError(f"{var}: {raw!r} must be positive")
            return value

        secret = read_file("INGEST_TOKEN_SECRET_FILE") or env.get("INGEST_TOKEN_SECRET", "")
        if len(secret) < 32:
            raise SettingsError("INGEST_TOKEN_SECRET_FILE: the device token secret must have at least 32 characters")
        urls = tuple(u.strip().rstrip("/") for u in env.get("INGEST_CRATE_URLS", "").split(",") if u.strip())
        dns = env.get("INGEST_CRATE_DNS") or None
        if not urls and not dns:
            raise SettingsError("INGEST_CRATE_URLS or INGEST_CRATE_DNS: say where CrateDB answers")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"INGEST_CRATE_URLS: {url!r} is not an http(s) URL")
        eden = read_file("INGEST_EDEN_JWT_SECRET_FILE")

        def names(var: str, default: frozenset[str]) -> frozenset[str]:
            raw = env.get(var)
            if raw is None:
                return default
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise SettingsError(f"{var}: {raw[:80]!r} is not a JSON list of non-empty texts")
            return frozenset(value)
        cert, key = env.get("INGEST_TLS_CERT") or None, env.get("INGEST_TLS_KEY") or None
        if bool(cert) != bool(key):
            raise SettingsError("INGEST_TLS_CERT and INGEST_TLS_KEY: set both or neither")
        return cls(
            crate_urls=urls,
            crate_dns=dns,
            crate_port=number("INGEST_CRATE_PORT", 4200),
            crate_user=env.get("INGEST_CRATE_USER", "ingest"),
            crate_password=read_file("INGEST_CRATE_PASSWORD_FILE") or env.get("INGEST_CRATE_PASSWORD", ""),
            token_secret=secret.encode(),
            eden_jwt_secret=eden.encode() if eden else None,
            eden_roles=names("INGEST_EDEN_ROLES", frozenset({"sensor"})),
            eden_issuers=names("INGEST_EDEN_ISSUERS", frozenset()),
            revoked_devices=frozenset(d.strip() for d in env.get("INGEST_REVOKED_DEVICES", "").split(",") if d.strip()),
            table=env.get("INGEST_TABLE", "doc.readings"),
            node_name=env.get("NODE_NAME") or None,
            bind=env.get("INGEST_BIND") or None,
            port=number("INGEST_PORT", 8080),
            tls_cert=cert,
            tls_key=key,
            max_body_bytes=number("INGEST_MAX_BODY_BYTES", 8 * 1024 * 1024),
            header_timeout_s=number("INGEST_HEADER_TIMEOUT_S", 10.0, float),
            body_timeout_s=number("INGEST_BODY_TIMEOUT_S", 60.0, float),
            max_connections=number("INGEST_MAX_CONNECTIONS", 1024),
            large_body_budget_bytes=number("INGEST_LARGE_BODY_BUDGET_BYTES", 32 * 1024 * 1024),
            max_batch_readings=number("INGEST_MAX_BATCH_READINGS", 10_000),
            flush_rows=number("INGEST_FLUSH_ROWS", 5_000),
            linger_ms=number("INGEST_LINGER_MS", 5.0, float),
            max_inflight=number("INGEST_MAX_INFLIGHT", 4),
            queue_rows=number("INGEST_QUEUE_ROWS", 200_000),
            workers=number("INGEST_WORKERS", 1),
            write_timeout_s=number("INGEST_WRITE_TIMEOUT_S", 10.0, float),
            max_past_s=number("INGEST_MAX_PAST_S", 30 * 86400.0, float),
            max_future_s=number("INGEST_MAX_FUTURE_S", 300.0, float),
            retention_months=int(env.get("INGEST_RETENTION_MONTHS") or 0) if (env.get("INGEST_RETENTION_MONTHS") or "0").isdigit()
            else _bad("INGEST_RETENTION_MONTHS", env["INGEST_RETENTION_MONTHS"], "a whole number of months (0: keep all)"),
        )
