"""The HTTP service: routes, authentication, body limits, and the mapping of errors to answers.

Every answer to a bad request is a 4xx JSON body `{"error": ..., "index"?: n}` that says what was
wrong and where; a batch is answered 200 only after CrateDB committed all of its readings.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import zlib
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ingest import eden_jwt, tokens
from ingest.payload import BadInput, accepted_window, decode_json, parse_batch, parse_eden
from ingest.settings import Settings
from ingest.writer import BatchWriter, CrateRunner, QueueFull, RequestRefused, Unavailable, discover_servers

log = logging.getLogger("ingest")
OPENAPI = Path(__file__).with_name("openapi.json")
# Bodies are decompressed here, under the size limit, not by aiohttp: an unknown encoding gets a
# clear 415 and a gzip bomb stops at the limit.
SERVER_OPTIONS = {"auto_decompress": False}
_aiohttp_handle_error = RequestHandler.handle_error


def _handle_error_without_echo(self, request, status=500, exc=None, message=None):
    """aiohttp answers a request it cannot parse (a header over 8 KB, a bad request line) with a
    text that quotes the offending line, and logs it with the same text: for an Authorization
    header that is a credential. Say what was wrong, never what was sent."""
    if not 400 <= status < 500:
        return _aiohttp_handle_error(self, request, status, exc, message)
    log.warning("refused a malformed request from %s (%d %s)", request.remote, status, type(exc).__name__)
    response = web.Response(status=status, content_type="application/json", body=orjson.dumps(
        {"error": "malformed HTTP request (a header or the request line is too long, or it is not HTTP/1.1)"}))
    response.force_close()
    return response


RequestHandler.handle_error = _handle_error_without_echo  # one place, for every server of this process

SETTINGS = web.AppKey("settings", Settings)
WRITER = web.AppKey("writer", BatchWriter)
METRICS = web.AppKey("metrics", object)


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

    def exposition(self) -> bytes:
        """This process's metrics, or with several workers (PROMETHEUS_MULTIPROC_DIR set by
        `python -m ingest`) the sum over all of them: a scrape reaches just one worker."""
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, shared)
        return generate_latest(registry)


def error(status: int, message: str, index: int | None = None, retry_after: int | None = None) -> web.Response:
    body = {"error": message} | ({"index": index} if index is not None else {})
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decompressed, at most `limit` bytes: 413 above, 415 for an unknown encoding."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise BadInput(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(413, f"body of {request.content_length} bytes; at most {limit}")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        raw += chunk
        if len(raw) > limit:
            raise BadInput(413, f"body larger than {limit} bytes")
    return bytes(raw) if encoding == "identity" else gunzip(bytes(raw), limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Every member of a gzip stream (RFC 1952 allows several, `gzip -c a b` makes them), each
    whole with its CRC and length checked; at most `limit` bytes out."""
    out = bytearray()
    member = 0
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as e:
            raise BadInput(400, f"body is not valid gzip (member {member + 1}): {e}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BadInput(413, f"decompressed body larger than {limit} bytes")
        if not inflater.eof:
            raise BadInput(400, f"body is not valid gzip: member {member + 1} is cut short (no CRC and length trailer)")
        data, member = inflater.unused_data, member + 1
        if not data:
            return bytes(out)
        if not data.startswith(b"\x1f\x8b"):
            raise BadInput(400, f"body is not valid gzip: {len(data)} bytes of something else after member {member}")


MAX_CREDENTIAL = 4096  # longer than any token or JWT we issue or accept


def authenticate(request: web.Request, *, eden: bool) -> str | None:
    """The device of a request, from its credential only; None means 401 (without detail).
    A device token names its device; an Eden JWT (Eden paths only) gives `eden.<issuer>`, when
    its role (and issuer, if the stack lists them) is one the stack accepts."""
    settings = request.app[SETTINGS]
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL:
        return None
    credential = credential.strip()
    if credential.startswith(tokens.PREFIX + "."):
        return tokens.verify(settings.token_secret, credential, settings.revoked_devices)
    if eden and settings.eden_jwt_secret:
        claims = eden_jwt.verify(credential, settings.eden_jwt_secret, time.time())
        if (not claims or claims.get("role") not in settings.eden_roles
                or (settings.eden_issuers and claims["iss"] not in settings.eden_issuers)):
            return None
        device = eden_jwt.device_id(claims["iss"])
        return None if device in settings.revoked_devices or claims["iss"] in settings.revoked_devices else device
    return None


async def ingest(request: web.Request, *, eden: bool) -> web.Response:
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    device = authenticate(request, eden=eden)
    if device is None:
        return error(401, "unauthorized")
    content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        return error(415, f"Content-Type {content_type!r}: send application/json")
    try:
        doc = decode_json(await read_body(request, settings.max_body_bytes))
        parse = parse_eden if eden else parse_batch
        window = accepted_window(int(time.time() * 1000), settings.max_past_s, settings.max_future_s, settings.retention_months)
        rows = parse(doc, device, window=window, limit=settings.max_batch_readings)
    except BadInput as e:
        metrics.rejected.labels(reason=str(e.status)).inc()
        return error(e.status, e.message, e.index)
    try:
        written = await request.app[WRITER].submit(rows)
    except QueueFull:
        metrics.rejected.labels(reason="429").inc(len(rows))
        return error(429, "too many readings are waiting for the database; nothing was stored; retry later",
                     retry_after=settings.retry_after_s)
    except Unavailable:
        metrics.rejected.labels(reason="503").inc(len(rows))
        return error(503, "the database did not confirm the batch: it may not have been stored; retrying is safe "
                          "(a reading stored once is never stored twice)", retry_after=settings.retry_after_s)
    except RequestRefused as e:
        metrics.rejected.labels(reason="refused").inc(len(rows))
        reason = f"{e.code} {e.message}" if e.code else e.message
        return error(422, f"the database refused this batch ({reason}); nothing of it was stored; "
                          "sending it again cannot succeed")
    metrics.accepted.inc(written.stored)
    if written.failures:
        metrics.rejected.labels(reason="row").inc(len(written.failures))
        body = {"error": f"{len(written.failures)} of {len(rows)} readings were refused by the database; "
                         "the others are stored",
                "stored": written.stored, "index": written.failures[0].index,
                "failed": [{"index": f.index, "code": f.code, "message": f.message} for f in written.failures]}
        return web.Response(status=422, body=orjson.dumps(body), content_type="application/json")
    return web.Response(body=orjson.dumps({"stored": written.stored, "device": device}), content_type="application/json")


async def readings(request: web.Request) -> web.Response:
    return await ingest(request, eden=False)


async def eden_data(request: web.Request) -> web.Response:
    return await ingest(request, eden=True)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when CrateDB answers with our credentials and the latest bulk insert did not fail."""
    writer = request.app[WRITER]
    reachable = await asyncio.to_thread(writer.runner.ping)
    if reachable and not writer.last_write_failed:
        return web.json_response({"status": "ready"})
    reason = "CrateDB is not reachable" if not reachable else "the last bulk insert failed"
    return web.json_response({"status": "not ready", "reason": reason}, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})




@web.middleware
async def never_a_stack_trace(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BadInput as e:
        return error(e.status, e.message, e.index)
    except Exception:  # noqa: BLE001 - the one place that turns surprises into a plain 500
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error(500, "internal error")


SPEC_MARGIN_MS = 3_600_000  # the served window's oldest end, moved this much ahead: valid for an hour


def live_spec(spec: dict, settings: Settings) -> dict:
    """The OpenAPI document with what the service accepts now: the timestamp window and the
    readings per request, so that generated clients and fuzzers agree with the service."""
    window = accepted_window(int(time.time() * 1000), settings.max_past_s, settings.max_future_s, settings.retention_months)
    margin = min(SPEC_MARGIN_MS, (window.high - window.low) // 4)
    schemas = spec["components"]["schemas"]
    schemas["EpochMs"] = {**schemas["EpochMs"], "minimum": window.low + margin, "maximum": window.high}
    readings = spec["paths"]["/v1/readings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    readings["properties"]["readings"]["maxItems"] = settings.max_batch_readings
    for path in ("/data", "/temperature"):
        for operation in spec["paths"][path].values():
            operation["requestBody"]["content"]["application/json"]["schema"]["items"]["properties"]["data"]["maxItems"] = \
                settings.max_batch_readings
    return spec


def create_app(settings: Settings, runner: CrateRunner | None = None) -> web.Application:
    app = web.Application(middlewares=[never_a_stack_trace], client_max_size=settings.max_body_bytes + 1)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()

    async def lifespan(app: web.Application):
        discover = None if settings.crate_urls else functools.partial(
            discover_servers, settings.crate_dns, settings.crate_port, settings.node_name,
            settings.crate_user, settings.crate_password)
        writer_runner = runner or await asyncio.to_thread(
            CrateRunner, settings.crate_urls, username=settings.crate_user, password=settings.crate_password,
            timeout=settings.write_timeout_s, connections=settings.max_inflight, discover=discover)
        log.info("CrateDB endpoints, preferred first: %s", ", ".join(writer_runner.servers) or "none found yet")
        app[WRITER] = writer = BatchWriter(
            writer_runner, table=settings.table, flush_rows=settings.flush_rows, linger_ms=settings.linger_ms,
            max_inflight=settings.max_inflight, queue_rows=settings.queue_rows,
            write_timeout_s=settings.write_timeout_s, metrics=metrics)
        writer.start()
        yield
        await writer.close()  # requests accepted before SIGTERM are flushed and answered

    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/v1/readings", readings)
    for path in ("/data", "/temperature"):
        app.router.add_post(path, eden_data)
        app.router.add_put(path, eden_data)
    from ingest import influx  # its handlers use this module's keys and body reader
    influx.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    spec = orjson.loads(OPENAPI.read_bytes())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(live_spec(spec, settings)), content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
    return app

