#!/usr/bin/env bash
# On a manager, before a host leaves: drain it (its tasks stop or move), then demote it if it is
# a manager, so that leaving does not cost the swarm a vote.
#
# Environment: HOST_NAME, NODE_ID, DRAIN_DEADLINE (seconds to wait for its tasks to stop).
set -euo pipefail

say() { echo "swarm-node-retire ${HOST_NAME}: $*"; }
fail() { echo "swarm-node-retire ${HOST_NAME}: error: $*" >&2; exit 1; }

main() {
  if ! docker node inspect "$NODE_ID" >/dev/null 2>&1; then
    say "unchanged: node ${NODE_ID} is not in the swarm"
    return
  fi
  local changes=() deadline=$((SECONDS + DRAIN_DEADLINE))
  if [ "$(docker node inspect -f '{{.Spec.Availability}}' "$NODE_ID")" != "drain" ]; then
    docker node update --availability drain "$NODE_ID" >/dev/null
    changes+=("drained")
  fi
  while [ -n "$(docker node ps -q --filter desired-state=running "$NODE_ID")" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "tasks still run on the node after ${DRAIN_DEADLINE} s"
    sleep 1
  done
  if [ "$(docker node inspect -f '{{.Spec.Role}}' "$NODE_ID")" = "manager" ]; then
    docker node demote "$NODE_ID" >/dev/null
    changes+=("demoted")
  fi
  if [ "${#changes[@]}" -eq 0 ]; then say "unchanged"; else say "changed: ${changes[*]}"; fi
}

main "$@"
