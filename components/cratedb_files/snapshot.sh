#!/bin/sh
# Scheduled snapshots of the whole cluster into the stack's repository, on every CrateDB node.
# Every BACKUP_EVERY_HOURS a snapshot named after its time slot is due; the first node to start it
# wins, the others see it exists (or fail to create it) and leave it; a slot whose snapshot failed
# is taken again. Rotation counts only snapshots that succeeded: the newest BACKUP_KEEP of them
# stay and older ones are dropped; failed and partial ones are dropped once a newer one succeeded.
# (Counting every snapshot, a run of failures would push out every good one.) All as the superuser
# over loopback.
set -u
[ "${BACKUP_KEEP:-0}" -gt 0 ] || exit 0
repo="${BACKUP_REPOSITORY:-mds_backups}"
url="${CRATE_SQL_URL:-http://127.0.0.1:4200/_sql}"

sql() {
  curl -sf -m 3600 -H 'Content-Type: application/json' -d "{\"stmt\": \"$1\"}" "$url"
}

values() {  # the first column of an answer's rows, one per line (each ended by a newline: the answer
  # has none after it, and `read` would drop a last line without one)
  sed -n 's/.*"rows":\[\(.*\)\],"rowcount".*/\1/p' | tr -d '[]"' | tr ',' '\n' | awk 'NF'
}

drop() {
  sql "DROP SNAPSHOT ${repo}.\\\"$1\\\"" >/dev/null && echo "snapshot: dropped ${repo}.$1 ($2)"
}

take_due_snapshot() {
  period=$((BACKUP_EVERY_HOURS * 3600))
  slot=$(( $(date +%s) / period * period ))
  name="mds-$(date -u -d "@${slot}" +%Y%m%d-%H%M)"
  state=$(sql "SELECT state FROM sys.snapshots WHERE repository = '${repo}' AND name = '${name}'" | values)
  case "$state" in
    SUCCESS | IN_PROGRESS)  # said only when run by hand (BACKUP_ONCE=1): the loop would say it every 10 min
      [ "${BACKUP_ONCE:-0}" != 1 ] || echo "snapshot: ${repo}.${name} exists already (${state})"
      return ;;
    "") ;;
    *) drop "$name" "it ended ${state}; taking it again" ;;
  esac
  if sql "CREATE SNAPSHOT ${repo}.\\\"${name}\\\" ALL WITH (wait_for_completion = true)" >/dev/null; then
    echo "snapshot: took ${repo}.${name}"
  else
    echo "snapshot: ${repo}.${name} not taken here (another node took it, or it failed)"
  fi
}

rotate() {
  sql "SELECT name FROM sys.snapshots WHERE repository = '${repo}' AND state = 'SUCCESS' ORDER BY started DESC LIMIT 10000 OFFSET ${BACKUP_KEEP}" |
    values | while read -r old; do drop "$old" "keeping the newest ${BACKUP_KEEP} that succeeded"; done
  newest=$(sql "SELECT max(started) FROM sys.snapshots WHERE repository = '${repo}' AND state = 'SUCCESS'" | values)
  case "$newest" in '' | null) return ;; esac
  sql "SELECT name FROM sys.snapshots WHERE repository = '${repo}' AND state IN ('FAILED', 'PARTIAL') AND started < ${newest}" |
    values | while read -r old; do drop "$old" "it did not succeed, and a newer one did"; done
}

sleep "${BACKUP_FIRST_DELAY:-600}"  # let the cluster form and the schema step create the repository
while true; do
  take_due_snapshot
  rotate
  [ "${BACKUP_ONCE:-0}" != 1 ] || exit 0
  sleep 600
done
