"""Pieces of the ingest service on their own: settings, tokens, the INSERT against the table, the
two ways a JSON batch is checked."""

import math
import re
import time

import orjson
import pytest
from cratedb_sqlparse import sqlparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import payload, tokens
from ingest.payload import BadInput, accepted_window
from ingest.settings import Settings, SettingsError
from ingest.rows import INSERT_COLUMNS, insert_statement

SQL_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "components" / "sql"


def test_insert_parses_and_names_only_columns_of_the_readings_table():
    stmt = insert_statement("doc.readings")
    assert len(sqlparse(stmt, raise_exception=True)) == 1
    ddl = (SQL_DIR / "readings.sql").read_text()
    table_columns = set(re.findall(r"^\s{4}(\w+) ", ddl, re.M))
    assert set(INSERT_COLUMNS) <= table_columns, set(INSERT_COLUMNS) - table_columns
    assert stmt.endswith("ON CONFLICT DO NOTHING")  # a retried batch is a no-op
    # The primary key is made of inserted columns (month is generated from ts): retries collide.
    key = re.search(r"PRIMARY KEY \(([^)]+)\)", ddl).group(1).replace(" ", "").split(",")
    assert set(key) - {"month"} <= set(INSERT_COLUMNS)


def test_tokens_round_trip_and_reject_tampering():
    secret = b"s" * 32
    t = tokens.issue(secret, "pi-1")
    assert tokens.verify(secret, t) == "pi-1"
    assert tokens.verify(secret, t.replace("pi-1", "pi-2")) is None
    assert tokens.verify(secret, t, frozenset({"pi-1"})) is None
    assert tokens.verify(b"x" * 32, t) is None
    with pytest.raises(ValueError, match="device id"):
        tokens.issue(secret, "bad id")


@pytest.mark.parametrize("env, message", [
    ({}, "INGEST_TOKEN_SECRET_FILE"),
    ({"INGEST_TOKEN_SECRET": "s" * 32}, "INGEST_CRATE_URLS or INGEST_CRATE_DNS"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_URLS": "cratedb:4200"}, "INGEST_CRATE_URLS: 'cratedb:4200' is not an http"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "tasks.cratedb", "INGEST_FLUSH_ROWS": "many"}, "INGEST_FLUSH_ROWS: 'many' is not a int"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "tasks.cratedb", "INGEST_LINGER_MS": "-1"}, "INGEST_LINGER_MS: '-1' must be positive"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "tasks.cratedb", "INGEST_TLS_CERT": "/c"}, "set both or neither"),
    ({"INGEST_TOKEN_SECRET_FILE": "/nonexistent/secret"}, "INGEST_TOKEN_SECRET_FILE: cannot read /nonexistent/secret"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "c", "INGEST_EDEN_ROLES": "sensor"},
     "INGEST_EDEN_ROLES: 'sensor' is not a JSON list of non-empty texts"),
    ({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "c", "INGEST_RETENTION_MONTHS": "-1"},
     "INGEST_RETENTION_MONTHS: '-1' is not a whole number of months (0: keep all)"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_settings_from_env():
    s = Settings.from_env({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "tasks.cratedb",
                           "INGEST_REVOKED_DEVICES": "a, b", "NODE_NAME": "node2", "INGEST_LINGER_MS": "2.5"})
    assert (s.crate_dns, s.node_name, s.revoked_devices, s.linger_ms) == ("tasks.cratedb", "node2", frozenset({"a", "b"}), 2.5)
    assert (s.bind, s.eden_roles, s.eden_issuers, s.retention_months) == (None, frozenset({"sensor"}), frozenset(), 0)
    s = Settings.from_env({"INGEST_TOKEN_SECRET": "s" * 32, "INGEST_CRATE_DNS": "c", "INGEST_BIND": "127.0.0.1",
                           "INGEST_EDEN_ISSUERS": '["Raspberry 1"]', "INGEST_RETENTION_MONTHS": "2"})
    assert (s.bind, s.eden_issuers, s.retention_months) == ("127.0.0.1", frozenset({"Raspberry 1"}), 2)


@pytest.mark.parametrize("now, months, past_days, oldest", [
    ("2026-12-01T19:00:00", 1, 30, "2026-11-01T19:00:00"),  # 30 days back stay inside November: kept
    ("2026-03-01T12:00:00", 1, 30, "2026-02-01T00:00:00"),  # 30 days back reach January, which retention drops
    ("2026-01-15T00:00:00", 1, 90, "2025-12-01T00:00:00"),  # across a year
    ("2026-01-15T00:00:00", 0, 90, "2025-10-17T00:00:00"),  # no retention: the past setting alone
])
def test_the_accepted_past_ends_where_retention_drops(now, months, past_days, oldest):
    """retention.sh drops the months before date_trunc('month', now) - N months."""
    from datetime import datetime, timezone

    from ingest.payload import accepted_window

    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)

    window = accepted_window(ms(now), past_days * 86400, 300, months)
    assert (window.low, window.high) == (ms(oldest), ms(now) + 300_000)
    assert ("retention" in window.text) == (ms(oldest) != ms(now) - past_days * 86_400_000)


@pytest.fixture
def silent_address():
    """An address that swallows connection attempts, as the old address of a replaced CrateDB task
    does on an overlay network: a listening socket whose accept queue is full, so the kernel drops
    further SYNs and a connect() waits."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue (never accepted)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    for s in fillers + [listener]:
        s.close()


def test_a_node_that_swallows_connections_costs_seconds_not_the_whole_timeout(silent_address):
    import time

    from ingest.cratedb_runner import CrateRunner
    from ingest.rows import insert_statement
    from tests.blocking_runner import BlockingRunner
    from tests.cratedb_double import CrateDouble

    discovered = []
    with CrateDouble() as crate:
        crate.state.tables.add("doc.readings")
        crate.state.users["ingest"] = "pw"
        runner = BlockingRunner([silent_address, crate.url], username="ingest", password="pw", timeout=30,
                             discover=lambda: discovered.append(1) or [crate.url])
        started = time.monotonic()
        assert runner.bulk_insert(insert_statement("doc.readings"), [[1, "a", "s", {"num": 1.0}, None, {}]]) == [{"rowcount": 1}]
        took = time.monotonic() - started
    assert took < CrateRunner.CONNECT_TIMEOUT_S * 2 + 1, took  # not the 30 s timeout
    # The local node did not answer: the node list was looked up again (its task may have moved).
    assert discovered and runner.servers == [crate.url]


def test_a_node_that_answers_503_is_passed_over_for_the_next():
    """A node that cannot serve now (503: no master, shutting down) is not the end of the write."""
    from tests.blocking_runner import BlockingRunner
    from tests.cratedb_double import CrateDouble

    with CrateDouble() as busy, CrateDouble() as other:
        for crate in (busy, other):
            crate.state.tables.add("doc.readings")
            crate.state.users["ingest"] = "pw"
        busy.state.master = False
        runner = BlockingRunner([busy.url, other.url], username="ingest", password="pw", timeout=30)
        assert runner.bulk_insert(insert_statement("doc.readings"), [[1, "a", "s", {"num": 1.0}, None, {}]]) == [{"rowcount": 1}]
        assert (len(busy.state.readings), len(other.state.readings)) == (0, 1)


def test_a_connection_the_node_closed_without_answering_is_tried_once_more_on_a_new_one():
    """CrateDB may close a kept-alive connection as the next insert goes out on it; that insert
    is sent again (inserts skip keys that exist, so nothing is stored twice), not failed."""
    import asyncio

    from ingest.cratedb_runner import CrateRunner

    async def go():
        requests = []

        async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head).group(1)))
            requests.append(head)
            if len(requests) > 1:
                body = b'{"cols": [], "results": [{"rowcount": 1}], "duration": 1.0}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
            writer.close()  # the first one: closed without an answer

        server = await asyncio.start_server(node, "127.0.0.1", 0)
        runner = CrateRunner([f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"], username="ingest",
                             password="pw", timeout=5)
        try:
            results = await runner.bulk_insert(insert_statement("doc.readings"), [[1, "a", "s", {"num": 1.0}, None, {}]])
        finally:
            await runner.close()
            server.close()
            await server.wait_closed()
        assert results == [{"rowcount": 1}] and len(requests) == 2

    asyncio.run(go())


def test_ready_while_any_node_answers_and_after_every_task_moved(silent_address):
    """In a rolling update every CrateDB task gets a new address: asking only the first two known
    nodes made a host unready (503) while writes went on through the third (seen on the lab stack)."""
    from tests.blocking_runner import BlockingRunner
    from tests.cratedb_double import CrateDouble

    with CrateDouble() as crate:
        crate.state.users["ingest"] = "pw"
        third = BlockingRunner([silent_address, silent_address + "/", crate.url], username="ingest", password="pw", timeout=30)
        assert third.ping()
        moved = BlockingRunner([silent_address], username="ingest", password="pw", timeout=30, discover=lambda: [crate.url])
        moved.runner.discovered_at = 1e18  # looked up a moment ago: only a failed ping looks again at once
        assert moved.ping() and moved.servers == [crate.url]


# -- the column-wise check of a JSON batch takes only what the loop takes, and gives its rows ------

_NOW = int(time.time() * 1000)
_names = ["s1", "kN", "a b", " ", "", "\u00e9", "\u200b", "x" * 33, "x" * 129, 3, None, ["s1"]]
_good = st.fixed_dictionaries({"ts": st.integers(_NOW - 5_000, _NOW + 5_000), "sensor": st.sampled_from(["s1", "s2"]),
                               "value": st.floats(-1e6, 1e6)}, optional={"unit": st.sampled_from(["kN", None])})
_other_values = {  # (each list is drawn from, so every kind of value comes up)
    "ts": [0, 2**63, _NOW - 10**9, float(_NOW), float(_NOW) + 0.5, True, "2026-12-06T01:00:00Z", None],
    "sensor": _names, "unit": _names, "other": [1],
    "value": [math.inf, -math.inf, math.nan, 20, 0, 2**64, -2**63, 1e308, -0.0, True, False, "x", None, [1.5]],
}


@st.composite
def _batches(draw) -> list:
    """Good readings, and in some batches one reading changed: a field another value (valid or
    not), a field gone, or no object at all."""
    readings = draw(st.lists(_good, min_size=1, max_size=6))
    i = draw(st.integers(0, len(readings) - 1))
    change = draw(st.sampled_from(["none", "field", "field", "field", "drop", "not an object"]))
    if change == "field":
        key = draw(st.sampled_from(sorted(_other_values)))
        readings[i] = {**readings[i], key: draw(st.sampled_from(_other_values[key]))}
    elif change == "drop":
        key = draw(st.sampled_from(sorted(readings[i])))
        readings[i] = {k: v for k, v in readings[i].items() if k != key}
    elif change == "not an object":
        readings[i] = draw(st.one_of(st.integers(), st.just([]), st.none()))
    return readings


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(readings=_batches(), meta=st.sampled_from([None, {"line": "a"}]))
def test_the_column_wise_check_takes_only_what_the_loop_takes_and_gives_the_same_rows(readings, meta):
    window = accepted_window(_NOW, 86400, 300)
    fast = payload._plain_rows(readings, "dev", meta, window)
    try:
        rows = payload._checked_rows(readings, "dev", meta, window)
    except BadInput:
        assert fast is None, f"the column-wise check took what the loop refuses: {readings!r}"
        return
    if fast is not None:  # as the database gets them: 20 and 20.0 are equal in Python, not in JSON
        assert orjson.dumps([list(row) for row in fast]) == orjson.dumps(rows)


def test_the_benchmark_s_batches_are_checked_column_wise():
    from tools.bench.ingest import bodies
    window = accepted_window(int(time.time() * 1000), 86400, 300)
    readings = orjson.loads(bodies(1000, count=1)[0])["readings"]
    assert payload._plain_rows(readings, "d", None, window) is not None
    whole = [{**r, "value": int(r["value"])} for r in readings]  # JSON clients often send 20 for 20.0
    assert [row[3] for row in payload._plain_rows(whole, "d", None, window)][:2] == [{"num": 20.0}, {"num": 21.0}]
