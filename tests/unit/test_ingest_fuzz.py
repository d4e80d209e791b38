"""Property-based fuzzing from the OpenAPI document (schemathesis), as the service serves it
(`live_spec`: with the timestamp window of the moment), against the real server process: whatever
the body, no 5xx and no hang; and every body the document allows is stored (2xx), so generated
clients and fuzzers agree with the service. The database is the CrateDB contract double (not
CrateDB)."""

import json
import re
import time
from datetime import datetime, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ingest.app import OPENAPI, live_spec
from ingest.payload import MAX_SENSOR, MAX_UNIT, META_KEY_PATTERN, NAME_PATTERN
from ingest.settings import Settings
from tests.cratedb_double import CrateDouble, CrateState
from tests.unit.ingest_support import token
from tests.unit.test_ingest_process import start

WRITE_PATHS = ("/v1/readings", "/data", "/temperature")


def recent_rfc3339(draw_ms: int) -> str:
    moment = datetime.fromtimestamp(draw_ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{draw_ms % 1000:03d}Z"


# RFC 3339 texts inside the accepted window (the document's `mds-date-time` format).
schemathesis.openapi.format("mds-date-time", st.integers(-29 * 86_400_000, 0).map(
    lambda offset: recent_rfc3339(int(time.time() * 1000) + offset)))


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, url = start(tmp_path_factory.mktemp("fuzz"), double.url)
        yield url
        process.terminate()
        process.wait(timeout=15)


SETTINGS = Settings(crate_urls=("http://unused",), token_secret=b"x" * 32)  # the server's limits are the defaults too
any_input = schemathesis.openapi.from_dict(live_spec(json.loads(OPENAPI.read_text()), SETTINGS))
allowed_input = schemathesis.openapi.from_dict(live_spec(json.loads(OPENAPI.read_text()), SETTINGS)).include(
    path_regex="^/(v1/readings|data|temperature)$")
allowed_input.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
allowed_input.config.phases.update(phases=["fuzzing"])  # the coverage phase picks boundary values without the patterns


def test_the_document_states_the_service_s_own_rules():
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    assert schemas["Name"]["x-pattern"] == schemas["Unit"]["x-pattern"] == NAME_PATTERN
    assert schemas["Meta"]["propertyNames"]["x-pattern"] == META_KEY_PATTERN
    assert (schemas["Name"]["maxLength"], schemas["Unit"]["maxLength"]) == (MAX_SENSOR, MAX_UNIT)
    assert schemas["Unit"]["nullable"] is True


def test_the_served_document_is_the_one_fuzzed(ingest_url):
    import urllib.request
    with urllib.request.urlopen(f"{ingest_url}/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    fuzzed = any_input.raw_schema
    window = [served["components"]["schemas"]["EpochMs"][k] - fuzzed["components"]["schemas"]["EpochMs"][k]
              for k in ("minimum", "maximum")]
    assert all(0 <= shift < 600_000 for shift in window)  # the same window, moved on by the time since import
    for schema in (served, fuzzed):
        schema["components"]["schemas"].pop("EpochMs")
    assert served == fuzzed


@any_input.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx_or_hangs(case, ingest_url):
    response = case.call(base_url=ingest_url, headers={"Authorization": f"Bearer {token('fuzz')}"}, timeout=10)
    assert response.status_code < 500 or case.path == "/readyz", (case.path, response.status_code, response.text[:300])


def repeated_key(case) -> bool:
    """A request that repeats a reading's key (sensor, ts in ms): the one rule JSON Schema cannot state."""
    if case.path == "/v1/readings":
        keys = [(r["sensor"], as_ms(r["ts"])) for r in case.body["readings"]]
    else:
        keys = [(eden_item(item)[0].get(eden_item(item)[1]), message["timestamp"])
                for message in case.body for item in message["data"]]
    return len(keys) != len(set(keys))


def eden_item(item: dict) -> tuple[dict, str]:
    """An Eden data item as the service reads it: the tagged form only when `Simple` is an object
    (the plain form may carry other keys, `Simple` among them), and the key of its name."""
    return (item["Simple"], "name") if isinstance(item.get("Simple"), dict) else (item, "sensor")


def names(case) -> list[str]:
    if case.path == "/v1/readings":
        return [n for r in case.body["readings"] for n in (r["sensor"], r.get("unit")) if n is not None]
    items = [eden_item(item) for message in case.body for item in message["data"]]
    return [n for item, key in items for n in (item.get(key), item.get("unit")) if n is not None]


def meta_keys(case) -> list[str]:
    metas = [case.body.get("meta")] if case.path == "/v1/readings" else [m.get("meta") for m in case.body]
    return [k for meta in metas if meta for k, v in meta.items()
            for k in [k] + (list(v) if isinstance(v, dict) else [])]


def as_ms(ts) -> int:
    if isinstance(ts, int):
        return ts
    moment = datetime.fromisoformat(ts.upper().replace("Z", "+00:00")[:23] + ts.upper().replace("Z", "+00:00")[-6:])
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


@allowed_input.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_body_the_document_allows_is_stored(case, ingest_url):
    response = case.call(base_url=ingest_url, headers={"Authorization": f"Bearer {token('fuzz')}"}, timeout=10)
    # What the document says in words (x-pattern) but not as a schema: refused with that reason.
    if any(not re.match(NAME_PATTERN, n) for n in names(case)) or any(not re.match(META_KEY_PATTERN, k) for k in meta_keys(case)):
        assert response.status_code == 422, response.text[:300]
        assert any(reason in response.text for reason in ("control, format or separator", "may not start with",
                                                          "must be a non-empty text")), response.text[:300]
        return
    if repeated_key(case):
        assert response.status_code == 422 and "repeats sensor" in response.text, response.text[:300]
        return
    assert response.status_code == 200, (case.path, case.body, response.text[:500])
    sent = len(case.body["readings"]) if case.path == "/v1/readings" else sum(len(m["data"]) for m in case.body)
    assert response.json()["stored"] == sent
