"""The ingest's answers on the database: the app in-process, writing through the real `crate`
client into a readings table made from components/sql/readings.sql, as a user with the grants the
stack gives the ingest. Against the CrateDB contract double by default (not CrateDB), against a
real CrateDB with MDS_CRATEDB_URL (see test_cratedb_contract.py)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiohttp.test_utils import TestServer

from ingest.app import SERVER_OPTIONS, create_app
from ingest.settings import Settings
from tests.blocking_runner import BlockingRunner
from tests.contract.test_cratedb_contract import REAL, Crate, readings_ddl
from tests.cratedb_double import CrateDouble, CrateState
from tests.unit.ingest_support import SECRET, batch, now_ms, post, token


@pytest.fixture(scope="module")
def database():
    """(Crate, table, dynamic table, user, password): made here, dropped afterwards."""
    tag = secrets.token_hex(4)
    table, dynamic, user, password = f"mds_ingest_{tag}.readings", f"mds_ingest_{tag}.dynamic", f"mds_ingest_{tag}", secrets.token_urlsafe(18)

    def made(crate: Crate):
        crate.ok(readings_ddl(table))
        crate.ok(readings_ddl(dynamic, "DYNAMIC"))
        crate.ok(f"CREATE USER {user} WITH (password = '{password}')")
        for t in (table, dynamic):  # as components/sql/grants.sql grants doc.readings
            crate.ok(f"GRANT DML, DQL ON TABLE {t} TO {user}")
        return crate, table, dynamic, user, password

    def dropped(crate: Crate) -> None:
        crate.ok(f"DROP USER IF EXISTS {user}")
        crate.ok(f"DROP TABLE IF EXISTS {table}")
        crate.ok(f"DROP TABLE IF EXISTS {dynamic}")

    if REAL:
        yield made(Crate(REAL))
        dropped(Crate(REAL))
        return
    with CrateDouble(CrateState(enforce_privileges=True)) as double:
        yield made(Crate(double.url))
        dropped(Crate(double.url))


def stored_keys(database, table: str, rows: list[tuple[str, str, int]]) -> set:
    """Which of these keys the table holds, read as the ingest reads them back (primary keys)."""
    crate, _, _, user, password = database
    return BlockingRunner([crate.url], username=user, password=password, timeout=30).existing_keys(table, rows)


def run_app(database, table: str, coro_factory, **overrides):
    crate, _, _, user, password = database

    async def go():
        settings = Settings(**{"crate_urls": (crate.url,), "crate_user": user, "crate_password": password,
                               "token_secret": SECRET, "table": table, "linger_ms": 200} | overrides)
        server = TestServer(create_app(settings), port=0)
        await server.start_server(**SERVER_OPTIONS)
        try:
            return await coro_factory(str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    return asyncio.run(go())


def test_a_batch_is_acknowledged_once_stored_and_a_retry_is_confirmed_not_duplicated(database):
    crate, table, *_ = database
    device = f"pi-{secrets.token_hex(3)}"
    body = batch(5, start=now_ms() - 10_000)

    async def go(url):
        first = await post(url, "/v1/readings", body, auth=token(device))
        again = await post(url, "/v1/readings", body, auth=token(device))  # rowcount 0: read back, confirmed
        return first, again

    (s1, b1, _), (s2, b2, _) = run_app(database, table, go)
    assert (s1, b1["stored"], s2, b2["stored"]) == (200, 5, 200, 5)
    keys = [(device, r["sensor"], r["ts"]) for r in body["readings"]]
    assert stored_keys(database, table, keys) == set(keys)


def test_a_value_the_database_refuses_fails_only_its_own_request(database):
    crate, _, dynamic, *_ = database
    suffix = secrets.token_hex(3)
    bodies = {f"g{i}-{suffix}": batch(3, start=now_ms() - 20_000 + 10 * i, meta={"line": i}) for i in range(4)}
    bodies[f"bad-{suffix}"] = batch(3, meta={"line": {"no": 1}})

    async def go(url):
        await post(url, "/v1/readings", batch(1, meta={"line": 1}), auth=token(f"warm-{suffix}"))  # maps meta['line'] as bigint
        return await asyncio.gather(*[post(url, "/v1/readings", body, auth=token(device)) for device, body in bodies.items()])

    answers = run_app(database, dynamic, go)
    assert [a[0] for a in answers[:4]] == [200] * 4
    status, body, _ = answers[4]
    assert status == 422 and "nothing of it was stored" in body["error"] and "Cannot cast" in body["error"]
    keys = {device: {(device, r["sensor"], r["ts"]) for r in b["readings"]} for device, b in bodies.items()}
    assert stored_keys(database, dynamic, [k for ks in keys.values() for k in ks]) == set().union(
        *(ks for device, ks in keys.items() if not device.startswith("bad")))
