"""Every dashboard panel's and alert rule's SQL, with Grafana's macros expanded as its PostgreSQL
datasource expands them (tests/unit/test_grafana.py), run on a real CrateDB against a readings
table made from components/sql/readings.sql. Needs MDS_CRATEDB_URL: the contract double does not
execute arbitrary SQL, so there is nothing to run it against in CI."""

from __future__ import annotations

import secrets
import time

import pytest

from ingest.rows import insert_statement
from tests.contract.test_cratedb_contract import REAL, Crate, readings_ddl
from tests.unit.test_grafana import every_query, expand_macros

pytestmark = pytest.mark.skipif(not REAL, reason="needs a real CrateDB (MDS_CRATEDB_URL): the double runs no arbitrary SQL")


@pytest.fixture(scope="module")
def table():
    crate = Crate(REAL)
    name = f"mds_grafana_{secrets.token_hex(4)}.readings"
    crate.ok(readings_ddl(name))
    now = int(time.time() * 1000)
    rows = [[now - 1000 * i, f"pi-{i % 3}", "temperature", {"num": 20.0 + i}, "celsius", {"line": i}] for i in range(60)]
    crate.ok(insert_statement(name), bulk_args=rows)
    crate.ok(f"REFRESH TABLE {name}")
    yield crate, name
    crate.ok(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.parametrize("where, sql", every_query(), ids=[w for w, _ in every_query()])
def test_every_query_runs_on_cratedb(table, where, sql):
    crate, name = table
    expanded = expand_macros(sql).replace("doc.readings", name)
    status, body = crate.sql(expanded)
    assert status == 200, (where, expanded, body)
    assert "cols" in body
