#!/usr/bin/env bash
# Initialise the swarm on the first manager, or confirm that it already leads one.
# Prints a status line, then one JSON line: {"node_id", "cluster_id", "manager_token", "worker_token"}.
# The tokens are secrets: components/swarm.py marks stdout secret and turns logging off.
#
# Environment: HOST_NAME, ADVERTISE_ADDR (the host's private address), SWARM_PORT.
set -euo pipefail

say() { echo "swarm-init ${HOST_NAME}: $*"; }
fail() { echo "swarm-init ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

main() {
  local state status
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  case "$state" in
    inactive)
      docker swarm init --advertise-addr "$ADVERTISE_ADDR" --listen-addr "${ADVERTISE_ADDR}:${SWARM_PORT}" >/dev/null
      status="changed: initialised a swarm advertised on ${ADVERTISE_ADDR}:${SWARM_PORT}"
      ;;
    active)
      [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = "true" ] ||
        fail "this host is a worker of a swarm; make it leave (docker swarm leave) or let it be the stack's first manager"
      status="unchanged"
      ;;
    *) fail "swarm state is '${state}'; fix it by hand (docker swarm leave --force) and run again" ;;
  esac
  local node_id cluster_id manager_token worker_token
  node_id=$(docker info --format '{{.Swarm.NodeID}}')
  cluster_id=$(docker info --format '{{.Swarm.Cluster.ID}}')
  manager_token=$(docker swarm join-token -q manager)
  worker_token=$(docker swarm join-token -q worker)
  say "$status"
  printf '{"node_id": "%s", "cluster_id": "%s", "manager_token": "%s", "worker_token": "%s"}\n' \
    "$node_id" "$cluster_id" "$manager_token" "$worker_token"
}

main "$@"
