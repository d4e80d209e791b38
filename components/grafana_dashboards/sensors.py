"""The *Sensors* dashboard: what the agents measure."""

from grafana_foundation_sdk.builders import stat, table, timeseries

from components.grafana_dashboards.defaults import TABLE, Sql, bucket, new_dashboard

UID = "mds-sensors"


def values_over_time():
    return (timeseries.Panel().title("Values over time").description("Mean of each agent's sensor per interval")
            .height(10).span(24)
            .with_target(Sql(f"""
                SELECT {bucket()}, agent || ' / ' || sensor AS metric, avg(reading['num']) AS value
                FROM {TABLE} WHERE $__timeFilter(ts) AND reading['num'] IS NOT NULL
                GROUP BY 1, 2 ORDER BY 1""")))


def latest_values():
    return (table.Panel().title("Latest value").description("The newest reading of every agent and sensor")
            .height(9).span(12)
            .with_target(Sql(f"""
                SELECT agent, sensor, max_by(reading['num'], ts) AS value, max_by(reading['txt'], ts) AS text,
                       max_by(unit, ts) AS unit, max(ts) AS last_reading
                FROM {TABLE} WHERE $__timeFilter(ts)
                GROUP BY agent, sensor ORDER BY agent, sensor""", fmt="table")))


def readings_per_minute():
    # The stat shows the last bucket: the one still filling is left out, or it would read low.
    return (stat.Panel().title("Readings per minute").description("All agents, the last whole interval, scaled to a minute")
            .height(9).span(6)
            .with_target(Sql(f"""
                SELECT {bucket()}, count(*) * 60000.0 / $__interval_ms AS readings_per_minute
                FROM {TABLE} WHERE $__timeFilter(ts)
                  AND floor(extract(epoch from ts) * 1000 / $__interval_ms) < floor(extract(epoch from now()) * 1000 / $__interval_ms)
                GROUP BY 1 ORDER BY 1""")))


def silent_agents(silent_after_minutes: int):
    return (table.Panel().title(f"Agents silent for more than {silent_after_minutes} min")
            .description("Agents with readings in the last 7 days but none recently")
            .height(9).span(6)
            .with_target(Sql(f"""
                SELECT agent, max(ts) AS last_reading,
                       extract(epoch from now()) - extract(epoch from max(ts)) AS silent_seconds
                FROM {TABLE} WHERE ts > now() - INTERVAL '7 days'
                GROUP BY agent HAVING max(ts) < now() - INTERVAL '{silent_after_minutes} minutes'
                ORDER BY last_reading""", fmt="table")))


def build(silent_after_minutes: int):
    return (new_dashboard(UID, "Sensors", "Readings of every agent and sensor")
            .with_panel(values_over_time())
            .with_panel(latest_values())
            .with_panel(readings_per_minute())
            .with_panel(silent_agents(silent_after_minutes)))
