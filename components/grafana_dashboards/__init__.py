"""Everything a user sees in Grafana, as code: dashboards (grafana-foundation-sdk), the datasource,
the dashboard provider and the alert rules. Pure functions of the stack's settings; the grafana
component turns their output into Swarm configs. `python -m components.grafana_dashboards DIR`
writes the files for a look.
"""

from __future__ import annotations

from components.grafana_dashboards import alerts, cluster, ingest, sensors
from components.grafana_dashboards.defaults import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, to_json
from stack.config import AlertSettings

DASHBOARDS_DIR = "/etc/grafana/dashboards"
range_rule_uid = alerts.range_rule_uid


def dashboards(alert_settings: AlertSettings) -> dict[str, dict]:
    """File name -> dashboard JSON."""
    return {
        "sensors.json": to_json(sensors.build(alert_settings.silent_after_minutes)),
        "cluster.json": to_json(cluster.build()),
        "ingest.json": to_json(ingest.build()),
    }


def datasource(url: str, password_file: str) -> dict:
    """The CrateDB datasource: the read-only user, its password from a file (a Swarm secret)."""
    return {"apiVersion": 1, "datasources": [{
        "name": "CrateDB", "type": DATASOURCE_TYPE, "uid": DATASOURCE_UID, "url": url, "user": "grafana",
        "access": "proxy", "isDefault": True, "editable": False,
        "jsonData": {"database": "doc", "sslmode": "disable", "postgresVersion": 1400, "timescaledb": False},
        "secureJsonData": {"password": f"$__file{{{password_file}}}"},
    }]}


def dashboard_provider() -> dict:
    return {"apiVersion": 1, "providers": [{
        "name": "mds", "orgId": 1, "folder": FOLDER_TITLE, "folderUid": FOLDER_UID, "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": DASHBOARDS_DIR, "foldersFromFilesStructure": False},
    }]}


def alerting(alert_settings: AlertSettings) -> dict:
    return alerts.provisioning(alert_settings)
