"""What an image archive (`docker save` output, plain or compressed) holds, checked byte for byte.

`docker save` writes a tar with `manifest.json` (per image: its config file, tags and layers in
order) and, for every layer, the layer's tar; an image's id is the sha256 of its config file, and
the config lists the sha256 of every layer's uncompressed tar (`rootfs.diff_ids`). So an archive
can be verified without Docker: read once, as a stream (never whole in memory), every file hashed.
Docker 25+ writes the OCI layout (`blobs/sha256/<digest>`), older engines `<id>.json` and
`<layer>/layer.tar`; both are read. Compressed archives (gzip, bzip2, xz) are decompressed on the
fly; `docker load` takes all three, so they are shipped as they are.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

# What `uname -m` says on the hosts the stack supports, and the architecture an image names.
MACHINE_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The archive cannot be read, is damaged, or does not hold what it claims."""


@dataclass(frozen=True)
class ArchivedImage:
    path: str
    image_id: str  # sha256:<hex>: what `docker image inspect -f {{.Id}}` prints once it is loaded
    tags: tuple[str, ...]
    architecture: str  # amd64, arm64, ...
    size: int  # bytes of the archive file (compressed, if it is)


def normalize_tag(reference: str) -> str:
    """`crate:6.4.3`, `docker.io/library/crate:6.4.3` and `library/crate:6.4.3` are one image."""
    for prefix in ("docker.io/", "index.docker.io/"):
        reference = reference.removeprefix(prefix)
    return reference.removeprefix("library/")


def read_archive(path: str | Path) -> ArchivedImage:
    """The one image an archive holds, after checking every layer and the config against their
    digests. Raises ArchiveError with what is wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with tarfile.open(path, mode="r:*") as tar:
            digests, configs, manifest = _hash_members(tar)
    except (OSError, EOFError, tarfile.TarError, ValueError) as e:  # lzma/zlib errors are OSError or ValueError
        raise ArchiveError(f"{path}: not a readable image archive ({e})") from None
    if manifest is None:
        raise ArchiveError(f"{path}: no manifest.json: not an archive made by `docker save`")
    if len(manifest) != 1:
        raise ArchiveError(f"{path}: holds {len(manifest)} images; save one image per archive")
    entry = manifest[0]
    config_name = entry.get("Config", "")
    if config_name not in configs:
        raise ArchiveError(f"{path}: the manifest names a config file {config_name!r} the archive lacks")
    config_bytes = configs[config_name]
    image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    expected_name = config_name.removeprefix("blobs/sha256/").removesuffix(".json")
    if expected_name != image_id.removeprefix("sha256:"):
        raise ArchiveError(f"{path}: the image config {config_name} does not match its digest: the archive is damaged")
    config = json.loads(config_bytes)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layers = entry.get("Layers", [])
    if len(layers) != len(diff_ids):
        raise ArchiveError(f"{path}: {len(layers)} layers, but the image config lists {len(diff_ids)}")
    for layer, diff_id in zip(layers, diff_ids):
        if layer not in digests:
            raise ArchiveError(f"{path}: layer {layer} is missing")
        if digests[layer] != diff_id:
            raise ArchiveError(f"{path}: layer {layer} does not match its digest {diff_id[:19]}…: the archive is damaged")
    tags = tuple(normalize_tag(t) for t in entry.get("RepoTags") or ())
    return ArchivedImage(path=str(path), image_id=image_id, tags=tags,
                         architecture=str(config.get("architecture", "unknown")), size=size)


def _hash_members(tar: tarfile.TarFile):
    """sha256 of every file (layers are compared with it), the small JSON files kept whole."""
    digests: dict[str, str] = {}
    configs: dict[str, bytes] = {}
    manifest = None
    for member in tar:  # streaming: each member is read once, in order
        if not member.isfile():
            continue
        stream = tar.extractfile(member)
        digest = hashlib.sha256()
        small = bytearray() if member.size <= 4 * _CHUNK else None
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            if small is not None:
                small += chunk
        digests[member.name] = "sha256:" + digest.hexdigest()
        if member.name == "manifest.json":
            manifest = json.loads(bytes(small or b"null"))
        elif small is not None and (member.name.endswith(".json") or member.name.startswith("blobs/sha256/")):
            configs[member.name] = bytes(small)
    return digests, configs, manifest


def cached_archive(path: str | Path, cache: Path) -> ArchivedImage:
    """read_archive, remembered in `cache` (a JSON file) by the file's size and modification time:
    a 600 MB archive is hashed once, not at every preview and for every host."""
    path = Path(path).absolute()
    try:
        stat = path.stat()
    except OSError as e:
        raise ArchiveError(f"{path}: cannot be read ({e.strerror})") from None
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path))
    if entry and entry.get("stamp") == stamp:
        image = entry["image"]
        return ArchivedImage(path=str(path), image_id=image["image_id"], tags=tuple(image["tags"]),
                             architecture=image["architecture"], size=image["size"])
    image = read_archive(path)
    known[str(path)] = {"stamp": stamp, "image": {"image_id": image.image_id, "tags": list(image.tags),
                                                   "architecture": image.architecture, "size": image.size}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    partial.write_text(json.dumps(known, indent=1, sort_keys=True))
    partial.replace(cache)
    return image
