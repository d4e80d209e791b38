"""Property-based fuzzing from the OpenAPI document (schemathesis): whatever the body, the real
server process answers without a 5xx and without hanging."""

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.cratedb_double import CrateDouble, CrateState
from tests.unit.ingest_support import token
from tests.unit.test_ingest_process import start

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_dict(json.loads((ROOT / "ingest" / "openapi.json").read_text()))


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, url = start(tmp_path_factory.mktemp("fuzz"), double.url)
        yield url
        process.terminate()
        process.wait(timeout=15)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx_or_hangs(case, ingest_url):
    response = case.call(base_url=ingest_url, headers={"Authorization": f"Bearer {token('fuzz')}"}, timeout=10)
    assert response.status_code < 500 or case.path == "/readyz", (case.path, response.status_code, response.text[:300])
