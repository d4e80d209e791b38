"""The agent's configuration: a TOML file, with environment overrides `MDS_AGENT_<SECTION>_<KEY>`
(for example MDS_AGENT_INGEST_ENDPOINTS=https://a:8080,https://b:8080). Every problem is a
`ConfigError` that names the key."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENSOR_TYPES = ("bmp180", "bme280", "ds18b20", "thermal", "random")
SENSOR_OPTIONS = {
    "bmp180": ("type", "name", "bus", "address", "oss"),
    "bme280": ("type", "name", "bus", "address"),
    "ds18b20": ("type", "name", "device", "devices"),
    "thermal": ("type", "name", "path"),
    "random": ("type", "name", "start", "step", "seed"),
}
AGENT_KEYS = ("interval_ms", "batch_max_readings", "batch_max_age_ms", "state_dir", "buffer_max_readings", "durability")
INGEST_KEYS = ("endpoints", "token_file", "ca_file", "timeout_s")
MAX_BATCH = 10_000  # the ingest's default limit per request


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class SensorConfig:
    type: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AgentConfig:
    endpoints: tuple[str, ...]
    token: str = field(repr=False)
    sensors: tuple[SensorConfig, ...]
    ca_file: str | None = None
    timeout_s: float = 10.0
    interval_ms: int = 100
    batch_max_readings: int = 100
    batch_max_age_ms: int = 1000
    state_dir: Path = Path("/var/lib/mds-agent")
    buffer_max_readings: int = 1_000_000
    durability: str = "crash"  # or "power-cut": an fsync per tick (pi/buffer.py says what each can lose)


def _number(value: Any, key: str, kind=int, low: float = 1, high: float = float("inf")):
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{key}: {value!r} must be a {'whole ' if kind is int else ''}number")
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} must be between {low:g} and {high:g}")
    return kind(value)


def _section(raw: Mapping, name: str, keys: tuple[str, ...], env: Mapping[str, str]) -> dict:
    section = raw.get(name, {})
    if not isinstance(section, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(keys)}")
    merged = dict(section)
    for key in keys:
        value = env.get(f"MDS_AGENT_{name.upper()}_{key.upper()}")
        if value is not None:
            merged[key] = value.split(",") if key == "endpoints" else value
    return merged


def parse_sensors(raw: Any, where: str = "sensors") -> tuple[SensorConfig, ...]:
    """The [[sensors]] tables (also checked by the stack before it installs an agent)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: list at least one sensor (type = thermal is a first try)")
    sensors = []
    for i, sensor in enumerate(raw):
        kind = sensor.get("type") if isinstance(sensor, Mapping) else None
        if kind not in SENSOR_TYPES:
            raise ConfigError(f"{where}[{i}].type: {kind!r} is not one of {', '.join(SENSOR_TYPES)}")
        extra = sorted(set(sensor) - set(SENSOR_OPTIONS[kind]))
        if extra:
            raise ConfigError(f"{where}[{i}]: unknown key(s) {', '.join(extra)} for {kind}; allowed: {', '.join(SENSOR_OPTIONS[kind])}")
        sensors.append(SensorConfig(kind, {k: v for k, v in sensor.items() if k != "type"}))
    return tuple(sensors)


def read_token(path: str) -> str:
    """The device token, from a file only its owner can read (it is the device's credential)."""
    try:
        info = os.stat(path)
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"ingest.token_file: cannot read {path}: {e.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"ingest.token_file: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                          f"chmod 600 it")
    if not token.startswith("mds1.") or token.count(".") < 2:
        raise ConfigError(f"ingest.token_file: {path} does not hold a device token (mds1.<device>.<signature>)")
    return token


def parse(raw: Mapping, env: Mapping[str, str] = os.environ) -> AgentConfig:
    unknown = sorted(set(raw) - {"agent", "ingest", "sensors"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; allowed: [agent], [ingest], [[sensors]]")
    agent = _section(raw, "agent", AGENT_KEYS, env)
    ingest = _section(raw, "ingest", INGEST_KEYS, env)
    endpoints = ingest.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints or not all(
            isinstance(e, str) and e.startswith(("http://", "https://")) for e in endpoints):
        raise ConfigError(f"ingest.endpoints: {endpoints!r} must be a non-empty list of http(s) URLs (every ingest host)")
    if "token_file" not in ingest:
        raise ConfigError("ingest.token_file: missing; the path of the device's token file")
    sensors = parse_sensors(raw.get("sensors", [{"type": "thermal"}]))
    durability = agent.get("durability", "crash")
    if durability not in ("crash", "power-cut"):
        raise ConfigError(f"agent.durability: {durability!r} is not allowed; use crash (nothing lost when the agent "
                          "is killed) or power-cut (also nothing when the power fails, at an fsync per tick)")
    return AgentConfig(
        endpoints=tuple(e.rstrip("/") for e in endpoints),
        token=read_token(str(ingest["token_file"])),
        sensors=sensors,
        ca_file=ingest.get("ca_file"),
        timeout_s=_number(ingest.get("timeout_s", 10.0), "ingest.timeout_s", float, 0.5, 300),
        interval_ms=_number(agent.get("interval_ms", 100), "agent.interval_ms", int, 10, 3_600_000),
        batch_max_readings=_number(agent.get("batch_max_readings", 100), "agent.batch_max_readings", int, 1, MAX_BATCH),
        batch_max_age_ms=_number(agent.get("batch_max_age_ms", 1000), "agent.batch_max_age_ms", int, 10, 3_600_000),
        state_dir=Path(agent.get("state_dir", "/var/lib/mds-agent")),
        buffer_max_readings=_number(agent.get("buffer_max_readings", 1_000_000), "agent.buffer_max_readings", int, 1000),
        durability=durability,
    )


def load(path: Path, env: Mapping[str, str] = os.environ) -> AgentConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return parse(raw, env)
