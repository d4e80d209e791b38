#!/usr/bin/env bash
# Apply the readings table, the users and their grants, idempotently, from inside the CrateDB
# container on this host (the superuser is trusted on loopback only and has no password).
# Stdin: one step per line, "label<TAB>request body<TAB>request body if the first answers 409"
# (a user that exists gets its password set instead). Passwords arrive only this way.
#
# Environment: HOST_NAME, SERVICE (the CrateDB service), EXPECTED_NODES, DEADLINE (seconds).
set -euo pipefail

say() { echo "cratedb-schema ${HOST_NAME}: $*"; }
fail() { echo "cratedb-schema ${HOST_NAME}: error: $*" >&2; exit 1; }

container=""
sql() { # request body on stdin; prints "<http status> <response>"
  docker exec -i "$container" curl -s -m 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @- "http://127.0.0.1:4200/_sql" | { body=$(cat); echo "${body##*$'\n'} ${body%$'\n'*}"; }
}

main() {
  local steps deadline=$((SECONDS + DEADLINE)) answer nodes
  steps=$(cat)
  # Wait for the local CrateDB task, then for a cluster of every node.
  until container=$(docker ps -q --filter "label=com.docker.swarm.service.name=${SERVICE}" | head -n 1) && [ -n "$container" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "no running ${SERVICE} task on this host after ${DEADLINE} s"
    sleep 2
  done
  until answer=$(echo '{"stmt": "SELECT count(*) FROM sys.nodes"}' | sql) && [[ "$answer" == "200 "* ]] &&
    nodes=$(sed -n 's/.*"rows":\[\[\([0-9]*\)\]\].*/\1/p' <<<"$answer") && [ "${nodes:-0}" -ge "$EXPECTED_NODES" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the cluster did not reach ${EXPECTED_NODES} nodes within ${DEADLINE} s (last answer: ${answer:0:200})"
    sleep 3
  done

  local changes=() label body alt status
  while IFS=$'\t' read -r label body alt; do
    [ -n "$label" ] || continue
    answer=$(sql <<<"$body")
    status=${answer%% *}
    if [ "$status" = 409 ] && [ -n "$alt" ]; then
      answer=$(sql <<<"$alt")
      status=${answer%% *}
    elif [ "$status" = 200 ] && [[ "$answer" != *'"rowcount":0'* ]]; then
      changes+=("$label")
    fi
    # Never echo a response body: it can quote the statement, and so a password.
    [ "$status" = 200 ] || fail "${label}: HTTP ${status}"
  done <<<"$steps"
  if [ "${#changes[@]}" -eq 0 ]; then say "unchanged"; else say "changed: $(printf '%s; ' "${changes[@]}" | sed 's/; $//')"; fi
}

main "$@"
