#!/usr/bin/env bash
# Apply the readings table, the users and their grants, idempotently, from inside the CrateDB
# container on this host (the superuser is trusted on loopback only and has no password).
# Stdin: one step per line, "label<TAB>request body<TAB>JSON list of request bodies to run instead
# when the first answers 409<TAB>1 when CrateDB's error message may be shown (the step carries no
# secret), else 0<TAB>request body of a query that finds the step done, or nothing" (a user that
# exists gets its password set; a repository that exists is altered, unless it already has the
# settings asked for). Passwords and keys arrive only this way.
#
# Before any step, every node must run the current settings (node attribute SETTINGS_ATTRIBUTE =
# SETTINGS_VERSION, from crate.yml): after an edit, `pulumi up` updates the service and Swarm rolls
# the nodes one by one; a step that needs the new settings (an fs repository needs path.repo)
# would fail on a node still running the old ones.
#
# Environment: HOST_NAME, SERVICE (the CrateDB service), EXPECTED_NODES, DEADLINE (seconds),
# SETTINGS_ATTRIBUTE, SETTINGS_VERSION.
set -euo pipefail

say() { echo "cratedb-schema ${HOST_NAME}: $*"; }
fail() { echo "cratedb-schema ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

container=""
deadline=0
find_container() { # the CrateDB task running on this host, waiting for one until the deadline
  until container=$(docker ps -q --filter "label=com.docker.swarm.service.name=${SERVICE}" | head -n 1) && [ -n "$container" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "no running ${SERVICE} task on this host after ${DEADLINE} s"
    sleep 2
  done
}

sql() { # request body on stdin; prints "<http status> <response>". A task that stops meanwhile (a
  # rolling update replaces it) is found again, and a node that does not answer is asked again,
  # until the deadline: every step is safe to repeat.
  local request answer
  request=$(cat)
  while true; do
    [ -n "$container" ] || find_container
    if answer=$(docker exec -i "$container" curl -s -m 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @- "http://127.0.0.1:4200/_sql" <<<"$request") && [ "${answer##*$'\n'}" != 000 ]; then
      echo "${answer##*$'\n'} ${answer%$'\n'*}"
      return
    fi
    if [ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" != true ]; then
      say "the CrateDB task ${container:0:12} stopped (a rolling update?); asking the one that replaces it" >&2
      container=""
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "CrateDB on this host did not answer within ${DEADLINE} s"
    sleep 2
  done
}

inventory() { # one line per table, user, privilege and repository of the stack
  local stmt
  for stmt in \
    "SELECT 'table ' || table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema = 'doc' ORDER BY 1" \
    "SELECT 'replicas of ' || table_schema || '.' || table_name || ': ' || number_of_replicas FROM information_schema.tables WHERE table_schema = 'doc' ORDER BY 1" \
    "SELECT 'user ' || name FROM sys.users ORDER BY 1" \
    "SELECT 'privilege ' || type || ' on ' || coalesce(ident, 'cluster') || ' to ' || grantee FROM sys.privileges ORDER BY 1" \
    "SELECT 'repository ' || name FROM sys.repositories ORDER BY 1"; do
    sql <<<"{\"stmt\": \"${stmt}\"}" | sed -n 's/^200 .*"rows":\[\(.*\)\],"rowcount".*/\1/p' |
      sed -e 's/^\["//' -e 's/"\]$//' -e 's/"\],\["/\n/g'
  done
}

main() {
  local steps answer nodes
  deadline=$((SECONDS + DEADLINE))
  steps=$(cat)
  # Wait for the local CrateDB task, then for a cluster of every node on the current settings.
  find_container
  local current="SELECT count(*) FROM sys.nodes WHERE attributes['${SETTINGS_ATTRIBUTE}'] = '${SETTINGS_VERSION}'"
  until answer=$(echo "{\"stmt\": \"${current}\"}" | sql) && [[ "$answer" == "200 "* ]] &&
    nodes=$(sed -n 's/.*"rows":\[\[\([0-9]*\)\]\].*/\1/p' <<<"$answer") && [ "${nodes:-0}" -ge "$EXPECTED_NODES" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "${nodes:-0} of ${EXPECTED_NODES} CrateDB nodes run the current settings after ${DEADLINE} s (a rolling update still going, or a node that does not start: docker service ps ${SERVICE}); last answer: ${answer:0:200}"
    sleep 3
  done

  local before after label body on_conflict finished show status altered=()
  before=$(inventory)
  while IFS=$'\t' read -r label body on_conflict show finished; do
    [ -n "$label" ] || continue
    if [ -n "$finished" ]; then
      answer=$(sql <<<"$finished")
      [[ "$answer" != "200 "* ]] || [[ "$answer" == *'"rowcount":0'* ]] || continue
    fi
    answer=$(sql <<<"$body")
    status=${answer%% *}
    if [ "$status" = 409 ] && [ "$on_conflict" != "[]" ]; then
      # The list holds one JSON object per element; split on the "}, {" between them.
      while IFS= read -r body; do
        answer=$(sql <<<"$body")
        status=${answer%% *}
        [ "$status" = 200 ] || break
      done < <(sed -e 's/^\[//' -e 's/\]$//' -e 's/}, {/}\n{/g' <<<"$on_conflict")
      # A step that knows when it is done ran its 409 path only because something differed.
      [ -z "$finished" ] || [ "$status" != 200 ] || altered+=("altered ${label%% (*}")
    fi
    # Never echo a response body of a step with a secret: it can quote the statement.
    if [ "$status" != 200 ]; then
      [ "$show" = 1 ] || fail "${label}: HTTP ${status}"
      fail "${label}: HTTP ${status}: $(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' <<<"${answer#* }" | cut -c1-400)"
    fi
  done <<<"$steps"
  after=$(inventory)
  # Report what exists now that did not before (a password set again is not visible here).
  local added
  added=$( (comm -13 <(sort <<<"$before") <(sort <<<"$after"); printf '%s\n' ${altered[@]+"${altered[@]}"}) | sed '/^$/d' |
    paste -sd ';' - | sed 's/;/; /g')
  if [ -z "$added" ]; then say "unchanged"; else say "changed: ${added}"; fi
}

main "$@"
