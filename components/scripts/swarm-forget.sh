#!/usr/bin/env bash
# On a manager: remove the node list entries of a host that has left (they stay as "Down").
# Before the host joins, this clears stale entries of an earlier life of the same host; when the
# host is removed from the stack (WAIT_FOR_DOWN=1) it first waits until the host's leave is seen.
#
# Environment: HOST_NAME, WAIT_FOR_DOWN (0|1), LEAVE_DEADLINE (seconds to wait for Down).
set -euo pipefail

say() { echo "swarm-forget ${HOST_NAME}: $*"; }
fail() { echo "swarm-forget ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

entries() { # id and state of every node entry whose hostname is HOST_NAME
  local ids id entry
  ids=$(docker node ls -q) || return 1
  for id in $ids; do
    if entry=$(docker node inspect -f '{{.ID}} {{.Description.Hostname}} {{.Status.State}}' "$id" 2>&1); then
      awk -v h="$HOST_NAME" 'tolower($2) == tolower(h) { print $1, $3 }' <<<"$entry"
    elif [[ "$entry" != *"No such node"* ]]; then
      echo "$entry" >&2
      return 1
    fi  # else: removed since the list was made (`pulumi destroy` forgets several hosts at once)
  done
}

main() {
  local deadline=$((SECONDS + LEAVE_DEADLINE)) removed=() id state list
  # A manager that does not answer is an error, never "nothing to remove".
  list=$(entries) || fail "the swarm's manager does not answer (docker node ls / inspect)"
  if [ "$WAIT_FOR_DOWN" = 1 ]; then
    while [ -n "$list" ] && grep -qv ' down$' <<<"$list"; do
      [ "$SECONDS" -lt "$deadline" ] || fail "the host still shows as up after ${LEAVE_DEADLINE} s; did it leave?"
      sleep 1
      list=$(entries) || fail "the swarm's manager does not answer (docker node ls / inspect)"
    done
  fi
  while read -r id state; do
    [ -n "$id" ] && [ "$state" = down ] || continue
    docker node rm "$id" >/dev/null
    removed+=("$id")
  done <<<"$list"
  if [ "${#removed[@]}" -eq 0 ]; then say "unchanged"; else say "changed: removed node ${removed[*]}"; fi
}

main "$@"
