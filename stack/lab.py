"""The `lab` section: simulated hosts on this machine's Docker engine (components/lab.py), and the
host and agent entries they stand for."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from stack.checks import keys_of, known_fields, read
from stack.errors import ConfigError, key
from stack.model import LAB_GRAFANA_PORT, LAB_INGEST_PORT, LAB_SSH_PORT, HostSpec, LabSettings


def parse_lab(raw: Any) -> LabSettings:
    where = key("lab")
    known_fields(raw, where, keys_of(LabSettings))
    values = read(LabSettings, raw, where)
    try:
        network = ipaddress.ip_network(values["subnet"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.subnet: {values['subnet']!r} is not a network such as 172.30.0.0/24") from None
    if network.version != 4 or network.num_addresses < 32:
        raise ConfigError(f"{where}.subnet: {values['subnet']!r} must be an IPv4 network of at least 32 addresses (/27)")
    return LabSettings(**{**values, "subnet": str(network)})


def lab_hosts(lab: LabSettings) -> list[dict]:
    """The simulated hosts as host entries: SSH on 127.0.0.1, Swarm on the lab bridge."""
    return [{"name": f"lab{i + 1}", "address": "127.0.0.1", "sshPort": LAB_SSH_PORT + i + 1,
             "privateAddress": lab.address(i), "sshUser": "root"} for i in range(lab.hosts)]


def lab_agent() -> dict:
    """The simulated agent on lab1 (a random sensor), so that readings flow at once."""
    return {"name": "lab-agent", "address": "127.0.0.1", "sshUser": "root", "sshPort": LAB_SSH_PORT + 1,
            "sensors": [{"type": "random"}]}


def published_on_loopback(hosts: tuple[HostSpec, ...]) -> tuple[HostSpec, ...]:
    """The lab publishes each host's ingest and Grafana ports on 127.0.0.1."""
    return tuple(replace(h, published=(("grafana", LAB_GRAFANA_PORT + i + 1), ("ingest", LAB_INGEST_PORT + i + 1)))
                 for i, h in enumerate(hosts))
