"""Per-device credentials: `mds1.<device>.<signature>`, the signature an HMAC-SHA256 of the device
id under the stack's token secret. Anyone holding the secret issues tokens without touching the
running service; a device is revoked by listing it in the stack config (INGEST_REVOKED_DEVICES).

Issue one: `INGEST_TOKEN_SECRET_FILE=secret python -m ingest.tokens pi-hall-1`
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sys
from pathlib import Path

PREFIX = "mds1"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED = "eden."  # device ids of Eden JWT issuers (ingest/eden_jwt.py): never a token's


def _signature(secret: bytes, device: str) -> str:
    digest = hmac.new(secret, f"{PREFIX}.{device}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(secret: bytes, device: str) -> str:
    if not DEVICE_ID.match(device):
        raise ValueError(f"device id {device!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if device.startswith(RESERVED):
        raise ValueError(f"device id {device!r}: ids starting with {RESERVED!r} belong to Eden devices")
    return f"{PREFIX}.{device}.{_signature(secret, device)}"


def verify(secret: bytes, token: str, revoked: frozenset[str] = frozenset()) -> str | None:
    """The device a token belongs to, or None (malformed, forged or revoked: the caller says 401)."""
    prefix, _, rest = token.partition(".")
    device, _, signature = rest.rpartition(".")
    if prefix != PREFIX or not DEVICE_ID.match(device) or device.startswith(RESERVED):
        return None
    if not hmac.compare_digest(signature.encode(), _signature(secret, device).encode()):
        return None
    return None if device in revoked else device


def main(argv: list[str]) -> int:
    path = os.environ.get("INGEST_TOKEN_SECRET_FILE")
    if len(argv) != 1 or not path:
        print("usage: INGEST_TOKEN_SECRET_FILE=<file> python -m ingest.tokens <device-id>", file=sys.stderr)
        return 2
    print(issue(Path(path).read_text().strip().encode(), argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
