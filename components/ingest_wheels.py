"""The ingest's Python packages as wheels, fetched once on the operator's machine and carried in
the image's build context: the image build then needs no PyPI (nor a proxy's CA), wherever it
runs, and hosts that build it themselves need no route to PyPI either.

Wheels for both architectures the stack supports are fetched (`pip download --platform`), so one
context builds on x86_64 and aarch64 alike: pip inside the build picks the ones for its machine.
They are cached by the text of ingest/requirements.txt, so a second run fetches nothing and the
image's content hash (components/ingest.py) stays put until the requirements change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Debian bookworm's python3 (the image's base) is 3.11; manylinux wheels of both architectures.
PYTHON_VERSION = "3.11"
ARCHITECTURES = ("x86_64", "aarch64")


class WheelError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("MDS_WHEEL_CACHE", Path.home() / ".cache" / "mds" / "wheels"))


def download_command(requirements: Path, architecture: str, into: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
            "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--platform", f"manylinux2014_{architecture}",
            "--platform", f"manylinux_2_28_{architecture}", "-r", str(requirements), "-d", str(into)]


def wheels(requirements: Path) -> dict[str, bytes]:
    """Every wheel the requirements need on either architecture: file name -> content."""
    key = hashlib.sha256(requirements.read_bytes() + PYTHON_VERSION.encode()).hexdigest()[:16]
    found: dict[str, bytes] = {}
    for architecture in ARCHITECTURES:
        directory = cache_root() / key / architecture
        if not (directory / ".complete").exists():
            partial = directory.with_name(directory.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(download_command(requirements, architecture, partial), capture_output=True,
                                    text=True, timeout=900)
            if result.returncode != 0:
                raise WheelError(f"pip could not fetch the ingest's wheels for {architecture} (needed once, on this "
                                 f"machine, to build its image): {result.stderr.strip()[-800:]}")
            (partial / ".complete").write_text("")
            try:
                partial.rename(directory)
            except OSError:  # another run finished first: use its wheels
                shutil.rmtree(partial, ignore_errors=True)
        found.update({p.name: p.read_bytes() for p in sorted(directory.glob("*.whl"))})
    return found
