"""One request flow for every protocol: read the body, parse it, store the rows, say why not.

A protocol (app.py: JSON and Eden; influx.py: line protocol) is a parser and a route: it finds the
device in the credential, hands its parser to `accept`, and renders what comes back, or the
`Refusal` it raises, in its own format. Everything else happens here, once: the body limits and
timeouts, decompression, where parsing runs, the writer's answers and the metrics.

Parsing a large body costs tens of milliseconds and more; it runs off the event loop, one at a
time per worker, so other requests keep being answered, and large bodies wait for a share of a
per-worker byte budget before they are read, so memory stays bounded whatever many clients send.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ingest.batch_writer import BatchWriter, QueueFull, Written
from ingest.cratedb_runner import RequestRefused, Unavailable
from ingest.payload import BadInput
from ingest.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
WRITER = web.AppKey("writer", BatchWriter)
METRICS = web.AppKey("metrics", object)
GUARD = web.AppKey("guard", object)

MAX_CREDENTIAL = 4096  # longer than any token or JWT we issue or accept: refused unread
LARGE_BODY = 256 * 1024  # bodies above this are read against the byte budget and parsed off the loop
MAX_GZIP_MEMBERS = 16  # `gzip -c a b` makes two; thousands of empty ones are an attack
_INFLATE_CHUNK = 64 * 1024
STAGES = ("read", "decode", "parse", "queue", "database", "answer")
CLOSE_AFTER_ANSWER = web.RequestKey("close_after_answer", bool)  # answer, then close the connection


async def close_if_asked(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a request whose body was not read whole gets its answer (a 408), then
    the connection closes. Closing the transport at once, as before, sent the client nothing."""
    if request.get(CLOSE_AFTER_ANSWER):
        response.force_close()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("ingest_readings_accepted", "Readings committed to CrateDB", registry=r)
        self.rejected = Counter("ingest_readings_rejected", "Readings refused", ["reason"], registry=r)
        self.batch_rows = Histogram("ingest_bulk_insert_rows", "Rows per bulk insert", registry=r,
                                    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000))
        self.write_latency = Histogram("ingest_write_seconds", "Bulk insert latency", registry=r)
        self.crate_errors = Counter("ingest_cratedb_errors", "Failed bulk inserts", ["kind"], registry=r)
        self.queue_depth = Gauge("ingest_queue_readings", "Readings waiting for CrateDB", registry=r,
                                 multiprocess_mode="livesum")
        # Where a request's time goes (read, decode, parse, queue, database, answer): the
        # benchmark prints these beside the latencies it measures from outside.
        self.stage = Histogram("ingest_stage_seconds", "Time of one request in each stage", ["stage"], registry=r,
                               buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
        # One child per stage, looked up once: six label look-ups per request were a few percent of
        # a small request's CPU.
        self.stage_of = {name: self.stage.labels(stage=name) for name in STAGES}

    def exposition(self) -> bytes:
        """This process's metrics, or with several workers (PROMETHEUS_MULTIPROC_DIR set by
        `python -m ingest`) the sum over all of them: a scrape reaches just one worker."""
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, shared)
        return generate_latest(registry)


class Refusal(Exception):
    """Why a request's rows were not (all) stored, for the protocol to render."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class BodyBudget:
    """Bytes of large bodies a worker holds at once (read, decompressed and parsed); a request
    waits for its share, at most `wait_s`, then is refused with 503 and Retry-After."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit, self.wait_s, self.used = limit, wait_s, 0
        self.freed = asyncio.Condition()

    async def take(self, size: int) -> int:
        size = min(size, self.limit)
        async with self.freed:
            try:
                await asyncio.wait_for(self.freed.wait_for(lambda: self.used + size <= self.limit), self.wait_s)
            except TimeoutError:
                raise Refusal(503, "the server is busy with other large requests; retry later",
                              retry_after=2) from None
            self.used += size
        return size

    async def give(self, size: int) -> None:
        async with self.freed:
            self.used -= size
            self.freed.notify_all()


@dataclass
class Timings:
    started: float

    def __post_init__(self) -> None:
        self.last = self.started
        self.spent: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.spent[stage] = now - self.last
        self.last = now


class Guard:
    """A worker's shared limits: the byte budget and the one parse that runs off the loop."""

    def __init__(self, settings: Settings) -> None:
        self.budget = BodyBudget(settings.large_body_budget_bytes, settings.body_timeout_s)
        self.parsing = asyncio.Semaphore(1)


async def accept(request: web.Request, device: str, parse: Callable[[bytes], object],
                 rows_of: Callable[[object], list]) -> tuple[object, Written]:
    """Read, parse (`parse(body)` -> parsed; `rows_of(parsed)` -> rows) and store; (parsed, what
    was written). Raises BadInput (the body) or Refusal (the database, the queue, the budget)."""
    settings, metrics, guard = request.app[SETTINGS], request.app[METRICS], request.app[GUARD]
    timings = Timings(time.perf_counter())
    check_encoding(request)
    large = (request.content_length or 0) > LARGE_BODY or request.content_length is None
    held = await guard.budget.take(request.content_length or settings.max_body_bytes) if large else 0
    try:
        raw = await _read(request, settings)
        timings.mark("read")
        large = large or len(raw) > LARGE_BODY
        body = await _off_loop(guard, large, _decode, request.headers.get("Content-Encoding", "identity"), raw,
                               settings.max_body_bytes)
        del raw
        timings.mark("decode")
        parsed = await _off_loop(guard, large or len(body) > LARGE_BODY, parse, body)
        del body
        timings.mark("parse")
    finally:
        if held:
            await guard.budget.give(held)
    rows = rows_of(parsed)
    written = await store(request, rows, timings) if rows else Written(0, [])
    for stage, seconds in timings.spent.items():
        metrics.stage_of[stage].observe(seconds)
    return parsed, written


async def _off_loop(guard: Guard, large: bool, function, *args):
    if not large:
        return function(*args)
    async with guard.parsing:
        return await asyncio.to_thread(function, *args)


async def _read(request: web.Request, settings: Settings) -> bytes:
    """The raw body, at most `max_body_bytes` (413 above), within `body_timeout_s` (408)."""
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(413, f"body of {request.content_length} bytes; at most {limit}")
    raw = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.content.iter_chunked(65536):
                raw += chunk
                if len(raw) > limit:
                    raise BadInput(413, f"body larger than {limit} bytes")
    except TimeoutError:
        request[CLOSE_AFTER_ANSWER] = True  # the rest of the body may still come: never read it
        raise BadInput(408, f"the body did not arrive within {settings.body_timeout_s:g} s") from None
    return bytes(raw)


def _decode(encoding: str, raw: bytes, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "identity":
        return raw
    if encoding == "gzip":
        return gunzip(raw, limit)
    raise BadInput(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")


def check_encoding(request: web.Request) -> None:
    """An unknown Content-Encoding is refused before the body is read."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise BadInput(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")


def gunzip(data: bytes, limit: int) -> bytes:
    """Every member of a gzip stream (RFC 1952 allows several, `gzip -c a b` makes them), each
    whole with its CRC and length checked; at most `limit` bytes out, at most MAX_GZIP_MEMBERS
    members. The input is fed in chunks, so the time is linear in its size."""
    out = bytearray()
    view = memoryview(data)
    at, member = 0, 0
    while True:
        member += 1
        if member > MAX_GZIP_MEMBERS:
            raise BadInput(400, f"body is not acceptable gzip: more than {MAX_GZIP_MEMBERS} members")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof and at < len(data):
            piece = view[at:at + _INFLATE_CHUNK]
            try:
                out += inflater.decompress(piece, limit + 1 - len(out))
            except zlib.error as e:
                raise BadInput(400, f"body is not valid gzip (member {member}): {e}") from None
            if len(out) > limit or inflater.unconsumed_tail:
                raise BadInput(413, f"decompressed body larger than {limit} bytes")
            at += len(piece) - len(inflater.unused_data)
        if not inflater.eof:
            raise BadInput(400, f"body is not valid gzip: member {member} is cut short (no CRC and length trailer)")
        if at == len(data):
            return bytes(out)
        if view[at:at + 2] != b"\x1f\x8b":
            raise BadInput(400, f"body is not valid gzip: {len(data) - at} bytes of something else after member {member}")


async def store(request: web.Request, rows: list, timings: Timings | None = None) -> Written:
    """The rows handed to the writer; what CrateDB stored, or the Refusal that says why not."""
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    try:
        written = await request.app[WRITER].submit(rows, timings)
        if timings is not None:
            timings.mark("answer")  # from the insert's end until this request runs again: the loop's delay
    except QueueFull:
        metrics.rejected.labels(reason="429").inc(len(rows))
        raise Refusal(429, "too many readings are waiting for the database; nothing was stored; retry later",
                      retry_after=settings.retry_after_s) from None
    except Unavailable:
        metrics.rejected.labels(reason="503").inc(len(rows))
        raise Refusal(503, "the database did not confirm the write: it may not have been stored; retrying is safe "
                           "(a reading stored once is never stored twice)", retry_after=settings.retry_after_s) from None
    except RequestRefused as e:
        metrics.rejected.labels(reason="refused").inc(len(rows))
        reason = f"{e.code} {e.message}" if e.code else e.message
        raise Refusal(422, f"the database refused this write ({reason}); nothing of it was stored; "
                           "sending it again cannot succeed") from None
    metrics.accepted.inc(written.stored)
    if written.failures:
        metrics.rejected.labels(reason="row").inc(len(written.failures))
    return written
