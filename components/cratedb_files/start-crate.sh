#!/bin/sh
# Entry point of every CrateDB task (the image's own entrypoint does the rest).
# - nofile: CrateDB's bootstrap check wants 65536; Swarm services cannot set ulimits through
#   pulumi-docker, so the soft limit is raised here (within the engine's hard limit, which
#   provisioning leaves to the Docker engine: its default is far above 65536).
# - heap: MDS_HEAP_SIZE (the stack's heapSize), else half the host's memory, capped below 31 GB.
#   (Not CRATE_HEAP_SIZE: the official image sets it to 512M, so it is never unset.)
# - shutdown gate: on SIGTERM (a rolling update, a drain) the node waits until the cluster is GREEN
#   before it stops, so that a rolling restart takes the next node down only after the previous
#   one has its replicas back. Bounded by STOP_GATE_SECONDS (below Swarm's stop grace period).
# - retention, the roll-ups and, when the stack asks for backups, snapshots run in the background
#   on every node (retention.sh, rollup.py, snapshot.sh).
set -eu

if ! ulimit -n 65536 2>/dev/null; then
  # CrateDB's own bootstrap check then refuses to start and names the limit; only a build with a
  # lowered check (a lab on a machine whose hard limit cannot be raised) runs this way.
  ulimit -n "$(ulimit -Hn)"
  echo "start-crate: nofile is $(ulimit -n), the engine's hard limit; CrateDB wants 65536" >&2
fi

if [ -n "${MDS_HEAP_SIZE:-}" ]; then
  export CRATE_HEAP_SIZE="$MDS_HEAP_SIZE"
else
  total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  heap_mb=$((total_kb / 2 / 1024))
  [ "$heap_mb" -le 30720 ] || heap_mb=30720  # stay below 31 GB: compressed object pointers
  export CRATE_HEAP_SIZE="${heap_mb}m"
fi
echo "start-crate: node ${NODE_NAME}, heap ${CRATE_HEAP_SIZE}"

cluster_health() {  # the master's view (sys.health is this node's own)
  curl -sf -m 5 -H 'Content-Type: application/json' \
    -d '{"stmt": "SELECT health FROM sys.cluster_health"}' \
    http://127.0.0.1:4200/_sql | sed -n 's/.*"rows":\[\["\([A-Z]*\)"\]\].*/\1/p'
}

stop_gate() {
  deadline=$(( $(date +%s) + ${STOP_GATE_SECONDS:-540} ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    health=$(cluster_health || true)
    # No answer (no master: nothing to protect by waiting) or GREEN: stop now.
    if [ -z "$health" ] || [ "$health" = GREEN ]; then break; fi
    echo "start-crate: stop requested, cluster is ${health}; waiting for GREEN before stopping"
    sleep 5
  done
  kill -TERM "$crate_pid" 2>/dev/null || true
}
trap stop_gate TERM INT

/mds/retention.sh &
if command -v python3 >/dev/null; then
  python3 /mds/rollup.py &
else
  echo "start-crate: no python3 in this image: the roll-ups are not kept (dashboards fall back to raw readings)" >&2
fi
[ ! -x /mds/snapshot.sh ] || /mds/snapshot.sh &
/docker-entrypoint.sh crate &
crate_pid=$!
wait "$crate_pid" || true
# A trap interrupts the first wait: wait again for CrateDB to finish its shutdown.
wait "$crate_pid" 2>/dev/null || true
