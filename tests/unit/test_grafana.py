"""Grafana as code: dashboards, their SQL against the schema, provisioning files, alert rules, and the
component under mocks. Grafana itself cannot run here; tests/integration checks a deployed one."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from cratedb_sqlparse import sqlparse

from components import grafana_dashboards as gd
from components.grafana import provisioning_files
from stack import ConfigError, parse
from stack.model import AlertSettings, ContactPoint, GrafanaSettings, ReadingRange
from tests.unit.conftest import hosts, is_secret, plain

READINGS_SQL = Path(__file__).resolve().parents[2] / "components" / "sql" / "readings.sql"
ROLLUPS_SQL = READINGS_SQL.with_name("rollups.sql")

# Columns of the sys tables the dashboards read (CrateDB docs/admin/system-information.rst).
SYS_COLUMNS = {
    "sys.cluster_health": {"health", "severity", "description", "missing_shards", "underreplicated_shards"},
    "sys.health": {"table_schema", "table_name", "partition_ident", "health", "severity", "missing_shards",
                   "underreplicated_shards"},
    "sys.nodes": {"name", "hostname", "heap['used']", "heap['max']", "heap['free']", "fs['total']['size']",
                  "fs['total']['used']", "fs['total']['available']", "load['1']", "load['5']", "load['15']"},
    "sys.shards": {"state", "primary", "table_name", "schema_name", "id", "routing_state"},
    "sys.checks": {"id", "severity", "description", "passed"},
}
KEYWORDS = {"select", "from", "where", "group", "by", "order", "as", "and", "or", "is", "not", "null", "between",
            "having", "desc", "asc", "interval", "false", "true", "epoch", "count", "on", "timestamp", "with", "time",
            "zone", "union", "all"}


def rollup_columns() -> dict[str, set[str]]:
    """Each roll-up table's columns, from its one definition."""
    tables = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\S+) \((.*?)\n\)", ROLLUPS_SQL.read_text(), re.S):
        tables[name] = {c.strip('"') for c in re.findall(r'^\s{4}("?\w+"?) ', body, re.M)} - {"PRIMARY"}
    return tables


def readings_columns() -> set[str]:
    """Column names (objects with their sub-columns) from the table's one definition."""
    text = READINGS_SQL.read_text()
    body = text[text.index("(") + 1:text.rindex("PRIMARY KEY")]
    columns = set(re.findall(r"^\s{4}(\w+) ", body, re.M))
    for sub in re.findall(r"^\s{8}(\w+) ", body, re.M):
        columns.add(f"reading['{sub}']")
    return columns - {"num", "txt", "bool"}


def expand_macros(sql: str) -> str:
    """The PostgreSQL datasource's macros as Grafana expands them (grafana pkg/tsdb/grafana-postgresql-datasource/macros.go)."""
    frm, to = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{frm}' AND '{to}'", sql)
    sql = re.sub(r"\$__timeGroupAlias\((\w+),\s*'?(\d+)m'?\)", lambda m: f'floor(extract(epoch from {m[1]})/{int(m[2]) * 60})*{int(m[2]) * 60} AS "time"', sql)
    sql = sql.replace("$__interval_ms", "60000").replace("$__timeFrom()", f"'{frm}'").replace("$__timeTo()", f"'{to}'")
    assert "$" not in sql, f"an unexpanded macro in {sql}"
    return sql


def columns_read(sql: str) -> tuple[set[str], set[str]]:
    """The tables a query reads and the column references in it (names, with subscripts)."""
    tables = set(re.findall(r"\bFROM\s+(\w+\.\w+)", sql, re.I))  # not "extract(epoch FROM ts)"
    protected = re.sub(r"\['(\w+)'\]", r"[\1]", sql)  # subscripts are names, not text literals
    without_literals = re.sub(r"'[^']*'", "''", protected)
    aliases = {a.lower() for a in re.findall(r'\bAS\s+"?(\w+)"?', without_literals, re.I)}
    table_parts = {part for table in tables for part in table.split(".")}
    refs = set()
    for match in re.finditer(r'"?([A-Za-z_]\w*)"?((?:\[\w+\])*)\s*(\()?', without_literals):
        name, subscripts, call = match.group(1), match.group(2), match.group(3)
        if call or name.lower() in KEYWORDS | aliases or name in table_parts:
            continue
        refs.add(name + re.sub(r"\[(\w+)\]", r"['\1']", subscripts))
    return tables, refs


def every_query(settings: AlertSettings = AlertSettings()) -> list[tuple[str, str]]:
    queries = []
    for file_name, model in gd.dashboards(settings).items():
        for panel in model["panels"]:
            for target in panel["targets"]:
                queries.append((f"{file_name}: {panel['title']}", target["rawSql"]))
    for rule in gd.alerting(settings)["groups"][0]["rules"]:
        for query in rule["data"]:
            if "rawSql" in query["model"]:
                queries.append((f"alert: {rule['title']}", query["model"]["rawSql"]))
    return queries


def test_three_dashboards_with_fixed_unique_uids_in_sorted_json():
    models = gd.dashboards(AlertSettings())
    assert {m["uid"] for m in models.values()} == {"mds-sensors", "mds-cluster", "mds-ingest"}
    assert gd.dashboards(AlertSettings()) == models  # the same input gives the same JSON
    for model in models.values():
        assert model["panels"] and all(p["targets"] for p in model["panels"])
        for panel in model["panels"]:
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "grafana-postgresql-datasource", "uid": gd.DATASOURCE_UID}


@pytest.mark.parametrize("where, sql", every_query())
def test_every_query_parses_as_cratedb_sql_and_reads_only_known_columns(where, sql):
    expanded = expand_macros(sql)
    assert len(sqlparse(expanded, raise_exception=True)) == 1, where
    tables, refs = columns_read(expanded)
    columns = {"doc.readings": readings_columns(), **rollup_columns(), **SYS_COLUMNS}
    known = set().union(*(columns[t] for t in tables))  # of the tables the query reads, together
    assert refs <= known, f"{where}: unknown columns {sorted(refs - known)}"


def test_the_column_check_catches_a_column_the_schema_does_not_have():
    tables, refs = columns_read("SELECT agent, reading['temp'], humidity FROM doc.readings WHERE ts > now()")
    assert tables == {"doc.readings"}
    assert refs - readings_columns() == {"reading['temp']", "humidity"}


def test_time_series_have_a_time_column_and_buckets_follow_the_interval():
    for file_name, model in gd.dashboards(AlertSettings()).items():
        for panel in model["panels"]:
            for target in panel["targets"]:
                if target["format"] == "time_series":
                    assert 'AS "time"' in target["rawSql"] and "$__interval_ms" in target["rawSql"], panel["title"]
                    assert "$__timeFilter(" in target["rawSql"]  # Grafana's time range, not seconds


def test_datasource_uses_the_read_only_user_and_a_password_file():
    files = provisioning_files(GrafanaSettings())
    path, text = files["datasource"]
    assert path == "/etc/grafana/provisioning/datasources/mds.yaml"
    (source,) = yaml.safe_load(text)["datasources"]
    assert (source["type"], source["uid"], source["user"], source["url"]) == (
        "grafana-postgresql-datasource", "mds-cratedb", "grafana", "cratedb:5432")
    assert source["jsonData"]["sslmode"] == "disable" and source["jsonData"]["database"] == "doc"
    # A connection opened before the grafana user's GRANT keeps failing while it lives (CrateDB
    # checks the session's user as it began): it lives a minute, not Grafana's default 4 h.
    assert source["jsonData"]["connMaxLifetime"] == 60
    assert source["secureJsonData"] == {"password": "$__file{/run/secrets/grafana-db-password}"}


def test_each_dashboard_has_a_provider_of_its_own_reading_the_directory_it_is_mounted_in():
    """Several dashboards under one provider name are taken for duplicates by Grafana 12.4, which
    then deletes and re-creates them at every start (seen with a real Grafana: new ids each time)."""
    files = provisioning_files(GrafanaSettings())
    providers = yaml.safe_load(files["dashboard-provider"][1])["providers"]
    dashboards = {path for role, (path, _) in files.items() if role.startswith("dashboard-") and role != "dashboard-provider"}
    assert dashboards == {f"{gd.DASHBOARDS_DIR}/{n}/{n}.json" for n in ("sensors", "cluster", "ingest")}
    assert sorted(p["options"]["path"] for p in providers) == sorted(path.rsplit("/", 1)[0] for path in dashboards)
    assert len({p["name"] for p in providers}) == len(providers) == 3
    assert {(p["type"], p["folder"], p["allowUiUpdates"]) for p in providers} == {("file", gd.FOLDER_TITLE, False)}
    # One folder uid in several providers is an error to Grafana: the first makes the folder, the
    # others find it by its title (Grafana provisions them one after the other, in this order).
    assert [p.get("folderUid") for p in providers] == ["mds", None, None]


def test_alert_rules_from_settings():
    settings = AlertSettings(silent_after_minutes=15, ranges=(ReadingRange(sensor="humidity", min=0, max=100),
                                                              ReadingRange(sensor="temperature", min=-10, max=50)))
    document = yaml.safe_load(yaml.safe_dump(gd.alerting(settings)))
    (group,) = document["groups"]
    rules = {r["uid"]: r for r in group["rules"]}
    assert set(rules) == {"mds-agent-silent", gd.range_rule_uid("humidity"), gd.range_rule_uid("temperature"),
                          "mds-cluster-health"}
    for rule in rules.values():
        ref_ids = {q["refId"] for q in rule["data"]}
        assert rule["condition"] in ref_ids and len(rule["uid"]) <= 40
        assert not {"folderUID", "orgID", "ruleGroup"} & set(rule)  # named by the group in the file format
    threshold = lambda r: r["data"][1]["model"]["conditions"][0]["evaluator"]  # noqa: E731
    assert threshold(rules["mds-agent-silent"]) == {"type": "gt", "params": [900.0]}
    assert "reading['num'] < 0.0 OR reading['num'] > 100.0" in rules[gd.range_rule_uid("humidity")]["data"][0]["model"]["rawSql"]
    assert rules["mds-cluster-health"]["noDataState"] == "Alerting"  # an unreachable CrateDB alerts too
    assert "contactPoints" not in document and "policies" not in document  # none configured: rules notify nobody


def test_rule_uids_are_valid_and_distinct_for_awkward_sensor_names():
    """Grafana refuses to start on a uid outside [A-Za-z0-9_-] or over 40 characters."""
    names = ["temp.1", "temp-1", "temp_1", "cpu.usage_idle", "x" * 64, "x" * 63 + "y", "a..b", "..."]
    settings = AlertSettings(ranges=tuple(ReadingRange(sensor=n, min=0, max=1) for n in names))
    uids = [r["uid"] for r in gd.alerting(settings)["groups"][0]["rules"]]
    assert len(set(uids)) == len(uids) == len(names) + 2
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid) for uid in uids), uids


def test_a_dollar_in_a_webhook_url_reaches_grafana_as_a_dollar():
    document = gd.alerting(AlertSettings(contact_point=ContactPoint(type="webhook", url="https://hooks.example/x?sig=a$b")))
    url = document["contactPoints"][0]["receivers"][0]["settings"]["url"]
    assert url == "https://hooks.example/x?sig=a$$b"  # Grafana turns $$ into $ (values.go)


def test_the_readings_per_minute_stat_leaves_out_the_interval_still_filling():
    (query,) = [sql for where, sql in every_query() if "Readings per minute" in where]
    assert """WHERE "time" < date_bin($__interval_ms * INTERVAL '1 millisecond', now(), 0)""" in query


def test_ingest_panels_bound_ts_so_that_only_recent_partitions_are_read():
    queries = [sql for where, sql in every_query() if where.startswith("ingest")]
    assert queries and all("$__timeFilter(received)" in q and "ts BETWEEN CAST($__timeFrom()" in q for q in queries)


def test_no_dollar_outside_annotations_in_the_alerting_file():
    """Grafana expands $VAR in provisioned alert rules except in annotations."""
    document = gd.alerting(AlertSettings())
    for rule in document["groups"][0]["rules"]:
        assert "$" not in json.dumps({k: v for k, v in rule.items() if k != "annotations"}), rule["uid"]


@pytest.mark.parametrize("point, receiver", [
    (ContactPoint(type="webhook", url="https://hooks.example/mds"), {"type": "webhook", "settings": {"url": "https://hooks.example/mds"}}),
    (ContactPoint(type="email", addresses=("a@example.org", "b@example.org")),
     {"type": "email", "settings": {"addresses": "a@example.org;b@example.org"}}),
])
def test_a_configured_contact_point_receives_every_alert(point, receiver):
    document = gd.alerting(AlertSettings(contact_point=point))
    (contact,) = document["contactPoints"]
    assert {k: v for k, v in contact["receivers"][0].items() if k != "uid"} == receiver
    assert document["policies"][0]["receiver"] == contact["name"]


@pytest.mark.parametrize("grafana, message", [
    ({"port": 8080}, "mds:grafana.port: 8080 is the ingest's port too"),
    ({"colour": "blue"}, "mds:grafana: unknown field(s) colour"),
    ({"version": "10.4.0"}, "mds:grafana.version: '10.4.0' must be a Grafana version"),
    ({"publishMode": "mesh"}, "mds:grafana.publishMode: 'mesh' is not allowed"),
    ({"alerts": {"silentAfterMinutes": 0}}, "mds:grafana.alerts.silentAfterMinutes: 0"),
    ({"alerts": {"ranges": {"temp'; DROP": {"min": 0, "max": 1}}}}, "is not a sensor name"),
    ({"alerts": {"ranges": {"t": {"min": 5, "max": 1}}}}, "mds:grafana.alerts.ranges.t: min and max"),
    ({"alerts": {"contactPoint": {"type": "sms"}}}, "mds:grafana.alerts.contactPoint.type: 'sms'"),
    ({"alerts": {"contactPoint": {"type": "webhook"}}}, "mds:grafana.alerts.contactPoint: a webhook needs `url`"),
    ({"alerts": {"contactPoint": {"type": "email", "addresses": ["nobody"]}}}, "email needs `addresses`"),
    ({"alerts": {"contactPoint": {"type": "email", "addresses": ["ops@example.org"]}}},
     "mds:grafana.alerts.contactPoint: e-mail needs a mail server: set mds:grafana.smtp"),
    ({"smtp": {"host": "smtp.example.org"}}, "mds:grafana.smtp.host: 'smtp.example.org' must be host:port"),
    ({"smtp": {"host": "smtp.example.org:587", "fromAddress": "grafana"}}, "mds:grafana.smtp.fromAddress: 'grafana'"),
    ({"smtp": {"host": "smtp.example.org:587", "fromAddress": "g@example.org", "password": "x"}},
     "mds:grafana.smtp: unknown field(s) password"),
])
def test_bad_grafana_settings_name_the_key(grafana, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"hosts": hosts(3), "grafana": grafana}, ssh_private_key="k")


def service(declared):
    return declared["grafana-service"].inputs


def test_grafana_starts_after_the_schema_step_gave_its_user_privileges(deploy):
    """A datasource connection opened before the GRANT answered "Schema 'doc' unknown" for as long
    as it lived (CrateDB checks the session's user as it began; seen on the lab stack)."""
    declared, _ = deploy({"hosts": hosts(3)})
    assert "cratedb-schema" in declared["grafana-service"].depends_on


def test_one_replica_on_grafana_hosts_with_provisioning_and_secrets(deploy):
    declared, outputs = deploy({"hosts": hosts(2, services=["cratedb", "ingest"]) + [
        {"name": "ui", "address": "192.0.2.50", "services": ["grafana", "cratedb"]}], "cratedb": {"replicas": 1}})
    inputs = service(declared)
    assert inputs["name"] == "grafana" and inputs["mode"] == {"replicated": {"replicas": 1}}
    spec = inputs["taskSpec"]
    assert spec["placement"]["constraints"] == ["node.labels.mds.grafana==true"]
    assert inputs["endpointSpec"] == {"mode": "dnsrr", "ports": [
        {"targetPort": 3000, "publishedPort": 3000, "publishMode": "host"}]}
    container = spec["containerSpec"]
    assert container["image"] == "grafana/grafana:13.0.1"
    assert "/api/health" in " ".join(container["healthcheck"]["tests"])
    env = container["env"]
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_USERS_ALLOW_SIGN_UP"]) == ("false", "false")
    # no calls home: no plugin installs at start (Grafana keeps no state here), no news feed
    assert (env["GF_PLUGINS_PREINSTALL_DISABLED"], env["GF_NEWS_NEWS_FEED_ENABLED"]) == ("true", "false")
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    secrets = {s["fileName"]: s["secretId"] for s in container["secrets"]}
    assert secrets == {"grafana-admin-password": "grafana-secret-admin-id", "grafana-db-password": "cratedb-secret-grafana-id"}
    mounted = {c["fileName"] for c in container["configs"]}
    assert mounted == {path for path, _ in provisioning_files(GrafanaSettings()).values()}
    assert "mounts" not in container  # no state to keep: everything is provisioned
    assert outputs["grafanaUrls"] == ["http://192.0.2.50:3000"]
    assert outputs["grafanaAdminPassword"] == "generated-grafana-admin-password"


def test_no_secret_value_in_any_config_and_the_admin_password_is_a_secret(deploy):
    passwords = {"grafanaAdminPassword": "grafana-admin-pass-0123456789", "grafanaPassword": "grafana-db-pass-0123456789",
                 "ingestPassword": "ingest-db-pass-0123456789", "adminPassword": "crate-admin-pass-0123456789"}
    declared, _ = deploy({"hosts": hosts(3), **passwords})
    configs = [d for d in declared.values() if d.typ == "docker:index/serviceConfig:ServiceConfig"]
    assert len([c for c in configs if c.name.startswith("grafana-")]) == 6
    for config in configs:
        text = base64.b64decode(plain(config.inputs["data"])).decode()
        assert not any(p in text for p in passwords.values()), config.name
    admin = declared["grafana-secret-admin"].inputs["data"]
    assert is_secret(admin) and base64.b64decode(plain(admin)).decode() == passwords["grafanaAdminPassword"]


def test_an_edited_dashboard_replaces_its_config_only(deploy):
    contents = []
    for minutes in (10, 20):  # the silent-agent panel's title and SQL carry the setting
        declared, _ = deploy({"hosts": hosts(3), "grafana": {"alerts": {"silentAfterMinutes": minutes}}})
        contents.append({n: d.inputs["data"] for n, d in declared.items() if n.startswith("grafana-dashboard-")})
    assert contents[0]["grafana-dashboard-cluster"] == contents[1]["grafana-dashboard-cluster"]
    assert contents[0]["grafana-dashboard-sensors"] != contents[1]["grafana-dashboard-sensors"]


def test_alert_rules_and_dashboards_live_in_folders_that_cannot_collide():
    """Rules find their folder by title and create it; the dashboard provider by uid: with one title,
    both made at start can give two folders of that title (grafana/grafana#125079)."""
    rules_folder = gd.alerting(AlertSettings())["groups"][0]["folder"]
    (provider,) = gd.dashboard_provider(["sensors"])["providers"]
    assert provider["folderUid"] == "mds" and rules_folder != provider["folder"]
    # Grafana 12.4 finds "the" dashboards folder by a full-text search of its title: a folder whose
    # title shares a word with it was taken for a duplicate and deleted at each start (it failed
    # only because it held the rules). Seen with a real Grafana (tests/contract).
    assert not set(rules_folder.lower().split()) & set(provider["folder"].lower().split())


def test_email_alerts_go_through_the_configured_mail_server(deploy):
    smtp = {"host": "smtp.example.org:587", "fromAddress": "grafana@example.org", "user": "grafana"}
    declared, _ = deploy({"hosts": hosts(3), "grafanaSmtpPassword": "smtp-pass-0123456789", "grafana": {
        "smtp": smtp, "alerts": {"contactPoint": {"type": "email", "addresses": ["ops@example.org"]}}}})
    container = service(declared)["taskSpec"]["containerSpec"]
    env = container["env"]
    assert {k: v for k, v in env.items() if k.startswith("GF_SMTP_")} == {
        "GF_SMTP_ENABLED": "true", "GF_SMTP_HOST": "smtp.example.org:587", "GF_SMTP_FROM_ADDRESS": "grafana@example.org",
        "GF_SMTP_FROM_NAME": "Machine Data Stack", "GF_SMTP_USER": "grafana",
        "GF_SMTP_PASSWORD__FILE": "/run/secrets/grafana-smtp-password"}
    assert {s["fileName"] for s in container["secrets"]} >= {"grafana-smtp-password"}
    secret = declared["grafana-secret-smtp"].inputs["data"]
    assert is_secret(secret) and base64.b64decode(plain(secret)).decode() == "smtp-pass-0123456789"
    assert "smtp-pass-0123456789" not in json.dumps(env)


def test_without_a_mail_server_grafana_gets_no_smtp_settings(deploy):
    declared, _ = deploy({"hosts": hosts(3)})
    assert not any(k.startswith("GF_SMTP_") for k in service(declared)["taskSpec"]["containerSpec"]["env"])
