"""The CrateDB side of the write path: bulk inserts and key look-ups over CrateDB's HTTP endpoint
(`POST /_sql`, docs/interfaces/http.rst of crate/crate), in the event loop, the node on this host
first, and what CrateDB's answers mean (see batch_writer.py).

The requests run in the event loop with aiohttp's client, not in threads with the blocking `crate`
client: a writer thread whose answer had arrived waited for the GIL while the loop parsed bodies,
and the hand-overs cost the service a fifth of its CPU at batch 1000 (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Sequence

import aiohttp
import orjson

from ingest.rows import Key

log = logging.getLogger("ingest.cratedb")
# Answers that say "this node cannot serve now, another may" (as the `crate` client treats them).
NODE_UNAVAILABLE_STATUSES = frozenset({502, 503, 504, 509})


class Unavailable(Exception):
    """CrateDB cannot take the write now: nothing of the request is acknowledged (503)."""


class RequestRefused(Exception):
    """CrateDB refused the request for its content (HTTP 400, a 4xxx code): nothing of it is
    stored, and sending it again cannot succeed (422)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _NodeUnreachable(Exception):
    """This node did not answer (or said it cannot serve): try another."""


class CrateRunner:
    """Bulk inserts over HTTP, the node on this host first, the others when it does not answer.

    With `discover`, the node list is looked up again (at most every 5 s) whenever a node does not
    answer: CrateDB may start after us, and a node whose task was replaced (a rolling update) has a
    new address.

    Connecting gets CONNECT_TIMEOUT_S of the timeout: on the overlay network a live node accepts at
    once, while the old address of a replaced task swallows the connection attempt; waiting the
    whole timeout there stalled every write and /readyz for tens of seconds after a rolling update
    (seen on the lab stack).

    Use it from one event loop at a time; `close()` ends its connections (a later call opens new
    ones in the loop it runs in).
    """

    REDISCOVER_S = 5.0
    CONNECT_TIMEOUT_S = 2.0

    def __init__(self, servers: Sequence[str] = (), *, username: str, password: str, timeout: float,
                 connections: int = 4, discover: Callable[[], list[str]] | None = None) -> None:
        self.servers = [server.rstrip("/") for server in servers]
        self.discover = discover
        self.discovered_at = 0.0
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(self.CONNECT_TIMEOUT_S, timeout))
        self.headers = {"Content-Type": "application/json"}
        if username:
            credentials = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + b64encode(credentials).decode()
        # One kept-alive connection per concurrent flush, and room for a look-up and a readiness
        # check beside them.
        self.connections = connections + 2
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.connections),
                timeout=self.timeout, headers=self.headers, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def rediscover(self) -> None:
        """Look the node list up again, unless that was done less than REDISCOVER_S ago."""
        if self.discover is None or time.monotonic() - self.discovered_at < self.REDISCOVER_S:
            return
        self.discovered_at = time.monotonic()
        servers = await asyncio.to_thread(self.discover)  # DNS and HTTP, blocking: off the loop
        if servers and servers != self.servers:
            log.info("CrateDB endpoints, preferred first: %s", ", ".join(servers))
            self.servers = servers

    async def _post(self, server: str, body: bytes) -> dict:
        for attempt in range(2):
            try:
                async with self._client().post(server + "/_sql", data=body) as response:
                    answer = await response.read()
                break
            except aiohttp.ServerDisconnectedError as e:
                # A kept-alive connection the node had closed meanwhile: once more on a new one
                # (a statement sent twice stores nothing twice: inserts skip existing keys).
                if attempt:
                    raise _NodeUnreachable(f"{server}: {e!r}") from None
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                raise _NodeUnreachable(f"{server}: {e!r}") from None
        if response.status in NODE_UNAVAILABLE_STATUSES:
            raise _NodeUnreachable(f"{server}: HTTP {response.status}")
        if response.status >= 400:
            error = _error_of(answer)
            message = str(error.get("message") or f"HTTP {response.status} {response.reason}")[:500]
            if response.status == 400 and error:  # CrateDB's own refusal, with its code
                raise RequestRefused(error.get("code"), message)
            raise Unavailable(f"CrateDB answered HTTP {response.status}: {message}")
        return orjson.loads(answer)

    async def _sql(self, stmt: str, **parameters) -> dict:
        try:
            body = orjson.dumps({"stmt": stmt, **parameters})
        except orjson.JSONEncodeError as e:  # a value that cannot be sent: the request's fault
            raise RequestRefused(None, f"a value cannot be sent to the database: {e}") from None
        if not self.servers:
            await self.rediscover()
            if not self.servers:
                raise Unavailable("no CrateDB node found")
        local = self.servers[0]
        try:
            return await self._post(local, body)
        except _NodeUnreachable as e:
            log.warning("local CrateDB node unavailable (%s); writing through the others", e)
        await self.rediscover()  # its task may have a new address
        failure = "no other node known"
        for server in self.servers if self.servers[0] != local else self.servers[1:]:
            try:
                return await self._post(server, body)
            except _NodeUnreachable as e:
                failure = str(e)
        raise Unavailable(f"no CrateDB node answered; the last: {failure}")

    async def bulk_insert(self, stmt: str, rows: list) -> list[dict]:
        return (await self._sql(stmt, bulk_args=rows))["results"]

    async def existing_keys(self, table: str, keys: list[Key]) -> set[Key]:
        """Which of these (agent, sensor, ts) keys the table holds: primary-key lookups (a `Get`).
        On CrateDB 6.4.3 such a lookup right after the insert sometimes misses rows it stored (seen
        on a node built from source: none of 12 keys in 6 of 12 tries, all of them 1.5 s later or
        after a refresh), so keys not found are looked up once more after REFRESH TABLE."""
        try:
            found = await self._lookup(table, keys)
            if len(found) < len(set(keys)):
                await self._sql(f"REFRESH TABLE {table}")
                found |= await self._lookup(table, [k for k in keys if k not in found])
        except RequestRefused as e:  # our query, not the request, failed: try again later
            raise Unavailable(f"cannot confirm stored readings: {e}") from None
        return found

    async def _lookup(self, table: str, keys: list[Key]) -> set[Key]:
        found: set[Key] = set()
        for start in range(0, len(keys), 100):
            chunk = keys[start:start + 100]
            where = " OR ".join(["(agent = ? AND sensor = ? AND ts = ?)"] * len(chunk))
            answer = await self._sql(f"SELECT agent, sensor, ts FROM {table} WHERE {where}",
                                     args=[v for key in chunk for v in key])
            found.update((agent, sensor, ts) for agent, sensor, ts in answer["rows"])
        return found

    async def ping(self) -> bool:
        """Whether any CrateDB node answers `GET /`: the known ones in order, then, when none does,
        the node list looked up again (in a rolling update every task gets a new address: asking
        only the first two old ones made a host unready while writes went on through the third)."""
        for attempt in range(2):
            if attempt:
                self.discovered_at = 0.0  # none answered: look the nodes up again now
            if not self.servers or attempt:
                await self.rediscover()
            for server in self.servers:
                try:
                    async with self._client().get(server + "/") as response:
                        if response.status < 300 and isinstance(orjson.loads(await response.read()), dict):
                            return True
                except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                    continue
        return False


def _error_of(answer: bytes) -> dict:
    """CrateDB's `{"error": {"code", "message"}}`, or {} for anything else."""
    try:
        error = orjson.loads(answer).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {"message": str(error)}


def discover_servers(dns_name: str, port: int, node_name: str | None, username: str, password: str) -> list[str]:
    """Every CrateDB node behind a DNS name (tasks.cratedb), the one named like this host first.
    GET / names the node and needs no privilege beyond logging in. Blocking: run it in a thread."""
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(dns_name, port, type=socket.SOCK_STREAM)})
    except OSError:  # no CrateDB task yet (or none healthy): try again later
        return []
    servers = [f"http://{a}:{port}" for a in addresses]
    if node_name:
        auth = "Basic " + b64encode(f"{username}:{password}".encode()).decode()
        for server in servers:
            try:
                request = urllib.request.Request(server + "/", headers={"Authorization": auth})
                with urllib.request.urlopen(request, timeout=3) as response:
                    if orjson.loads(response.read()).get("name") == node_name:
                        servers.remove(server)
                        servers.insert(0, server)
                        break
            except (OSError, ValueError):
                continue
    return servers
