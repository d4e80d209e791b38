"""The contract with CrateDB: every statement the ingest sends and every answer it relies on.

Against the CrateDB contract double (tests/cratedb_double.py, not CrateDB) by default, and against
a real CrateDB when MDS_CRATEDB_URL is set (e.g. http://127.0.0.1:4200 of a fresh node: the tests
reach its superuser `crate` from loopback without a password, make users and tables under names of
their own and drop them afterwards). A test that real CrateDB cannot pass is a wrong test; one the
double cannot pass is a wrong double.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from ingest.cratedb_runner import RequestRefused
from ingest.rows import insert_statement
from tests.blocking_runner import BlockingRunner
from tests.cratedb_double import CrateDouble, CrateState

REAL = os.environ.get("MDS_CRATEDB_URL", "").rstrip("/")
READINGS_SQL = Path(__file__).resolve().parents[2] / "components" / "sql" / "readings.sql"


def readings_ddl(table: str, meta: str = "IGNORED") -> str:
    """components/sql/readings.sql for another table name (comment lines dropped, as the stack does)."""
    lines = [line for line in READINGS_SQL.read_text().splitlines() if not line.lstrip().startswith("--")]
    ddl = "\n".join(lines).replace("doc.readings", table).replace("{replicas}", "'0'")
    return ddl.replace("meta OBJECT(IGNORED)", f"meta OBJECT({meta})")


class Crate:
    """Raw `POST /_sql` as a given user (None: the superuser over loopback, no credentials)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def sql(self, stmt: str, args=None, bulk_args=None, user: tuple[str, str] | None = None) -> tuple[int, dict]:
        body = {"stmt": stmt} | ({"args": args} if args is not None else {}) | (
            {"bulk_args": bulk_args} if bulk_args is not None else {})
        headers = {"Content-Type": "application/json"}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        request = urllib.request.Request(self.url + "/_sql", data=orjson.dumps(body), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return e.code, {"text": raw.decode(errors="replace")}

    def ok(self, stmt: str, **kw) -> dict:
        status, body = self.sql(stmt, **kw)
        assert status == 200, (stmt[:120], status, body)
        return body


@pytest.fixture(scope="module")
def crate():
    if REAL:
        yield Crate(REAL)
        return
    with CrateDouble(CrateState(enforce_privileges=True)) as double:
        yield Crate(double.url)


@pytest.fixture(scope="module")
def names(crate):
    """A schema, tables and users of this run's own; dropped afterwards."""
    tag = secrets.token_hex(4)
    made = {"schema": f"mds_contract_{tag}", "writer": f"mds_writer_{tag}", "reader": f"mds_reader_{tag}",
            "password": secrets.token_urlsafe(18)}
    made["table"] = f"{made['schema']}.readings"
    made["dynamic"] = f"{made['schema']}.readings_dynamic"
    crate.ok(readings_ddl(made["table"]))
    crate.ok(readings_ddl(made["dynamic"], "DYNAMIC"))
    for user in (made["writer"], made["reader"]):
        crate.ok(f"CREATE USER {user} WITH (password = '{made['password']}')")
    crate.ok(f"GRANT DML, DQL ON TABLE {made['table']} TO {made['writer']}")
    crate.ok(f"GRANT DML, DQL ON TABLE {made['dynamic']} TO {made['writer']}")
    crate.ok(f"GRANT DML ON TABLE {made['table']} TO {made['reader']}")  # DML alone: cannot read
    yield made
    for user in (made["writer"], made["reader"]):
        crate.ok(f"DROP USER IF EXISTS {user}")
    crate.ok(f"DROP TABLE IF EXISTS {made['table']}")
    crate.ok(f"DROP TABLE IF EXISTS {made['dynamic']}")


def runner(crate: Crate, names: dict, user: str = "writer") -> BlockingRunner:
    return BlockingRunner([crate.url], username=names[user], password=names["password"], timeout=30)


def rows(agent: str, n: int, meta=None, start: int | None = None) -> list[list]:
    start = start or int(time.time() * 1000) - 60_000
    return [[start + i, agent, "temperature", {"num": 20.0 + i}, "celsius", meta] for i in range(n)]


def test_bulk_insert_answers_one_result_per_row_in_order_and_a_retry_inserts_nothing(crate, names):
    writer = runner(crate, names)
    batch = rows(f"a-{secrets.token_hex(3)}", 5)
    assert writer.bulk_insert(insert_statement(names["table"]), batch) == [{"rowcount": 1}] * 5
    assert writer.bulk_insert(insert_statement(names["table"]), batch) == [{"rowcount": 0}] * 5  # ON CONFLICT DO NOTHING


def test_a_primary_key_read_finds_what_was_written_and_only_that(crate, names):
    """The ingest confirms rowcount-0 rows this way (a lookup, then a REFRESH and a second lookup
    of what it missed: a lookup right after the insert does not always see it on 6.4.3)."""
    writer = runner(crate, names)
    agent = f"k-{secrets.token_hex(3)}"
    batch = rows(agent, 3)
    writer.bulk_insert(insert_statement(names["table"]), batch)
    keys = [(agent, "temperature", r[0]) for r in batch]
    missing = (agent, "temperature", batch[0][0] - 1)
    assert writer.existing_keys(names["table"], keys + [missing]) == set(keys)
    if REAL:  # the double does not plan queries
        status, body = crate.sql(f"EXPLAIN SELECT agent, sensor, ts FROM {names['table']} WHERE (agent = ? AND sensor = ? AND ts = ?)",
                                 args=list(keys[0]))
        assert status == 200 and body["rows"][0][0].startswith("Get[")  # a primary-key lookup, not a search


def test_a_value_against_a_dynamic_object_s_mapping_fails_the_whole_request_and_stores_nothing(crate, names):
    writer = runner(crate, names)
    agent = f"d-{secrets.token_hex(3)}"
    assert writer.bulk_insert(insert_statement(names["dynamic"]), rows(agent, 1, {"line": 1})) == [{"rowcount": 1}]
    bad = rows(agent, 3, {"line": 2}, start=int(time.time() * 1000) - 30_000)
    bad[1][5] = {"line": {"no": 7}}  # was a number
    with pytest.raises(RequestRefused) as refused:
        writer.bulk_insert(insert_statement(names["dynamic"]), bad)
    assert refused.value.code == 4000 and "Cannot cast object element `line`" in refused.value.message
    assert writer.existing_keys(names["dynamic"], [(agent, "temperature", r[0]) for r in bad]) == set()


def test_two_types_for_a_new_sub_column_in_one_request_fail_the_later_row_alone(crate, names):
    writer = runner(crate, names)
    agent = f"n-{secrets.token_hex(3)}"
    column = f"c{secrets.token_hex(3)}"
    batch = rows(agent, 3, {column: 1})
    batch[1][5] = {column: {"nested": True}}
    results = writer.bulk_insert(insert_statement(names["dynamic"]), batch)
    assert [r["rowcount"] for r in results] == [1, -2, 1]
    # 6.4.3 words it "Cannot cast object element ... to type `bigint`" or "Column ... already exists
    # with type `bigint`. Cannot add same column with type `object`", depending on the table's mapping
    assert results[1]["error"]["code"] == 4000 and "`bigint`" in results[1]["error"]["message"]


def test_an_ignored_object_takes_any_shape(crate, names):
    """readings.sql's meta is OBJECT(IGNORED): what one device calls a number another may nest."""
    writer = runner(crate, names)
    agent = f"i-{secrets.token_hex(3)}"
    assert writer.bulk_insert(insert_statement(names["table"]), rows(agent, 1, {"line": 1})) == [{"rowcount": 1}]
    later = rows(agent, 2, {"line": {"no": 7}}, start=int(time.time() * 1000) - 30_000)
    assert writer.bulk_insert(insert_statement(names["table"]), later) == [{"rowcount": 1}] * 2


def test_a_missing_table_is_404_4041(crate, names):
    status, body = crate.sql(insert_statement(f"{names['schema']}.nothing_here"), bulk_args=rows("x", 1))
    assert status == 404 and body["error"]["code"] == 4041


def test_a_wrong_password_is_401(crate, names):
    status, _ = crate.sql("SELECT 1", user=(names["writer"], "not-the-password"))
    assert status == 401


def test_a_missing_privilege_is_401_4011_and_dml_alone_cannot_read(crate, names):
    reader = (names["reader"], names["password"])
    agent = f"p-{secrets.token_hex(3)}"
    status, body = crate.sql(insert_statement(names["table"]), bulk_args=rows(agent, 1), user=reader)
    assert status == 200 and body["results"] == [{"rowcount": 1}]
    status, body = crate.sql(f"SELECT agent, sensor, ts FROM {names['table']} WHERE (agent = ? AND sensor = ? AND ts = ?)",
                             args=[agent, "temperature", 0], user=reader)
    assert status == 401 and body["error"]["code"] == 4011
    status, body = crate.sql(f"DROP TABLE IF EXISTS {names['table']}", user=reader)
    assert status == 401 and body["error"]["code"] == 4011


def test_get_root_names_the_node_and_says_ok(crate, names):
    request = urllib.request.Request(crate.url + "/", headers={
        "Authorization": "Basic " + base64.b64encode(f"{names['writer']}:{names['password']}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = orjson.loads(response.read())
    assert response.status == 200 and body["ok"] is True and body["name"] and body["version"]["number"]


def test_create_user_twice_is_409_4099(crate, names):
    status, body = crate.sql(f"CREATE USER {names['writer']} WITH (password = 'x-{names['password']}')")
    assert status == 409 and body["error"]["code"] == 4099
