"""The contract double's two stores of inserted readings answer alike: whole rows (`Readings`, what
the tests read back) and keys only (`StoredKeys`, for `python -m tests.cratedb_double --keys-only`,
the benchmarks' long-running double). The double is a test stand-in, not CrateDB."""

import pytest

from ingest.rows import insert_statement
from tests.cratedb_double import CrateDouble, CrateState, Readings, StoredKeys

INSERT = insert_statement("doc.readings")
LOOKUP = "SELECT agent, sensor, ts FROM doc.readings WHERE (agent = ? AND sensor = ? AND ts = ?) OR (agent = ? AND sensor = ? AND ts = ?)"
COUNT = "SELECT agent, count(*) FROM doc.readings WHERE agent = ANY(?) AND sensor = ? AND ts >= ? GROUP BY agent"
PER_KEY = "SELECT agent, sensor, ts, count(*) FROM doc.readings WHERE agent = ANY(?) GROUP BY agent, sensor, ts"


@pytest.mark.parametrize("store", [Readings, StoredKeys])
def test_a_retry_stores_nothing_and_keys_are_counted_and_found(store):
    double = CrateDouble(CrateState(tables={"doc.readings"}, readings=store()))
    rows = [[1000 + i, agent, "s1", {"num": 1.0}, None, None] for agent in ("a", "b") for i in range(3)]
    first = double.execute(INSERT, rows)["results"]
    again = double.execute(INSERT, rows[:2] + [[2000, "a", "s1", {"num": 2.0}, None, None]])["results"]
    assert [r["rowcount"] for r in first] == [1] * 6
    assert [r["rowcount"] for r in again] == [0, 0, 1]  # ON CONFLICT DO NOTHING: the retry is skipped
    assert len(double.state.readings) == 7
    found = double.execute(LOOKUP, args=["a", "s1", 1000, "a", "s1", 999])["rows"]
    assert found == [["a", "s1", 1000]]
    assert double.execute(COUNT, args=[["a", "b"], "s1", 1001])["rows"] == [["a", 3], ["b", 2]]
    assert len(double.execute(PER_KEY, args=[["b"]])["rows"]) == 3
    double.server.server_close()
