#!/usr/bin/env bash
# On a manager: give one node the role, availability and labels that the stack config says.
# The config is authoritative for node labels: labels it does not list are removed.
#
# Environment: HOST_NAME, NODE_ID, ROLE (manager|worker), LABELS (one key=value per line),
#              NODE_DEADLINE (seconds to wait for the node to be Ready).
set -euo pipefail

say() { echo "swarm-node ${HOST_NAME}: $*"; }
fail() { echo "swarm-node ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

main() {
  local changes=() deadline=$((SECONDS + NODE_DEADLINE))
  until [ "$(docker node inspect -f '{{.Status.State}}' "$NODE_ID" 2>/dev/null)" = "ready" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "node ${NODE_ID} is not Ready after ${NODE_DEADLINE} s"
    sleep 1
  done

  if [ "$(docker node inspect -f '{{.Spec.Role}}' "$NODE_ID")" != "$ROLE" ]; then
    if [ "$ROLE" = manager ]; then docker node promote "$NODE_ID" >/dev/null; else docker node demote "$NODE_ID" >/dev/null; fi
    changes+=("role ${ROLE}")
  fi
  if [ "$(docker node inspect -f '{{.Spec.Availability}}' "$NODE_ID")" != "active" ]; then
    docker node update --availability active "$NODE_ID" >/dev/null
    changes+=("availability active")
  fi

  local current args=() label
  current=$(docker node inspect -f '{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' "$NODE_ID")
  while IFS= read -r label; do
    [ -n "$label" ] || continue
    grep -qxF -- "$label" <<<"$LABELS" && continue
    grep -q "^${label%%=*}=" <<<"$LABELS" || { args+=(--label-rm "${label%%=*}"); changes+=("-${label%%=*}"); }
  done <<<"$current"
  while IFS= read -r label; do
    [ -n "$label" ] || continue
    grep -qxF -- "$label" <<<"$current" && continue
    args+=(--label-add "$label")
    changes+=("+${label}")
  done <<<"$LABELS"
  [ "${#args[@]}" -eq 0 ] || docker node update "${args[@]}" "$NODE_ID" >/dev/null

  if [ "${#changes[@]}" -eq 0 ]; then say "unchanged"; else say "changed: ${changes[*]}"; fi
}

main "$@"
