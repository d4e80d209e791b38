"""The HTTP service: the app factory, the JSON and Eden routes and their answers.

Every answer to a bad request is a 4xx JSON body `{"error": ..., "index"?: n}` that says what was
wrong and where; a batch is answered 200 only after CrateDB committed all of its readings. The
request flow the protocols share (body, parsing, storing, refusals) is in flow.py.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ingest import eden_jwt, http_guard, influx, tokens
from ingest.batch_writer import BatchWriter
from ingest.cratedb_runner import CrateRunner, discover_servers
from ingest.flow import GUARD, MAX_CREDENTIAL, METRICS, SETTINGS, WRITER, Guard, Metrics, Refusal, accept, close_if_asked
from ingest.payload import BadInput, accepted_window, decode_json, parse_batch, parse_eden
from ingest.settings import Settings

log = logging.getLogger("ingest")
OPENAPI = Path(__file__).with_name("openapi.json")
# Bodies are decompressed by the flow, under the size limit, not by aiohttp: an unknown encoding
# gets a clear 415 and a gzip bomb stops at the limit.
SERVER_OPTIONS = {"auto_decompress": False}


def error(status: int, message: str, index: int | None = None, retry_after: int | None = None) -> web.Response:
    body = {"error": message} | ({"index": index} if index is not None else {})
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def authenticate(request: web.Request, *, eden: bool) -> str | None:
    """The device of a request, from its credential only; None means 401 (without detail).
    A device token names its device; an Eden JWT (Eden paths only) gives `eden.<issuer>`, when
    its role (and issuer, if the stack lists them) is one the stack accepts."""
    settings = request.app[SETTINGS]
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL:
        return None
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
    window = accepted_window(int(time.time() * 1000), settings.max_past_s, settings.max_future_s, settings.retention_months)
    parse = parse_eden if eden else parse_batch

    def rows(body: bytes) -> list:
        return parse(decode_json(body), device, window=window, limit=settings.max_batch_readings)

    try:
        sent, written = await accept(request, device, rows, lambda parsed: parsed)
    except BadInput as e:
        metrics.rejected.labels(reason=str(e.status)).inc()
        return error(e.status, e.message, e.index)
    except Refusal as e:
        return error(e.status, e.message, retry_after=e.retry_after)
    if written.failures:
        body = {"error": f"{len(written.failures)} of {len(sent)} readings were refused by the database; "
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
    """Ready when CrateDB answers with our credentials and the latest bulk insert did not fail
    (in the last half minute: see BatchWriter.recently_failed)."""
    writer = request.app[WRITER]
    reachable = await writer.runner.ping()
    if reachable and not writer.recently_failed:
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
    """Wires settings, metrics, the writer and the routes; the handlers never import this."""
    http_guard.install(settings.header_timeout_s, settings.max_connections)
    app = web.Application(middlewares=[never_a_stack_trace], client_max_size=settings.max_body_bytes + 1)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()
    app.on_response_prepare.append(close_if_asked)

    async def lifespan(app: web.Application):
        discover = None if settings.crate_urls else functools.partial(
            discover_servers, settings.crate_dns, settings.crate_port, settings.node_name,
            settings.crate_user, settings.crate_password)
        writer_runner = runner or CrateRunner(
            settings.crate_urls, username=settings.crate_user, password=settings.crate_password,
            timeout=settings.write_timeout_s, connections=settings.max_inflight, discover=discover)
        if not writer_runner.servers:
            await writer_runner.rediscover()
        log.info("CrateDB endpoints, preferred first: %s", ", ".join(writer_runner.servers) or "none found yet")
        app[WRITER] = writer = BatchWriter(
            writer_runner, table=settings.table, flush_rows=settings.flush_rows, linger_ms=settings.linger_ms,
            max_inflight=settings.max_inflight, queue_rows=settings.queue_rows,
            write_timeout_s=settings.write_timeout_s, metrics=metrics)
        app[GUARD] = Guard(settings)
        writer.start()
        yield
        await writer.close()  # requests accepted before SIGTERM are flushed and answered
        await writer_runner.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/v1/readings", readings)
    for path in ("/data", "/temperature"):
        app.router.add_post(path, eden_data)
        app.router.add_put(path, eden_data)
    influx.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    spec = orjson.loads(OPENAPI.read_bytes())

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(live_spec(spec, settings)), content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
    return app

