#!/usr/bin/env bash
# Remove the sensor agent (pulumi destroy). The buffer stays when it still holds readings that
# were never acknowledged: they cannot be collected twice.
#
# Environment: AGENT_NAME (for the report).
set -euo pipefail

STATE=/var/lib/mds-agent

main() {
  if [[ -d /run/systemd/system ]] && [[ -f /etc/systemd/system/mds-agent.service ]]; then
    systemctl disable --now mds-agent.service >/dev/null 2>&1 || true
    rm -f /etc/systemd/system/mds-agent.service
    systemctl daemon-reload
  fi
  if [[ -f /run/mds-agent.pid ]]; then
    local group
    group=$(cat /run/mds-agent.pid)
    kill -TERM -- "-$group" 2>/dev/null || true
    # The agent delivers or buffers what it sampled before it exits: wait for it (25 s at most).
    for _ in $(seq 50); do
      pgrep -g "$group" >/dev/null || break
      sleep 0.5
    done
    rm -f /run/mds-agent.pid
  fi
  rm -rf /opt/mds-agent /etc/mds-agent
  local waiting=0
  if [[ -f "$STATE/buffer.db" ]]; then
    waiting=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT coalesce(sum(readings), 0) FROM batches").fetchone()[0])' "$STATE/buffer.db" 2>/dev/null || echo unknown)
  fi
  if [[ "$waiting" == 0 ]]; then
    rm -rf "$STATE"
    userdel mds-agent 2>/dev/null || true
    echo "agent-remove ${AGENT_NAME:-?}: removed"
  else
    echo "agent-remove ${AGENT_NAME:-?}: removed; kept $STATE: its buffer holds $waiting readings never acknowledged"
  fi
}

main "$@"
