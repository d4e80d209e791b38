"""Everything a user sees in Grafana, as code: dashboards (grafana-foundation-sdk), the datasource,
the dashboard provider and the alert rules. Pure functions of the stack's settings; the grafana
component turns their output into Swarm configs. `python -m components.grafana_dashboards DIR`
writes the files for a look.
"""

from __future__ import annotations

from components.grafana_dashboards import alerts, cluster, ingest, sensors
from components.grafana_dashboards.defaults import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, to_json
from stack.model import AlertSettings

DASHBOARDS_DIR = "/etc/grafana/dashboards"
range_rule_uid = alerts.range_rule_uid


def dashboards(alert_settings: AlertSettings) -> dict[str, dict]:
    """File name -> dashboard JSON."""
    return {
        "sensors.json": to_json(sensors.build(alert_settings.silent_after_minutes)),
        "cluster.json": to_json(cluster.build()),
        "ingest.json": to_json(ingest.build()),
    }


# A connection lives at most this long (Grafana's default: 4 h). CrateDB checks a session's
# privileges against its user as it was when the session began (io/crate/role/Roles.java), so a
# changed grant, or a connection opened before it, takes effect within this time.
CONNECTION_LIFETIME_S = 60


def datasource(url: str, password_file: str) -> dict:
    """The CrateDB datasource: the read-only user, its password from a file (a Swarm secret)."""
    return {"apiVersion": 1, "datasources": [{
        "name": "CrateDB", "type": DATASOURCE_TYPE, "uid": DATASOURCE_UID, "url": url, "user": "grafana",
        "access": "proxy", "isDefault": True, "editable": False,
        "jsonData": {"database": "doc", "sslmode": "disable", "postgresVersion": 1400, "timescaledb": False,
                     "connMaxLifetime": CONNECTION_LIFETIME_S},  # pkg/tsdb/grafana-postgresql-datasource/postgres.go
        "secureJsonData": {"password": f"$__file{{{password_file}}}"},
    }]}


def dashboard_provider(names: list[str], root: str = DASHBOARDS_DIR) -> dict:
    """One provider per dashboard, each reading a directory of its own (root/<name>/), in one folder.

    Grafana 12.4 keys provisioned dashboards by provider name and, finding several under one name
    at start, takes them for duplicates: it deleted and re-created every dashboard at each restart
    (pkg/services/dashboards/service/provisioning_cleanup.go, cleanupSteps). It also refuses one
    folder uid in several providers (an error at every read: provisioning/dashboards/config_reader.go).
    So the first provider makes the folder under its fixed uid, and the others find it by title
    (providers are provisioned in the order of this list). Seen with a real Grafana in
    tests/contract/test_grafana_server.py."""
    return {"apiVersion": 1, "providers": [{
        "name": f"mds-{name}", "orgId": 1, "folder": FOLDER_TITLE, **({"folderUid": FOLDER_UID} if i == 0 else {}),
        "type": "file", "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": f"{root}/{name}", "foldersFromFilesStructure": False},
    } for i, name in enumerate(names)]}


def alerting(alert_settings: AlertSettings) -> dict:
    return alerts.provisioning(alert_settings)
