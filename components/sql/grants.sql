GRANT DQL, DML, DDL, AL TO admin
GRANT DML, DQL ON TABLE doc.readings TO ingest
GRANT DQL ON SCHEMA doc TO grafana
GRANT DQL ON SCHEMA sys TO grafana
