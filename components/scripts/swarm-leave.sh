#!/usr/bin/env bash
# Make this host leave the swarm (pulumi destroy, or the host removed from the stack).
# A manager leaves only when it is the last one: forcing out one of several managers would cost
# the swarm a vote it still counts on. The other managers are demoted before this runs.
#
# Environment: HOST_NAME.
set -euo pipefail

say() { echo "swarm-leave ${HOST_NAME}: $*"; }
fail() { echo "swarm-leave ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

main() {
  local state rc=0
  state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) || rc=$?
  # No engine (gone, or never installed) has nothing to leave; an engine that hangs is an error.
  [ "$rc" -ne 124 ] || fail "the Docker engine does not answer (docker info, ${DOCKER_TIMEOUT:-120} s)"
  [ "$rc" -eq 0 ] || state=no-engine
  case "$state" in
    inactive | no-engine) say "unchanged: not in a swarm"; return ;;
  esac
  local deadline=$((SECONDS + 60)) managers
  while [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = "true" ]; do
    # A node demoted a moment ago can still report control while its manager shuts down; its
    # control socket is gone then (seen in the lab): look again until the state settles.
    if managers=$(docker node ls --filter role=manager -q 2>/dev/null); then
      [ "$(grep -c . <<<"$managers")" -le 1 ] ||
        fail "this host is one of $(grep -c . <<<"$managers") managers; demote it first (docker node demote ${HOST_NAME})"
      docker swarm leave --force >/dev/null
      say "changed: left the swarm as its last manager (the swarm is gone)"
      return
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "the manager on this host does not answer (docker node ls) for 60 s"
    sleep 2
  done
  docker swarm leave >/dev/null
  say "changed: left the swarm"
}

main "$@"
