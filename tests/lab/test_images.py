"""Lab tier: an image archive shipped to a simulated host over real SSH into its real Docker
engine, as `pulumi up` ships CrateDB's and Grafana's images (components/ship_image.py): once,
checked, refused with the file or the host named."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time

import pytest

from tests.lab.harness import docker, run
from tests.load_run import ROOT
from tests.unit.test_image_archives import write_archive

REFERENCE = "mds-ship-test:1"


def ship(host, archive, cache, reference: str = REFERENCE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "components.ship_image", "--host", host.name,
                           "--ssh", json.dumps(host.ssh_command()), "--reference", reference,
                           "--archive", str(archive), "--cache", str(cache)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def image_on(host, reference: str = REFERENCE) -> str:
    return host.ssh(f"docker image inspect -f '{{{{.Id}}}}' {reference}", check=False).stdout.decode().strip()


@pytest.fixture
def archive(lab, probe_image, tmp_path):
    # An image no host has: the probe image itself is on every host already (the probe_image
    # fixture loads it), and shipping finds an id it has under another name. A label of this run
    # gives a new id over the same layers.
    docker("build", "-q", "-t", REFERENCE, "-", input=f"FROM {probe_image}\nLABEL mds.lab.ship-test={time.time_ns()}\n")
    path = tmp_path / "probe.tar.gz"
    path.write_bytes(gzip.compress(run("docker", "save", REFERENCE).stdout, compresslevel=1))
    yield path, docker("image", "inspect", "-f", "{{.Id}}", REFERENCE)
    docker("image", "rm", REFERENCE, check=False)
    for host in lab.hosts:
        host.ssh(f"docker image rm -f {REFERENCE}", check=False)


def test_a_host_without_the_image_gets_it_once_and_runs_it(lab, archive, tmp_path):
    path, image_id = archive
    host = lab.hosts[1]
    assert image_on(host) == ""
    first = ship(host, path, tmp_path / "cache.json")
    assert first.returncode == 0, first.stderr
    assert f"ship {REFERENCE} → {host.name}: loaded {image_id[:19]}…" in first.stdout
    assert image_on(host) == image_id  # the id the archive holds, under the service's name
    again = ship(host, path, tmp_path / "cache.json")
    assert again.returncode == 0 and again.stdout.strip().endswith("nothing shipped"), again.stdout
    assert host.sh(f"docker run --rm {REFERENCE} echo shipped and running") == "shipped and running"


def test_a_damaged_archive_is_refused_naming_it_and_the_host_keeps_what_it_had(lab, archive, tmp_path):
    path, image_id = archive
    host = lab.hosts[2]
    saved = bytearray(gzip.decompress(path.read_bytes()))
    saved[len(saved) // 2] ^= 0xFF  # a flipped byte inside the layer
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(saved))
    result = ship(host, damaged, tmp_path / "cache.json")
    assert result.returncode == 1
    assert str(damaged) in result.stderr and re.search("damaged|not a readable image archive", result.stderr), result.stderr
    assert image_on(host) == ""  # nothing was loaded


def test_an_archive_for_another_architecture_is_refused_naming_the_host(lab, tmp_path):
    host = lab.hosts[2]
    arm = tmp_path / "arm64.tar"
    write_archive(arm, [REFERENCE], architecture="arm64")
    result = ship(host, arm, tmp_path / "cache.json")
    assert result.returncode == 1
    assert f"{host.name} is x86_64 (amd64); no image of {REFERENCE} for it among: {arm} (arm64)" in result.stderr, result.stderr
