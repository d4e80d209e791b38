#!/usr/bin/env bash
# PID 1 (under --init) of a simulated host: host keys on first boot, the authorized key from
# LAB_AUTHORIZED_KEY, the Docker engine, and sshd in the foreground. SIGTERM stops the engine
# cleanly. dockerd starts directly: Debian's init script raises ulimits, which fails in a container
# without CAP_SYS_RESOURCE (the capability workaround of components/lab.py drops it).
set -euo pipefail

ssh-keygen -A >/dev/null
mkdir -p /run/sshd
install -d -m 0700 /root/.ssh
if [ -n "${LAB_AUTHORIZED_KEY:-}" ]; then
  printf '%s\n' "$LAB_AUTHORIZED_KEY" >/root/.ssh/authorized_keys
  chmod 0600 /root/.ssh/authorized_keys
fi

dockerd >>/var/log/dockerd.log 2>&1 &
dockerd_pid=$!

stop() {
  kill -TERM "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" || true
  kill -TERM "$sshd_pid" 2>/dev/null || true
}
trap stop TERM INT

/usr/sbin/sshd -D -e &
sshd_pid=$!
wait "$sshd_pid" || true
