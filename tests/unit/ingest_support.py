"""Run the ingest app in-process on a real port, writing through the real `crate` client to the
CrateDB contract double (tests/cratedb_double.py, not CrateDB)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp.test_utils import TestServer

from ingest import tokens
from ingest.app import SERVER_OPTIONS, create_app
from ingest.settings import Settings
from tests.cratedb_double import CrateDouble, CrateState

SECRET = b"a-test-token-secret-of-32-chars!!"
EDEN_SECRET = b"eden-shared-secret"


def token(device: str = "pi-1", secret: bytes = SECRET) -> str:
    return tokens.issue(secret, device)


def now_ms() -> int:
    return int(time.time() * 1000)


def batch(n: int = 3, sensor: str = "temperature", start: int | None = None, **extra) -> dict:
    start = start or now_ms() - 1000
    return {"readings": [{"ts": start + i, "sensor": sensor, "value": 20.0 + i, "unit": "celsius"} for i in range(n)], **extra}


@contextlib.asynccontextmanager
async def running(state: CrateState | None = None, **overrides):
    """Yields (base URL, double, app); the double has the readings table and the ingest user."""
    state = state or CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})
    with CrateDouble(state) as double:
        settings = Settings(**{"crate_urls": (double.url,), "crate_password": "ingest-password", "token_secret": SECRET,
                               "eden_jwt_secret": EDEN_SECRET} | overrides)
        app = create_app(settings)
        server = TestServer(app, port=0)
        await server.start_server(**SERVER_OPTIONS)
        try:
            yield str(server.make_url("")).rstrip("/"), double, app
        finally:
            await server.close()


async def post(url: str, path: str, body=None, *, data: bytes | None = None, auth: str | None = None,
               headers: dict | None = None, method: str = "POST"):
    all_headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    all_headers.update(headers or {})
    async with aiohttp.ClientSession() as session:
        kwargs = {"json": body} if data is None else {"data": data}
        async with session.request(method, url + path, headers=all_headers, **kwargs) as response:
            text = await response.text()
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = {"text": text}
            return response.status, payload, response.headers


def run(coro):
    return asyncio.run(coro)
