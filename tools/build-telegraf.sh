#!/usr/bin/env bash
# Build Telegraf (only the plugins the tests use) from the Go module proxy, once per version.
# Prints the binary's path on its last line. Telegraf's "custom" build tag leaves out every plugin
# not named, which takes the build from many minutes to about one (2 cores, warm module cache less).
set -euo pipefail

version="${TELEGRAF_VERSION:-v1.37.2}"
plugins="inputs.mqtt_consumer,outputs.influxdb_v2,outputs.influxdb,parsers.influx,serializers.influx"
cache="${MDS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mds}/telegraf-$version"
binary="$cache/telegraf"

if [ -x "$binary" ]; then
  echo "telegraf $version: already built" >&2
  echo "$binary"
  exit 0
fi
command -v go >/dev/null || { echo "build-telegraf: no Go toolchain on PATH (needs Go >= 1.24)" >&2; exit 1; }

started=$SECONDS
mkdir -p "$cache"
# `go install pkg@version` builds outside any module of ours; GOFLAGS from the caller would apply too.
GOBIN="$cache" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${version#v}" \
  -tags "custom,$plugins" "github.com/influxdata/telegraf/cmd/telegraf@$version" >&2
echo "telegraf $version built in $((SECONDS - started)) s ($(du -sh "$binary" | cut -f1))" >&2
echo "$binary"
