"""The CrateDB side of the write path: blocking bulk inserts and key look-ups with the `crate`
client, the node on this host first, and what CrateDB's answers mean (see batch_writer.py).
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Sequence

import orjson
import urllib3
from crate.client.exceptions import ConnectionError as CrateConnectionError
from crate.client.http import Client, _raise_for_status

from ingest.rows import Key

log = logging.getLogger("ingest.cratedb")
NO_CONNECT_RETRY = urllib3.Retry(connect=0, read=0, redirect=False)


class Unavailable(Exception):
    """CrateDB cannot take the write now: nothing of the request is acknowledged (503)."""


class RequestRefused(Exception):
    """CrateDB refused the request for its content (HTTP 400, a 4xxx code): nothing of it is
    stored, and sending it again cannot succeed (422)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Client(Client):
    """The `crate` client, but a 400 answer raises `RequestRefused` with CrateDB's error code
    (the client's ProgrammingError drops it, and the code decides between 422 and 503).
    Overrides a private method of crate 2.x (pinned below 3 in ingest/requirements.txt); bodies
    go uncompressed, as `CrateRunner` configures anyway."""

    def _create_server(self, server, **pool_kw):
        """No second connection attempt to a node: crate 2.x asks urllib3 for Retry(read=0), whose
        total of 10 lets a node that does not accept cost eleven connect timeouts before the
        client moves on to the next one (crate/client/http.py, Server.request)."""
        super()._create_server(server, **pool_kw)
        pool = self.server_pool[server].pool
        urlopen = pool.urlopen
        pool.urlopen = lambda *args, **kwargs: urlopen(*args, **{**kwargs, "retries": NO_CONNECT_RETRY})

    def _json_request(self, method, path, data):
        response = self._request(method, path, data=data, headers={"Accept-Encoding": "gzip, deflate"})
        if response.status == 400 and response.headers.get("content-type", "").startswith("application/json"):
            error = orjson.loads(response.data).get("error") or {}
            raise RequestRefused(error.get("code"), str(error.get("message", "refused"))[:500])
        _raise_for_status(response)
        return orjson.loads(response.data)


class CrateRunner:
    """Blocking bulk inserts with the `crate` client, the node on this host first.

    The client round-robins over its servers, so the local node gets a client of its own and the
    others a second one, used when the local one cannot be reached. With `discover`, the node list
    is looked up again (at most every 5 s) whenever a node does not answer: CrateDB may start after
    us, and a node whose task was replaced (a rolling update) has a new address.

    Connecting gets CONNECT_TIMEOUT_S of the timeout: on the overlay network a live node accepts at
    once, while the old address of a replaced task swallows the connection attempt; waiting the
    whole timeout there stalled every write and /readyz for tens of seconds after a rolling update
    (seen on the lab stack).
    """

    REDISCOVER_S = 5.0
    CONNECT_TIMEOUT_S = 2.0

    def __init__(self, servers: Sequence[str] = (), *, username: str, password: str, timeout: float,
                 connections: int = 4, discover: Callable[[], list[str]] | None = None) -> None:
        # No gzip: the client would compress every bulk body (>= 8 KB) at level 6, which costs more
        # CPU than the bytes it saves between containers on one overlay network. One kept-alive
        # connection per concurrent flush (urllib3 keeps one by default and opens the rest anew).
        self.client_options = {"username": username, "password": password or None, "compress": False,
                               "timeout": urllib3.Timeout(connect=min(self.CONNECT_TIMEOUT_S, timeout), read=timeout),
                               "pool_size": connections}
        self.discover = discover
        self.discovered_at = 0.0
        self._use(list(servers))
        if not self.servers:
            self._rediscover()

    def _use(self, servers: list[str]) -> None:
        self.servers = servers
        self.local = _Client(servers[:1], **self.client_options) if servers else None
        self.others = _Client(servers[1:], **self.client_options) if len(servers) > 1 else None

    def _rediscover(self) -> None:
        if self.discover is None or time.monotonic() - self.discovered_at < self.REDISCOVER_S:
            return
        self.discovered_at = time.monotonic()
        servers = self.discover()
        if servers and servers != self.servers:
            log.info("CrateDB endpoints, preferred first: %s", ", ".join(servers))
            self._use(servers)

    def _sql(self, stmt: str, **parameters) -> dict:
        if self.local is None:
            self._rediscover()
            if self.local is None:
                raise CrateConnectionError("no CrateDB node found")
        try:
            try:
                return self.local.sql(stmt, **parameters)
            except CrateConnectionError:
                failed = self.servers[0]
                log.warning("local CrateDB node %s unavailable; writing through the others", failed)
                self._rediscover()  # its task may have a new address
                if self.servers[:1] != [failed]:
                    return self.local.sql(stmt, **parameters)
                if self.others is None:
                    raise
                return self.others.sql(stmt, **parameters)
        except CrateConnectionError:
            self._rediscover()
            raise
        except orjson.JSONEncodeError as e:  # a value the client cannot serialise: the request's fault
            raise RequestRefused(None, f"a value cannot be sent to the database: {e}") from None

    def bulk_insert(self, stmt: str, rows: list[list]) -> list[dict]:
        return self._sql(stmt, bulk_parameters=rows)["results"]

    def existing_keys(self, table: str, keys: list[Key]) -> set[Key]:
        """Which of these (agent, sensor, ts) keys the table holds: primary-key lookups (a `Get`).
        On CrateDB 6.4.3 such a lookup right after the insert sometimes misses rows it stored (seen
        on a node built from source: none of 12 keys in 6 of 12 tries, all of them 1.5 s later or
        after a refresh), so keys not found are looked up once more after REFRESH TABLE."""
        try:
            found = self._lookup(table, keys)
            if len(found) < len(set(keys)):
                self._sql(f"REFRESH TABLE {table}")
                found |= self._lookup(table, [k for k in keys if k not in found])
        except RequestRefused as e:  # our query, not the request, failed: try again later
            raise Unavailable(f"cannot confirm stored readings: {e}") from None
        return found

    def _lookup(self, table: str, keys: list[Key]) -> set[Key]:
        found: set[Key] = set()
        for start in range(0, len(keys), 100):
            chunk = keys[start:start + 100]
            where = " OR ".join(["(agent = ? AND sensor = ? AND ts = ?)"] * len(chunk))
            answer = self._sql(f"SELECT agent, sensor, ts FROM {table} WHERE {where}",
                               parameters=[v for key in chunk for v in key])
            found.update((agent, sensor, ts) for agent, sensor, ts in answer["rows"])
        return found

    def ping(self) -> bool:
        """Whether any CrateDB node answers: the known ones in order, then, when none does, the node
        list looked up again (in a rolling update every task gets a new address: asking only the
        first two old ones made a host unready while writes went on through the third)."""
        for attempt in range(2):
            if attempt:
                self.discovered_at = 0.0  # none answered: look the nodes up again now
            if self.local is None or attempt:
                self._rediscover()
            for client, servers in ((self.local, self.servers[:1]), (self.others, self.servers[1:])):
                for server in servers:
                    try:
                        client.server_infos(server)
                        return True
                    except Exception:  # noqa: BLE001 - any failure means "not reachable"
                        continue
        return False


def discover_servers(dns_name: str, port: int, node_name: str | None, username: str, password: str) -> list[str]:
    """Every CrateDB node behind a DNS name (tasks.cratedb), the one named like this host first.
    GET / names the node and needs no privilege beyond logging in."""
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
