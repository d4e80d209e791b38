"""Alert rules and the contact point, as Grafana's alerting provisioning file.

Rules: an agent silent for longer than configured; a reading outside its configured range (one rule
per sensor); cluster health not GREEN. Each SQL query returns a table whose text columns become the
alert's labels and whose one number is compared by a threshold expression.
"""

from __future__ import annotations

import hashlib
import json
import re

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange

from components.grafana_dashboards.defaults import ALERT_FOLDER_TITLE, DATASOURCE_UID, TABLE, Sql
from stack.model import AlertSettings, ContactPoint, ReadingRange

GROUP = "mds"
CONTACT_POINT = "mds"


def _rule(uid: str, title: str, sql: str, threshold: str, value: float, *, for_: str, summary: str,
          no_data: str = "OK", exec_err: str = "Error"):
    """Query A (SQL, table) and C (a threshold on A's number)."""
    return (alerting.Rule(title).uid(uid).condition("C").for_val(for_).no_data_state(no_data).exec_err_state(exec_err)
            .annotations({"summary": summary}).labels({"stack": "mds"})
            .with_query(alerting.Query("A").datasource_uid(DATASOURCE_UID)
                        .relative_time_range(RelativeTimeRange(from_val=600, to=0))
                        .model(Sql(sql, fmt="table")))
            .with_query(alerting.Query("C").datasource_uid("__expr__")
                        .model(expr.TypeThreshold().ref_id("C").expression("A").conditions([
                            expr.ExprTypeThresholdConditions().evaluator(
                                expr.ExprTypeThresholdConditionsEvaluator().type(threshold).params([value]))]))))


def agent_silent(minutes: int):
    return _rule(
        "mds-agent-silent", f"Agent silent for more than {minutes} min",
        f"""SELECT agent, extract(epoch from now()) - extract(epoch from max(ts)) AS silent_seconds
            FROM {TABLE} WHERE ts > now() - INTERVAL '7 days' GROUP BY agent""",
        "gt", minutes * 60.0, for_="1m",
        summary="{{ $labels.agent }} sent no reading for {{ $values.A }} s")


def range_rule_uid(sensor: str) -> str:
    """Grafana refuses to start on a rule uid outside [A-Za-z0-9_-] or over 40 characters
    (pkg/util/shortid_generator.go): the sensor's name made safe and cut, plus a hash of the name,
    so that "temp.1", "temp-1" and two names cut alike still get uids of their own."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", sensor)
    return f"mds-range-{safe[:21]}-{hashlib.sha256(sensor.encode()).hexdigest()[:8]}"


def reading_out_of_range(limits: ReadingRange):
    return _rule(
        range_rule_uid(limits.sensor), f"{limits.sensor} outside {limits.min:g}..{limits.max:g}",
        f"""SELECT agent, count(*) AS out_of_range FROM {TABLE}
            WHERE sensor = '{limits.sensor}' AND ts > now() - INTERVAL '5 minutes'
              AND (reading['num'] < {float(limits.min)!r} OR reading['num'] > {float(limits.max)!r})
            GROUP BY agent""",
        "gt", 0.0, for_="0s",
        summary=f"{{{{ $labels.agent }}}}: {{{{ $values.A }}}} readings of {limits.sensor} outside {limits.min:g}..{limits.max:g} in 5 min")


def cluster_not_green():
    # No data or an error here means CrateDB does not answer: that alerts too.
    return _rule(
        "mds-cluster-health", "CrateDB cluster not GREEN",
        "SELECT health, severity FROM sys.cluster_health",
        "gt", 1.0, for_="2m", no_data="Alerting", exec_err="Alerting",
        summary="CrateDB cluster health is {{ $labels.health }}")


def rules(settings: AlertSettings) -> list:
    return [agent_silent(settings.silent_after_minutes), *map(reading_out_of_range, settings.ranges), cluster_not_green()]


def _rule_json(rule) -> dict:
    data = json.loads(json.dumps(rule.build(), cls=JSONEncoder, sort_keys=True))
    for api_only in ("folderUID", "orgID", "ruleGroup"):  # the file format names them per group
        data.pop(api_only, None)
    return data


def _receiver(point: ContactPoint) -> dict:
    if point.type == "webhook":  # Grafana expands $VAR in provisioned settings: a literal $ is $$
        return {"uid": "mds-webhook", "type": "webhook", "settings": {"url": point.url.replace("$", "$$")}}
    return {"uid": "mds-email", "type": "email", "settings": {"addresses": ";".join(point.addresses)}}


def provisioning(settings: AlertSettings) -> dict:
    """The content of provisioning/alerting/mds.yaml. Without a contact point no policy is
    provisioned: Grafana's default policy then routes to its empty receiver and notifies nobody
    (Grafana >= 12.4, grafana/grafana#116368; before, a default e-mail receiver that cannot send);
    the alerts show in Grafana's alert list."""
    document: dict = {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": GROUP, "folder": ALERT_FOLDER_TITLE, "interval": "1m",
        "rules": [_rule_json(rule) for rule in rules(settings)],
    }]}
    if settings.contact_point:
        document["contactPoints"] = [{"orgId": 1, "name": CONTACT_POINT, "receivers": [_receiver(settings.contact_point)]}]
        document["policies"] = [{"orgId": 1, "receiver": CONTACT_POINT, "group_by": ["alertname", "agent"]}]
    return document
