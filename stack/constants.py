"""Names and numbers shared by the Pulumi program, its scripts and its tests: one home for each."""

PROJECT = "mds"

# Services that hosts can carry; a host gets the node label `mds.<service>=true` for each.
SERVICES = ("cratedb", "ingest", "grafana")
NODE_LABEL_PREFIX = "mds."

# Data directories below the stack's data root, with the uid:gid their container runs as.
# CrateDB's image drops to uid 1000 (crate); Grafana's image runs as uid 472.
DATA_DIRS = {
    "cratedb": "1000:1000",
    "grafana": "472:472",
}

VM_MAX_MAP_COUNT = 262144  # CrateDB bootstrap check (crate/crate BootstrapChecks.java)
MAX_MANAGERS = 7
DEFAULT_MANAGERS = 3
SWARM_PORT = 2377

OVERLAY_NETWORK = "mds"  # the stack's overlay network: CrateDB, ingest and Grafana talk on it
CRATEDB_SERVICE = "cratedb"  # Swarm service name: its tasks resolve as tasks.cratedb on the overlay
CRATEDB_HTTP_PORT = 4200
CRATEDB_TRANSPORT_PORT = 4300
CRATEDB_PG_PORT = 5432
READINGS_TABLE = "doc.readings"
# Roll-ups of the readings (components/sql/rollups.sql, kept by components/cratedb_files/rollup.py).
ROLLUP_TABLES = {"1m": "doc.readings_1m", "1h": "doc.readings_1h"}
ROLLUP_STATUS_TABLE = "doc.rollup_status"
# A stopping CrateDB task waits for GREEN (start-crate.sh) up to a minute less than this, so that a
# rolling update or a drain takes the next node only once the previous one's replicas are back.
CRATEDB_STOP_GRACE_SECONDS = 600
