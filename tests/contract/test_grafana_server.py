"""The contract with Grafana: a real Grafana server on loopback, started with exactly the
provisioning files and settings the stack renders (components/grafana.py: `provisioning_files`,
`grafana_env`), its datasource pointed at a real CrateDB, and what the stack relies on asserted:
health, the datasource's own check through CrateDB's PostgreSQL wire as the read-only user, every
dashboard provisioned in its folder, every alert rule loaded from the file and evaluated without
error over real readings (an out-of-range reading fires and is delivered to the webhook contact
point), every panel's query answered through /api/ds/query, a clean log, and a restart with the
same files that changes nothing.

Needs MDS_GRAFANA_BIN (the `grafana` binary), MDS_GRAFANA_HOME (its homepath: conf/, public/) and
MDS_CRATEDB_URL (a real CrateDB on this machine; its PostgreSQL port is MDS_CRATEDB_PG, default
<host>:5432). The tests use the stack's own table doc.readings and user `grafana` on that CrateDB,
under agent names of their own. CI has neither: these tests skip there.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.cratedb import rollup_tables_sql, table_sql
from components.grafana import PROVISIONING, grafana_env, provisioning_files
from components.grafana_dashboards import alerts, dashboards
from components.grafana_dashboards.defaults import ALERT_FOLDER_TITLE, DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID
from ingest.rows import insert_statement
from stack import parse
from tests.contract.test_cratedb_contract import REAL, Crate
from tests.unit.conftest import hosts

GRAFANA_BIN, GRAFANA_HOME = os.environ.get("MDS_GRAFANA_BIN", ""), os.environ.get("MDS_GRAFANA_HOME", "")
pytestmark = pytest.mark.skipif(not (GRAFANA_BIN and GRAFANA_HOME and REAL),
                                reason="needs a Grafana server (MDS_GRAFANA_BIN, MDS_GRAFANA_HOME) and a real CrateDB (MDS_CRATEDB_URL)")
GRANTS = Path(__file__).resolve().parents[2] / "components" / "sql" / "grants.sql"
SILENT_MINUTES = 5
PROVISIONING_DIRS = ("datasources", "dashboards", "notifiers", "plugins", "access-control", "alerting")


class Webhook:
    """The contact point's receiver: records every notification Grafana posts."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                webhook.received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts?token=$abc"  # a $ Grafana must not expand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GrafanaServer:
    """`grafana server` with the stack's files under a directory of its own."""

    def __init__(self, root: Path, settings, database: str, password: str) -> None:
        self.root, self.port = root, free_port()
        self.admin = secrets.token_urlsafe(16)
        (root / "secrets").mkdir(parents=True)
        # What grafana/grafana's image has (its Dockerfile and run.sh make these directories).
        for directory in ("plugins", *(f"provisioning/{d}" for d in PROVISIONING_DIRS)):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "secrets" / "grafana-db-password").write_text(password)
        for role, (path, content) in provisioning_files(
                settings, database=database, password_file=str(root / "secrets" / "grafana-db-password"),
                dashboards_dir=str(root / "dashboards")).items():
            target = Path(path.replace(PROVISIONING, str(root / "provisioning"), 1))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        env = grafana_env(settings, with_smtp_password=False)
        assert env.pop("GF_SECURITY_ADMIN_PASSWORD__FILE")  # the image's run.sh reads it into this:
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("GF_")}, **env,
                    "GF_SECURITY_ADMIN_PASSWORD": self.admin, "GF_PATHS_PROVISIONING": str(root / "provisioning"),
                    "GF_PATHS_DATA": str(root / "data"), "GF_PATHS_LOGS": str(root / "logs"),
                    "GF_PATHS_PLUGINS": str(root / "plugins"), "GF_SERVER_HTTP_ADDR": "127.0.0.1",
                    "GF_SERVER_HTTP_PORT": str(self.port), "GF_LOG_MODE": "console"}
        self.process: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        log = self.root / f"grafana-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = subprocess.Popen([GRAFANA_BIN, "server", f"--homepath={GRAFANA_HOME}"], env=self.env,
                                        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.get("/api/health").get("database") == "ok":
                    return
            except (OSError, ValueError):
                pass
            assert self.process.poll() is None, f"grafana exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"grafana did not answer within 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def request(self, path: str, body: dict | None = None, method: str | None = None) -> tuple[int, dict | list]:
        auth = base64.b64encode(f"admin:{self.admin}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str):
        status, body = self.request(path)
        assert status == 200, (path, status, body)
        return body

    def log_lines(self, level: str) -> list[str]:
        return [line for log in self.logs for line in log.read_text().splitlines() if f"level={level}" in line]


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def settings(webhook):
    return parse({"hosts": hosts(1), "grafana": {"alerts": {
        "silentAfterMinutes": SILENT_MINUTES, "ranges": {"temperature": {"min": 0, "max": 50}},
        "contactPoint": {"type": "webhook", "url": webhook.url}}}}, ssh_private_key="KEY").grafana


@pytest.fixture(scope="module")
def readings():
    """The stack's table and read-only user on the real CrateDB, and readings of agents of this run:
    one normal, one out of range now, one silent for longer than the rule allows."""
    crate, tag = Crate(REAL), secrets.token_hex(3)
    password = secrets.token_urlsafe(18)
    settings = parse({"hosts": hosts(1)}, ssh_private_key="KEY").cratedb
    for create in [table_sql(settings)] + [c for _, c in rollup_tables_sql(settings)]:  # as the schema step makes them
        crate.ok(create)
    if crate.sql(f"CREATE USER grafana WITH (password = '{password}')")[0] == 409:
        crate.ok(f"ALTER USER grafana SET (password = '{password}')")
    for grant in GRANTS.read_text().splitlines():
        if "TO grafana" in grant:
            crate.ok(grant)
    now = int(time.time() * 1000)
    agents = {kind: f"grafana-ct-{tag}-{kind}" for kind in ("normal", "hot", "quiet")}
    rows = [[now - 2000 * i, agents["normal"], "temperature", {"num": 21.0 + i / 10}, "celsius", {}] for i in range(60)]
    rows += [[now - 1000, agents["hot"], "temperature", {"num": 99.5}, "celsius", {}]]
    rows += [[now - (SILENT_MINUTES + 15) * 60_000 - i, agents["quiet"], "temperature", {"num": 20.0}, "celsius", {}]
             for i in range(3)]
    crate.ok(insert_statement("doc.readings"), bulk_args=rows)
    crate.ok("REFRESH TABLE doc.readings")
    yield agents, password
    crate.ok(f"DELETE FROM doc.readings WHERE agent LIKE 'grafana-ct-{tag}-%'")


@pytest.fixture(scope="module")
def grafana(tmp_path_factory, settings, readings):
    _, password = readings
    database = f"{urlparse(REAL).hostname}:5432"
    server = GrafanaServer(tmp_path_factory.mktemp("grafana"), settings, os.environ.get("MDS_CRATEDB_PG", database), password)
    server.start()
    yield server
    server.stop()


def test_healthy_and_closed_to_anonymous_users(grafana):
    assert grafana.get("/api/health")["database"] == "ok"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{grafana.port}/api/search", timeout=10)
    assert refused.value.code == 401


def test_the_datasource_reaches_cratedb_as_the_read_only_user(grafana):
    status, body = grafana.request(f"/api/datasources/uid/{DATASOURCE_UID}/health")
    assert (status, body.get("status")) == (200, "OK"), body
    source = grafana.get(f"/api/datasources/uid/{DATASOURCE_UID}")
    assert (source["user"], source["readOnly"], source["jsonData"]["sslmode"]) == ("grafana", True, "disable")


def test_every_dashboard_is_provisioned_in_its_folder_and_no_folder_twice(grafana, settings):
    found = {d["uid"]: d for d in grafana.get("/api/search?type=dash-db")}
    expected = {model["uid"] for model in dashboards(settings.alerts).values()}
    assert expected <= set(found), (expected, set(found))
    for uid in expected:
        assert found[uid]["folderUid"] == FOLDER_UID, found[uid]
        assert grafana.get(f"/api/dashboards/uid/{uid}")["meta"]["provisioned"] is True
    titles = [f["title"] for f in grafana.get("/api/folders")]
    assert sorted(titles) == sorted({FOLDER_TITLE, ALERT_FOLDER_TITLE}) and len(titles) == len(set(titles)), titles


def test_every_alert_rule_is_loaded_from_the_file(grafana, settings):
    loaded = {r["uid"]: r for r in grafana.get("/api/v1/provisioning/alert-rules")}
    expected = {alerts._rule_json(rule)["uid"] for rule in alerts.rules(settings.alerts)}
    assert set(loaded) == expected
    assert {r["provenance"] for r in loaded.values()} == {"file"}
    assert {r["folderUID"] for r in loaded.values()} == {grafana.get("/api/folders")[[f["title"] for f in grafana.get("/api/folders")].index(ALERT_FOLDER_TITLE)]["uid"]}


def evaluate(grafana, rule: dict) -> dict[str, float]:
    """A provisioned rule's queries and condition, evaluated now by Grafana's own engine
    (/api/v1/eval): the threshold condition's value per series, by the label that names it."""
    status, body = grafana.request("/api/v1/eval", {"condition": rule["condition"], "data": rule["data"]})
    assert status == 200, body
    frames = body["results"][rule["condition"]]["frames"]
    assert not body["results"][rule["data"][0]["refId"]].get("error"), body
    values = {}
    for frame in frames:
        field = frame["schema"]["fields"][0]
        values[json.dumps(field.get("labels") or {}, sort_keys=True)] = frame["data"]["values"][0][0]
    return values


def test_rules_evaluate_over_real_readings_as_designed(grafana, readings):
    agents, _ = readings
    loaded = {r["uid"]: r for r in grafana.get("/api/v1/provisioning/alert-rules")}
    out_of_range = evaluate(grafana, loaded[alerts.range_rule_uid("temperature")])
    fired = {json.loads(labels).get("agent") for labels, value in out_of_range.items() if value == 1}
    assert agents["hot"] in fired and agents["normal"] not in fired, out_of_range
    silent = evaluate(grafana, loaded["mds-agent-silent"])
    fired = {json.loads(labels).get("agent") for labels, value in silent.items() if value == 1}
    assert agents["quiet"] in fired and agents["normal"] not in fired and agents["hot"] not in fired, silent
    health = evaluate(grafana, loaded["mds-cluster-health"])
    assert list(health.values()) == [0], health  # a GREEN single node: nothing to alert


def test_the_scheduler_evaluates_every_rule_without_error_and_delivers_to_the_contact_point(grafana, readings, webhook):
    agents, _ = readings
    deadline = time.monotonic() + 180
    while True:
        groups = grafana.get("/api/prometheus/grafana/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = [r for r in rules if not r.get("lastEvaluation", "").startswith("0001")]
        delivered = [a for n in webhook.received for a in n.get("alerts", [])
                     if a["labels"].get("agent") == agents["hot"]]
        if rules and len(evaluated) == len(rules) and delivered:
            break
        assert time.monotonic() < deadline, (f"after 180 s: {len(evaluated)} of {len(rules)} rules evaluated, "
                                             f"{len(webhook.received)} notifications")
        time.sleep(5)
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r["health"], r.get("lastError")) for r in rules]
    assert delivered[0]["status"] == "firing" and "99.5" not in json.dumps(delivered[0]["labels"])


def panel_targets(settings) -> list[tuple[str, str, dict]]:
    return [(model["uid"], panel["title"], target) for model in dashboards(settings.alerts).values()
            for panel in model["panels"] for target in panel["targets"]]


def test_every_panel_query_answers_through_grafana(grafana, settings, readings):
    now = int(time.time() * 1000)
    for uid, title, target in panel_targets(settings):
        query = {**target, "intervalMs": 60_000, "maxDataPoints": 500}
        status, body = grafana.request("/api/ds/query", {"from": str(now - 3_600_000), "to": str(now), "queries": [query]})
        result = body.get("results", {}).get(target["refId"], {})
        assert status == 200 and not result.get("error"), (uid, title, status, body)
        frames = result["frames"]
        assert frames, (uid, title)
        fields = [f["name"] for f in frames[0]["schema"]["fields"]]
        if target["format"] == "time_series":  # a time column called `time` first, then values
            assert frames[0]["schema"]["fields"][0]["type"] == "time" and len(fields) >= 2, (uid, title, fields)
        else:  # a table: named columns, or no rows at all (Grafana sends no fields then)
            assert fields or frames[0]["data"]["values"] == [], (uid, title, frames[0])
            assert not any(name.startswith("?") for name in fields), (uid, title, fields)


def test_the_log_has_no_error_and_no_provisioning_warning(grafana):
    errors = grafana.log_lines("error")
    warnings = [line for line in grafana.log_lines("warn") if re.search(r"logger=(provisioning|ngalert|tsdb|datasource|dashboard)", line)]
    assert not errors and not warnings, "\n".join(errors + warnings)[:4000]


def test_a_restart_with_the_same_files_changes_nothing(grafana):
    """Dashboards and folders keep their ids and versions (Grafana 12.4 re-created them at each
    start while several dashboards shared a provider, or a folder title shared a word with the
    dashboards' folder). Rules keep their content; Grafana itself stores every provisioned rule
    again at start (a new `updated`: pkg/services/ngalert/provisioning/alert_rules.go,
    UpdateAlertRule skips its comparison for a caller that may write every rule)."""
    def seen():
        found = grafana.get("/api/search?type=dash-db")
        versions = {d["uid"]: grafana.get(f"/api/dashboards/uid/{d['uid']}")["dashboard"]["version"] for d in found}
        rules = [{k: v for k, v in r.items() if k != "updated"} for r in grafana.get("/api/v1/provisioning/alert-rules")]
        return found, versions, grafana.get("/api/folders"), rules

    before = seen()
    grafana.stop()
    grafana.start()
    after = seen()
    for what, old, new in zip(("dashboards", "versions", "folders", "alert rules"), before, after):
        assert new == old, what
    assert not grafana.log_lines("error")
