#!/usr/bin/env bash
# On a manager, before a host leaves: drain it (its tasks stop or move), then demote it if it is
# a manager, so that leaving does not cost the swarm a vote.
#
# Environment: HOST_NAME, NODE_ID, DRAIN_DEADLINE (seconds to wait for its tasks to stop).
set -euo pipefail

say() { echo "swarm-node-retire ${HOST_NAME}: $*"; }
fail() { echo "swarm-node-retire ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

main() {
  local found rc=0
  found=$(docker node inspect -f '{{.ID}}' "$NODE_ID" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    # Only a node the swarm does not know is done with; any other failure (no answer, no leader)
    # must not let the host leave undrained.
    case "$found" in
      *"No such node"* | *"node ${NODE_ID} not found"*) say "unchanged: node ${NODE_ID} is not in the swarm"; return ;;
    esac
    fail "cannot look up node ${NODE_ID} (docker node inspect exited ${rc}: ${found:0:200})"
  fi
  local changes=() deadline=$((SECONDS + DRAIN_DEADLINE))
  if [ "$(docker node inspect -f '{{.Spec.Availability}}' "$NODE_ID")" != "drain" ]; then
    docker node update --availability drain "$NODE_ID" >/dev/null
    changes+=("drained")
  fi
  # Drained, every task's desired state is Shutdown at once, but a CrateDB task runs on at its
  # shutdown gate until the cluster is GREEN: the host must not leave (which ends it) before its
  # tasks have stopped, so this waits on their current state.
  local states
  while :; do
    states=$(docker node ps --format '{{.CurrentState}}' "$NODE_ID")
    grep -qE '^(Preparing|Starting|Running)' <<<"$states" || break
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
