"""What the stack configuration is: frozen dataclasses, each setting declared once with its key in
the stack file, its default and its check (stack/checks.py `option`). The section modules
(stack/hosts.py, cratedb.py, ingest.py, grafana.py, agents.py, lab.py) read them and add the rules
that tie settings together; components receive these values and check nothing."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from stack.checks import (
    DEVICE_ID, HOST_LABEL, IMAGE_REF, IMAGE_REPO, VERSION, boolean, digest, image_ref, matching, one_of, option,
    port, positive_number, publish_mode, text_list, whole_number,
)
from stack.constants import NODE_LABEL_PREFIX, SERVICES
from stack.errors import ConfigError
from stack.image_archive import ArchivedImage

MIN_CRATEDB = (6, 3, 3)  # Grafana >= 12.4 talks to CrateDB >= 6.3.3 only (its pgx driver; CrateDB 6.3.3 release notes)
_HEAP = re.compile(r"^(\d+)([mg])$")
LAB_SSH_PORT, LAB_INGEST_PORT, LAB_GRAFANA_PORT = 2200, 18080, 13000  # + host number, on 127.0.0.1


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """One bare-metal host as the stack sees it (read by stack/hosts.py)."""

    name: str  # the machine's hostname: Swarm's node name and CrateDB's node name
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
class ImageSource:
    """How the hosts get an image: they pull it from its registry (`registry`), or `pulumi up`
    ships it to them over SSH, out of this machine's Docker engine (`local`) or out of archives
    that `docker save` wrote (`archives`: one per architecture). See components/images.py."""
    kind: str = "registry"  # registry | local | archives
    archives: tuple[str, ...] = ()  # absolute paths on this machine
    verified: tuple[ArchivedImage, ...] = ()  # what the archives hold, once stack/images.py read them

    @property
    def shipped(self) -> bool:
        return self.kind != "registry"


def image_ref_of(image: str, version: str, digest_: str | None) -> str:
    """`repo:tag@sha256:…` when the digest is known: that is how Docker stores a service's image
    once it asked the registry (pulumi-docker creates services with QueryRegistry), and how the
    provider reads it back; `repo:tag` alone would differ on every `pulumi up` and roll the service."""
    return f"{image}:{version}@{digest_}" if digest_ else f"{image}:{version}"


_months = whole_number("is not a number of months (0 keeps everything)", minimum=0)
_S3_VALUE = re.compile(r"^[A-Za-z0-9._/:-]+$")
_s3_text = matching(_S3_VALUE, "is not allowed (letters, digits and ._/:-)")


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    """Scheduled snapshots into one repository (opt-in). `type` decides which of the texts apply."""
    type: str  # fs: a directory shared by every CrateDB host (NFS...); s3: an S3-compatible bucket
    every_hours: int = option("everyHours", 24, whole_number("must be a whole number of at least 1", minimum=1))
    keep: int = option("keep", 7, whole_number("must be a whole number of at least 1", minimum=1))
    location: str | None = option("location", None, _s3_text)  # fs: host path, shared storage
    bucket: str | None = option("bucket", None, _s3_text)  # s3
    base_path: str | None = option("basePath", None, _s3_text)
    endpoint: str | None = option("endpoint", None, _s3_text)
    region: str | None = option("region", None, _s3_text)


BACKUP_KEYS = {"fs": ("type", "location", "everyHours", "keep"),
               "s3": ("type", "bucket", "basePath", "endpoint", "region", "everyHours", "keep")}


@dataclass(frozen=True, kw_only=True)
class RollupSettings:
    """How long the per-minute and per-hour roll-ups are kept (0: every month)."""
    minutes_retention_months: int = option("minutesRetentionMonths", 12, _months)
    hours_retention_months: int = option("hoursRetentionMonths", 120, _months)


def _cratedb_version(value: Any, where: str) -> str:
    version = str(value)
    match = VERSION.match(version)
    if not match or tuple(map(int, match.groups())) < MIN_CRATEDB:
        raise ConfigError(
            f"{where}: {version!r} is not allowed; pin an exact release X.Y.Z, at least "
            f"{'.'.join(map(str, MIN_CRATEDB))} (Grafana's PostgreSQL datasource needs it), such as 6.4.3"
        )
    return version


def _heap(value: Any, where: str) -> str:
    m = _HEAP.match(str(value))
    if not m or int(m.group(1)) == 0 or int(m.group(1)) * (1 if m.group(2) == "g" else 1 / 1024) >= 31:
        raise ConfigError(f"{where}: {value!r} is not allowed; use megabytes or gigabytes below 31g, such as 512m or 4g")
    return str(value)


@dataclass(frozen=True, kw_only=True)
class CrateDbSettings:
    version: str = option("version", "6.4.3", _cratedb_version)
    image: str = option("image", "crate")  # checked with the version (stack/cratedb.py): a mirror may be named
    digest: str | None = option("digest", None, digest)  # sha256:… of the image that tag names (see image_ref)
    image_source: ImageSource = field(default_factory=ImageSource)  # key imageSource: stack/images.py
    heap_size: str | None = option("heapSize", None, _heap)  # default: half the host's memory, below 31 GB
    # Default: 1 with several CrateDB hosts, else 0 (stack/cratedb.py); below the number of CrateDB hosts.
    replicas: int = option("replicas", 1, whole_number("is not a number of replicas (0 or more)", minimum=0))
    retention_months: int = option("retentionMonths", 0, _months)
    rollups: RollupSettings = field(default_factory=RollupSettings)  # key rollups
    cluster_name: str = option("clusterName", "mds", matching(HOST_LABEL, "is not allowed; use letters, digits and '-'"))
    publish_admin_ui: bool = option("publishAdminUi", False, boolean)  # port 4200 on every CrateDB host
    backup: BackupSettings | None = None  # key backup

    @property
    def image_ref(self) -> str:
        return image_ref_of(self.image, self.version, self.digest)


_PLATFORM = re.compile(r"^linux/(amd64|arm64)$")


def _eden_texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and len(v) <= 256 for v in value):
        raise ConfigError(f"{where}: {value!r} must be a list of non-empty texts (at most 256 characters)")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class IngestSettings:
    image: str | None = option("image", None, image_ref("registry.example/mds-ingest:1.0"))  # prebuilt; None: built from ingest/
    image_source: ImageSource = field(default_factory=ImageSource)  # of `image`; key imageSource
    # hosts: on every ingest host; local: on this machine, then shipped. Default: local in a lab.
    build: str = option("build", "hosts", one_of(("hosts", "local"), (
        "is not allowed; use hosts (built on every ingest host from baseImage) or local (built on this machine, "
        "shipped to the hosts over SSH)")))
    platforms: tuple[str, ...] = option("platforms", (), text_list(
        "must list distinct platforms of linux/amd64 and linux/arm64", lambda p: bool(_PLATFORM.match(p)), distinct=True))
    base_image: str = option("baseImage", "debian:bookworm-slim", image_ref("registry.example/mds-ingest:1.0"))
    extra_ca_file: str | None = option("extraCaFile", None)  # a CA bundle added to the image; checked in stack/ingest.py
    port: int = option("port", 8080, port)
    publish_mode: str = option("publishMode", "host", publish_mode)  # host: each host answers for itself
    revoked_devices: tuple[str, ...] = option("revokedDevices", (), text_list(
        "must be a list of device ids (letters, digits, . _ -)", lambda d: bool(DEVICE_ID.match(d))))
    tls: str = option("tls", "generated", one_of(("generated", "provided", "off"), (
        "is not allowed; use generated (a CA made by the stack), provided (secrets ingestTlsCert and "
        "ingestTlsKey) or off (plain HTTP)")))
    memory_mb: int = option("memoryMb", 512, whole_number("must be a whole number of at least 128", minimum=128))
    cpus: float = option("cpus", 1.0, positive_number)
    eden_roles: tuple[str, ...] = option("edenRoles", ("sensor",), _eden_texts)  # `role` claims of Eden JWTs accepted
    eden_issuers: tuple[str, ...] = option("edenIssuers", (), _eden_texts)  # `iss` claims accepted; empty: any


@dataclass(frozen=True, kw_only=True)
class LabSettings:
    """The lab stack: simulated hosts (containers with sshd and dockerd) on the local Docker engine."""
    hosts: int = option("hosts", 3, whole_number("must be a whole number from 1 to 7", minimum=1, maximum=7))
    subnet: str = option("subnet", "172.30.0.0/24")  # the lab bridge; hosts get .11, .12, ...; checked in stack/lab.py
    # false: the capability workaround of components/lab.py (where --privileged is refused)
    privileged: bool = option("privileged", True, boolean)
    base_image: str = option("baseImage", "debian:bookworm", matching(IMAGE_REF, "is not an image reference such as debian:bookworm"))
    agent: bool = option("agent", True, boolean)  # a simulated agent (random sensor) on the first host

    def address(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 11 + index)


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    """A sensor agent's machine (a Raspberry Pi or any Linux box), reached over SSH (stack/agents.py)."""
    name: str  # the device id: its token and every reading carry it
    address: str
    ssh_user: str = "pi"
    ssh_port: int = 22
    host_key: str | None = None
    sensors: tuple = ({"type": "thermal"},)  # [[sensors]] tables of the agent's config
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
    silent_after_minutes: int = option("silentAfterMinutes", 10, whole_number(
        "must be a whole number of minutes, 1 to 10080 (a week)", minimum=1, maximum=10080))
    # BMP180 and BME280 measure -40..85 °C: a temperature outside is a broken sensor or a fire.
    ranges: tuple[ReadingRange, ...] = (ReadingRange(sensor="temperature", min=-40.0, max=85.0),)  # key ranges
    contact_point: ContactPoint | None = None  # key contactPoint; None: the rules exist and notify nobody


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """The mail server Grafana sends alert e-mails through; its password is mds:grafanaSmtpPassword."""
    host: str  # host:port
    from_address: str
    user: str | None = None


def _grafana_version(value: Any, where: str) -> str:
    match = VERSION.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) < 12:
        raise ConfigError(f"{where}: {value!r} must be a Grafana version x.y.z, 12.0.0 or newer")
    return value


@dataclass(frozen=True, kw_only=True)
class GrafanaSettings:
    # the official OSS image (grafana-oss is not updated from 12.4)
    image: str = option("image", "grafana/grafana", matching(IMAGE_REPO, "is not an image repository such as grafana/grafana"))
    version: str = option("version", "13.0.1", _grafana_version)
    digest: str | None = option("digest", None, digest)
    image_source: ImageSource = field(default_factory=ImageSource)  # key imageSource
    port: int = option("port", 3000, port)
    publish_mode: str = option("publishMode", "host", publish_mode)
    alerts: AlertSettings = field(default_factory=AlertSettings)  # key alerts
    smtp: SmtpSettings | None = None  # key smtp

    @property
    def image_ref(self) -> str:
        return image_ref_of(self.image, self.version, self.digest)


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
    secrets: Secrets = field(default_factory=lambda: Secrets(), repr=False)


@dataclass(frozen=True, kw_only=True)
class Secrets:
    """Secret settings as Pulumi gives them (secret Outputs, or texts in tests); absent ones are
    generated by the components where they can be."""
    grafana_admin_password: Any = None
    grafana_smtp_password: Any = None
    passwords: dict = field(default_factory=dict)  # CrateDB user -> password
    backup_keys: dict = field(default_factory=dict)  # backupAccessKey, backupSecretKey
    ingest: dict = field(default_factory=dict)  # ingestTokenSecret, edenJwtSecret, ingestTlsCert, ingestTlsKey
