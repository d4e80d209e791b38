#!/bin/sh
# Scheduled snapshots of the whole cluster into the stack's repository, on every CrateDB node.
# Every BACKUP_EVERY_HOURS a snapshot named after its time slot is due; the first node to start it
# wins, the others see it exists (or fail to create it) and leave it. Snapshots beyond the newest
# BACKUP_KEEP are dropped. All as the superuser over loopback.
set -u
[ "${BACKUP_KEEP:-0}" -gt 0 ] || exit 0
repo="${BACKUP_REPOSITORY:-mds_backups}"

sql() {
  curl -sf -m 3600 -H 'Content-Type: application/json' -d "{\"stmt\": \"$1\"}" http://127.0.0.1:4200/_sql
}

sleep 600  # let the cluster form and the schema step create the repository
while true; do
  period=$((BACKUP_EVERY_HOURS * 3600))
  slot=$(( $(date +%s) / period * period ))
  name="mds-$(date -u -d "@${slot}" +%Y%m%d-%H%M)"
  existing=$(sql "SELECT count(*) FROM sys.snapshots WHERE repository = '${repo}' AND name = '${name}'")
  case "$existing" in
    *'"rows":[[0]]'*)
      if sql "CREATE SNAPSHOT ${repo}.\\\"${name}\\\" ALL WITH (wait_for_completion = true)" >/dev/null; then
        echo "snapshot: took ${repo}.${name}"
      else
        echo "snapshot: ${repo}.${name} not taken here (another node took it, or the repository failed)"
      fi
      ;;
  esac
  sql "SELECT name FROM sys.snapshots WHERE repository = '${repo}' ORDER BY started DESC" |
    sed -n 's/.*"rows":\[\(.*\)\],"rowcount".*/\1/p' | tr -d '[]"' | tr ',' '\n' | tail -n +"$((BACKUP_KEEP + 1))" |
    while read -r old; do
      [ -n "$old" ] || continue
      sql "DROP SNAPSHOT ${repo}.\\\"${old}\\\"" >/dev/null && echo "snapshot: dropped ${repo}.${old} (keeping ${BACKUP_KEEP})"
    done
  sleep 600
done
