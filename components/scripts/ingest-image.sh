#!/usr/bin/env bash
# Build the ingest image on this host from the build context on stdin (a base64 tar.gz made by
# components/ingest.py), unless an image with this content-hash tag exists already.
#
# Environment: HOST_NAME, IMAGE (mds-ingest:<content hash>), BASE_IMAGE.
set -euo pipefail

say() { echo "ingest-image ${HOST_NAME}: $*"; }
fail() { echo "ingest-image ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

image_exists() {
  local rc=0
  docker image inspect "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" -ne 124 ] || fail "the Docker engine does not answer (docker image inspect, ${DOCKER_TIMEOUT:-120} s)"
  return "$rc"
}

main() {
  local context
  context=$(mktemp -d)
  trap "rm -rf '${context}'" EXIT  # expanded now: the local is gone when the trap runs
  base64 -d | tar -xz -C "$context"  # always read stdin, so the sender never blocks
  if image_exists "$IMAGE"; then
    say "unchanged: ${IMAGE} exists"
    return
  fi
  image_exists "$BASE_IMAGE" || DOCKER_TIMEOUT="${DOCKER_PULL_TIMEOUT:-1800}" docker pull -q "$BASE_IMAGE" >/dev/null ||
    fail "base image ${BASE_IMAGE} is neither on this host nor pullable"
  local log
  log=$(mktemp)
  if ! DOCKER_TIMEOUT="${DOCKER_BUILD_TIMEOUT:-3600}" docker build -q --build-arg "BASE_IMAGE=${BASE_IMAGE}" --label "mds.content=${IMAGE##*:}" -t "$IMAGE" "$context" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "docker build of ${IMAGE} failed"
  fi
  say "changed: built ${IMAGE} from ${BASE_IMAGE}"
}

main "$@"
