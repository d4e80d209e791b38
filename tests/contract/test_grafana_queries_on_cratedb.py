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
    """The readings table and the roll-ups, in a schema of this run's own."""
    from components.cratedb import rollup_tables_sql
    from stack.model import CrateDbSettings
    crate, schema = Crate(REAL), f"mds_grafana_{secrets.token_hex(4)}"
    name = f"{schema}.readings"
    crate.ok(readings_ddl(name))
    rollups = rollup_tables_sql(CrateDbSettings(replicas=0))
    for _, create in rollups:
        crate.ok(create.replace("doc.", f"{schema}."))
    now = int(time.time() * 1000)
    rows = [[now - 1000 * i, f"pi-{i % 3}", "temperature", {"num": 20.0 + i}, "celsius", {"line": i}] for i in range(60)]
    crate.ok(insert_statement(name), bulk_args=rows)
    crate.ok(f"REFRESH TABLE {name}")
    yield crate, schema
    for table_name in [name] + [t.replace("doc.", f"{schema}.") for t, _ in rollups]:
        crate.ok(f"DROP TABLE IF EXISTS {table_name}")


@pytest.mark.parametrize("where, sql", every_query(), ids=[w for w, _ in every_query()])
def test_every_query_runs_on_cratedb(table, where, sql):
    crate, schema = table
    expanded = expand_macros(sql).replace("doc.", f"{schema}.")
    status, body = crate.sql(expanded)
    assert status == 200, (where, expanded, body)
    assert "cols" in body
