"""The one entry that understands a stack's configuration: raw values in (camelCase keys as in the
stack file), a validated StackConfig out, or a ConfigError naming the key. Pure: every rule is
testable without Pulumi (stack/pulumi_config.py reads Pulumi's config and calls this)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stack.agents import parse_agents
from stack.cratedb import parse_cratedb
from stack.errors import ConfigError, key
from stack.grafana import parse_grafana, ports_differ, smtp_password_needs_a_mail_server
from stack.hosts import parse_data_root, parse_hosts
from stack.ingest import parse_ingest, provided_tls_has_its_secrets
from stack.lab import lab_agent, lab_hosts, parse_lab, published_on_loopback
from stack.model import Secrets, StackConfig


def parse(raw: Mapping[str, Any], *, ssh_private_key: Any, secrets: Secrets | None = None) -> StackConfig:
    secrets = secrets or Secrets()
    lab = None
    if raw.get("lab") is not None:
        if raw.get("hosts") is not None:
            raise ConfigError(f"{key('lab')} and {key('hosts')}: a lab stack makes its own hosts; set one of them")
        lab = parse_lab(raw["lab"])
        raw = {**raw, "hosts": lab_hosts(lab)}
        if "agents" not in raw and lab.agent:
            raw["agents"] = [lab_agent()]
    hosts = parse_hosts(raw.get("hosts"))
    # A lab ships what this machine's Docker engine holds: it needs no registry (docs/operations.md).
    shipped_default = "local" if lab else "registry"
    cratedb = parse_cratedb(raw.get("cratedb", {}), sum("cratedb" in h.services for h in hosts), shipped_default)
    ingest = parse_ingest(raw.get("ingest", {}), "local" if lab else "hosts")
    grafana = parse_grafana(raw.get("grafana", {}), shipped_default)
    ports_differ(grafana, ingest)
    provided_tls_has_its_secrets(ingest, set(secrets.ingest))
    smtp_password_needs_a_mail_server(grafana, secrets.grafana_smtp_password is not None)
    return StackConfig(hosts=published_on_loopback(hosts) if lab else hosts, ssh_private_key=ssh_private_key,
                       data_root=parse_data_root(raw.get("dataRoot", "/srv/mds")), cratedb=cratedb, ingest=ingest,
                       grafana=grafana, agents=parse_agents(raw.get("agents", [])), lab=lab, secrets=secrets)
