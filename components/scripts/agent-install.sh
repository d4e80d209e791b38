#!/usr/bin/env bash
# Install or update the sensor agent on a Pi (or any Linux box) and keep it running.
#
# Environment:
#   AGENT_NAME   the device id (for the report)
# Stdin: a base64 tar.gz with pi/ (the package), agent.toml, token, ca.pem (maybe empty) and
# mds-agent.service. The token is a credential: it travels on stdin only and lands 0400.
#
# Idempotent: files are replaced only when their content changed, and the agent restarts only then.
# Under systemd it runs as a hardened unit; without systemd (a container) under a restart loop.
set -euo pipefail

OPT=/opt/mds-agent
ETC=/etc/mds-agent
STATE=/var/lib/mds-agent
UNIT=/etc/systemd/system/mds-agent.service
changes=()

fail() { echo "agent-install ${AGENT_NAME:-?}: $*" >&2; exit 1; }

# install_file SOURCE TARGET MODE OWNER: copy when the content differs; say so.
install_file() {
  local source=$1 target=$2 mode=$3 owner=$4
  if [[ -f "$target" ]] && cmp -s "$source" "$target"; then
    chmod "$mode" "$target"; chown "$owner" "$target"
    return
  fi
  install -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$source" "$target"
  changes+=("$target")
}

ensure_user() {
  if ! id mds-agent >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$STATE" --shell /usr/sbin/nologin mds-agent
    changes+=("user mds-agent")
  fi
  local groups=() group
  for group in i2c gpio; do
    if getent group "$group" >/dev/null; then
      groups+=("$group")
      id -nG mds-agent | tr ' ' '\n' | grep -qx "$group" || { usermod -aG "$group" mds-agent; changes+=("group $group"); }
    fi
  done
  GROUPS_LINE="${groups[*]:-}"
}

install_package() {
  local work=$1
  mkdir -p "$OPT" "$ETC" "$STATE"
  chown mds-agent:mds-agent "$STATE"; chmod 750 "$STATE"
  chown root:mds-agent "$ETC"; chmod 750 "$ETC"
  if ! diff -qr "$work/pi" "$OPT/pi" >/dev/null 2>&1; then
    rm -rf "$OPT/pi.new"; cp -r "$work/pi" "$OPT/pi.new"
    rm -rf "$OPT/pi"; mv "$OPT/pi.new" "$OPT/pi"
    changes+=("$OPT/pi")
  fi
  if [[ ! -x "$OPT/venv/bin/python" ]]; then
    # System site packages: smbus2 for I²C sensors comes from the distribution (python3-smbus2).
    python3 -m venv --system-site-packages "$OPT/venv"
    changes+=("$OPT/venv")
  fi
  install_file "$work/agent.toml" "$ETC/agent.toml" 640 root:mds-agent
  install_file "$work/token" "$ETC/token" 400 mds-agent:mds-agent
  install_file "$work/ca.pem" "$ETC/ca.pem" 644 root:root
}

wants_i2c() {
  grep -Eq '^type = "(bmp180|bme280)"' "$ETC/agent.toml"
}

ensure_smbus() {
  wants_i2c || return 0
  "$OPT/venv/bin/python" -c 'import smbus2' 2>/dev/null && return 0
  if command -v apt-get >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=120 install -y -q python3-smbus2 >/dev/null 2>&1; then
    changes+=("python3-smbus2")
  elif timeout 600 "$OPT/venv/bin/pip" install -q smbus2 >/dev/null 2>&1; then
    changes+=("smbus2 (pip)")
  else
    echo "agent-install ${AGENT_NAME}: warning: I²C sensors need smbus2 and neither apt nor pip could install it" >&2
  fi
}

run_under_systemd() {
  local work=$1
  sed "s/@GROUPS@/${GROUPS_LINE}/" "$work/mds-agent.service" > "$work/unit"
  install_file "$work/unit" "$UNIT" 644 root:root
  if (( ${#changes[@]} )); then
    systemctl daemon-reload
    systemctl enable mds-agent.service >/dev/null 2>&1
    timeout 120 systemctl restart mds-agent.service
  else
    systemctl is-active --quiet mds-agent.service || { timeout 120 systemctl start mds-agent.service; changes+=("started"); }
  fi
}

# Without systemd: the same command as the unit, as the same user, restarted when it exits.
run_under_loop() {
  local pid_file=/run/mds-agent.pid
  if (( ${#changes[@]} )) && [[ -f "$pid_file" ]]; then
    local group
    group=$(cat "$pid_file")
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 50); do  # let it deliver or buffer what it sampled (25 s at most)
      pgrep -g "$group" >/dev/null || break
      sleep 0.5
    done
    rm -f "$pid_file"
  fi
  if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    return
  fi
  setsid bash -c "cd $OPT && while true; do runuser -u mds-agent -- $OPT/venv/bin/python -m pi.agent --config $ETC/agent.toml >>$STATE/agent.log 2>&1; sleep 2; done" \
    </dev/null >/dev/null 2>&1 &
  echo $! > "$pid_file"
  changes+=("started (no systemd: restart loop)")
}

main() {
  [[ -n "${AGENT_NAME:-}" ]] || fail "AGENT_NAME is not set"
  command -v python3 >/dev/null || fail "python3 is missing (Raspberry Pi OS and Debian 12 have 3.11)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "python3 is older than 3.11 (the agent needs tomllib)"
  python3 -c 'import venv, ensurepip' 2>/dev/null || fail "python3-venv is missing (apt-get install python3-venv)"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  base64 -d | tar -xz -C "$WORK"
  ensure_user
  install_package "$WORK"
  ensure_smbus
  if [[ -d /run/systemd/system ]]; then
    run_under_systemd "$WORK"
  else
    run_under_loop
  fi
  if (( ${#changes[@]} )); then
    echo "agent-install ${AGENT_NAME}: changed: ${changes[*]}"
  else
    echo "agent-install ${AGENT_NAME}: unchanged"
  fi
}

main "$@"
