"""The write path: readings of concurrent requests micro-batched into CrateDB bulk inserts.

A request's rows join a queue; a flush sends up to `flush_rows` rows as one `bulk_args` insert
(when it is due: see `BatchWriter`); each request learns the result of its own rows. The insert
ignores rows whose key exists (`ON CONFLICT DO NOTHING`), so a retried batch never duplicates.

What CrateDB 6.4's answers mean (its source: InsertFromValues.java, ShardResponse.java,
TransportShardUpsertAction.java; and a 6.4.3 node built from it, docs/verified.md):
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
import time
from collections import deque
from dataclasses import dataclass

from ingest.cratedb_runner import CrateRunner, RequestRefused, Unavailable
from ingest.rows import insert_statement, key_of

log = logging.getLogger("ingest.writer")


STORED = {"rowcount": 1}  # a row's bulk result when it was stored


def refused_for_good(code) -> bool:
    """A per-row error that retrying cannot fix: CrateDB's 4xxx codes."""
    return isinstance(code, int) and (4000 <= code < 5000 or 40000 <= code < 50000)


class QueueFull(Exception):
    """More readings wait than the queue holds (429)."""


@dataclass(frozen=True)
class RowFailure:
    index: int  # within its request
    code: int | None
    message: str


@dataclass(frozen=True)
class Written:
    stored: int  # readings of the request that CrateDB holds now
    failures: list[RowFailure]  # readings it refused for good (4xxx), the others are stored


@dataclass
class _Pending:
    rows: list[list]
    future: asyncio.Future
    queued_at: float  # loop time
    timings: object = None  # flow.Timings of the request: queue and database time are marked here


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
        self.failed_at: float | None = None  # monotonic time of the latest bulk insert, if it failed
        self._loop_task: asyncio.Task | None = None

    # A failed insert counts against readiness this long: a failure at start (CrateDB not up yet,
    # the ingest user not made yet) must not keep a host unready once no request comes to it.
    FAILURE_MEMORY_S = 30.0

    @property
    def recently_failed(self) -> bool:
        """Did the latest bulk insert fail, within the last FAILURE_MEMORY_S?"""
        return self.failed_at is not None and time.monotonic() - self.failed_at < self.FAILURE_MEMORY_S

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, rows: list[list], timings=None) -> Written:
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
        self.pending.append(_Pending(rows, future, loop.time(), timings))
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
        for pending in batch:
            if pending.timings is not None:
                pending.timings.mark("queue")
        started = time.perf_counter()
        try:
            outcomes = await asyncio.wait_for(self._write(batch), self.write_timeout)
        except Exception as e:  # noqa: BLE001 - whatever failed, nothing of the batch is acknowledged
            self.failed_at = time.monotonic()
            self.metrics.crate_errors.labels(kind=type(e).__name__).inc()
            log.warning("bulk insert of %d rows failed: %s", rows, e)
            outcomes = [Unavailable(str(e))] * len(batch)
        else:
            self.failed_at = None
            self.metrics.write_latency.observe(time.perf_counter() - started)
            self.metrics.batch_rows.observe(rows)
        finally:
            self.waiting_rows -= count
            self.metrics.queue_depth.set(self.waiting_rows)
        for pending, outcome in zip(batch, outcomes):
            if pending.timings is not None:
                pending.timings.mark("database")
            if pending.future.done():
                continue
            if isinstance(outcome, Exception):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _write(self, batch: list[_Pending]) -> list[Written | Exception]:
        """One bulk insert for the batch; if CrateDB refuses it for a value (the whole request
        fails), each request again on its own, so that only the one with the bad value is refused
        and the others are stored."""
        try:
            rows = [row for pending in batch for row in pending.rows]
            return await self._outcomes(batch, await self.runner.bulk_insert(self.stmt, rows))
        except RequestRefused as refused:
            if len(batch) == 1:
                return [refused]
            log.warning("CrateDB refused a bulk insert of %d requests (%s); writing them one by one", len(batch), refused)
        outcomes: list[Written | Exception] = []
        for pending in batch:
            try:
                outcomes += await self._outcomes([pending], await self.runner.bulk_insert(self.stmt, pending.rows))
            except RequestRefused as refused:
                outcomes.append(refused)
        return outcomes

    async def _outcomes(self, batch: list[_Pending], results: list[dict]) -> list[Written | Exception]:
        rows = sum(len(pending.rows) for pending in batch)
        if len(results) != rows:
            raise Unavailable(f"CrateDB answered {len(results)} results for {rows} rows")
        if results.count(STORED) == rows:  # the common answer, compared in C: every row stored
            return [Written(len(pending.rows), []) for pending in batch]
        unconfirmed = [row for pending, mine in self._split(batch, results)
                       for row, result in zip(pending.rows, mine) if result.get("rowcount") == 0]
        present = await self.runner.existing_keys(self.table, [key_of(r) for r in unconfirmed]) if unconfirmed else set()
        outcomes: list[Written | Exception] = []
        for pending, mine in self._split(batch, results):
            failures, retry, missing = [], 0, 0
            for i, (row, result) in enumerate(zip(pending.rows, mine)):
                count = result.get("rowcount")
                if count == 1:
                    continue
                if count == 0:
                    missing += key_of(row) not in present
                    continue
                error = result.get("error") or {}
                if refused_for_good(error.get("code")):
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
