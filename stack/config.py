"""Read and validate the stack configuration.

`parse` is pure (a mapping in, frozen dataclasses out) so every rule is testable without Pulumi;
`load` reads `pulumi.Config` once and hands the values to `parse`. A bad value raises `ConfigError`,
a `pulumi.RunError`, so `pulumi preview` stops with the message alone, without a Python traceback.
Every message names the config key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pulumi

from stack.constants import DEFAULT_MANAGERS, MAX_MANAGERS, NODE_LABEL_PREFIX, PROJECT, SERVICES
from stack.image_archive import ArchivedImage, ArchiveError, cached_archive, normalize_tag

ROLES = ("manager", "worker")
HOST_FIELDS = (
    "name", "address", "privateAddress", "sshUser", "sshPort", "role", "services", "labels", "hostKey",
)
INGEST_FIELDS = ("image", "imageSource", "build", "platforms", "baseImage", "extraCaFile", "port", "publishMode",
                 "revokedDevices", "tls", "memoryMb", "cpus", "edenRoles", "edenIssuers")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CRATEDB_FIELDS = ("version", "image", "digest", "imageSource", "heapSize", "replicas", "retentionMonths", "clusterName",
                  "publishAdminUi", "backup", "rollups")
ROLLUP_FIELDS = ("minutesRetentionMonths", "hoursRetentionMonths")
BACKUP_FIELDS = {"fs": ("type", "location", "everyHours", "keep"),
                 "s3": ("type", "bucket", "basePath", "endpoint", "region", "everyHours", "keep")}
AGENT_FIELDS = ("name", "address", "sshUser", "sshPort", "hostKey", "sensors", "intervalMs")
GRAFANA_FIELDS = ("image", "version", "digest", "imageSource", "port", "publishMode", "alerts", "smtp")
SMTP_FIELDS = ("host", "fromAddress", "user")
ALERT_FIELDS = ("silentAfterMinutes", "ranges", "contactPoint")
_SENSOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIN_CRATEDB = (6, 3, 3)  # Grafana >= 12.4 talks to CrateDB >= 6.3.3 only (REFERENCE.md, B)
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_HEAP = re.compile(r"^(\d+)([mg])$")
_IMAGE_REPO = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")
_IMAGE_REF = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")

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
    # Where a service answers at `address` when not on its own port (the lab publishes on 127.0.0.1).
    published: tuple[tuple[str, int], ...] = ()

    def port_for(self, service: str, port: int) -> int:
        return dict(self.published).get(service, port)

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    def node_labels(self) -> dict[str, str]:
        """Every Swarm node label this host carries: one per service plus the free-form ones."""
        labels = {f"{NODE_LABEL_PREFIX}{service}": "true" for service in self.services}
        labels.update(self.labels)
        return dict(sorted(labels.items()))


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    """Scheduled snapshots into one repository (opt-in)."""

    type: str  # fs: a directory shared by every CrateDB host (NFS...); s3: an S3-compatible bucket
    every_hours: int = 24
    keep: int = 7
    location: str | None = None  # fs: host path, the same shared storage on every CrateDB host
    bucket: str | None = None  # s3
    base_path: str | None = None
    endpoint: str | None = None
    region: str | None = None


@dataclass(frozen=True, kw_only=True)
class ImageSource:
    """How the hosts get an image: they pull it from its registry (`registry`), or `pulumi up`
    ships it to them over SSH, out of this machine's Docker engine (`local`) or out of archives
    that `docker save` wrote (`archives`: one per architecture). See components/images.py."""
    kind: str = "registry"  # registry | local | archives
    archives: tuple[str, ...] = ()  # absolute paths on this machine
    verified: tuple[ArchivedImage, ...] = ()  # what the archives hold, once verify_images read them

    @property
    def shipped(self) -> bool:
        return self.kind != "registry"


@dataclass(frozen=True, kw_only=True)
class RollupSettings:
    """How long the per-minute and per-hour roll-ups are kept (0: every month)."""
    minutes_retention_months: int = 12
    hours_retention_months: int = 120


@dataclass(frozen=True, kw_only=True)
class CrateDbSettings:
    version: str = "6.4.3"
    image: str = "crate"  # the official image; a mirror's repository may be named instead
    digest: str | None = None  # sha256:… of the image that tag names (see image_ref)
    image_source: ImageSource = field(default_factory=ImageSource)
    heap_size: str | None = None  # e.g. "4g"; default: half the host's memory, below 31 GB
    replicas: int = 1
    retention_months: int = 0  # 0 keeps every month
    rollups: RollupSettings = field(default_factory=lambda: RollupSettings())
    cluster_name: str = "mds"
    publish_admin_ui: bool = False  # publish port 4200 on every CrateDB host (host mode)
    backup: BackupSettings | None = None

    @property
    def image_ref(self) -> str:
        return image_ref(self.image, self.version, self.digest)


def image_ref(image: str, version: str, digest: str | None) -> str:
    """`repo:tag@sha256:…` when the digest is known: that is how Docker stores a service's image
    once it asked the registry (pulumi-docker creates services with QueryRegistry), and how the
    provider reads it back; `repo:tag` alone would differ on every `pulumi up` and roll the service."""
    return f"{image}:{version}@{digest}" if digest else f"{image}:{version}"


@dataclass(frozen=True, kw_only=True)
class IngestSettings:
    image: str | None = None  # a prebuilt image; None: built from ingest/ (see build)
    image_source: ImageSource = field(default_factory=ImageSource)  # of `image`
    build: str = "hosts"  # hosts: on every ingest host; local: on this machine, then shipped
    platforms: tuple[str, ...] = ()  # build local: linux/amd64, linux/arm64 (docker buildx); none: this machine's
    base_image: str = "debian:bookworm-slim"
    extra_ca_file: str | None = None  # a CA bundle trusted while the image installs its packages
    port: int = 8080
    publish_mode: str = "host"  # host: each host answers for itself (no IPVS needed); or ingress
    revoked_devices: tuple[str, ...] = ()
    tls: str = "generated"  # generated (a stack CA), provided (ingestTlsCert/Key secrets), off
    memory_mb: int = 512
    cpus: float = 1.0
    eden_roles: tuple[str, ...] = ("sensor",)  # `role` claims of Eden JWTs that are accepted
    eden_issuers: tuple[str, ...] = ()  # `iss` claims accepted; empty: any holder of the secret


@dataclass(frozen=True, kw_only=True)
class LabSettings:
    """The lab stack: simulated hosts (containers with sshd and dockerd) on the local Docker engine."""
    hosts: int = 3
    subnet: str = "172.30.0.0/24"  # the lab bridge; hosts get .11, .12, ...
    privileged: bool = True  # False: the capability workaround of DESIGN.md (where --privileged fails)
    base_image: str = "debian:bookworm"
    agent: bool = True  # a simulated agent (random sensor) on the first host

    def address(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 11 + index)


LAB_FIELDS = ("hosts", "subnet", "privileged", "baseImage", "agent")
LAB_SSH_PORT, LAB_INGEST_PORT, LAB_GRAFANA_PORT = 2200, 18080, 13000  # + host number, on 127.0.0.1


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    """A sensor agent's machine (a Raspberry Pi or any Linux box), reached over SSH."""
    name: str  # the device id: its token and every reading carry it
    address: str
    ssh_user: str = "pi"
    ssh_port: int = 22
    host_key: str | None = None
    sensors: tuple = ({"type": "thermal"},)  # [[sensors]] tables of the agent's config (checked by components/agents.py)
    interval_ms: int = 100


@dataclass(frozen=True, kw_only=True)
class ReadingRange:
    sensor: str
    min: float
    max: float


@dataclass(frozen=True, kw_only=True)
class ContactPoint:
    type: str  # webhook or email
    url: str | None = None  # webhook
    addresses: tuple[str, ...] = ()  # email


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    silent_after_minutes: int = 10
    # BMP180 and BME280 measure -40..85 °C: a temperature outside is a broken sensor or a fire.
    ranges: tuple[ReadingRange, ...] = (ReadingRange(sensor="temperature", min=-40.0, max=85.0),)
    contact_point: ContactPoint | None = None  # None: the rules exist and notify nobody


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """The mail server Grafana sends alert e-mails through; its password is mds:grafanaSmtpPassword."""
    host: str  # host:port
    from_address: str
    user: str | None = None


@dataclass(frozen=True, kw_only=True)
class GrafanaSettings:
    image: str = "grafana/grafana"  # the official OSS image (grafana-oss is not updated from 12.4)
    version: str = "13.0.1"
    digest: str | None = None
    image_source: ImageSource = field(default_factory=ImageSource)
    port: int = 3000
    publish_mode: str = "host"
    alerts: AlertSettings = field(default_factory=AlertSettings)
    smtp: SmtpSettings | None = None

    @property
    def image_ref(self) -> str:
        return image_ref(self.image, self.version, self.digest)


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    hosts: tuple[HostSpec, ...]
    ssh_private_key: Any = field(repr=False)  # pulumi.Output[str] (secret) or str in tests
    data_root: str = "/srv/mds"
    cratedb: CrateDbSettings = field(default_factory=CrateDbSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    grafana: GrafanaSettings = field(default_factory=GrafanaSettings)
    agents: tuple[AgentSpec, ...] = ()
    lab: LabSettings | None = None  # set: the hosts are simulated by components/lab.py
    grafana_admin_password: Any = field(default=None, repr=False)  # secret Output; None: generated
    grafana_smtp_password: Any = field(default=None, repr=False)  # secret Output; None: no SMTP login
    # Passwords of the CrateDB users from the stack's secrets; None: generated by the stack.
    passwords: dict = field(default_factory=dict, repr=False)
    backup_keys: dict = field(default_factory=dict, repr=False)  # s3 access and secret key, secret
    # ingestTokenSecret, edenJwtSecret, ingestTlsCert, ingestTlsKey: secret Outputs when set
    ingest_secrets: dict = field(default_factory=dict, repr=False)

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


def state_dir() -> Path:
    """Files the program keeps on this machine between runs (the SSH key the operator's `ssh`
    uses, known host keys, archives already verified): MDS_STATE_DIR, else `.mds/<stack>`."""
    return Path(os.environ.get("MDS_STATE_DIR", Path(".mds") / pulumi.get_stack())).absolute()


def load() -> StackConfig:
    """Read the stack's configuration once; secrets stay secret Outputs."""
    cfg = pulumi.Config(PROJECT)
    hosts, lab = cfg.get_object("hosts"), cfg.get_object("lab")
    if hosts is None and lab is None:
        raise ConfigError(f"{key('hosts')} is missing: list the hosts of the stack (see the README)")
    private_key = cfg.get_secret("sshPrivateKey")
    if private_key is None and lab is None:
        raise ConfigError(
            f"{key('sshPrivateKey')} is missing: set it with "
            f"`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    raw = {"hosts": hosts, "lab": lab, "dataRoot": cfg.get("dataRoot"), "cratedb": cfg.get_object("cratedb"),
           "ingest": cfg.get_object("ingest"), "grafana": cfg.get_object("grafana"), "agents": cfg.get_object("agents")}
    passwords = {user: cfg.get_secret(f"{user}Password") for user in PASSWORD_USERS}
    s3_keys = {name: cfg.get_secret(name) for name in ("backupAccessKey", "backupSecretKey")}
    ingest_secrets = {name: cfg.get_secret(name) for name in ("ingestTokenSecret", "edenJwtSecret", "ingestTlsCert", "ingestTlsKey")}
    config = verify_images(parse({k: v for k, v in raw.items() if v is not None}, ssh_private_key=private_key),
                           state_dir() / "archives.json")
    admin = cfg.get_secret("grafanaAdminPassword")
    smtp_password = cfg.get_secret("grafanaSmtpPassword")
    if smtp_password is not None and config.grafana.smtp is None:
        raise ConfigError(f"{key('grafanaSmtpPassword')} is set, but {key('grafana')}.smtp is not: set the mail server too")
    return replace(config, grafana_smtp_password=smtp_password, grafana_admin_password=None if admin is None else admin.apply(
        lambda v: check_password(v, "grafanaAdminPassword")), passwords={
        user: value.apply(lambda v, u=user: check_password(v, f"{u}Password"))
        for user, value in passwords.items() if value is not None
    }, backup_keys={
        name: value.apply(lambda v, n=name: check_s3_key(v, n)) for name, value in s3_keys.items() if value is not None
    }, ingest_secrets={name: value for name, value in ingest_secrets.items() if value is not None})


PASSWORD_USERS = ("admin", "ingest", "grafana")  # mds:<user>Password; also mds:backupAccessKey/SecretKey
_PASSWORD = re.compile(r"^[A-Za-z0-9._~+=@#%^*!,-]{16,128}$")


def check_s3_key(value: str, name: str) -> str:
    if not _S3_VALUE.match(value.replace("+", "").replace("=", "")):
        raise ConfigError(f"{key(name)}: not allowed; S3 keys are letters, digits and ._/:-+=")
    return value


def check_password(value: str, name: str) -> str:
    """Passwords travel inside SQL and provisioning files: a safe alphabet keeps them intact
    (no quotes, backslashes or `$`, which Grafana's file provider would expand)."""
    if not _PASSWORD.match(value):
        raise ConfigError(
            f"{key(name)}: not allowed; use 16 to 128 characters of letters, digits and ._~+=@#%^*!,- "
            f"(or leave it unset and the stack generates one)"
        )
    return value


def parse(raw: Mapping[str, Any], *, ssh_private_key: Any) -> StackConfig:
    """Validate the raw configuration values (camelCase keys as in the stack file)."""
    lab = None
    if raw.get("lab") is not None:
        if raw.get("hosts") is not None:
            raise ConfigError(f"{key('lab')} and {key('hosts')}: a lab stack makes its own hosts; set one of them")
        lab = _parse_lab(raw["lab"])
        raw = {**raw, "hosts": lab_hosts(lab)}
        if "agents" not in raw and lab.agent:
            raw["agents"] = [{"name": "lab-agent", "address": "127.0.0.1", "sshUser": "root", "sshPort": LAB_SSH_PORT + 1,
                              "sensors": [{"type": "random"}]}]
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
    _check_unique(hosts, "address", lambda h: h.address.lower() if h.ssh_port == 22 else f"{h.address.lower()}:{h.ssh_port}")
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
    # A lab ships what this machine's Docker engine holds: it needs no registry (README, air-gapped).
    shipped_default = "local" if lab else "registry"
    cratedb = _parse_cratedb(raw.get("cratedb", {}), sum("cratedb" in h.services for h in hosts), shipped_default)
    ingest = _parse_ingest(raw.get("ingest", {}), "local" if lab else "hosts")
    grafana = _parse_grafana(raw.get("grafana", {}), shipped_default)
    if grafana.port == ingest.port:
        raise ConfigError(f"{key('grafana')}.port: {grafana.port} is the ingest's port too; choose another")
    agents = _parse_agents(raw.get("agents", []))
    if lab:  # the lab publishes each host's ports on 127.0.0.1
        hosts = tuple(replace(h, published=(("grafana", LAB_GRAFANA_PORT + i + 1), ("ingest", LAB_INGEST_PORT + i + 1)))
                      for i, h in enumerate(hosts))
    return StackConfig(hosts=hosts, ssh_private_key=ssh_private_key, data_root=data_root, cratedb=cratedb,
                       ingest=ingest, grafana=grafana, agents=agents, lab=lab)


def _parse_lab(raw: Any) -> LabSettings:
    where = key("lab")
    _check_fields(raw, where, LAB_FIELDS)
    defaults = LabSettings()
    count = raw.get("hosts", defaults.hosts)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 7:
        raise ConfigError(f"{where}.hosts: {count!r} must be a whole number from 1 to 7")
    subnet = raw.get("subnet", defaults.subnet)
    try:
        network = ipaddress.ip_network(subnet)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.subnet: {subnet!r} is not a network such as 172.30.0.0/24") from None
    if network.version != 4 or network.num_addresses < 32:
        raise ConfigError(f"{where}.subnet: {subnet!r} must be an IPv4 network of at least 32 addresses (/27)")
    for name in ("privileged", "agent"):
        if not isinstance(raw.get(name, True), bool):
            raise ConfigError(f"{where}.{name}: {raw[name]!r} must be true or false")
    base = raw.get("baseImage", defaults.base_image)
    if not isinstance(base, str) or not _IMAGE_REF.match(base):
        raise ConfigError(f"{where}.baseImage: {base!r} is not an image reference such as debian:bookworm")
    return LabSettings(hosts=count, subnet=str(network), privileged=raw.get("privileged", True), base_image=base,
                       agent=raw.get("agent", True))


def lab_hosts(lab: LabSettings) -> list[dict]:
    """The simulated hosts as host entries: SSH on 127.0.0.1, Swarm on the lab bridge."""
    return [{"name": f"lab{i + 1}", "address": "127.0.0.1", "sshPort": LAB_SSH_PORT + i + 1,
             "privateAddress": lab.address(i), "sshUser": "root"} for i in range(lab.hosts)]


def _parse_agents(raw: Any) -> tuple[AgentSpec, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"{key('agents')} must be a list of agent machines, got {type(raw).__name__}")
    agents = []
    for i, entry in enumerate(raw):
        where = f"{key('agents')}[{i}]"
        _check_fields(entry, where, AGENT_FIELDS)
        name = entry.get("name")
        if not isinstance(name, str) or not _DEVICE_ID.match(name):
            raise ConfigError(f"{where}.name: {name!r} is not a device id (1-64 letters, digits, '.', '_' or '-')")
        address = _address(entry, where)
        user, port, host_key = _ssh_login(entry, where, default_user="pi")
        sensors = entry.get("sensors", [{"type": "thermal"}])
        if not isinstance(sensors, Sequence) or isinstance(sensors, str) or not sensors or not all(isinstance(s, Mapping) for s in sensors):
            raise ConfigError(f"{where}.sensors: list at least one sensor, such as {{type: thermal}}")
        interval = entry.get("intervalMs", 100)
        if isinstance(interval, bool) or not isinstance(interval, int) or not 10 <= interval <= 3_600_000:
            raise ConfigError(f"{where}.intervalMs: {interval!r} must be a whole number of milliseconds, 10 to 3600000")
        agents.append(AgentSpec(name=name, address=address, ssh_user=user, ssh_port=port, host_key=host_key,
                                sensors=tuple(dict(s) for s in sensors), interval_ms=interval))
    _check_unique(tuple(agents), "name", lambda a: a.name.lower(), "agents")
    return tuple(agents)


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: {value!r} is not a port number (1-65535)")
    return value


def _publish_mode(value: Any, where: str) -> str:
    if value not in ("host", "ingress"):
        raise ConfigError(f"{where}: {value!r} is not allowed; use host (default: no IPVS needed) or ingress")
    return value


def _address(raw: Mapping[str, Any], where: str) -> str:
    """Where the stack reaches a machine over SSH: an IP address or a DNS name."""
    address = _require_str(raw, "address", where)
    if not (is_ip(address) or _is_dns_name(address)):
        raise ConfigError(
            f"{where}.address: {address!r} is not an IP address or host name "
            f"(allowed: IPv4, IPv6, or a DNS name such as node1.example.com)"
        )
    return address


def _ssh_login(raw: Mapping[str, Any], where: str, default_user: str) -> tuple[str, int, str | None]:
    """sshUser, sshPort and hostKey of a machine the stack reaches over SSH (a host or an agent)."""
    ssh_user = raw.get("sshUser", default_user)
    if not isinstance(ssh_user, str) or not _SSH_USER.match(ssh_user):
        raise ConfigError(f"{where}.sshUser: {ssh_user!r} is not a Unix user name (lowercase, digits, '_' and '-')")
    ssh_port = raw.get("sshPort", 22)
    if isinstance(ssh_port, str) and ssh_port.isdigit():
        ssh_port = int(ssh_port)
    ssh_port = _port(ssh_port, f"{where}.sshPort")
    host_key = raw.get("hostKey")
    if host_key is not None and (not isinstance(host_key, str) or not _HOST_KEY.match(host_key.strip())):
        raise ConfigError(
            f"{where}.hostKey: {host_key!r} is not an SSH public host key; use one line of "
            f"`ssh-keyscan -t ed25519 HOST` without the host name, such as 'ssh-ed25519 AAAA...'"
        )
    return ssh_user, ssh_port, host_key.strip() if host_key else None


def _check_fields(raw: Any, where: str, fields: Sequence[str]) -> None:
    """A mapping whose keys are all known: a typo fails with the allowed names."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with any of {', '.join(fields)}, got {raw!r}")
    unknown = sorted(map(str, set(raw) - set(fields)))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")


def _parse_ingest(raw: Any, default_build: str = "hosts") -> IngestSettings:
    where = key("ingest")
    _check_fields(raw, where, INGEST_FIELDS)
    defaults = IngestSettings()
    build = raw.get("build", default_build)
    if build not in ("hosts", "local"):
        raise ConfigError(f"{where}.build: {build!r} is not allowed; use hosts (built on every ingest host from "
                          f"baseImage and PyPI) or local (built on this machine, shipped to the hosts over SSH)")
    platforms = raw.get("platforms", [])
    if (not isinstance(platforms, Sequence) or isinstance(platforms, str)
            or not all(isinstance(p, str) and _PLATFORM.match(p) for p in platforms) or len(set(platforms)) != len(platforms)):
        raise ConfigError(f"{where}.platforms: {platforms!r} must list distinct platforms of linux/amd64 and linux/arm64")
    if platforms and build != "local":
        raise ConfigError(f"{where}.platforms: set build: local too (the hosts build for their own platform)")
    if "imageSource" in raw and raw.get("image") is None:
        raise ConfigError(f"{where}.imageSource applies to {where}.image, which is not set; the image built from "
                          f"ingest/ is shipped with build: local")
    source = _parse_image_source(raw, where, "registry")
    for name in ("image", "baseImage"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not _IMAGE_REF.match(value)):
            raise ConfigError(f"{where}.{name}: {value!r} is not an image reference such as registry.example/mds-ingest:1.0")
    extra_ca = raw.get("extraCaFile")
    if extra_ca is not None and (not isinstance(extra_ca, str) or not os.path.isfile(extra_ca)):
        raise ConfigError(f"{where}.extraCaFile: {extra_ca!r} is not a readable file (a PEM bundle on this machine)")
    port = _port(raw.get("port", defaults.port), f"{where}.port")
    mode = _publish_mode(raw.get("publishMode", defaults.publish_mode), f"{where}.publishMode")
    revoked = raw.get("revokedDevices", [])
    if not isinstance(revoked, Sequence) or isinstance(revoked, str) or not all(
            isinstance(d, str) and _DEVICE_ID.match(d) for d in revoked):
        raise ConfigError(f"{where}.revokedDevices: {revoked!r} must be a list of device ids (letters, digits, . _ -)")
    tls = raw.get("tls", defaults.tls)
    if tls not in ("generated", "provided", "off"):
        raise ConfigError(f"{where}.tls: {tls!r} is not allowed; use generated (a CA made by the stack), provided "
                          f"(secrets ingestTlsCert and ingestTlsKey) or off (plain HTTP)")
    memory = raw.get("memoryMb", defaults.memory_mb)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 128:
        raise ConfigError(f"{where}.memoryMb: {memory!r} must be a whole number of at least 128")
    cpus = raw.get("cpus", defaults.cpus)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
        raise ConfigError(f"{where}.cpus: {cpus!r} must be a positive number")
    eden = {}
    for name, default in (("edenRoles", defaults.eden_roles), ("edenIssuers", defaults.eden_issuers)):
        value = raw.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and len(v) <= 256 for v in value):
            raise ConfigError(f"{where}.{name}: {value!r} must be a list of non-empty texts (at most 256 characters)")
        eden[name] = tuple(value)
    if not eden["edenRoles"]:
        raise ConfigError(f"{where}.edenRoles: an empty list would refuse every Eden device; list the roles they send "
                          "(the original agents send the `role` of their config, e.g. sensor)")
    return IngestSettings(image=raw.get("image"), image_source=source, build=build, platforms=tuple(platforms),
                          base_image=raw.get("baseImage", defaults.base_image),
                          extra_ca_file=extra_ca, port=port, publish_mode=mode, revoked_devices=tuple(revoked),
                          tls=tls, memory_mb=memory, cpus=float(cpus), eden_roles=eden["edenRoles"],
                          eden_issuers=eden["edenIssuers"])


def _parse_grafana(raw: Any, default_source: str = "registry") -> GrafanaSettings:
    where = key("grafana")
    _check_fields(raw, where, GRAFANA_FIELDS)
    defaults = GrafanaSettings()
    image = raw.get("image", defaults.image)
    if not isinstance(image, str) or not _IMAGE_REPO.match(image):
        raise ConfigError(f"{where}.image: {image!r} is not an image repository such as grafana/grafana")
    version = raw.get("version", defaults.version)
    match = _VERSION.match(version) if isinstance(version, str) else None
    if not match or int(match.group(1)) < 12:
        raise ConfigError(f"{where}.version: {version!r} must be a Grafana version x.y.z, 12.0.0 or newer")
    port = _port(raw.get("port", defaults.port), f"{where}.port")
    mode = _publish_mode(raw.get("publishMode", defaults.publish_mode), f"{where}.publishMode")
    alerts = _parse_alerts(raw.get("alerts", {}), f"{where}.alerts")
    smtp = _parse_smtp(raw["smtp"], f"{where}.smtp") if raw.get("smtp") is not None else None
    if alerts.contact_point and alerts.contact_point.type == "email" and smtp is None:
        raise ConfigError(f"{where}.alerts.contactPoint: e-mail needs a mail server: set {where}.smtp "
                          "({host: smtp.example.com:587, fromAddress: grafana@example.com, user: …}) and, for a "
                          "login, the secret mds:grafanaSmtpPassword; Grafana sends no mail without one")
    return GrafanaSettings(image=image, version=version, digest=_digest(raw, where),
                           image_source=_parse_image_source(raw, where, default_source), port=port, publish_mode=mode,
                           alerts=alerts, smtp=smtp)


def _parse_smtp(raw: Any, where: str) -> SmtpSettings:
    _check_fields(raw, where, SMTP_FIELDS)
    host = raw.get("host")
    server, _, port = host.rpartition(":") if isinstance(host, str) else ("", "", "")
    if not (is_ip(server.strip("[]")) or _is_dns_name(server)) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}.host: {host!r} must be host:port, such as smtp.example.com:587")
    sender = raw.get("fromAddress")
    if not isinstance(sender, str) or not _EMAIL.match(sender):
        raise ConfigError(f"{where}.fromAddress: {sender!r} is not an e-mail address such as grafana@example.com")
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not _SMTP_USER.match(user)):
        raise ConfigError(f"{where}.user: {user!r} is not allowed; use letters, digits and ._@+-")
    return SmtpSettings(host=host, from_address=sender, user=user)


def _parse_alerts(raw: Any, where: str) -> AlertSettings:
    _check_fields(raw, where, ALERT_FIELDS)
    defaults = AlertSettings()
    silent = raw.get("silentAfterMinutes", defaults.silent_after_minutes)
    if isinstance(silent, bool) or not isinstance(silent, int) or not 1 <= silent <= 10080:
        raise ConfigError(f"{where}.silentAfterMinutes: {silent!r} must be a whole number of minutes, 1 to 10080 (a week)")
    ranges = defaults.ranges
    if "ranges" in raw:
        if not isinstance(raw["ranges"], Mapping):
            raise ConfigError(f"{where}.ranges: {raw['ranges']!r} must map sensor names to {{min, max}}")
        ranges = tuple(_parse_range(sensor, limits, f"{where}.ranges.{sensor}") for sensor, limits in sorted(raw["ranges"].items()))
    return AlertSettings(silent_after_minutes=silent, ranges=ranges,
                         contact_point=_parse_contact_point(raw["contactPoint"], f"{where}.contactPoint") if "contactPoint" in raw else None)


def _parse_range(sensor: Any, limits: Any, where: str) -> ReadingRange:
    if not isinstance(sensor, str) or not _SENSOR_NAME.match(sensor):
        raise ConfigError(f"{where}: {sensor!r} is not a sensor name (letters, digits, . _ -)")
    _check_fields(limits, where, ("min", "max"))
    low, high = limits.get("min"), limits.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ConfigError(f"{where}: min and max must be numbers with min < max, got {limits!r}")
    return ReadingRange(sensor=sensor, min=float(low), max=float(high))


def _parse_contact_point(raw: Any, where: str) -> ContactPoint:
    _check_fields(raw, where, ("type", "url", "addresses"))
    kind = raw.get("type")
    if kind == "webhook":
        url = raw.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url) or "addresses" in raw:
            raise ConfigError(f"{where}: a webhook needs `url` (http or https) and nothing else, got {raw!r}")
        return ContactPoint(type="webhook", url=url)
    if kind == "email":
        addresses = raw.get("addresses")
        if (not isinstance(addresses, Sequence) or isinstance(addresses, str) or not addresses
                or not all(isinstance(a, str) and _EMAIL.match(a) for a in addresses) or "url" in raw):
            raise ConfigError(f"{where}: email needs `addresses`, a list of e-mail addresses, got {raw!r}")
        return ContactPoint(type="email", addresses=tuple(addresses))
    raise ConfigError(f"{where}.type: {kind!r} is not allowed; use webhook or email")


def _parse_cratedb(raw: Any, node_count: int, default_source: str = "registry") -> CrateDbSettings:
    where = key("cratedb")
    _check_fields(raw, where, CRATEDB_FIELDS)
    version = str(raw.get("version", CrateDbSettings.version))
    match = _VERSION.match(version)
    if not match or tuple(map(int, match.groups())) < MIN_CRATEDB:
        raise ConfigError(
            f"{where}.version: {version!r} is not allowed; pin an exact release X.Y.Z, at least "
            f"{'.'.join(map(str, MIN_CRATEDB))} (Grafana's PostgreSQL datasource needs it), such as 6.4.3"
        )
    image = raw.get("image", CrateDbSettings.image)
    if not isinstance(image, str) or not _IMAGE_REPO.match(image) or image.endswith(":" + version):
        raise ConfigError(f"{where}.image: {image!r} is not an image repository (the tag comes from version), such as crate")
    heap = raw.get("heapSize")
    if heap is not None:
        m = _HEAP.match(str(heap))
        if not m or int(m.group(1)) == 0 or int(m.group(1)) * (1 if m.group(2) == "g" else 1 / 1024) >= 31:
            raise ConfigError(f"{where}.heapSize: {heap!r} is not allowed; use megabytes or gigabytes below 31g, such as 512m or 4g")
    default_replicas = 1 if node_count > 1 else 0
    replicas = raw.get("replicas", default_replicas)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ConfigError(f"{where}.replicas: {replicas!r} is not a number of replicas (0 or more)")
    if replicas >= node_count:
        raise ConfigError(
            f"{where}.replicas: {replicas} replicas need at least {replicas + 1} CrateDB hosts, and only "
            f"{node_count} host(s) carry cratedb; lower replicas or add hosts"
        )
    retention = raw.get("retentionMonths", 0)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 0:
        raise ConfigError(f"{where}.retentionMonths: {retention!r} is not a number of months (0 keeps everything)")
    rollups = raw.get("rollups", {})
    _check_fields(rollups, f"{where}.rollups", ROLLUP_FIELDS)
    kept = {}
    for name, default in (("minutesRetentionMonths", RollupSettings.minutes_retention_months),
                          ("hoursRetentionMonths", RollupSettings.hours_retention_months)):
        value = rollups.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}.rollups.{name}: {value!r} is not a number of months (0 keeps everything)")
        kept[name] = value
    cluster_name = raw.get("clusterName", CrateDbSettings.cluster_name)
    if not isinstance(cluster_name, str) or not _HOST_LABEL.match(cluster_name):
        raise ConfigError(f"{where}.clusterName: {cluster_name!r} is not allowed; use letters, digits and '-'")
    publish = raw.get("publishAdminUi", False)
    if not isinstance(publish, bool):
        raise ConfigError(f"{where}.publishAdminUi: {publish!r} must be true or false")
    return CrateDbSettings(
        version=version, image=image, digest=_digest(raw, where), image_source=_parse_image_source(raw, where, default_source),
        heap_size=str(heap) if heap is not None else None, replicas=replicas,
        retention_months=retention, cluster_name=cluster_name, publish_admin_ui=publish,
        rollups=RollupSettings(minutes_retention_months=kept["minutesRetentionMonths"],
                               hours_retention_months=kept["hoursRetentionMonths"]),
        backup=_parse_backup(raw["backup"]) if raw.get("backup") is not None else None,
    )


_S3_VALUE = re.compile(r"^[A-Za-z0-9._/:-]+$")
_EMAIL = re.compile(r"^[^@\s;,$]+@[^@\s;,$]+$")  # no `$`: Grafana expands it in provisioned values
_SMTP_USER = re.compile(r"^[A-Za-z0-9._@+-]{1,256}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_PLATFORM = re.compile(r"^linux/(amd64|arm64)$")


def _parse_image_source(raw: Mapping[str, Any], section: str, default: str) -> ImageSource:
    where = f"{section}.imageSource"
    value = raw.get("imageSource", default)
    if value in ("registry", "local"):
        return ImageSource(kind=value)
    if isinstance(value, Mapping) and set(value) == {"archives"}:
        archives = value["archives"]
        if (not isinstance(archives, Sequence) or isinstance(archives, str) or not archives
                or not all(isinstance(a, str) and a.strip() for a in archives)):
            raise ConfigError(f"{where}.archives: {archives!r} must be a list of files that `docker save` wrote")
        paths = []
        for i, archive in enumerate(archives):
            path = os.path.abspath(os.path.expanduser(archive))
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(f"{where}.archives[{i}]: {archive!r} is not a readable file on this machine")
            paths.append(path)
        return ImageSource(kind="archives", archives=tuple(paths))
    raise ConfigError(f"{where}: {value!r} is not allowed; use registry (the hosts pull the image), local (ship it "
                      f"from this machine's Docker engine) or {{archives: [FILE, ...]}} (ship `docker save` archives)")


def verify_images(config: StackConfig, cache: Path) -> StackConfig:
    """Read every image archive the stack ships (once: `cache` remembers them) and check that it is
    whole and holds the image its service names, one archive per architecture."""
    def verified(section: str, source: ImageSource, reference: str) -> ImageSource:
        if source.kind != "archives":
            return source
        images = []
        for i, path in enumerate(source.archives):
            where = f"{key(section)}.imageSource.archives[{i}]"
            try:
                image = cached_archive(path, cache)
            except ArchiveError as e:
                raise ConfigError(f"{where}: {e}") from None
            if normalize_tag(reference) not in image.tags:
                raise ConfigError(f"{where}: {path} holds {', '.join(image.tags) or 'an untagged image'}, not "
                                  f"{reference}; save the image the stack runs (docker save {reference} | gzip > FILE)")
            if any(other.architecture == image.architecture for other in images):
                raise ConfigError(f"{where}: {path} is a second {image.architecture} image; give one archive per architecture")
            images.append(image)
        return replace(source, verified=tuple(images))

    ingest = config.ingest
    return replace(
        config,
        cratedb=replace(config.cratedb, image_source=verified(
            "cratedb", config.cratedb.image_source, f"{config.cratedb.image}:{config.cratedb.version}")),
        grafana=replace(config.grafana, image_source=verified(
            "grafana", config.grafana.image_source, f"{config.grafana.image}:{config.grafana.version}")),
        ingest=ingest if ingest.image is None else replace(
            ingest, image_source=verified("ingest", ingest.image_source, ingest.image)),
    )


def _digest(raw: Mapping[str, Any], where: str) -> str | None:
    digest = raw.get("digest")
    if digest is not None and (not isinstance(digest, str) or not _DIGEST.match(digest)):
        raise ConfigError(f"{where}.digest: {digest!r} is not an image digest sha256:<64 hex digits> "
                          f"(`docker buildx imagetools inspect IMAGE:TAG` prints it)")
    return digest


def _parse_backup(raw: Any) -> BackupSettings:
    where = key("cratedb.backup")
    if not isinstance(raw, Mapping) or raw.get("type") not in BACKUP_FIELDS:
        raise ConfigError(f"{where}: set type to fs or s3, got {raw!r}")
    kind = raw["type"]
    unknown = sorted(set(raw) - set(BACKUP_FIELDS[kind]))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for type {kind}; allowed: {', '.join(BACKUP_FIELDS[kind])}")
    numbers = {}
    for name, default in (("everyHours", 24), ("keep", 7)):
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{name}: {value!r} must be a whole number of at least 1")
        numbers[name] = value
    text = {}
    for name in BACKUP_FIELDS[kind][1:-2]:
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not _S3_VALUE.match(value)):
            raise ConfigError(f"{where}.{name}: {value!r} is not allowed (letters, digits and ._/:-)")
        text[name] = value
    required = "location" if kind == "fs" else "bucket"
    if not text.get(required):
        raise ConfigError(f"{where}.{required} is missing: a {kind} repository needs it")
    if kind == "fs" and not _DATA_ROOT.match(text["location"]):
        raise ConfigError(f"{where}.location: {text['location']!r} must be an absolute path on storage every CrateDB host shares")
    return BackupSettings(
        type=kind, every_hours=numbers["everyHours"], keep=numbers["keep"], location=text.get("location"),
        bucket=text.get("bucket"), base_path=text.get("basePath"), endpoint=text.get("endpoint"), region=text.get("region"),
    )


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
    address = _address(raw, where)
    private_address = raw.get("privateAddress", address if is_ip(address) else None)
    if private_address is None:
        raise ConfigError(
            f"{where}.privateAddress is missing: it is required when address ({address!r}) is a host name, "
            f"because Swarm advertises an IP address"
        )
    if not isinstance(private_address, str) or not is_ip(private_address):
        raise ConfigError(
            f"{where}.privateAddress: {private_address!r} is not an IP address "
            f"(Swarm advertises and listens on an IPv4 or IPv6 address)"
        )

    ssh_user, ssh_port, host_key = _ssh_login(raw, where, default_user="root")

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

    return HostSpec(
        name=name,
        address=address,
        private_address=private_address,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        role=role,
        services=tuple(s for s in SERVICES if s in services),
        labels=labels,
        host_key=host_key,
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
        if label_key.startswith((*_RESERVED_LABEL_PREFIXES, NODE_LABEL_PREFIX)):
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


def _check_unique(hosts: tuple, field_name: str, value_of, section: str = "hosts") -> None:
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        value = value_of(host)
        if value in seen:
            raise ConfigError(
                f"{key(section)}[{i}].{field_name}: {value!r} is already used by "
                f"{key(section)}[{seen[value]}]; every {section.rstrip('s')} needs its own {field_name}"
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


def is_ip(value: str) -> bool:
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
