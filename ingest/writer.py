"""The write path: readings of concurrent requests micro-batched into CrateDB bulk inserts.

A request's rows join a queue; a flush sends up to `flush_rows` rows as one `bulk_args` insert
(when it is due: see `BatchWriter`); each request learns the result of its own rows. The insert
ignores rows whose key exists (`ON CONFLICT DO NOTHING`), so a retried batch never duplicates.

What CrateDB 6.4's answers mean (its source, REFERENCE.md A, and a 6.4.3 node built from it):
rowcount 1 is stored; -2 with a 4xxx code is a row refused for good (e.g. two types for a new
object sub-column in one request, the column limit: 4000); -2 with another code or none is a failed
shard: not stored, retry; 0 is either a key that exists (a retry) or a row skipped because its
partition was missing from the coordinator's metadata, so it is confirmed by reading the key back;
a value against an existing mapping fails the whole bulk request with HTTP 400 (4000), so the
requests of that insert are written one by one to find the one the database refuses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from base64 import b64encode
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from crate.client.exceptions import ConnectionError as CrateConnectionError
from crate.client.http import Client, _raise_for_status

log = logging.getLogger("ingest.writer")

INSERT_COLUMNS = ("ts", "agent", "sensor", "reading", "unit", "meta")


def insert_statement(table: str) -> str:
    columns = ", ".join(INSERT_COLUMNS)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))}) ON CONFLICT DO NOTHING"


class Unavailable(Exception):
    """CrateDB cannot take the write now: nothing of the request is acknowledged (503)."""


class QueueFull(Exception):
    """More readings wait than the queue holds (429)."""


class RequestRefused(Exception):
    """CrateDB refused the request for its content (HTTP 400, a 4xxx code): nothing of it is
    stored, and sending it again cannot succeed (422)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class RowFailure:
    index: int  # within its request
    code: int | None
    message: str


@dataclass(frozen=True)
class Written:
    stored: int  # readings of the request that CrateDB holds now
    failures: list[RowFailure]  # readings it refused for good (4xxx), the others are stored


class _Client(Client):
    """The `crate` client, but a 400 answer raises `RequestRefused` with CrateDB's error code
    (the client's ProgrammingError drops it, and the code decides between 422 and 503).
    Overrides a private method of crate 2.x (pinned below 3 in ingest/requirements.txt); bodies
    go uncompressed, as `CrateRunner` configures anyway."""

    def _json_request(self, method, path, data):
        response = self._request(method, path, data=data, headers={"Accept-Encoding": "gzip, deflate"})
        if response.status == 400 and response.headers.get("content-type", "").startswith("application/json"):
            error = orjson.loads(response.data).get("error") or {}
            raise RequestRefused(error.get("code"), str(error.get("message", "refused"))[:500])
        _raise_for_status(response)
        return orjson.loads(response.data)


def _refusal(code) -> bool:
    """A per-row error that retrying cannot fix: CrateDB's 4xxx codes."""
    return isinstance(code, int) and (4000 <= code < 5000 or 40000 <= code < 50000)


class CrateRunner:
    """Blocking bulk inserts with the `crate` client, the node on this host first.

    The client round-robins over its servers, so the local node gets a client of its own and the
    others a second one, used when the local one cannot be reached. With `discover`, the node list
    is looked up again (at most every 5 s) while no node answers: CrateDB may start after us.
    """

    REDISCOVER_S = 5.0

    def __init__(self, servers: Sequence[str] = (), *, username: str, password: str, timeout: float,
                 connections: int = 4, discover: Callable[[], list[str]] | None = None) -> None:
        # No gzip: the client would compress every bulk body (>= 8 KB) at level 6, which costs more
        # CPU than the bytes it saves between containers on one overlay network. One kept-alive
        # connection per concurrent flush (urllib3 keeps one by default and opens the rest anew).
        self.client_options = {"username": username, "password": password or None, "timeout": timeout,
                               "compress": False, "pool_size": connections}
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
                if self.others is None:
                    raise
                log.warning("local CrateDB node %s unavailable; writing through the others", self.servers[0])
                return self.others.sql(stmt, **parameters)
        except CrateConnectionError:
            self._rediscover()
            raise
        except orjson.JSONEncodeError as e:  # a value the client cannot serialise: the request's fault
            raise RequestRefused(None, f"a value cannot be sent to the database: {e}") from None

    def bulk_insert(self, stmt: str, rows: list[list]) -> list[dict]:
        return self._sql(stmt, bulk_parameters=rows)["results"]

    def existing_keys(self, table: str, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
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

    def _lookup(self, table: str, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        found: set[tuple[str, str, int]] = set()
        for start in range(0, len(keys), 100):
            chunk = keys[start:start + 100]
            where = " OR ".join(["(agent = ? AND sensor = ? AND ts = ?)"] * len(chunk))
            answer = self._sql(f"SELECT agent, sensor, ts FROM {table} WHERE {where}",
                               parameters=[v for key in chunk for v in key])
            found.update((agent, sensor, ts) for agent, sensor, ts in answer["rows"])
        return found

    def ping(self) -> bool:
        if self.local is None:
            self._rediscover()
        for client, server in ((self.local, self.servers[:1]), (self.others, self.servers[1:2])):
            if client is None or not server:
                continue
            try:
                client.server_infos(server[0])
                return True
            except Exception:  # noqa: BLE001 - any failure means "not reachable"
                continue
        self._rediscover()
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


@dataclass
class _Pending:
    rows: list[list]
    future: asyncio.Future
    queued_at: float  # loop time


class BatchWriter:
    """Group commit: with no insert in flight, what is queued is written at once (no added latency
    for a lone agent); while one is in flight, requests gather until it returns, up to `linger`, or
    until they make a tenth of a flush (a bulk-sized request does not wait for company). Batches
    grow with the load instead of with a fixed timer."""

    def __init__(self, runner: CrateRunner, *, table: str, flush_rows: int, linger_ms: float,
                 max_inflight: int, queue_rows: int, write_timeout_s: float, metrics) -> None:
        self.runner = runner
        self.table = table
        self.stmt = insert_statement(table)
        self.flush_rows = flush_rows
        self.eager_rows = max(1, flush_rows // 10)
        self.linger = linger_ms / 1000
        self.max_inflight = max_inflight
        self.queue_rows = queue_rows
        self.write_timeout = write_timeout_s
        self.metrics = metrics
        self.pending: deque[_Pending] = deque()
        self.pending_rows = 0  # queued, not yet in an insert
        self.waiting_rows = 0  # queued or in an insert: what the queue limit counts
        self.flushes: set[asyncio.Task] = set()
        self.wakeup = asyncio.Event()
        self.last_write_failed = False  # did the latest bulk insert fail? (readiness)
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, rows: list[list]) -> Written:
        """Resolve once CrateDB holds the rows (or refused some for good); raise otherwise:
        `Unavailable` (retry), `RequestRefused` (do not), `QueueFull`."""
        if self._loop_task is None or self._loop_task.done():
            raise Unavailable("the writer is stopped")
        if self.waiting_rows + len(rows) > self.queue_rows:
            raise QueueFull(f"{self.waiting_rows} readings are waiting for CrateDB")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting_rows += len(rows)
        self.pending_rows += len(rows)
        self.metrics.queue_depth.set(self.waiting_rows)
        self.pending.append(_Pending(rows, future, loop.time()))
        self.wakeup.set()
        return await future

    async def close(self) -> None:
        """Flush everything accepted, then stop."""
        while self.pending or self.flushes:
            await asyncio.sleep(0.01)
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    def _due(self, now: float) -> bool:
        return (not self.flushes or self.pending_rows >= self.eager_rows
                or now - self.pending[0].queued_at >= self.linger)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending and len(self.flushes) < self.max_inflight and self._due(loop.time()):
                self._start_flush()
            if timer is not None:
                timer.cancel()
            if self.pending and len(self.flushes) < self.max_inflight:  # lingering: look again in time
                timer = loop.call_at(self.pending[0].queued_at + self.linger, self.wakeup.set)

    def _start_flush(self) -> None:
        batch, count = [], 0
        while self.pending and (not batch or count + len(self.pending[0].rows) <= self.flush_rows):
            item = self.pending.popleft()
            batch.append(item)
            count += len(item.rows)
        self.pending_rows -= count
        task = asyncio.get_running_loop().create_task(self._flush(batch, count))
        self.flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task) -> None:
        self.flushes.discard(task)
        self.wakeup.set()  # a slot is free, and what gathered meanwhile is due

    async def _flush(self, batch: list[_Pending], count: int) -> None:
        rows = sum(len(pending.rows) for pending in batch)
        started = time.perf_counter()
        try:
            outcomes = await asyncio.wait_for(asyncio.to_thread(self._write, batch), self.write_timeout)
        except Exception as e:  # noqa: BLE001 - whatever failed, nothing of the batch is acknowledged
            self.last_write_failed = True
            self.metrics.crate_errors.labels(kind=type(e).__name__).inc()
            log.warning("bulk insert of %d rows failed: %s", rows, e)
            outcomes = [Unavailable(str(e))] * len(batch)
        else:
            self.last_write_failed = False
            self.metrics.write_latency.observe(time.perf_counter() - started)
            self.metrics.batch_rows.observe(rows)
        finally:
            self.waiting_rows -= count
            self.metrics.queue_depth.set(self.waiting_rows)
        for pending, outcome in zip(batch, outcomes):
            if pending.future.done():
                continue
            if isinstance(outcome, Exception):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _write(self, batch: list[_Pending]) -> list[Written | Exception]:
        """Blocking, in a worker thread: one bulk insert for the batch; if CrateDB refuses it for
        a value (the whole request fails), each request again on its own, so that only the one
        with the bad value is refused and the others are stored."""
        try:
            return self._outcomes(batch, self.runner.bulk_insert(self.stmt, [r for p in batch for r in p.rows]))
        except RequestRefused as refused:
            if len(batch) == 1:
                return [refused]
            log.warning("CrateDB refused a bulk insert of %d requests (%s); writing them one by one", len(batch), refused)
        outcomes: list[Written | Exception] = []
        for pending in batch:
            try:
                outcomes += self._outcomes([pending], self.runner.bulk_insert(self.stmt, pending.rows))
            except RequestRefused as refused:
                outcomes.append(refused)
        return outcomes

    def _outcomes(self, batch: list[_Pending], results: list[dict]) -> list[Written | Exception]:
        rows = sum(len(pending.rows) for pending in batch)
        if len(results) != rows:
            raise Unavailable(f"CrateDB answered {len(results)} results for {rows} rows")
        unconfirmed = [row for pending, mine in self._split(batch, results)
                       for row, result in zip(pending.rows, mine) if result.get("rowcount") == 0]
        present = self.runner.existing_keys(self.table, [(r[1], r[2], r[0]) for r in unconfirmed]) if unconfirmed else set()
        outcomes: list[Written | Exception] = []
        for pending, mine in self._split(batch, results):
            failures, retry, missing = [], 0, 0
            for i, (row, result) in enumerate(zip(pending.rows, mine)):
                count = result.get("rowcount")
                if count == 1:
                    continue
                if count == 0:
                    missing += (row[1], row[2], row[0]) not in present
                    continue
                error = result.get("error") or {}
                if _refusal(error.get("code")):
                    failures.append(RowFailure(i, error["code"], str(error.get("message", "row refused"))[:500]))
                else:  # a shard failed (5000/5002, or no error object): not stored, the retry may be
                    retry += 1
            if retry or missing:
                self.metrics.crate_errors.labels(kind="rows not stored" if retry else "rows not confirmed").inc()
                outcomes.append(Unavailable(f"{retry + missing} of {len(pending.rows)} readings were not stored"))
            else:
                outcomes.append(Written(len(pending.rows) - len(failures), failures))
        return outcomes

    @staticmethod
    def _split(batch: list[_Pending], results: list[dict]):
        offset = 0
        for pending in batch:
            yield pending, results[offset:offset + len(pending.rows)]
            offset += len(pending.rows)
