-- The readings table: one row per reading. The one home of its name and columns; the ingest's
-- INSERT and the dashboards' queries are checked against it by the unit tier.
CREATE TABLE IF NOT EXISTS doc.readings (
    ts TIMESTAMP WITH TIME ZONE NOT NULL,
    agent TEXT NOT NULL,
    sensor TEXT NOT NULL,
    reading OBJECT(DYNAMIC) AS (
        num DOUBLE PRECISION,
        txt TEXT,
        bool BOOLEAN
    ),
    unit TEXT,
    -- IGNORED: any shape per device, no type conflict between devices, no column per key
    meta OBJECT(IGNORED),
    received TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', ts),
    PRIMARY KEY (agent, sensor, ts, month)
) CLUSTERED BY (agent) PARTITIONED BY (month)
WITH (number_of_replicas = {replicas})
