"""Simulated bare-metal hosts for the lab tier: containers running sshd and dockerd.

Everything the harness creates carries the label `mds.lab=tests`; `LabHosts.clean()` removes what
an earlier, interrupted run left behind, so a dirty machine never fails a run. Its containers,
volumes and network are named `mds-labtest-*`, apart from the lab stack's `mds-lab-*`
(components/lab.py): a lab stack left running on the same machine neither breaks the tests nor
is touched by them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_IMAGE_DIR = ROOT / "components" / "lab-host"
LABEL = "mds.lab=tests"
NAME_PREFIX = "mds-labtest"
SHARED_BACKUPS = "/srv/backups"  # the lab tier's fs backup location (tests/lab/test_hosts_and_swarm.py)
BASE_IMAGE = "mds-lab-base:bookworm"
PROBE_IMAGE = "mds-lab-probe:busybox"
DEBIAN_MIRROR = os.environ.get("MDS_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# Where --privileged is refused ("unable to apply caps"), these flags give a host what dockerd
# needs (as components/lab.py does for the lab stack). Without --privileged Docker mounts the cgroup tree read-only, and the inner
# engine then cannot start containers ("mkdir /sys/fs/cgroup/cpuset/docker: read-only file
# system"), hence the read-write bind of the host's tree. MDS_LAB_PRIVILEGED=1 uses plain
# --privileged instead.
CAPABILITY_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
    "--security-opt", "apparmor=unconfined", "--device-cgroup-rule", "a *:* rwm",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


class LabError(RuntimeError):
    pass


def run(*args: str, input: bytes | str | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), input=input.encode() if isinstance(input, str) else input,
        capture_output=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args[:4])}... exited {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}")
    return result


def docker(*args: str, **kwargs) -> str:
    return run("docker", *args, **kwargs).stdout.decode().strip()


def engine_available() -> bool:
    return shutil.which("docker") is not None and run("docker", "info", check=False, timeout=30).returncode == 0


def image_exists(tag: str) -> bool:
    return run("docker", "image", "inspect", tag, check=False).returncode == 0


def ensure_base_image() -> str:
    """A Debian base image: MDS_LAB_BASE_IMAGE, an earlier debootstrap, or a new one."""
    if os.environ.get("MDS_LAB_BASE_IMAGE"):
        return os.environ["MDS_LAB_BASE_IMAGE"]
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    if not shutil.which("debootstrap"):
        raise LabError("no base image and no debootstrap: install debootstrap or set MDS_LAB_BASE_IMAGE")
    with tempfile.TemporaryDirectory(prefix="mds-lab-rootfs-") as rootfs:
        run("debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR, timeout=1200)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run("docker", "import", "--change", "CMD [\"bash\"]", "-", BASE_IMAGE, input=tar.stdout.read())
        tar.wait()
    return BASE_IMAGE


def ensure_host_image() -> str:
    """The simulated-host image from components/lab-host, tagged by the hash of what it is built from."""
    base = ensure_base_image()
    digest = hashlib.sha256(base.encode() + docker("image", "inspect", "-f", "{{.Id}}", base).encode())
    for path in sorted(HOST_IMAGE_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    tag = f"mds-lab-host:{digest.hexdigest()[:12]}"
    if not image_exists(tag):
        docker("build", "--build-arg", f"BASE_IMAGE={base}", "--label", LABEL, "-t", tag, str(HOST_IMAGE_DIR), timeout=1200)
    return tag


def ensure_probe_image() -> str:
    """A tiny image of our own (busybox) for services on the lab swarm: nothing can be pulled here."""
    if image_exists(PROBE_IMAGE):
        return PROBE_IMAGE
    busybox = shutil.which("busybox")  # the static build: the image has no libc
    if not busybox:
        raise LabError("busybox is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory(prefix="mds-lab-probe-") as tree:
        Path(tree, "bin").mkdir()
        shutil.copy(busybox, Path(tree, "bin", "busybox"))
        for applet in ("sh", "sleep", "echo", "cat", "wget", "nc"):
            Path(tree, "bin", applet).symlink_to("busybox")
        tar = run("tar", "-C", tree, "-c", ".").stdout
        run("docker", "import", "--change", 'CMD ["/bin/sleep", "86400"]', "-", PROBE_IMAGE, input=tar)
    return PROBE_IMAGE


@dataclass(frozen=True)
class LabHost:
    name: str  # hostname, as the stack config names it
    container: str
    address: str  # on the lab network, reachable from this machine
    key_file: Path

    def ssh_command(self, user: str = "root") -> list[str]:
        return ["ssh", "-i", str(self.key_file), "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                # Lab hosts get new host keys every run; real stacks pin hostKey in their config.
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                f"{user}@{self.address}"]

    def ssh(self, command: str, *, input: str | bytes | None = None, check: bool = True, timeout: float = 300,
            user: str = "root") -> subprocess.CompletedProcess:
        """Run a command through the host's real sshd, as pulumi-command does: one exec request."""
        return run(*self.ssh_command(user), command, input=input, check=check, timeout=timeout)

    def sh(self, command: str, **kwargs) -> str:
        return self.ssh(command, **kwargs).stdout.decode().strip()


class LabHosts:
    """Start, break and repair simulated hosts on one private bridge network."""

    def __init__(self, workdir: Path, *, privileged: bool = os.environ.get("MDS_LAB_PRIVILEGED") == "1") -> None:
        self.workdir = workdir
        self.privileged = privileged
        self.network = f"{NAME_PREFIX}-net"
        self.hosts: list[LabHost] = []
        self.key_file = workdir / "id_ed25519"
        self.timings: dict[str, float] = {}

    @staticmethod
    def clean() -> None:
        for kind, ls in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]), ("volume", ["volume", "ls", "-q"])):
            ids = docker(*ls, "--filter", f"label={LABEL}").split()
            if ids:
                docker(kind, "rm", "-f", *ids) if kind == "container" else docker(kind, "rm", *ids)

    @property
    def private_key(self) -> str:
        return self.key_file.read_text()

    def start(self, count: int) -> list[LabHost]:
        started = time.monotonic()
        self.clean()
        image = ensure_host_image()
        self.timings["image ready"] = time.monotonic() - started
        if not self.key_file.exists():
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mds-lab", "-f", str(self.key_file))
        public_key = self.key_file.with_suffix(".pub").read_text().strip()
        subnet = self.create_network()
        booted = time.monotonic()
        flags = ["--privileged"] if self.privileged else CAPABILITY_FLAGS
        for i in range(count):
            name = f"lab{i + 1}"
            address = str(subnet.network_address + 11 + i)  # fixed, so a restarted host keeps its address
            docker(
                "run", "-d", "--init", "--name", f"{NAME_PREFIX}-{name}", "--hostname", name, "--label", LABEL,
                "--network", self.network, "--ip", address, *flags,
                # /run is a tmpfs on real hosts: a restart must not find the pid files of a killed engine.
                "--tmpfs", "/run",
                "--mount", f"type=volume,src={NAME_PREFIX}-{name}-docker,dst=/var/lib/docker,volume-label={LABEL}",
                # One directory shared by every host, as an NFS export would be: CrateDB verifies an
                # fs backup repository from every node (the lab stack shares one the same way).
                "--mount", f"type=volume,src={NAME_PREFIX}-shared,dst={SHARED_BACKUPS},volume-label={LABEL}",
                "-e", f"LAB_AUTHORIZED_KEY={public_key}", image,
            )
            self.hosts.append(LabHost(name, f"{NAME_PREFIX}-{name}", address, self.key_file))
        for host in self.hosts:
            self.wait_for_ssh(host)
        self.timings["boot"] = time.monotonic() - booted
        return self.hosts

    def create_network(self) -> ipaddress.IPv4Network:
        """A bridge with a subnet of its own (fixed addresses need one); skip subnets in use."""
        routes = run("ip", "-4", "route", check=False).stdout.decode()
        for third in range(200, 250):
            subnet = ipaddress.ip_network(f"172.29.{third}.0/24")
            if str(subnet) in routes:
                continue
            created = run("docker", "network", "create", "--label", LABEL, "--subnet", str(subnet), self.network, check=False)
            if created.returncode == 0:
                return subnet
        raise LabError("no free /24 in 172.29.200.0-172.29.249.0 for the lab network")

    def wait_for_ssh(self, host: LabHost, deadline: float = 90) -> None:
        """Until sshd answers and the engine serves its API (`docker info` can block on a manager
        that has no swarm leader, `docker version` does not)."""
        end = time.monotonic() + deadline

        def answers() -> bool:
            try:
                return host.ssh("docker version --format '{{.Server.Version}}'", check=False, timeout=15).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        while not answers():
            exited = docker("inspect", "-f", "{{.State.Status}}", host.container) == "exited"
            if exited or time.monotonic() > end:
                raise LabError(f"{host.name}: no SSH and Docker after {deadline} s (or it exited): "
                               f"{run('docker', 'logs', '--tail', '20', host.container, check=False).stderr.decode()}")
            time.sleep(0.5)

    def load_image(self, tag: str) -> None:
        """Put an image of ours into every host's engine, over SSH (no registry needed)."""
        image = run("docker", "save", tag).stdout
        for host in self.hosts:
            host.ssh("docker load -q", input=image)

    # Ways to lose a host. Each returns once the container is in that state.
    def stop(self, host: LabHost) -> None:
        docker("stop", "-t", "10", host.container)

    def kill(self, host: LabHost) -> None:
        docker("kill", host.container)

    def pause(self, host: LabHost) -> None:
        docker("pause", host.container)

    def partition(self, host: LabHost) -> None:
        """Cut the host off the lab network; it keeps running and believes it is fine."""
        docker("network", "disconnect", self.network, host.container)

    def restore(self, host: LabHost) -> None:
        state = docker("inspect", "-f", "{{.State.Status}}", host.container)
        if state == "paused":
            docker("unpause", host.container)
        elif state != "running":
            docker("start", host.container)
        if self.network not in docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", host.container):
            docker("network", "connect", "--ip", host.address, self.network, host.container)
        self.wait_for_ssh(host)

    def remove(self) -> None:
        self.clean()
        self.hosts.clear()
