"""InfluxDB-compatible endpoints, so Telegraf and the InfluxDB client libraries write unchanged.

- v2: `POST /api/v2/write?org=&bucket=&precision=ns|us|ms|s`, `Authorization: Token <device token>`;
- v1: `POST /write?db=&precision=n|u|ms|s|m|h`, the device token as password (`p` query parameter
  or Basic auth) or as `Authorization: Token`; `GET`/`HEAD /ping`; `POST /query` answers the
  `CREATE DATABASE` that Telegraf's v1 output sends at start, and nothing else.

`org`, `bucket` and `db` are accepted and ignored: where a reading goes is the stack's one table, and
who sent it is the credential. 204 only after CrateDB stored every reading; errors as InfluxDB
answers them (v2: `{"code", "message"}`; v1: `{"error"}`), with `Retry-After` on 429 and 503 so the
clients' own retries do the right thing. Bad lines are 400 with the line number and what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import time

import orjson
from aiohttp import web

from ingest import line_protocol, tokens
from ingest.flow import MAX_CREDENTIAL, METRICS, SETTINGS, Refusal, accept
from ingest.payload import BadInput, accepted_window

VERSION = "2.7.0-mds"  # what /ping reports: the API level these endpoints follow
V2_CODES = {400: "invalid", 401: "unauthorized", 408: "request timeout", 413: "request too large",
            415: "unsupported media type", 422: "unprocessable entity", 429: "too many requests", 503: "unavailable"}


def _answer(v2: bool, status: int, message: str, retry_after: int | None = None) -> web.Response:
    body = {"code": V2_CODES.get(status, "internal error"), "message": message} if v2 else {"error": message}
    headers = {"X-Influxdb-Version": VERSION} | ({"Retry-After": str(retry_after)} if retry_after is not None else {})
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _credential(request: web.Request) -> str | None:
    """The device token wherever an InfluxDB client puts it: `Token`/`Bearer`, Basic's password, `p`."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return request.query.get("p") or None


async def write(request: web.Request, *, v2: bool) -> web.Response:
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    credential = _credential(request)
    device = (tokens.verify(settings.token_secret, credential, settings.revoked_devices)
              if credential and len(credential) <= MAX_CREDENTIAL else None)
    if device is None:
        return _answer(v2, 401, "unauthorized")
    precision = request.query.get("precision", "ns")
    now_ms = int(time.time() * 1000)
    window = accepted_window(now_ms, settings.max_past_s, settings.max_future_s, settings.retention_months)

    def points(body: bytes) -> line_protocol.Points:
        return line_protocol.parse_points(body, device, precision=precision, now_ms=now_ms, window=window,
                                          limit=settings.max_batch_readings)

    try:
        parsed, written = await accept(request, device, points, lambda p: p.rows)
    except BadInput as e:
        metrics.rejected.labels(reason=str(e.status)).inc()
        return _answer(v2, 400 if e.status == 422 else e.status, e.message)
    except Refusal as e:
        return _answer(v2, 400 if e.status == 422 else e.status, e.message, e.retry_after)
    refused, refused_count = list(parsed.rejected), parsed.rejected_count
    if refused_count:
        metrics.rejected.labels(reason="400").inc(refused_count)
    if not parsed.rows:
        return _answer(v2, 400, f"nothing was written: {_lines(refused, refused_count)}")
    if written.failures:
        first = written.failures[0]
        lines = sorted({parsed.line_of(f.index) for f in written.failures})
        refused.append(f"{len(written.failures)} readings refused by the database (line {lines[0]}"
                       f"{f' and {len(lines) - 1} more lines' if len(lines) > 1 else ''}: {first.message})")
        refused_count += 1
    if refused:
        # InfluxDB's partial write: the good points are stored, the answer names what was left out.
        return _answer(v2, 400, f"partial write: {written.stored} readings stored; left out: {_lines(refused, refused_count)}")
    return web.Response(status=204, headers={"X-Influxdb-Version": VERSION})


def _lines(refused: list[str], count: int) -> str:
    """The refused lines named (the first few), and how many more there were."""
    more = f"; and {count - len(refused)} more" if count > len(refused) else ""
    return "; ".join(refused) + more


async def write_v2(request: web.Request) -> web.Response:
    return await write(request, v2=True)


async def write_v1(request: web.Request) -> web.Response:
    return await write(request, v2=False)


async def ping(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Influxdb-Version": VERSION, "X-Influxdb-Build": "OSS"})


async def query(request: web.Request) -> web.Response:
    """Only `CREATE DATABASE …` (Telegraf's v1 output, at start): there is nothing to create."""
    q = request.query.get("q") or (await request.post()).get("q", "")
    if isinstance(q, str) and q.strip().upper().startswith("CREATE DATABASE"):
        return web.json_response({"results": [{"statement_id": 0}]}, headers={"X-Influxdb-Version": VERSION})
    return _answer(False, 400, "this endpoint answers CREATE DATABASE only; query the data in Grafana or CrateDB")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v2/write", write_v2)
    app.router.add_post("/write", write_v1)
    app.router.add_get("/ping", ping)  # HEAD is added with GET
    app.router.add_post("/query", query)
