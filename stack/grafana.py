"""The `grafana` section: the service, its alert rules and contact point, its mail server; and the
rules: e-mail needs a mail server, Grafana's port is not the ingest's."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from stack.checks import is_dns_name, is_ip, keys_of, known_fields, read
from stack.errors import ConfigError, key
from stack.images import parse_image_source
from stack.model import AlertSettings, ContactPoint, GrafanaSettings, IngestSettings, ReadingRange, SmtpSettings

SMTP_KEYS = ("host", "fromAddress", "user")
_SENSOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s;,$]+@[^@\s;,$]+$")  # no `$`: Grafana expands it in provisioned values
_SMTP_USER = re.compile(r"^[A-Za-z0-9._@+-]{1,256}$")


def parse_grafana(raw: Any, default_source: str) -> GrafanaSettings:
    where = key("grafana")
    known_fields(raw, where, keys_of(GrafanaSettings, "imageSource", "alerts", "smtp"))
    settings = GrafanaSettings(**read(GrafanaSettings, raw, where), image_source=parse_image_source(raw, where, default_source),
                               alerts=_alerts(raw.get("alerts", {}), f"{where}.alerts"),
                               smtp=_smtp(raw["smtp"], f"{where}.smtp") if raw.get("smtp") is not None else None)
    email_needs_a_mail_server(settings)
    return settings


def email_needs_a_mail_server(settings: GrafanaSettings) -> None:
    point = settings.alerts.contact_point
    if point and point.type == "email" and settings.smtp is None:
        where = key("grafana")
        raise ConfigError(f"{where}.alerts.contactPoint: e-mail needs a mail server: set {where}.smtp "
                          "({host: smtp.example.com:587, fromAddress: grafana@example.com, user: …}) and, for a "
                          "login, the secret mds:grafanaSmtpPassword; Grafana sends no mail without one")


def ports_differ(grafana: GrafanaSettings, ingest: IngestSettings) -> None:
    if grafana.port == ingest.port:
        raise ConfigError(f"{key('grafana')}.port: {grafana.port} is the ingest's port too; choose another")


def smtp_password_needs_a_mail_server(grafana: GrafanaSettings, password_given: bool) -> None:
    if password_given and grafana.smtp is None:
        raise ConfigError(f"{key('grafanaSmtpPassword')} is set, but {key('grafana')}.smtp is not: set the mail server too")


def _smtp(raw: Any, where: str) -> SmtpSettings:
    known_fields(raw, where, SMTP_KEYS)
    host = raw.get("host")
    server, _, port = host.rpartition(":") if isinstance(host, str) else ("", "", "")
    if not (is_ip(server.strip("[]")) or is_dns_name(server)) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}.host: {host!r} must be host:port, such as smtp.example.com:587")
    sender = raw.get("fromAddress")
    if not isinstance(sender, str) or not _EMAIL.match(sender):
        raise ConfigError(f"{where}.fromAddress: {sender!r} is not an e-mail address such as grafana@example.com")
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not _SMTP_USER.match(user)):
        raise ConfigError(f"{where}.user: {user!r} is not allowed; use letters, digits and ._@+-")
    return SmtpSettings(host=host, from_address=sender, user=user)


def _alerts(raw: Any, where: str) -> AlertSettings:
    known_fields(raw, where, keys_of(AlertSettings, "ranges", "contactPoint"))
    values = read(AlertSettings, raw, where)
    if "ranges" in raw:
        if not isinstance(raw["ranges"], Mapping):
            raise ConfigError(f"{where}.ranges: {raw['ranges']!r} must map sensor names to {{min, max}}")
        values["ranges"] = tuple(_range(sensor, limits, f"{where}.ranges.{sensor}") for sensor, limits in sorted(raw["ranges"].items()))
    if "contactPoint" in raw:
        values["contact_point"] = _contact_point(raw["contactPoint"], f"{where}.contactPoint")
    return AlertSettings(**values)


def _range(sensor: Any, limits: Any, where: str) -> ReadingRange:
    if not isinstance(sensor, str) or not _SENSOR_NAME.match(sensor):
        raise ConfigError(f"{where}: {sensor!r} is not a sensor name (letters, digits, . _ -)")
    known_fields(limits, where, ("min", "max"))
    low, high = limits.get("min"), limits.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ConfigError(f"{where}: min and max must be numbers with min < max, got {limits!r}")
    return ReadingRange(sensor=sensor, min=float(low), max=float(high))


def _contact_point(raw: Any, where: str) -> ContactPoint:
    known_fields(raw, where, ("type", "url", "addresses"))
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
