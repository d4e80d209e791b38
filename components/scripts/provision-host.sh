#!/usr/bin/env bash
# Prepare one bare-metal host for the stack: Docker engine installed, enabled and running;
# vm.max_map_count for CrateDB now and after reboot; data directories with their owners.
# Idempotent: a second run changes nothing and says "unchanged".
#
# Environment (set by components/hosts.py):
#   HOST_NAME         the name the stack gives this host; must equal its hostname (Swarm node name)
#   DATA_ROOT         where the services keep their data, e.g. /srv/mds
#   DATA_DIRS         space-separated dir=uid:gid pairs below DATA_ROOT, e.g. "cratedb=1000:1000"
#   VM_MAX_MAP_COUNT  the minimum for vm.max_map_count
#   BACKUP_DIR        (CrateDB hosts with fs backups) the shared directory snapshots go to, and
#   BACKUP_OWNER      the uid:gid CrateDB writes it as
#   SSH_USER          the user the stack logs in as; a non-root one joins the docker group, since the
#                     Docker provider runs `docker system dial-stdio` over SSH as that user, without sudo
set -euo pipefail

changes=()
say() { echo "provision-host ${HOST_NAME}: $*"; }
fail() { echo "provision-host ${HOST_NAME}: error: $*" >&2; exit 1; }
# pulumi-command kills no hanging command: each docker call is bounded, or a hung engine would hang
# `pulumi up` (DOCKER_TIMEOUT seconds; longer where a call is long by nature).
docker() { timeout "${DOCKER_TIMEOUT:-120}" docker "$@"; }

check_identity() {
  local actual
  actual=$(hostname)
  # Swarm names nodes after the kernel hostname, and CrateDB's initial master list uses those names.
  [ "${actual,,}" = "${HOST_NAME,,}" ] ||
    fail "this machine's hostname is '${actual}', but the stack calls it '${HOST_NAME}'; set the host's name in the stack config to '${actual}' (or rename the machine)"
  case "$(uname -m)" in
    x86_64 | aarch64) ;;
    *) fail "architecture $(uname -m) is not supported: CrateDB ships amd64 and arm64 images only (use a 64-bit OS on Raspberry Pis)" ;;
  esac
}

install_docker() {
  command -v dockerd >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    # Debian, Ubuntu and Raspberry Pi OS ship the engine as docker.io, for amd64 and arm64.
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get -o DPkg::Lock::Timeout=300 install -y -qq docker.io >/dev/null
  elif command -v dnf >/dev/null 2>&1 || command -v yum >/dev/null 2>&1; then
    local pm
    pm=$(command -v dnf || command -v yum)
    if grep -qi '^ID=fedora' /etc/os-release; then
      timeout 1800 "$pm" install -y -q moby-engine
    else
      # RHEL, Rocky, Alma, CentOS Stream: Docker's own repository (RHEL ships podman instead).
      timeout 900 "$pm" install -y -q dnf-plugins-core || true
      "$pm" config-manager --add-repo https://download.docker.com/linux/centos/docker-ce.repo
      timeout 1800 "$pm" install -y -q docker-ce docker-ce-cli containerd.io
    fi
  else
    fail "no apt-get, dnf or yum found: install the Docker engine by hand, then run again"
  fi
  command -v dockerd >/dev/null 2>&1 || fail "the Docker engine was installed but dockerd is not on PATH"
  changes+=("installed the Docker engine")
}

start_docker() {
  if [ -d /run/systemd/system ]; then
    if ! systemctl is-enabled --quiet docker 2>/dev/null; then
      systemctl enable docker.service >/dev/null 2>&1
      changes+=("enabled docker.service")
    fi
    if ! systemctl is-active --quiet docker; then
      timeout 300 systemctl start docker.service
      changes+=("started docker.service")
    fi
  elif ! docker info >/dev/null 2>&1; then
    # Hosts without systemd (containers, minimal images) start the engine through its init script.
    timeout 300 service docker start >/dev/null 2>&1 || fail "docker is not running and could not be started without systemd"
    changes+=("started docker")
  fi
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the Docker engine did not answer within 60 s"
    sleep 1
  done
}

set_max_map_count() {
  local conf=/etc/sysctl.d/60-mds-cratedb.conf want="vm.max_map_count = ${VM_MAX_MAP_COUNT}"
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    echo "$want" >"$conf"
    changes+=("wrote ${conf}")
  fi
  local now
  now=$(cat /proc/sys/vm/max_map_count)
  if [ "$now" -lt "$VM_MAX_MAP_COUNT" ]; then
    sysctl -q -w "vm.max_map_count=${VM_MAX_MAP_COUNT}"
    changes+=("raised vm.max_map_count from ${now} to ${VM_MAX_MAP_COUNT}")
  fi
}

create_data_dirs() {
  local entry dir owner
  if [ ! -d "$DATA_ROOT" ]; then
    mkdir -p "$DATA_ROOT"
    chmod 0755 "$DATA_ROOT"
    changes+=("created ${DATA_ROOT}")
  fi
  for entry in $DATA_DIRS; do
    dir="${DATA_ROOT}/${entry%%=*}"
    owner="${entry#*=}"
    if [ ! -d "$dir" ]; then
      mkdir -p "$dir"
      chmod 0750 "$dir"
      changes+=("created ${dir}")
    fi
    # Only the directory itself: a recursive chown would walk a database's files on every run.
    if [ "$(stat -c %u:%g "$dir")" != "$owner" ]; then
      chown "$owner" "$dir"
      changes+=("chown ${owner} ${dir}")
    fi
  done
}

grant_docker_access() {
  [ "${SSH_USER:-root}" != root ] || return 0
  id "$SSH_USER" >/dev/null 2>&1 || fail "the SSH user '${SSH_USER}' does not exist on this host"
  getent group docker >/dev/null || fail "there is no docker group: the engine's socket cannot be given to ${SSH_USER}"
  if ! id -nG "$SSH_USER" | tr ' ' '\n' | grep -qx docker; then
    # Membership in docker is root-equivalent; the stack needs passwordless sudo for this user anyway.
    usermod -aG docker "$SSH_USER"
    changes+=("added ${SSH_USER} to the docker group")
  fi
}

prepare_backup_dir() {
  [ -n "${BACKUP_DIR:-}" ] || return 0
  if [ ! -d "$BACKUP_DIR" ]; then
    mkdir -p "$BACKUP_DIR"
    changes+=("created ${BACKUP_DIR}")
  fi
  # Only the directory: CrateDB creates what is inside it (the repository's own directory) itself.
  if [ "$(stat -c %u:%g "$BACKUP_DIR")" != "$BACKUP_OWNER" ]; then
    chown "$BACKUP_OWNER" "$BACKUP_DIR" ||
      fail "cannot give ${BACKUP_DIR} to ${BACKUP_OWNER} (CrateDB's user); on NFS with root_squash, chown it on the server"
    changes+=("chown ${BACKUP_OWNER} ${BACKUP_DIR}")
  fi
}

main() {
  check_identity
  install_docker
  start_docker
  grant_docker_access
  set_max_map_count
  create_data_dirs
  prepare_backup_dir
  if [ "${#changes[@]}" -eq 0 ]; then
    say "unchanged"
  else
    say "changed: $(printf '%s; ' "${changes[@]}" | sed 's/; $//')"
  fi
}

# The whole file is parsed before main runs, so commands that read stdin cannot eat the script.
main "$@"
