"""Shared defaults of the dashboards: the datasource, the SQL query target, panel sizes, JSON output.

The SDK has no builder for the PostgreSQL datasource's query, so `Sql` is a small one: a raw SQL
target in code mode. The time column of every time series is called `time` (Grafana's sqleng data frames);
buckets follow the dashboard's interval through `$__interval_ms` (`$__unixEpochFilter` would compare seconds with milliseconds).
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from stack.constants import READINGS_TABLE, ROLLUP_STATUS_TABLE, ROLLUP_TABLES

DATASOURCE_UID = "mds-cratedb"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_REF = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
FOLDER_UID = "mds"
FOLDER_TITLE = "Machine Data Stack"
# Alert rules name their folder by title and create it if missing, while the dashboard provider
# finds its folder by uid: one title for both can make two folders when they are provisioned at
# the same time at start (grafana/grafana#125079). The rules get a folder of their own.
ALERT_FOLDER_TITLE = "MDS alert rules"
TABLE = READINGS_TABLE
MINUTES, HOURS = ROLLUP_TABLES["1m"], ROLLUP_TABLES["1h"]

# A bucket of the dashboard's interval, named `time`. date_bin groups a month of minute roll-ups
# about a third faster than floor(extract(epoch ...) / interval) (measured on CrateDB 6.4.3).
INTERVAL = "$__interval_ms * INTERVAL '1 millisecond'"
BUCKET = f'date_bin({INTERVAL}, {{column}}, 0) AS "time"'


def bucket(column: str = "ts") -> str:
    return BUCKET.format(column=column)


# Which rows a panel reads, by its interval (Grafana's $__interval_ms grows with the time range):
# below a minute the raw readings; up to an hour the minute roll-ups; beyond, the hour roll-ups. The
# recent end always comes from what is not rolled up yet (minutes after the hours' watermark, raw
# readings after the minutes'), so a panel never shows a gap or a dip at "now". Before the first
# roll-up run the watermarks are 0: everything comes from the raw readings.
def watermark(resolution: str) -> str:
    return f"coalesce((SELECT watermark FROM {ROLLUP_STATUS_TABLE} WHERE resolution = '{resolution}'), 0)"


RAW_PART = f"($__interval_ms < 60000 OR ts >= {watermark('1m')})"
MINUTES_PART = (f"$__interval_ms >= 60000 AND bucket < {watermark('1m')} "
                f"AND ($__interval_ms < 3600000 OR bucket >= {watermark('1h')})")
HOURS_PART = f"$__interval_ms >= 3600000 AND bucket < {watermark('1h')}"


class _SqlQuery(cogvariants.Dataquery):
    def __init__(self, ref_id: str, sql: str, fmt: str) -> None:
        self.ref_id, self.sql, self.fmt = ref_id, " ".join(sql.split()), fmt

    def to_json(self) -> dict:
        return {"refId": self.ref_id, "datasource": DATASOURCE_REF, "editorMode": "code",
                "format": self.fmt, "rawQuery": True, "rawSql": self.sql}


class Sql:
    """A raw SQL target: `fmt` is time_series (a `time` column) or table."""

    def __init__(self, sql: str, fmt: str = "time_series", ref_id: str = "A") -> None:
        self._query = _SqlQuery(ref_id, sql, fmt)

    def build(self) -> _SqlQuery:
        return self._query


def new_dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (dashboard.Dashboard(title).uid(uid).description(description).tags(["mds"])
            .refresh("30s").time("now-1h", "now").timezone("browser").readonly())


def to_json(builder) -> dict:
    """The dashboard model as plain JSON data, keys sorted (stable content hashes)."""
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder, sort_keys=True))
