"""Posting batches to the ingest: every endpoint in turn, retries with exponential backoff and full
jitter, `Retry-After` honoured. One call of `send` is one attempt over the endpoints; the caller
decides what waits and what goes to disk."""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("pi.delivery")

RETRYABLE = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Acknowledged:
    stored: int


@dataclass(frozen=True)
class Retry:
    reason: str
    after_s: float | None = None  # the largest Retry-After any endpoint asked for


@dataclass(frozen=True)
class Rejected:
    status: int
    reason: str
    index: int | None = None  # the first bad reading, when the ingest names it (nothing was stored)
    failed: tuple[int, ...] | None = None  # set: only these readings were refused, the others are stored


class Backoff:
    """Exponential backoff with full jitter; `Retry-After` is a floor."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.rng, self.attempt = base_s, cap_s, rng or random.Random(), 0

    def next_delay(self, retry_after_s: float | None = None) -> float:
        delay = self.rng.uniform(0, min(self.cap, self.base * 2 ** self.attempt))
        self.attempt += 1
        return max(delay, retry_after_s or 0.0)

    def reset(self) -> None:
        self.attempt = 0


class Delivery:
    def __init__(self, endpoints: tuple[str, ...], token: str, *, timeout_s: float = 10.0, ca_file: str | None = None) -> None:
        self.endpoints, self.token, self.timeout = list(endpoints), token, timeout_s
        self.context = ssl.create_default_context(cafile=ca_file) if any(e.startswith("https") for e in endpoints) else None
        self.connections: dict[str, http.client.HTTPConnection] = {}
        self.preferred = 0  # the endpoint that answered last: stay with it

    def _connection(self, endpoint: str) -> http.client.HTTPConnection:
        if endpoint not in self.connections:
            url = urlsplit(endpoint)
            if url.scheme == "https":
                self.connections[endpoint] = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=self.timeout,
                                                                         context=self.context)
            else:
                self.connections[endpoint] = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=self.timeout)
        return self.connections[endpoint]

    def _post(self, endpoint: str, body: bytes) -> tuple[int, dict, str | None]:
        connection = self._connection(endpoint)
        try:
            connection.request("POST", urlsplit(endpoint).path.rstrip("/") + "/v1/readings", body=body, headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self.connections.pop(endpoint, None)
            raise
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError:
            answer = {"error": payload[:200].decode(errors="replace")}
        return response.status, answer if isinstance(answer, dict) else {}, response.getheader("Retry-After")

    def send(self, readings: list[dict]) -> Acknowledged | Retry | Rejected:
        body = json.dumps({"readings": readings}, allow_nan=False).encode()
        reasons, wait = [], None
        for step in range(len(self.endpoints)):
            i = (self.preferred + step) % len(self.endpoints)
            endpoint = self.endpoints[i]
            try:
                status, answer, retry_after = self._post(endpoint, body)
            except (OSError, http.client.HTTPException) as e:
                reasons.append(f"{endpoint}: {e.__class__.__name__}: {e}")
                continue
            if status == 200:
                self.preferred = i
                return Acknowledged(int(answer.get("stored", len(readings))))
            message = str(answer.get("error") or answer.get("message") or answer)[:300]
            if status in RETRYABLE or status >= 500:
                reasons.append(f"{endpoint}: {status} {message}")
                if retry_after and retry_after.isdigit():
                    wait = max(wait or 0.0, float(retry_after))
                continue
            index = answer.get("index")
            failed = answer.get("failed")
            return Rejected(status, message, index if isinstance(index, int) else None,
                            tuple(f["index"] for f in failed) if isinstance(failed, list) else None)
        return Retry("; ".join(reasons), wait)

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
