#!/bin/sh
# Drop the monthly partitions older than their table's retention, once a day, on every CrateDB
# node. RETENTION_TABLES lists `table=months` (the raw readings and each roll-up; a table not
# listed keeps everything). A DELETE whose WHERE covers whole partitions drops them; running it on
# several nodes at once is harmless (the second finds nothing). Says what it dropped.
# RETENTION_FIRST_DELAY=0 RETENTION_ONCE=1: one pass now (the post-deploy tests run it so).
set -u
[ -n "${RETENTION_TABLES:-}" ] || exit 0

sql() { # $1: statement; runs as the superuser, trusted on loopback only
  curl -sf -m 60 -H 'Content-Type: application/json' \
    -d "{\"stmt\": \"$1\"}" http://127.0.0.1:4200/_sql
}

drop_old() { # $1: schema.table, $2: months kept
  cutoff="date_trunc('month', now()) - INTERVAL '$2 months'"
  old=$(sql "SELECT values['month'] FROM information_schema.table_partitions WHERE table_schema = '${1%%.*}' AND table_name = '${1#*.}' AND values['month'] < ${cutoff} ORDER BY 1")
  case "$old" in
    *'"rowcount":0'*|'') ;;
    *)
      if sql "DELETE FROM $1 WHERE month < ${cutoff}" >/dev/null; then
        echo "retention: dropped partitions of $1 older than $2 months: $(echo "$old" | sed -n 's/.*"rows":\(.*\),"rowcount".*/\1/p')"
      else
        echo "retention: DELETE on $1 failed; will try again tomorrow" >&2
      fi
      ;;
  esac
}

sleep "${RETENTION_FIRST_DELAY:-300}"  # let the node join its cluster first
while true; do
  for entry in $RETENTION_TABLES; do
    drop_old "${entry%%=*}" "${entry#*=}"
  done
  [ "${RETENTION_ONCE:-0}" != 1 ] || exit 0
  sleep 86400
done
