"""Image archives (`docker save` output) as the stack reads them before shipping one: the image
they hold, checked layer by layer, and the stack config's refusals, each naming key and file.
The archives are written here in both layouts `docker save` uses (the legacy one of Docker < 25
and the OCI layout of 25+), plain and compressed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from stack import parse
from stack import ConfigError
from stack.images import verify_images
from stack.image_archive import ArchiveError, cached_archive, read_archive
from tests.unit.conftest import hosts


def layer(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_archive(path: Path, tags: list[str], *, architecture: str = "amd64", layers: tuple[bytes, ...] = (b"one", b"two"),
                  oci: bool = False, compress=None, damage_layer: bool = False) -> str:
    """A `docker save` archive of a made-up image; returns the image id Docker would give it."""
    tars = [layer(c) for c in layers]
    config = json.dumps({"architecture": architecture, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(t)}" for t in tars]}}).encode()
    if damage_layer:
        tars[-1] = tars[-1].replace(layers[-1], bytes(len(layers[-1])))  # same size, other bytes
    if oci:
        config_name, names = f"blobs/sha256/{sha(config)}", [f"blobs/sha256/{sha(t)}" for t in tars]
    else:
        config_name, names = f"{sha(config)}.json", [f"{i}/layer.tar" for i in range(len(tars))]
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": names}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [(config_name, config), *zip(names, tars), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(compress(data) if compress else data)
    return f"sha256:{sha(config)}"


@pytest.mark.parametrize("oci", [False, True], ids=["legacy layout", "OCI layout"])
@pytest.mark.parametrize("compress", [None, gzip.compress, lzma.compress], ids=["plain", "gzip", "xz"])
def test_an_archive_yields_the_id_docker_gives_the_image(tmp_path, oci, compress):
    path = tmp_path / "crate.tar"
    image_id = write_archive(path, ["crate:6.4.3"], oci=oci, compress=compress)
    image = read_archive(path)
    assert (image.image_id, image.tags, image.architecture, image.size) == (image_id, ("crate:6.4.3",), "amd64", path.stat().st_size)


def test_docker_hub_names_are_one_image(tmp_path):
    write_archive(tmp_path / "a.tar", ["docker.io/library/crate:6.4.3"])
    assert read_archive(tmp_path / "a.tar").tags == ("crate:6.4.3",)


@pytest.mark.parametrize("make, message", [
    (lambda p: write_archive(p, ["crate:6.4.3"], damage_layer=True), "does not match its digest"),
    (lambda p: p.write_bytes(gzip.compress(b"not a tar at all")), "not a readable image archive"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "not a readable image archive"),
    (lambda p: (write_archive(p, ["crate:6.4.3"], compress=gzip.compress), p.write_bytes(p.read_bytes()[:-40])),
     "not a readable image archive"),  # a copy cut short
])
def test_a_damaged_archive_is_refused_naming_the_file(tmp_path, make, message):
    path = tmp_path / "damaged.tar"
    make(path)
    with pytest.raises(ArchiveError, match=message) as refused:
        read_archive(path)
    assert str(path) in str(refused.value)


def test_an_archive_without_a_manifest_or_with_two_images_is_refused(tmp_path):
    plain_tar = tmp_path / "files.tar"
    plain_tar.write_bytes(layer(b"just files"))
    with pytest.raises(ArchiveError, match="no manifest.json"):
        read_archive(plain_tar)


def config_with(tmp_path: Path, section: str, archives: list[str], **extra) -> dict:
    return {"hosts": hosts(3), section: {"imageSource": {"archives": archives}, **extra}}


def test_archives_of_the_image_asked_for_are_accepted_one_per_architecture(tmp_path):
    amd, arm = tmp_path / "crate-amd64.tar.gz", tmp_path / "crate-arm64.tar.gz"
    ids = {write_archive(amd, ["crate:6.4.3"], compress=gzip.compress),
           write_archive(arm, ["crate:6.4.3"], architecture="arm64", layers=(b"arm",))}
    config = verify_images(parse(config_with(tmp_path, "cratedb", [str(amd), str(arm)]), ssh_private_key="KEY"),
                           tmp_path / "cache.json")
    assert {i.image_id for i in config.cratedb.image_source.verified} == ids
    assert {i.architecture for i in config.cratedb.image_source.verified} == {"amd64", "arm64"}


@pytest.mark.parametrize("make, message", [
    (lambda d: [write_archive(d / "x.tar", ["grafana/grafana:13.0.1"]) and str(d / "x.tar")],
     r"archives\[0\]: .*x.tar holds grafana/grafana:13.0.1, not crate:6.4.3"),
    (lambda d: [write_archive(d / "x.tar", ["crate:6.4.3"], damage_layer=True) and str(d / "x.tar")],
     r"archives\[0\]: .*x.tar: layer .* does not match its digest"),
    (lambda d: [write_archive(d / f"{n}.tar", ["crate:6.4.3"], layers=(n.encode(),)) and str(d / f"{n}.tar") for n in "ab"],
     r"archives\[1\]: .*b.tar is a second amd64 image"),
])
def test_an_archive_of_another_image_or_a_damaged_one_fails_naming_key_and_file(tmp_path, make, message):
    raw = config_with(tmp_path, "cratedb", make(tmp_path))
    with pytest.raises(ConfigError, match=r"mds:cratedb\.imageSource\." + message):
        verify_images(parse(raw, ssh_private_key="KEY"), tmp_path / "cache.json")


def test_a_missing_archive_fails_at_once_naming_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match=r"mds:grafana\.imageSource\.archives\[0\]: '.*nowhere.tar' is not a readable file"):
        parse(config_with(tmp_path, "grafana", [str(tmp_path / "nowhere.tar")]), ssh_private_key="KEY")


def test_an_archive_is_read_once_until_it_changes(tmp_path, monkeypatch):
    import stack.image_archive as archives
    path = tmp_path / "crate.tar"
    write_archive(path, ["crate:6.4.3"])
    reads = []
    monkeypatch.setattr(archives, "read_archive", lambda p: reads.append(p) or read_archive(p))
    first = cached_archive(path, tmp_path / "cache.json")
    assert cached_archive(path, tmp_path / "cache.json") == first and len(reads) == 1
    new_id = write_archive(path, ["crate:6.4.3"], layers=(b"three",))
    assert cached_archive(path, tmp_path / "cache.json").image_id == new_id and len(reads) == 2
