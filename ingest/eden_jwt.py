"""HS256 JWTs of the original Eden agents: claims `iss` (the device's name, e.g. "Raspberry 1")
and `role`; `exp` honoured when present. Anything malformed is just "not authenticated" (Eden
crashed on it).

Every Eden device holds the one shared secret, so an Eden identity is kept apart from the
per-device tokens: it becomes the device id `eden.<issuer>` (see `device_id`), a name no device
token can carry, and eden-server's own rule applies: the role must be one the stack accepts (and
the issuer one it lists, when it lists any)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import orjson

PREFIX = "eden."
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def device_id(issuer: str) -> str:
    """`eden.<issuer>` when the issuer is a plain name; otherwise its unsafe characters become
    `-` and a hash of the exact issuer follows, so that two issuers never share a device id:
    "Raspberry 1" -> "eden.Raspberry-1-<8 hex digits>". At most 64 characters."""
    slug = _UNSAFE.sub("-", issuer).strip("-._") or "device"
    if slug == issuer and len(slug) <= 64 - len(PREFIX):
        return PREFIX + slug
    digest = hashlib.sha256(issuer.encode()).hexdigest()[:8]
    return f"{PREFIX}{slug[:64 - len(PREFIX) - 9]}-{digest}"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify(token: str, secret: bytes, now: float) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = orjson.loads(_b64decode(parts[0]))
        signature = _b64decode(parts[2])
        claims = orjson.loads(_b64decode(parts[1]))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":  # never "none", never RS/HS confusion
        return None
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
        return None
    iss, exp = claims.get("iss"), claims.get("exp")
    if not isinstance(iss, str) or not iss:
        return None
    if exp is not None and (not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= now):
        return None
    return claims


def sign(claims: dict, secret: bytes) -> str:
    """For tests and for issuing tokens to old agents."""
    def enc(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = enc(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = enc(orjson.dumps(claims))
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{enc(sig)}"
