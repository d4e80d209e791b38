"""The *Sensors* dashboard: what the agents measure."""

from grafana_foundation_sdk.builders import stat, table, timeseries

from components.grafana_dashboards.defaults import (
    HOURS, HOURS_PART, INTERVAL, MINUTES, MINUTES_PART, RAW_PART, TABLE, Sql, bucket, new_dashboard, watermark,
)

UID = "mds-sensors"


def values_over_time():
    # Means from sums and counts: exact whatever mix of raw rows and roll-ups an interval holds. The
    # series name is made once per group, not per row (it took most of a long range's time).
    return (timeseries.Panel().title("Values over time").description("Mean of each agent's sensor per interval")
            .height(10).span(24)
            .with_target(Sql(f"""
                SELECT "time", agent || ' / ' || sensor AS metric, sum(total) / sum(n) AS value FROM (
                  SELECT {bucket()}, agent, sensor, sum(reading['num']) AS total, count(reading['num']) AS n
                  FROM {TABLE} WHERE $__timeFilter(ts) AND reading['num'] IS NOT NULL AND {RAW_PART} GROUP BY 1, 2, 3
                  UNION ALL
                  SELECT {bucket('bucket')}, agent, sensor, sum("sum"), sum("count")
                  FROM {MINUTES} WHERE $__timeFilter(bucket) AND {MINUTES_PART} GROUP BY 1, 2, 3
                  UNION ALL
                  SELECT {bucket('bucket')}, agent, sensor, sum("sum"), sum("count")
                  FROM {HOURS} WHERE $__timeFilter(bucket) AND {HOURS_PART} GROUP BY 1, 2, 3
                ) AS parts WHERE n > 0 GROUP BY "time", agent, sensor ORDER BY 1, 2""")))


def latest_values():
    # Raw readings of the last day at most: a year's range would read a year of them.
    return (table.Panel().title("Latest value").description("The newest reading of every agent and sensor heard from in the last day")
            .height(9).span(12)
            .with_target(Sql(f"""
                SELECT agent, sensor, max_by(reading['num'], ts) AS value, max_by(reading['txt'], ts) AS text,
                       max_by(unit, ts) AS unit, max(ts) AS last_reading
                FROM {TABLE} WHERE $__timeFilter(ts) AND ts > now() - INTERVAL '1 day'
                GROUP BY agent, sensor ORDER BY agent, sensor""", fmt="table")))


def readings_per_minute():
    # The stat shows the last bucket: the one still filling is left out, or it would read low.
    return (stat.Panel().title("Readings per minute").description("All agents, the last whole interval, scaled to a minute")
            .height(9).span(6)
            .with_target(Sql(f"""
                SELECT "time", sum(n) * 60000.0 / $__interval_ms AS readings_per_minute FROM (
                  SELECT {bucket()}, count(*) AS n FROM {TABLE} WHERE $__timeFilter(ts) AND {RAW_PART} GROUP BY 1
                  UNION ALL
                  SELECT {bucket('bucket')}, sum(readings) FROM {MINUTES} WHERE $__timeFilter(bucket) AND {MINUTES_PART} GROUP BY 1
                  UNION ALL
                  SELECT {bucket('bucket')}, sum(readings) FROM {HOURS} WHERE $__timeFilter(bucket) AND {HOURS_PART} GROUP BY 1
                ) AS parts WHERE "time" < date_bin({INTERVAL}, now(), 0)
                GROUP BY 1 ORDER BY 1""")))


def silent_agents(silent_after_minutes: int):
    return (table.Panel().title(f"Agents silent for more than {silent_after_minutes} min")
            .description("Agents with readings in the last 7 days but none recently")
            .height(9).span(6)
            .with_target(Sql(f"""
                SELECT agent, max(newest) AS last_reading,
                       extract(epoch from now()) - extract(epoch from max(newest)) AS silent_seconds FROM (
                  SELECT agent, max(ts) AS newest FROM {TABLE}
                  WHERE ts > now() - INTERVAL '7 days' AND ts >= {watermark('1m')} GROUP BY agent
                  UNION ALL
                  SELECT agent, max(last_ts) FROM {MINUTES}
                  WHERE bucket > now() - INTERVAL '7 days' AND bucket < {watermark('1m')} GROUP BY agent
                ) AS parts
                GROUP BY agent HAVING max(newest) < now() - INTERVAL '{silent_after_minutes} minutes'
                ORDER BY last_reading""", fmt="table")))


def build(silent_after_minutes: int):
    return (new_dashboard(UID, "Sensors", "Readings of every agent and sensor")
            .with_panel(values_over_time())
            .with_panel(latest_values())
            .with_panel(readings_per_minute())
            .with_panel(silent_agents(silent_after_minutes)))
