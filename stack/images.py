"""Where a service's image comes from (`imageSource`), and the archives it names, read and checked."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stack.errors import ConfigError, key
from stack.image_archive import ArchiveError, cached_archive, normalize_tag
from stack.model import ImageSource, StackConfig


def parse_image_source(raw: Mapping[str, Any], section: str, default: str) -> ImageSource:
    where = f"{section}.imageSource"
    value = raw.get("imageSource", default)
    if value in ("registry", "local"):
        return ImageSource(kind=value)
    if isinstance(value, Mapping) and set(value) == {"archives"}:
        archives = value["archives"]
        if (not isinstance(archives, Sequence) or isinstance(archives, str) or not archives
                or not all(isinstance(a, str) and a.strip() for a in archives)):
            raise ConfigError(f"{where}.archives: {archives!r} must be a list of files that `docker save` wrote")
        paths = []
        for i, archive in enumerate(archives):
            path = os.path.abspath(os.path.expanduser(archive))
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(f"{where}.archives[{i}]: {archive!r} is not a readable file on this machine")
            paths.append(path)
        return ImageSource(kind="archives", archives=tuple(paths))
    raise ConfigError(f"{where}: {value!r} is not allowed; use registry (the hosts pull the image), local (ship it "
                      f"from this machine's Docker engine) or {{archives: [FILE, ...]}} (ship `docker save` archives)")


def verify_images(config: StackConfig, cache: Path) -> StackConfig:
    """Read every image archive the stack ships (once: `cache` remembers them) and check that it is
    whole and holds the image its service names, one archive per architecture."""
    def verified(section: str, source: ImageSource, reference: str) -> ImageSource:
        if source.kind != "archives":
            return source
        images = []
        for i, path in enumerate(source.archives):
            where = f"{key(section)}.imageSource.archives[{i}]"
            try:
                image = cached_archive(path, cache)
            except ArchiveError as e:
                raise ConfigError(f"{where}: {e}") from None
            if normalize_tag(reference) not in image.tags:
                raise ConfigError(f"{where}: {path} holds {', '.join(image.tags) or 'an untagged image'}, not "
                                  f"{reference}; save the image the stack runs (docker save {reference} | gzip > FILE)")
            if any(other.architecture == image.architecture for other in images):
                raise ConfigError(f"{where}: {path} is a second {image.architecture} image; give one archive per architecture")
            images.append(image)
        return replace(source, verified=tuple(images))

    ingest = config.ingest
    return replace(
        config,
        cratedb=replace(config.cratedb, image_source=verified(
            "cratedb", config.cratedb.image_source, f"{config.cratedb.image}:{config.cratedb.version}")),
        grafana=replace(config.grafana, image_source=verified(
            "grafana", config.grafana.image_source, f"{config.grafana.image}:{config.grafana.version}")),
        ingest=ingest if ingest.image is None else replace(
            ingest, image_source=verified("ingest", ingest.image_source, ingest.image)),
    )
