"""The *Ingest* dashboard: what arrives, from the readings table (`received` is set on insert)."""

from grafana_foundation_sdk.builders import timeseries

from components.grafana_dashboards.defaults import TABLE, Sql, bucket, new_dashboard

UID = "mds-ingest"
# `received` is not the partition key: bound `ts` as well (the ingest accepts 30 days back and 5
# minutes ahead), so that CrateDB reads only the monthly partitions that can hold the rows.
TS_BOUND = ("ts BETWEEN CAST($__timeFrom() AS TIMESTAMP WITH TIME ZONE) - INTERVAL '31 days' "
            "AND CAST($__timeTo() AS TIMESTAMP WITH TIME ZONE) + INTERVAL '5 minutes'")


def rows_per_minute_per_agent():
    return (timeseries.Panel().title("Rows per minute per agent").height(9).span(12)
            .with_target(Sql(f"""
                SELECT {bucket('received')}, agent AS metric, count(*) * 60000.0 / $__interval_ms AS rows_per_minute
                FROM {TABLE} WHERE $__timeFilter(received) AND {TS_BOUND} GROUP BY 1, 2 ORDER BY 1""")))


def rows_per_minute():
    return (timeseries.Panel().title("Rows per minute, all agents").height(9).span(12)
            .with_target(Sql(f"""
                SELECT {bucket('received')}, count(*) * 60000.0 / $__interval_ms AS rows_per_minute
                FROM {TABLE} WHERE $__timeFilter(received) AND {TS_BOUND} GROUP BY 1 ORDER BY 1""")))


def delivery_delay():
    return (timeseries.Panel().title("Delivery delay").unit("s")
            .description("Seconds from sampling to storing; grows while agents replay their offline buffer")
            .height(9).span(24)
            .with_target(Sql(f"""
                SELECT {bucket('received')}, agent AS metric,
                       avg(extract(epoch from received) - extract(epoch from ts)) AS delay_seconds
                FROM {TABLE} WHERE $__timeFilter(received) AND {TS_BOUND} GROUP BY 1, 2 ORDER BY 1""")))


def build():
    return (new_dashboard(UID, "Ingest", "Rows arriving in CrateDB, per agent and overall")
            .with_panel(rows_per_minute_per_agent())
            .with_panel(rows_per_minute())
            .with_panel(delivery_delay()))
