"""How a setting is declared once (`option`: its key, default and check) and read (`read`), and the
checks the sections share. A check takes the value and the key it came from and returns the value
to keep (converted where the stack file's form differs), or raises ConfigError naming the key, the
value and what is allowed."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stack.errors import ConfigError, key

Check = Callable[[Any, str], Any]

HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}$")
ABSOLUTE_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IMAGE_REPO = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")
IMAGE_REF = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def option(name: str, default: Any = None, check: Check | None = None) -> Any:
    """A dataclass field read from the stack key `name`, `default` when absent, kept through `check`."""
    return dataclasses.field(default=default, metadata={"key": name, "check": check})


def keys_of(cls, *others: str) -> tuple[str, ...]:
    """The stack keys a section accepts: its options' and the ones read by hand."""
    return tuple(f.metadata["key"] for f in dataclasses.fields(cls) if "key" in f.metadata) + others


def read(cls, raw: Mapping[str, Any], where: str, **defaults: Any) -> dict[str, Any]:
    """The values of `cls`'s options from `raw`: checked when given, else the default (`defaults`
    overrides a dataclass default that depends on the rest of the stack)."""
    values = {}
    for f in dataclasses.fields(cls):
        if "key" not in f.metadata:
            continue
        name, check = f.metadata["key"], f.metadata["check"]
        value = raw.get(name)
        if value is None:
            values[f.name] = defaults[f.name] if f.name in defaults else f.default
        else:
            values[f.name] = check(value, f"{where}.{name}") if check else value
    return values


def known_fields(raw: Any, where: str, names: Sequence[str]) -> Mapping[str, Any]:
    """A mapping whose keys are all known: a typo fails with the allowed names."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with any of {', '.join(names)}, got {raw!r}")
    unknown = sorted(map(str, set(raw) - set(names)))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    return raw


def whole_number(says: str, minimum: int | None = None, maximum: int | None = None) -> Check:
    """`says` completes "<key>: <value> ..." when the value is not a whole number in range."""
    def check(value: Any, where: str) -> int:
        if (isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum)):
            raise ConfigError(f"{where}: {value!r} {says}")
        return value
    return check


def positive_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {value!r} must be a positive number")
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} must be true or false")
    return value


def one_of(allowed: Sequence[str], says: str) -> Check:
    def check(value: Any, where: str) -> str:
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} {says}")
        return value
    return check


def matching(pattern: re.Pattern, says: str) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ConfigError(f"{where}: {value!r} {says}")
        return value
    return check


def text_list(says: str, item: Callable[[str], bool], distinct: bool = False) -> Check:
    """A list of texts, each accepted by `item`; kept as a tuple."""
    def check(value: Any, where: str) -> tuple[str, ...]:
        if (not isinstance(value, Sequence) or isinstance(value, str) or not all(isinstance(v, str) and item(v) for v in value)
                or (distinct and len(set(value)) != len(value))):
            raise ConfigError(f"{where}: {value!r} {says}")
        return tuple(value)
    return check


def port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: {value!r} is not a port number (1-65535)")
    return value


publish_mode = one_of(("host", "ingress"), "is not allowed; use host (default: no IPVS needed) or ingress")
digest = matching(DIGEST, "is not an image digest sha256:<64 hex digits> (`docker buildx imagetools inspect IMAGE:TAG` prints it)")


def image_ref(example: str) -> Check:
    return matching(IMAGE_REF, f"is not an image reference such as {example}")


def required_text(raw: Mapping[str, Any], name: str, where: str) -> str:
    value = raw.get(name)
    if value is None:
        raise ConfigError(f"{where}.{name} is missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{name}: {value!r} must be a non-empty text")
    return value.strip()


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_dns_name(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or all(part.isdigit() for part in name.split(".")):
        return False
    return all(HOST_LABEL.match(part) for part in name.split("."))


def address(raw: Mapping[str, Any], where: str) -> str:
    """Where the stack reaches a machine over SSH: an IP address or a DNS name."""
    value = required_text(raw, "address", where)
    if not (is_ip(value) or is_dns_name(value)):
        raise ConfigError(
            f"{where}.address: {value!r} is not an IP address or host name "
            f"(allowed: IPv4, IPv6, or a DNS name such as node1.example.com)"
        )
    return value


def host_key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not HOST_KEY.match(value.strip()):
        raise ConfigError(
            f"{where}: {value!r} is not an SSH public host key; use one line of "
            f"`ssh-keyscan -t ed25519 HOST` without the host name, such as 'ssh-ed25519 AAAA...'"
        )
    return value.strip()


ssh_user = matching(SSH_USER, "is not a Unix user name (lowercase, digits, '_' and '-')")


def unique(items: Sequence, field_name: str, value_of: Callable[[Any], Any], section: str) -> None:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        value = value_of(item)
        if value in seen:
            raise ConfigError(
                f"{key(section)}[{i}].{field_name}: {value!r} is already used by "
                f"{key(section)}[{seen[value]}]; every {section.rstrip('s')} needs its own {field_name}"
            )
        seen[value] = i


def a_list(raw: Any, where: str, what: str) -> Sequence:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"{where} must be a list of {what}, got {type(raw).__name__}")
    return raw
