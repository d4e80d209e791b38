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

VM_MAX_MAP_COUNT = 262144  # CrateDB bootstrap check (REFERENCE.md, bootstrap checks)
MAX_MANAGERS = 7
DEFAULT_MANAGERS = 3
SWARM_PORT = 2377
