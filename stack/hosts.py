"""The `hosts` section, `dataRoot`, and the rules that tie the hosts together: names and addresses
of their own, an odd number of managers, every service on some host."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from stack.checks import (
    ABSOLUTE_PATH, HOST_LABEL, a_list, address, host_key, is_ip, port, required_text, ssh_user, unique,
)
from stack.constants import DEFAULT_MANAGERS, MAX_MANAGERS, NODE_LABEL_PREFIX, SERVICES
from stack.errors import ConfigError, key
from stack.model import HostSpec

HOST_KEYS = ("name", "address", "privateAddress", "sshUser", "sshPort", "role", "services", "labels", "hostKey")
ROLES = ("manager", "worker")
# Docker's label key guidelines: lowercase alphanumerics, '.' and '-', starting and ending with
# a letter or digit, no repeated separators; the docker/io.docker/org.dockerproject namespaces
# are reserved for Docker itself.
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_RESERVED_LABEL_PREFIXES = ("com.docker.", "io.docker.", "org.dockerproject.")


def parse_hosts(raw: Any) -> tuple[HostSpec, ...]:
    if raw is None:
        raise ConfigError(f"{key('hosts')} is missing: list the hosts of the stack (docs/operations.md)")
    a_list(raw, key("hosts"), "hosts")
    if not raw:
        raise ConfigError(f"{key('hosts')} is empty: the stack needs at least one host")
    explicit_roles = any(isinstance(h, Mapping) and "role" in h for h in raw)
    managers = default_manager_count(len(raw))
    hosts = tuple(_host(i, h, default_role=None if explicit_roles else ("manager" if i < managers else "worker"))
                  for i, h in enumerate(raw))
    unique(hosts, "name", lambda h: h.name.lower(), "hosts")
    unique(hosts, "address", lambda h: h.address.lower() if h.ssh_port == 22 else f"{h.address.lower()}:{h.ssh_port}", "hosts")
    unique(hosts, "privateAddress", lambda h: h.private_address, "hosts")
    odd_number_of_managers(hosts)
    every_service_has_a_host(hosts)
    return hosts


def default_manager_count(host_count: int) -> int:
    """Three managers survive the loss of one; fewer hosts get the largest odd count they can hold."""
    return min(DEFAULT_MANAGERS, host_count if host_count % 2 else host_count - 1)


def odd_number_of_managers(hosts: Sequence[HostSpec]) -> None:
    count = sum(h.is_manager for h in hosts)
    if count == 0:
        raise ConfigError(f"{key('hosts')}: no host has role 'manager'; the swarm needs 1, 3, 5 or 7 managers")
    if count % 2 == 0 or count > MAX_MANAGERS:
        raise ConfigError(
            f"{key('hosts')}: {count} hosts have role 'manager'; use an odd number up to {MAX_MANAGERS} "
            f"(1, 3, 5 or 7) so that a majority survives losing managers"
        )


def every_service_has_a_host(hosts: Sequence[HostSpec]) -> None:
    for service in SERVICES:
        if not any(service in h.services for h in hosts):
            raise ConfigError(f"{key('hosts')}: no host carries the service {service!r}; "
                              f"add it to the `services` of at least one host")


def parse_data_root(value: Any) -> str:
    if isinstance(value, str) and len(value) > 1:
        value = value.rstrip("/")
    if not isinstance(value, str) or not ABSOLUTE_PATH.match(value) or ".." in value.split("/"):
        raise ConfigError(f"{key('dataRoot')}: {value!r} is not allowed; use an absolute path of letters, digits, "
                          f"'.', '_' and '-', such as /srv/mds")
    return value


def _host(index: int, raw: Any, *, default_role: str | None) -> HostSpec:
    where = f"{key('hosts')}[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with at least `name` and `address`, got {raw!r}")
    unknown = sorted(set(raw) - set(HOST_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(HOST_KEYS)}")
    name = required_text(raw, "name", where)
    if not HOST_LABEL.match(name):
        raise ConfigError(f"{where}.name: {name!r} is not a host name; use the machine's hostname "
                          f"(letters, digits and '-', at most 63 characters, not starting or ending with '-')")
    reached_at = address(raw, where)
    private = raw.get("privateAddress", reached_at if is_ip(reached_at) else None)
    if private is None:
        raise ConfigError(f"{where}.privateAddress is missing: it is required when address ({reached_at!r}) is a host "
                          f"name, because Swarm advertises an IP address")
    if not isinstance(private, str) or not is_ip(private):
        raise ConfigError(f"{where}.privateAddress: {private!r} is not an IP address "
                          f"(Swarm advertises and listens on an IPv4 or IPv6 address)")
    login = ssh_login(raw, where, default_user="root")
    role = raw.get("role", default_role or "worker")
    if role not in ROLES:
        raise ConfigError(f"{where}.role: {role!r} is not a role; allowed: {', '.join(ROLES)}")
    return HostSpec(name=name, address=reached_at, private_address=private, **login, role=role,
                    services=_services(raw.get("services", list(SERVICES)), where),
                    labels=_labels(raw.get("labels", {}), f"{where}.labels"))


def ssh_login(raw: Mapping[str, Any], where: str, default_user: str) -> dict[str, Any]:
    """sshUser, sshPort and hostKey of a machine the stack reaches over SSH (a host or an agent)."""
    return {"ssh_user": ssh_user(raw.get("sshUser", default_user), f"{where}.sshUser"),
            "ssh_port": port(raw.get("sshPort", 22), f"{where}.sshPort"),
            "host_key": host_key(raw["hostKey"], f"{where}.hostKey") if raw.get("hostKey") is not None else None}


def _services(services: Any, where: str) -> tuple[str, ...]:
    if not isinstance(services, Sequence) or isinstance(services, str):
        raise ConfigError(f"{where}.services must be a list drawn from {', '.join(SERVICES)}, got {services!r}")
    for service in services:
        if service not in SERVICES:
            raise ConfigError(f"{where}.services: {service!r} is not a service; allowed: {', '.join(SERVICES)}")
    if len(set(services)) != len(services):
        raise ConfigError(f"{where}.services lists a service twice: {list(services)!r}")
    return tuple(s for s in SERVICES if s in services)


def _labels(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of label keys to values, got {raw!r}")
    labels = []
    for label_key, value in raw.items():
        if not isinstance(label_key, str) or not _LABEL_KEY.match(label_key) or ".." in label_key or "--" in label_key:
            raise ConfigError(f"{where}: {label_key!r} is not a label key Docker accepts; use lowercase letters, digits, "
                              f"'.' and '-', starting and ending with a letter or digit, such as 'site.room'")
        if label_key.startswith((*_RESERVED_LABEL_PREFIXES, NODE_LABEL_PREFIX)):
            raise ConfigError(f"{where}: {label_key!r} is in a reserved namespace (com.docker., io.docker., "
                              f"org.dockerproject. belong to Docker; mds. is set from `services`)")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}.{label_key}: {value!r} is not a text or number label value")
        text = str(value)
        if any(ch in text for ch in "\n\r\0") or len(text) > 1024:
            raise ConfigError(f"{where}.{label_key}: the value must be one line of at most 1024 characters")
        labels.append((label_key, text))
    return tuple(sorted(labels))
