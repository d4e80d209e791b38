"""Read and validate the stack configuration.

`parse` is pure (a mapping in, frozen dataclasses out) so every rule is testable without Pulumi;
`load` reads `pulumi.Config` once and hands the values to `parse`. A bad value raises `ConfigError`,
a `pulumi.RunError`, so `pulumi preview` stops with the message alone, without a Python traceback.
Every message names the config key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from stack.constants import DEFAULT_MANAGERS, MAX_MANAGERS, PROJECT, SERVICES

ROLES = ("manager", "worker")
HOST_FIELDS = (
    "name", "address", "privateAddress", "sshUser", "sshPort", "role", "services", "labels", "hostKey",
)
STACK_KEYS = ("hosts", "sshPrivateKey", "dataRoot")

_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Docker's label key guidelines: lowercase alphanumerics, '.' and '-', starting and ending with
# a letter or digit, no repeated separators; the docker/io.docker/org.dockerproject namespaces
# are reserved for Docker itself.
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_RESERVED_LABEL_PREFIXES = ("com.docker.", "io.docker.", "org.dockerproject.")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}$")
_DATA_ROOT = re.compile(r"^(/[A-Za-z0-9._-]+)+$")


class ConfigError(pulumi.RunError):
    """A stack configuration value that cannot work; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """One bare-metal host as the stack sees it."""

    name: str  # the machine's hostname: Swarm's node name and, later, CrateDB's node name
    address: str  # where Pulumi reaches the host over SSH
    private_address: str  # Swarm advertise and data-path address
    ssh_user: str = "root"
    ssh_port: int = 22
    role: str = "manager"
    services: tuple[str, ...] = SERVICES
    labels: tuple[tuple[str, str], ...] = ()  # free-form node labels, sorted
    host_key: str | None = None  # expected SSH host key; without it the key is not verified

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    def node_labels(self) -> dict[str, str]:
        """Every Swarm node label this host carries: one per service plus the free-form ones."""
        labels = {f"mds.{service}": "true" for service in self.services}
        labels.update(self.labels)
        return dict(sorted(labels.items()))


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    hosts: tuple[HostSpec, ...]
    ssh_private_key: Any = field(repr=False)  # pulumi.Output[str] (secret) or str in tests
    data_root: str = "/srv/mds"

    @property
    def managers(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.is_manager)

    @property
    def first_manager(self) -> HostSpec:
        """The host that initialises the swarm and runs its control commands."""
        return self.managers[0]

    def hosts_for(self, service: str) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if service in h.services)


def key(name: str) -> str:
    return f"{PROJECT}:{name}"


def load() -> StackConfig:
    """Read the stack's configuration once; secrets stay secret Outputs."""
    cfg = pulumi.Config(PROJECT)
    hosts = cfg.get_object("hosts")
    if hosts is None:
        raise ConfigError(f"{key('hosts')} is missing: list the hosts of the stack (see the README)")
    private_key = cfg.get_secret("sshPrivateKey")
    if private_key is None:
        raise ConfigError(
            f"{key('sshPrivateKey')} is missing: set it with "
            f"`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    raw = {"hosts": hosts, "dataRoot": cfg.get("dataRoot")}
    return parse({k: v for k, v in raw.items() if v is not None}, ssh_private_key=private_key)


def parse(raw: Mapping[str, Any], *, ssh_private_key: Any) -> StackConfig:
    """Validate the raw configuration values (camelCase keys as in the stack file)."""
    hosts_raw = raw.get("hosts")
    if hosts_raw is None:
        raise ConfigError(f"{key('hosts')} is missing: list the hosts of the stack (see the README)")
    if not isinstance(hosts_raw, Sequence) or isinstance(hosts_raw, str):
        raise ConfigError(f"{key('hosts')} must be a list of hosts, got {type(hosts_raw).__name__}")
    if not hosts_raw:
        raise ConfigError(f"{key('hosts')} is empty: the stack needs at least one host")

    explicit_roles = any(isinstance(h, Mapping) and "role" in h for h in hosts_raw)
    default_managers = _default_manager_count(len(hosts_raw))
    hosts = tuple(
        _parse_host(i, h, default_role=None if explicit_roles else ("manager" if i < default_managers else "worker"))
        for i, h in enumerate(hosts_raw)
    )
    _check_unique(hosts, "name", lambda h: h.name.lower())
    _check_unique(hosts, "address", lambda h: h.address.lower())
    _check_unique(hosts, "privateAddress", lambda h: h.private_address)
    _check_managers(hosts)
    for service in SERVICES:
        if not any(service in h.services for h in hosts):
            raise ConfigError(
                f"{key('hosts')}: no host carries the service {service!r}; "
                f"add it to the `services` of at least one host"
            )

    data_root = raw.get("dataRoot", "/srv/mds")
    if isinstance(data_root, str) and len(data_root) > 1:
        data_root = data_root.rstrip("/")
    if not isinstance(data_root, str) or not _DATA_ROOT.match(data_root) or ".." in data_root.split("/"):
        raise ConfigError(
            f"{key('dataRoot')}: {data_root!r} is not allowed; use an absolute path of letters, digits, "
            f"'.', '_' and '-', such as /srv/mds"
        )
    return StackConfig(hosts=hosts, ssh_private_key=ssh_private_key, data_root=data_root)


def _default_manager_count(host_count: int) -> int:
    """Three managers survive the loss of one; fewer hosts get the largest odd count they can hold."""
    return min(DEFAULT_MANAGERS, host_count if host_count % 2 else host_count - 1)


def _parse_host(index: int, raw: Any, *, default_role: str | None) -> HostSpec:
    where = f"{key('hosts')}[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with at least `name` and `address`, got {raw!r}")
    unknown = sorted(set(raw) - set(HOST_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(HOST_FIELDS)}")

    name = _require_str(raw, "name", where)
    if not _HOST_LABEL.match(name):
        raise ConfigError(
            f"{where}.name: {name!r} is not a host name; use the machine's hostname "
            f"(letters, digits and '-', at most 63 characters, not starting or ending with '-')"
        )
    address = _require_str(raw, "address", where)
    if not (_is_ip(address) or _is_dns_name(address)):
        raise ConfigError(
            f"{where}.address: {address!r} is not an IP address or host name "
            f"(allowed: IPv4, IPv6, or a DNS name such as node1.example.com)"
        )
    private_address = raw.get("privateAddress", address if _is_ip(address) else None)
    if private_address is None:
        raise ConfigError(
            f"{where}.privateAddress is missing: it is required when address ({address!r}) is a host name, "
            f"because Swarm advertises an IP address"
        )
    if not isinstance(private_address, str) or not _is_ip(private_address):
        raise ConfigError(
            f"{where}.privateAddress: {private_address!r} is not an IP address "
            f"(Swarm advertises and listens on an IPv4 or IPv6 address)"
        )

    ssh_user = raw.get("sshUser", "root")
    if not isinstance(ssh_user, str) or not _SSH_USER.match(ssh_user):
        raise ConfigError(f"{where}.sshUser: {ssh_user!r} is not a Unix user name (lowercase, digits, '_' and '-')")
    ssh_port = raw.get("sshPort", 22)
    if isinstance(ssh_port, str) and ssh_port.isdigit():
        ssh_port = int(ssh_port)
    if isinstance(ssh_port, bool) or not isinstance(ssh_port, int) or not 1 <= ssh_port <= 65535:
        raise ConfigError(f"{where}.sshPort: {ssh_port!r} is not a port number (1-65535)")

    role = raw.get("role", default_role or "worker")
    if role not in ROLES:
        raise ConfigError(f"{where}.role: {role!r} is not a role; allowed: {', '.join(ROLES)}")

    services = raw.get("services", list(SERVICES))
    if not isinstance(services, Sequence) or isinstance(services, str):
        raise ConfigError(f"{where}.services must be a list drawn from {', '.join(SERVICES)}, got {services!r}")
    for service in services:
        if service not in SERVICES:
            raise ConfigError(f"{where}.services: {service!r} is not a service; allowed: {', '.join(SERVICES)}")
    if len(set(services)) != len(services):
        raise ConfigError(f"{where}.services lists a service twice: {list(services)!r}")

    labels = _parse_labels(raw.get("labels", {}), f"{where}.labels")

    host_key = raw.get("hostKey")
    if host_key is not None and (not isinstance(host_key, str) or not _HOST_KEY.match(host_key.strip())):
        raise ConfigError(
            f"{where}.hostKey: {host_key!r} is not an SSH public host key; use one line of "
            f"`ssh-keyscan -t ed25519 HOST` without the host name, such as 'ssh-ed25519 AAAA...'"
        )
    return HostSpec(
        name=name,
        address=address,
        private_address=private_address,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        role=role,
        services=tuple(s for s in SERVICES if s in services),
        labels=labels,
        host_key=host_key.strip() if host_key else None,
    )


def _parse_labels(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of label keys to values, got {raw!r}")
    labels = []
    for label_key, value in raw.items():
        if not isinstance(label_key, str) or not _LABEL_KEY.match(label_key) or ".." in label_key or "--" in label_key:
            raise ConfigError(
                f"{where}: {label_key!r} is not a label key Docker accepts; use lowercase letters, digits, "
                f"'.' and '-', starting and ending with a letter or digit, such as 'site.room'"
            )
        if label_key.startswith(_RESERVED_LABEL_PREFIXES) or label_key.startswith("mds."):
            raise ConfigError(
                f"{where}: {label_key!r} is in a reserved namespace (com.docker., io.docker., "
                f"org.dockerproject. belong to Docker; mds. is set from `services`)"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}.{label_key}: {value!r} is not a text or number label value")
        text = str(value)
        if any(ch in text for ch in "\n\r\0") or len(text) > 1024:
            raise ConfigError(f"{where}.{label_key}: the value must be one line of at most 1024 characters")
        labels.append((label_key, text))
    return tuple(sorted(labels))


def _check_unique(hosts: tuple[HostSpec, ...], field_name: str, value_of) -> None:
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        value = value_of(host)
        if value in seen:
            raise ConfigError(
                f"{key('hosts')}[{i}].{field_name}: {value!r} is already used by "
                f"{key('hosts')}[{seen[value]}]; every host needs its own {field_name}"
            )
        seen[value] = i


def _check_managers(hosts: tuple[HostSpec, ...]) -> None:
    count = sum(h.is_manager for h in hosts)
    if count == 0:
        raise ConfigError(f"{key('hosts')}: no host has role 'manager'; the swarm needs 1, 3, 5 or 7 managers")
    if count % 2 == 0 or count > MAX_MANAGERS:
        raise ConfigError(
            f"{key('hosts')}: {count} hosts have role 'manager'; use an odd number up to {MAX_MANAGERS} "
            f"(1, 3, 5 or 7) so that a majority survives losing managers"
        )


def _require_str(raw: Mapping[str, Any], name: str, where: str) -> str:
    value = raw.get(name)
    if value is None:
        raise ConfigError(f"{where}.{name} is missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{name}: {value!r} must be a non-empty text")
    return value.strip()


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_dns_name(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or all(part.isdigit() for part in name.split(".")):
        return False
    return all(_HOST_LABEL.match(part) for part in name.split("."))
