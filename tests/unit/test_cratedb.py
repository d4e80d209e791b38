"""The CrateDB component: settings derived from the hosts, the global service, users, schema."""

import base64
import json
import re

import pytest
import yaml
from cratedb_sqlparse import sqlparse

from components.cratedb import cluster_settings, render_crate_yml, schema_requests
from stack import ConfigError, parse
from stack.model import CrateDbSettings
from stack.secrets import check_password
from tests.unit.conftest import command_data, hosts, is_secret, plain
from tests.unit.test_hosts import script_and_env

# Settings CrateDB documents for 6.4 (docs/config/node.rst, cluster.rst, auth/hba.rst).
DOCUMENTED_SETTINGS = {
    "cluster.name", "node.name", "path.data", "path.logs", "blobs.path", "network.host",
    "network.publish_host", "discovery.seed_hosts", "cluster.initial_master_nodes",
    "gateway.expected_data_nodes", "gateway.recover_after_data_nodes", "auth.host_based.enabled",
    "auth.host_based.config",
    "node.attr.mds_settings",  # node.attr.* is CrateDB's bag of custom attributes (docs/config/node.rst)
}


def specs(count):
    return parse({"hosts": hosts(count)}, ssh_private_key="KEY").hosts


@pytest.mark.parametrize("count, recover_after", [(1, 1), (3, 2), (5, 4)])
def test_cluster_settings_follow_the_host_list(count, recover_after):
    settings = cluster_settings(specs(count))
    assert settings["initial_master_nodes"] == "[" + ", ".join(f"node{i + 1}" for i in range(count)) + "]"
    assert settings["expected_data_nodes"] == str(count)
    assert settings["recover_after_data_nodes"] == str(recover_after)
    assert settings["seed_hosts"] == "tasks.cratedb:4300"
    crate_yml = yaml.safe_load(render_crate_yml(specs(count)))
    assert crate_yml["cluster.initial_master_nodes"] == [f"node{i + 1}" for i in range(count)]
    assert crate_yml["gateway.expected_data_nodes"] == count


def test_crate_yml_uses_only_documented_settings_and_known_variables():
    text = render_crate_yml(specs(3))
    settings = yaml.safe_load(text)
    assert set(settings) <= DOCUMENTED_SETTINGS, set(settings) - DOCUMENTED_SETTINGS
    assert "{" not in text.replace("${", "")  # every {placeholder} filled
    assert settings["node.name"] == "${NODE_NAME}" and settings["cluster.name"] == "${CLUSTER_NAME}"
    assert settings["path.data"] == "/data/data"  # our crate.yml replaces the image's
    assert settings["network.publish_host"] == "_eth0:ipv4_"
    assert settings["auth.host_based.enabled"] is True
    hba = settings["auth.host_based.config"]
    assert hba[0] == {"user": "crate", "address": "_local_", "method": "trust"}
    assert hba[99] == {"method": "password"}


def service_of(declared):
    return declared["cratedb-service"]


def test_global_service_on_cratedb_hosts_with_pinned_image_and_data_dir(deploy):
    declared, outputs = deploy({"hosts": hosts(3), "dataRoot": "/data/mds"})
    service = service_of(declared)
    inputs = service.inputs
    assert service.typ == "docker:index/service:Service" and service.parent == "cratedb"
    assert inputs["name"] == "cratedb"
    assert inputs["mode"] == {"global": True}
    spec = inputs["taskSpec"]
    container = spec["containerSpec"]
    assert container["image"] == "crate:6.4.3"
    assert spec["placement"]["constraints"] == ["node.labels.mds.cratedb==true"]
    assert container["mounts"] == [{"type": "bind", "source": "/data/mds/cratedb", "target": "/data"}]
    assert container["env"]["NODE_NAME"] == "{{.Node.Hostname}}"
    assert container["env"]["CLUSTER_NAME"] == "mds"
    assert "MDS_HEAP_SIZE" not in container["env"]  # half the host's memory, computed on the host
    assert container["commands"] == ["/bin/sh", "/mds/start-crate.sh"] and container["init"] is True
    assert spec["networksAdvanceds"] == [{"id": "swarm-network-id"}]
    # Liveness only (docs/cratedb.md): 503 "no master yet" counts as alive.
    test = " ".join(container["healthcheck"]["tests"])
    assert "http://127.0.0.1:4200/" in test and "^(200|503)$" in test
    update = inputs["updateConfig"]
    assert (update["parallelism"], update["order"], update["failureAction"]) == (1, "stop-first", "pause")
    assert container["stopGracePeriod"] == "10m"  # 600 s, as the provider reads it back
    # Ports 4200/4300/5432 stay inside the swarm; dnsrr because there is no IPVS.
    assert inputs["endpointSpec"] == {"mode": "dnsrr"}
    assert outputs["cratedb"]["service"] == "cratedb"


def test_configs_are_mounted_and_named_by_content(deploy):
    declared, _ = deploy({"hosts": hosts(3)})
    configs = {c["fileName"]: c for c in service_of(declared).inputs["taskSpec"]["containerSpec"]["configs"]}
    assert set(configs) == {"/crate/config/crate.yml", "/mds/start-crate.sh", "/mds/retention.sh", "/mds/rollup.py"}
    assert {path: c["fileMode"] for path, c in configs.items()} == {
        "/crate/config/crate.yml": 0o444, "/mds/start-crate.sh": 0o555, "/mds/retention.sh": 0o555, "/mds/rollup.py": 0o555}
    crate_yml = declared["cratedb-crate-yml"]
    assert base64.b64decode(crate_yml.inputs["data"]).decode() == render_crate_yml(specs(3))
    # A changed host list changes the content, which replaces the config (Swarm configs are immutable).
    declared5, _ = deploy({"hosts": hosts(5)})
    assert declared5["cratedb-crate-yml"].inputs["data"] != crate_yml.inputs["data"]


def test_admin_ui_published_in_host_mode_only_when_asked(deploy):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"publishAdminUi": True, "heapSize": "2g"}})
    endpoint = service_of(declared).inputs["endpointSpec"]
    assert endpoint["ports"] == [{"targetPort": 4200, "publishedPort": 4200, "publishMode": "host"}]
    env = service_of(declared).inputs["taskSpec"]["containerSpec"]["env"]
    assert env["MDS_HEAP_SIZE"] == "2g" and "CRATE_HEAP_SIZE" not in env  # the image sets that one to 512M


def test_passwords_are_generated_secret_and_never_in_configs_env_or_commands(deploy):
    declared, outputs = deploy({"hosts": hosts(3)})
    for user in ("admin", "ingest", "grafana"):
        assert declared[f"cratedb-password-{user}"].typ == "random:index/randomPassword:RandomPassword"
    passwords = [f"generated-cratedb-password-{u}" for u in ("admin", "ingest", "grafana")]
    assert outputs["cratedbPasswords"] == dict(zip(("admin", "ingest", "grafana"), passwords))
    for user in ("ingest", "grafana"):
        secret = declared[f"cratedb-secret-{user}"]
        assert is_secret(secret.inputs["data"])
        assert base64.b64decode(plain(secret.inputs["data"])).decode() == f"generated-cratedb-password-{user}"
    schema = declared["cratedb-schema"]
    assert is_secret(schema.inputs["stdin"])
    everything_public = json.dumps({n: d.inputs for n, d in declared.items() if not n.startswith(("cratedb-secret", "cratedb-schema"))})
    everything_public += schema.inputs["create"]
    assert not any(p in everything_public for p in passwords)


def test_given_passwords_are_used(deploy):
    declared, _ = deploy({"hosts": hosts(3), "ingestPassword": "ingest-pass-0123456789"})
    assert "cratedb-password-ingest" not in declared
    stdin = command_data(declared["cratedb-schema"].inputs)
    assert "CREATE USER ingest WITH (password = 'ingest-pass-0123456789')" in stdin


def test_schema_runs_every_statement_through_cratedbs_grammar(deploy):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups"}}})
    schema = declared["cratedb-schema"]
    script, env, _ = script_and_env(schema.inputs)
    assert env == {"HOST_NAME": "node1", "SERVICE": "cratedb", "EXPECTED_NODES": "3", "DEADLINE": "1800",
                   "SETTINGS_ATTRIBUTE": "mds_settings", "SETTINGS_VERSION": env["SETTINGS_VERSION"]}
    assert "cratedb-service" in schema.depends_on
    steps = [line.split("\t") for line in command_data(schema.inputs).splitlines()]
    tables = ["doc.readings", "doc.readings_1m", "doc.readings_1h", "doc.rollup_status"]
    assert [s[0] for s in steps[:11]] == [f"table {t}" for t in tables] + [f"replicas {t}" for t in tables] + [
        "user admin", "user ingest", "user grafana"]
    assert any(s[0].startswith("repository") and s[4] for s in steps)
    # CrateDB's error may be shown for a step without a secret only.
    assert {s[0].split()[0]: s[3] for s in steps if s[0].startswith(("user", "table", "repository"))} == {
        "user": "0", "table": "1", "repository": "1"}
    for label, body, on_conflict, _, finished in steps:
        for request in [json.loads(body), *json.loads(on_conflict), *([json.loads(finished)] if finished else [])]:
            statement = request["stmt"]
            if statement.startswith("ALTER REPOSITORY"):
                # cratedb-sqlparse 0.0.17 (the newest) predates it; CrateDB 6.4.3's own grammar has
                # `ALTER REPOSITORY name=ident SET ( genericProperties )` (SqlBaseParser.g4, #alterRepository).
                assert re.fullmatch(r"ALTER REPOSITORY \w+ SET \(\w+ = (?:'[^']*'|true)(?:, \w+ = (?:'[^']*'|true))*\)", statement)
                continue
            parsed = sqlparse(statement, raise_exception=True)  # one statement at a time: with several, cratedb-sqlparse can drop a bad last one
            assert len(parsed) == 1, (label, statement)
    table = json.loads(steps[0][1])["stmt"]
    assert "PARTITIONED BY (month)" in table and "number_of_replicas = '1'" in table
    assert "PRIMARY KEY (agent, sensor, ts, month)" in table
    grants = [json.loads(s[1])["stmt"] for s in steps if s[0].startswith("grant")]
    # DQL on its table only: the ingest reads keys back to confirm rows CrateDB answered with rowcount 0
    assert "GRANT DML, DQL ON TABLE doc.readings TO ingest" in grants
    assert not any("TO ingest" in g and ("DDL" in g or "ON SCHEMA" in g or "ON TABLE" not in g) for g in grants)  # cannot drop
    assert not any("TO grafana" in g and ("DML" in g or "DDL" in g) for g in grants)  # grafana cannot write


def test_single_host_stack_has_no_replicas():
    settings = parse({"hosts": hosts(1)}, ssh_private_key="K").cratedb
    assert settings.replicas == 0
    table = json.loads(schema_requests(settings, dict.fromkeys(("admin", "ingest", "grafana"), "p" * 16)).split("\t")[1])
    assert "number_of_replicas = '0'" in table["stmt"]


def test_fs_backups_mount_the_shared_directory_and_schedule_snapshots(deploy):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups", "everyHours": 6, "keep": 28}}})
    container = service_of(declared).inputs["taskSpec"]["containerSpec"]
    assert {"type": "bind", "source": "/mnt/backups", "target": "/snapshots"} in container["mounts"]
    assert {c["fileName"] for c in container["configs"]} >= {"/mds/snapshot.sh"}
    assert (container["env"]["BACKUP_EVERY_HOURS"], container["env"]["BACKUP_KEEP"]) == ("6", "28")
    assert yaml.safe_load(base64.b64decode(declared["cratedb-crate-yml"].inputs["data"]))["path.repo"] == ["/snapshots"]
    step = [line.split("\t") for line in command_data(declared["cratedb-schema"].inputs).splitlines()][-1]
    assert json.loads(step[1])["stmt"] == "CREATE REPOSITORY mds_backups TYPE fs WITH (location = '/snapshots/mds', compress = true)"
    # An existing repository is altered (never dropped: refused while a snapshot runs), and only when it differs.
    assert [r["stmt"] for r in json.loads(step[2])] == ["ALTER REPOSITORY mds_backups SET (location = '/snapshots/mds', compress = true)"]
    assert json.loads(step[4])["stmt"] == ("SELECT name FROM sys.repositories WHERE name = 'mds_backups' AND type = 'fs' "
                                           "AND settings['location'] = '/snapshots/mds' AND settings['compress'] = 'true'")


def test_s3_backups_take_keys_from_secrets(deploy):
    declared, _ = deploy({"hosts": hosts(3), "backupAccessKey": "AKIAEXAMPLE", "backupSecretKey": "s3cr3t/Key+Example",
                          "cratedb": {"backup": {"type": "s3", "bucket": "plant-backups", "endpoint": "minio.local:9000"}}})
    container = service_of(declared).inputs["taskSpec"]["containerSpec"]
    assert not any(m["target"] == "/snapshots" for m in container["mounts"])
    stdin = command_data(declared["cratedb-schema"].inputs)
    assert ("CREATE REPOSITORY mds_backups TYPE s3 WITH (bucket = 'plant-backups', endpoint = 'minio.local:9000', "
            "access_key = 'AKIAEXAMPLE', secret_key = 's3cr3t/Key+Example')") in stdin
    # sys.repositories masks the keys: no query can tell that they changed, so the ALTER always runs.
    assert stdin.splitlines()[-1].split("\t")[3:] == ["0", ""]  # and its error is never shown
    public = json.dumps({n: d.inputs for n, d in declared.items() if n != "cratedb-schema"})
    assert "s3cr3t" not in public


BAD = [
    ({"replicas": 3}, 3, r"mds:cratedb\.replicas: 3 replicas need at least 4 CrateDB hosts, and only 3"),
    ({"replicas": 1}, 1, r"mds:cratedb\.replicas: 1 replicas need at least 2 CrateDB hosts"),
    ({"replicas": -1}, 3, r"mds:cratedb\.replicas: -1 is not a number of replicas"),
    ({"version": "6.2.0"}, 3, r"mds:cratedb\.version: '6\.2\.0' is not allowed; pin an exact release X\.Y\.Z, at least 6\.3\.3"),
    ({"version": "latest"}, 3, r"mds:cratedb\.version: 'latest' is not allowed"),
    ({"heapSize": "32g"}, 3, r"mds:cratedb\.heapSize: '32g' is not allowed; use megabytes or gigabytes below 31g"),
    ({"heapSize": "lots"}, 3, r"mds:cratedb\.heapSize: 'lots'"),
    ({"image": "crate:6.4.3"}, 3, r"mds:cratedb\.image: 'crate:6\.4\.3' is not an image repository"),
    ({"retentionMonths": -2}, 3, r"mds:cratedb\.retentionMonths: -2 is not a number of months"),
    ({"publishAdminUi": "yes"}, 3, r"mds:cratedb\.publishAdminUi: 'yes' must be true or false"),
    ({"shards": 4}, 3, r"mds:cratedb: unknown field\(s\) shards; allowed: version"),
    ({"backup": {"type": "nfs"}}, 3, r"mds:cratedb\.backup: set type to fs or s3"),
    ({"backup": {"type": "fs"}}, 3, r"mds:cratedb\.backup\.location is missing: a fs repository needs it"),
    ({"backup": {"type": "s3", "location": "/x", "bucket": "b"}}, 3, r"mds:cratedb\.backup: unknown field\(s\) location for type s3"),
    ({"backup": {"type": "fs", "location": "relative"}}, 3, r"mds:cratedb\.backup\.location: 'relative' must be an absolute path"),
    ({"backup": {"type": "s3", "bucket": "b", "keep": 0}}, 3, r"mds:cratedb\.backup\.keep: 0 must be a whole number of at least 1"),
    ({"backup": {"type": "s3", "bucket": "it's"}}, 3, r"mds:cratedb\.backup\.bucket: \"it's\" is not allowed"),
]


@pytest.mark.parametrize("cratedb, count, message", BAD, ids=[m for *_, m in BAD])
def test_bad_cratedb_settings_name_the_key(cratedb, count, message):
    with pytest.raises(ConfigError, match=message):
        parse({"hosts": hosts(count), "cratedb": cratedb}, ssh_private_key="K")


def test_password_alphabet():
    assert check_password("A-good.password_0123", "ingestPassword")
    for bad in ("short", "has'quote-0123456789", "has$dollar-0123456789", "has space 0123456789"):
        with pytest.raises(ConfigError, match="mds:ingestPassword: not allowed"):
            check_password(bad, "ingestPassword")


def test_defaults():
    assert CrateDbSettings().image_ref == "crate:6.4.3"


def test_statements_of_the_node_scripts_parse():
    """retention.sh and start-crate.sh talk SQL to their own node: CrateDB's grammar accepts it."""
    import re

    from components.cratedb import FILES

    retention = (FILES / "retention.sh").read_text()
    cutoff = re.search(r'cutoff="(.+)"', retention).group(1).replace("$2", "3")
    statements = [s.replace("${cutoff}", cutoff).replace("${1%%.*}", "doc").replace("${1#*.}", "readings").replace("$1", "doc.readings")
                  for s in re.findall(r'sql "([^"]+)"', retention)]
    statements += re.findall(r'"stmt": "([^"]+)"', (FILES / "start-crate.sh").read_text())
    assert len(statements) == 3
    for statement in statements:
        assert len(sqlparse(statement, raise_exception=True)) == 1, statement


def test_retention_covers_the_raw_readings_and_each_roll_up_as_configured(deploy):
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"retentionMonths": 3, "rollups": {"hoursRetentionMonths": 0}}})
    env = service_of(declared).inputs["taskSpec"]["containerSpec"]["env"]
    assert env["RETENTION_TABLES"] == "doc.readings=3 doc.readings_1m=12"  # 0: the hours are kept for ever
    declared, _ = deploy({"hosts": hosts(3)})
    assert service_of(declared).inputs["taskSpec"]["containerSpec"]["env"]["RETENTION_TABLES"] == (
        "doc.readings_1m=12 doc.readings_1h=120")  # by default every raw reading is kept


@pytest.mark.parametrize("rollups, message", [
    ({"minutes": 3}, r"mds:cratedb\.rollups: unknown field\(s\) minutes"),
    ({"hoursRetentionMonths": -1}, r"mds:cratedb\.rollups\.hoursRetentionMonths: -1 is not a number of months"),
    ({"minutesRetentionMonths": "12"}, r"mds:cratedb\.rollups\.minutesRetentionMonths: '12' is not a number of months"),
])
def test_roll_up_retention_is_checked_naming_the_key(rollups, message):
    with pytest.raises(ConfigError, match=message):
        parse({"hosts": hosts(3), "cratedb": {"rollups": rollups}}, ssh_private_key="KEY")


def test_the_roll_up_job_s_statements_parse_as_cratedb_sql():
    """The job's SQL runs on real CrateDB in tests/contract (test_rollups_on_cratedb.py); here, in
    every tier, CrateDB's grammar accepts each statement it sends."""
    import importlib.util
    import sys

    from components.cratedb import FILES
    spec = importlib.util.spec_from_file_location("rollup_job_unit", FILES / "rollup.py")
    job = importlib.util.module_from_spec(spec)
    sys.modules["rollup_job_unit"] = job
    spec.loader.exec_module(job)
    sent = []
    def answer(stmt: str, args=None) -> dict:
        sent.append(stmt)
        if stmt.startswith("SELECT watermark"):
            return {"rows": [[1_000_000, 1_000_000]]}
        if stmt.startswith("SELECT DISTINCT"):
            return {"rows": [[900_000], [960_000]]}  # late buckets: their upsert is sent too
        return {"rows": [], "rowcount": 1}
    job.sql = answer
    job.run_all(10_000_000, 60_000, 10_000, 100)
    assert any(s.startswith("INSERT INTO doc.readings_1m") for s in sent) and any("doc.readings_1h" in s for s in sent)
    for statement in sent:
        assert len(sqlparse(statement.replace("?", "1"), raise_exception=True)) == 1, statement
