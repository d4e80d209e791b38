-- Roll-ups of the numeric readings per agent and sensor: one row per minute and one per hour, with
-- what a panel needs to aggregate them further exactly (min, max, sum and count for the mean, the
-- last value and its time, the number of readings of any type). Kept by rollup.py, a job in every
-- CrateDB task; `updated` tells the hour roll-up which minutes changed. Monthly partitions, like
-- the raw table, each with few shards: a year of minutes for 100 sensors is 53M small rows.
CREATE TABLE IF NOT EXISTS doc.readings_1m (
    bucket TIMESTAMP WITH TIME ZONE NOT NULL,
    agent TEXT NOT NULL,
    sensor TEXT NOT NULL,
    "min" DOUBLE PRECISION,
    "max" DOUBLE PRECISION,
    "sum" DOUBLE PRECISION,
    "count" BIGINT,
    "last" DOUBLE PRECISION,
    last_ts TIMESTAMP WITH TIME ZONE,
    readings BIGINT,
    updated TIMESTAMP WITH TIME ZONE,
    month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', bucket),
    PRIMARY KEY (agent, sensor, bucket, month)
) CLUSTERED BY (agent) INTO 2 SHARDS PARTITIONED BY (month)
WITH (number_of_replicas = {replicas});

CREATE TABLE IF NOT EXISTS doc.readings_1h (
    bucket TIMESTAMP WITH TIME ZONE NOT NULL,
    agent TEXT NOT NULL,
    sensor TEXT NOT NULL,
    "min" DOUBLE PRECISION,
    "max" DOUBLE PRECISION,
    "sum" DOUBLE PRECISION,
    "count" BIGINT,
    "last" DOUBLE PRECISION,
    last_ts TIMESTAMP WITH TIME ZONE,
    readings BIGINT,
    updated TIMESTAMP WITH TIME ZONE,
    month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', bucket),
    PRIMARY KEY (agent, sensor, bucket, month)
) CLUSTERED BY (agent) INTO 1 SHARDS PARTITIONED BY (month)
WITH (number_of_replicas = {replicas});

-- Where each roll-up stands: every bucket before `watermark` is complete, and changes to its source
-- (raw rows by `received`, minute rows by `updated`) before `seen_until` are in. The last run's
-- figures show its progress and cost.
CREATE TABLE IF NOT EXISTS doc.rollup_status (
    resolution TEXT PRIMARY KEY,
    watermark TIMESTAMP WITH TIME ZONE,
    seen_until TIMESTAMP WITH TIME ZONE,
    last_run TIMESTAMP WITH TIME ZONE,
    last_run_ms DOUBLE PRECISION,
    last_run_buckets BIGINT,
    last_run_late_buckets BIGINT,
    last_run_rows BIGINT
) WITH (number_of_replicas = {replicas});
