#!/usr/bin/env bash
# Join this host to the stack's swarm, or confirm that it is already a member.
# Reads the join token from the first line of stdin, so it never appears in a command line or log.
# Prints a status line, then one JSON line: {"node_id"}.
#
# Environment: HOST_NAME, ADVERTISE_ADDR, MANAGER_ADDR (the first manager's private address),
#              SWARM_PORT, CLUSTER_ID (the swarm's id), JOIN_DEADLINE (seconds to keep retrying).
set -euo pipefail

say() { echo "swarm-join ${HOST_NAME}: $*"; }
fail() { echo "swarm-join ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

member_of_our_swarm() {
  local cluster deadline=$((SECONDS + 30))
  cluster=$(docker info --format '{{.Swarm.Cluster.ID}}')
  # A manager knows the swarm's id; a worker only its list of managers, which can be incomplete
  # for a moment (seen while the hosts were busy), so a worker looks a few times.
  if [ -n "$cluster" ]; then [ "$cluster" = "$CLUSTER_ID" ]; return; fi
  until docker info --format '{{range .Swarm.RemoteManagers}}{{.Addr}}{{"\n"}}{{end}}' | grep -qxF "${MANAGER_ADDR}:${SWARM_PORT}"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 2
  done
}

main() {
  local token state status
  IFS= read -r token || true
  [ -n "$token" ] || fail "no join token on stdin"
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  case "$state" in
    inactive)
      local deadline=$((SECONDS + JOIN_DEADLINE)) err
      until err=$(docker swarm join --token "$token" --advertise-addr "$ADVERTISE_ADDR" \
        --listen-addr "${ADVERTISE_ADDR}:${SWARM_PORT}" "${MANAGER_ADDR}:${SWARM_PORT}" 2>&1 >/dev/null); do
        # A join that failed half-way leaves the node "pending"; reset it before the next try.
        [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = "inactive" ] || docker swarm leave --force >/dev/null 2>&1 || true
        [ "$SECONDS" -lt "$deadline" ] || fail "could not join ${MANAGER_ADDR}:${SWARM_PORT} within ${JOIN_DEADLINE} s: ${err//$token/<token>}"
        sleep 2
      done
      status="changed: joined the swarm of ${MANAGER_ADDR}"
      ;;
    active)
      member_of_our_swarm ||
        fail "this host belongs to another swarm (not ${CLUSTER_ID} of ${MANAGER_ADDR}); make it leave first"
      status="unchanged"
      ;;
    *) fail "swarm state is '${state}'; fix it by hand (docker swarm leave --force) and run again" ;;
  esac
  say "$status"
  printf '{"node_id": "%s"}\n' "$(docker info --format '{{.Swarm.NodeID}}')"
}

main "$@"
