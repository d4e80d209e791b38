#!/bin/sh
# Drop the monthly partitions of the readings table older than RETENTION_MONTHS, once a day, on
# every CrateDB node. A DELETE whose WHERE covers whole partitions drops them; running it on several
# nodes at once is harmless (the second finds nothing). Says what it dropped.
# RETENTION_MONTHS=0 keeps everything. RETENTION_FIRST_DELAY=0 RETENTION_ONCE=1: one pass now (the
# post-deploy tests run it so).
set -u
[ "${RETENTION_MONTHS:-0}" -gt 0 ] || exit 0

sql() { # $1: statement; runs as the superuser, trusted on loopback only
  curl -sf -m 60 -H 'Content-Type: application/json' \
    -d "{\"stmt\": \"$1\"}" http://127.0.0.1:4200/_sql
}

cutoff="date_trunc('month', now()) - INTERVAL '${RETENTION_MONTHS} months'"
sleep "${RETENTION_FIRST_DELAY:-300}"  # let the node join its cluster first
while true; do
  old=$(sql "SELECT values['month'] FROM information_schema.table_partitions WHERE table_schema = 'doc' AND table_name = 'readings' AND values['month'] < ${cutoff} ORDER BY 1")
  case "$old" in
    *'"rowcount":0'*|'') ;;
    *)
      if sql "DELETE FROM doc.readings WHERE month < ${cutoff}" >/dev/null; then
        echo "retention: dropped partitions older than ${RETENTION_MONTHS} months: $(echo "$old" | sed -n 's/.*"rows":\(.*\),"rowcount".*/\1/p')"
      else
        echo "retention: DELETE failed; will try again tomorrow" >&2
      fi
      ;;
  esac
  [ "${RETENTION_ONCE:-0}" != 1 ] || exit 0
  sleep 86400
done
