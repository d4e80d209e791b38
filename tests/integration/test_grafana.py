"""Grafana on a deployed stack: healthy, its datasource reaches CrateDB, the dashboards and alert
rules are provisioned, and a reading posted to the ingest comes back through Grafana's query API."""

import base64
import json
import time
import urllib.error
import urllib.request

import pytest

from ingest.tokens import issue
from tests.integration.test_ingest import call as ingest_call

DASHBOARDS = {"mds-sensors", "mds-cluster", "mds-ingest"}
RULES = {"mds-agent-silent", "mds-cluster-health"}


class GrafanaApi:
    def __init__(self, urls: list[str], password: str) -> None:
        self.urls, self.auth = urls, "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        self.url = self._answering()

    def _answering(self) -> str:
        """The one replica answers on one of the Grafana hosts (host-mode port)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url + "/api/health", timeout=5) as response:
                        if response.status == 200:
                            return url
                except OSError:
                    continue
            time.sleep(3)
        raise AssertionError(f"no Grafana answered on {self.urls} within 120 s")

    def request(self, path: str, body: dict | None = None, *, auth: bool = True) -> tuple[int, dict | list]:
        headers = {"Content-Type": "application/json"} | ({"Authorization": self.auth} if auth else {})
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode() if body else None, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def grafana(stack) -> GrafanaApi:
    return GrafanaApi(stack.outputs["grafanaUrls"], stack.outputs["grafanaAdminPassword"])


def test_grafana_is_healthy_and_refuses_anonymous_users(grafana):
    status, health = grafana.request("/api/health", auth=False)
    assert status == 200 and health["database"] == "ok"
    assert grafana.request("/api/search", auth=False)[0] == 401


def test_the_datasource_reaches_cratedb(grafana):
    status, body = grafana.request("/api/datasources/uid/mds-cratedb/health")
    assert (status, body.get("status")) == (200, "OK"), body


def test_dashboards_and_alert_rules_are_provisioned(grafana):
    status, found = grafana.request("/api/search?type=dash-db&tag=mds")
    assert status == 200 and DASHBOARDS <= {d["uid"] for d in found}
    status, rules = grafana.request("/api/v1/provisioning/alert-rules")
    assert status == 200 and RULES <= {r["uid"] for r in rules}


E2E_WITHIN_S = 30  # reads lag writes by about a second (CrateDB refreshes tables every second); Grafana adds little


def test_a_reading_posted_to_each_host_comes_back_through_grafana_within_30_s(stack, grafana):
    device = f"grafana-it-{int(time.time())}"
    token = issue(stack.outputs["ingestTokenSecret"].encode(), device)
    now = int(time.time() * 1000)
    endpoints = stack.outputs["ingestEndpoints"]
    for n, endpoint in enumerate(endpoints):
        body = {"readings": [{"ts": now - n, "sensor": f"it-grafana-{n}", "value": 40.5 + n}]}
        assert ingest_call(stack, endpoint, "/v1/readings", token=token, body=body)[0] == 200, endpoint
    posted = time.monotonic()
    query = {"from": str(now - 3_600_000), "to": str(now + 60_000), "queries": [{
        "refId": "A", "datasource": {"uid": "mds-cratedb"}, "format": "table", "intervalMs": 60000, "maxDataPoints": 100,
        "rawSql": f"SELECT reading['num'] AS value FROM doc.readings WHERE agent = '{device}' AND $__timeFilter(ts) ORDER BY 1"}]}
    values = []
    while time.monotonic() - posted < E2E_WITHIN_S and len(values) < len(endpoints):
        status, answer = grafana.request("/api/ds/query", query)
        assert status == 200, answer
        frame = answer["results"]["A"]["frames"][0]
        values = frame["data"]["values"][0] if frame["data"]["values"] else []
        time.sleep(1)
    assert values == [40.5 + n for n in range(len(endpoints))], f"after {time.monotonic() - posted:.1f} s"
