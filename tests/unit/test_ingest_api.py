"""The ingest app driven over HTTP in-process: auth, bad input, Eden payloads, the write path."""

import asyncio
import gzip
import json
import time

import pytest

from ingest import eden_jwt
from tests.cratedb_double import CrateState
from tests.unit.ingest_support import EDEN_SECRET, batch, now_ms, post, run, running, token


def stored(double):
    return {(a, s, ts): row for (a, s, ts), row in double.state.readings.items()}


# -- authentication -----------------------------------------------------------------------------

def test_good_token_stores_readings_under_the_device_of_the_token():
    async def go():
        async with running() as (url, double, _):
            status, body, _ = await post(url, "/v1/readings", batch(3, meta={"site": "hall"}), auth=token("pi-7"))
            assert (status, body) == (200, {"stored": 3, "device": "pi-7"})
            rows = list(double.state.readings.values())
            assert {r[1] for r in rows} == {"pi-7"}
            assert rows[0][3] == {"num": 20.0} and rows[0][4] == "celsius" and rows[0][5] == {"site": "hall"}
    run(go())


@pytest.mark.parametrize("credential", [
    None, "", "Basic abc", "Bearer", "Bearer mds1.pi-1.forged", "Bearer not-a-token",
    f"Bearer {token('pi-1', b'another-secret-of-thirty-two-chars')}",  # signed with another secret
    f"Bearer {token('revoked-pi')}",
])
def test_bad_credentials_get_401_without_detail(credential):
    async def go():
        async with running(revoked_devices=frozenset({"revoked-pi"})) as (url, double, _):
            headers = {"Authorization": credential} if credential is not None else {}
            status, body, _ = await post(url, "/v1/readings", batch(), headers=headers)
            assert (status, body) == (401, {"error": "unauthorized"})
            assert double.state.readings == {}
    run(go())


def test_device_identity_never_comes_from_the_body():
    async def go():
        async with running() as (url, _, _):
            body = batch()
            body["readings"][0]["agent"] = "someone-else"
            status, answer, _ = await post(url, "/v1/readings", body, auth=token())
            assert status == 422 and answer["index"] == 0 and "agent" in answer["error"]
    run(go())


# -- the original Eden agents ---------------------------------------------------------------------

EDEN_PAYLOAD = [
    {"meta": {"name": "pi-hall"}, "data": [{"sensor": "temperature", "value": 21.4, "unit": "celsius"},
                                           {"sensor": "pressure", "value": 1013.2, "unit": "hPa"}]},
    {"meta": {"name": "pi-hall"}, "data": [{"Simple": {"name": "temperature", "value": 21.5, "unit": "celsius"}}]},
]


@pytest.mark.parametrize("method, path", [("PUT", "/data"), ("POST", "/data"), ("POST", "/temperature")])
def test_eden_payloads_with_an_eden_jwt(method, path):
    async def go():
        async with running() as (url, double, _):
            payload = json.loads(json.dumps(EDEN_PAYLOAD))
            payload[0]["timestamp"], payload[1]["timestamp"] = now_ms() - 2000, now_ms() - 1000
            jwt = eden_jwt.sign({"iss": "pi-hall", "role": "sensor"}, EDEN_SECRET)
            status, body, _ = await post(url, path, payload, auth=jwt, method=method)
            assert (status, body) == (200, {"stored": 3, "device": "eden.pi-hall"})
            rows = sorted(double.state.readings.values(), key=lambda r: (r[0], r[2]))
            assert [(r[2], r[3], r[4]) for r in rows] == [
                ("pressure", {"num": 1013.2}, "hPa"), ("temperature", {"num": 21.4}, "celsius"),
                ("temperature", {"num": 21.5}, "celsius")]
            assert rows[0][0] == payload[0]["timestamp"]
    run(go())


@pytest.mark.parametrize("claims, secret", [
    ({"iss": "pi", "role": "sensor", "exp": time.time() - 10}, EDEN_SECRET),  # expired
    ({"iss": "pi", "role": "sensor"}, b"wrong-secret"),
    ({"role": "sensor"}, EDEN_SECRET),  # no device
])
def test_bad_eden_jwts_get_401(claims, secret):
    async def go():
        async with running() as (url, _, _):
            status, _, _ = await post(url, "/data", EDEN_PAYLOAD, auth=eden_jwt.sign(claims, secret))
            assert status == 401
    run(go())


@pytest.mark.parametrize("jwt", ["a.b.c", "....", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJwaSJ9.", "x" * 5000, "é.é.é"])
def test_malformed_jwts_are_401_not_a_crash(jwt):
    async def go():
        async with running() as (url, _, _):
            status, body, _ = await post(url, "/data", EDEN_PAYLOAD, auth=jwt)
            assert (status, body) == (401, {"error": "unauthorized"})
    run(go())


def test_jwts_are_not_accepted_on_the_v1_endpoint():
    async def go():
        async with running() as (url, _, _):
            status, _, _ = await post(url, "/v1/readings", batch(), auth=eden_jwt.sign({"iss": "pi"}, EDEN_SECRET))
            assert status == 401
    run(go())


# -- bad input ----------------------------------------------------------------------------------

def _reading(**kw):
    return {"ts": now_ms(), "sensor": "t", "value": 1.0, **kw}


BAD_BODIES = [
    (b"not json", {}, 400, "not valid JSON", None),
    (b'{"readings": [{"ts": 1, "sensor": "t", "value": NaN}]}', {}, 400, "NaN and Infinity are not JSON", None),
    (json.dumps({"readings": []}).encode(), {}, 422, "readings is empty", None),
    (json.dumps([1, 2]).encode(), {}, 422, "body must be a JSON object", None),
    (json.dumps({"readings": [_reading(), _reading(value=[1])]}).encode(), {}, 422, "readings[1]: value must be a number, text or boolean", 1),
    (json.dumps({"readings": [_reading(), _reading(), _reading(sensor="")]}).encode(), {}, 422, "readings[2]: sensor must be a non-empty text", 2),
    (json.dumps({"readings": [_reading(ts=1)]}).encode(), {}, 422, "readings[0]: ts 1 is outside the accepted window", 0),
    (json.dumps({"readings": [_reading(ts=now_ms() + 3_600_000)]}).encode(), {}, 422, "outside the accepted window", 0),
    (json.dumps({"readings": [_reading(ts="yesterday")]}).encode(), {}, 422, "is not an RFC 3339 timestamp", 0),
    (json.dumps({"readings": [_reading(ts=True)]}).encode(), {}, 422, "ts must be epoch milliseconds", 0),
    (json.dumps({"readings": [_reading(value=1e308 * 10)]}).replace("Infinity", "1e999").encode(), {}, 400, "number is infinity", None),
    (json.dumps({"readings": [_reading()], "extra": 1}).encode(), {}, 422, "unknown field(s) extra", None),
    (json.dumps({"readings": [_reading() for _ in range(11)]}).encode(), {}, 413, "holds 11 readings; at most 10", None),
    (b"x" * 5000, {}, 413, "body of 5000 bytes; at most 4096", None),
    (gzip.compress(b" " * 100_000), {"Content-Encoding": "gzip"}, 413, "decompressed body larger than 4096", None),
    (b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip", None),
    (b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding 'br' is not supported", None),
    (b"{}", {"Content-Type": "text/csv"}, 415, "send application/json", None),
]


@pytest.mark.parametrize("data, headers, status, message, index", BAD_BODIES, ids=[b[3] for b in BAD_BODIES])
def test_bad_input_gets_a_4xx_that_says_what_and_where(data, headers, status, message, index):
    async def go():
        async with running(max_batch_readings=10, max_body_bytes=4096) as (url, double, _):
            got, body, _ = await post(url, "/v1/readings", data=data, auth=token(),
                                      headers={"Content-Type": "application/json", **headers})
            assert got == status, body
            assert message in body["error"]
            assert body.get("index") == index
            assert double.state.readings == {}
    run(go())


def test_gzip_bodies_are_accepted():
    async def go():
        async with running() as (url, double, _):
            data = gzip.compress(json.dumps(batch(5)).encode())
            status, _, _ = await post(url, "/v1/readings", data=data, auth=token(),
                                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert status == 200 and len(double.state.readings) == 5
    run(go())


# -- the write path -------------------------------------------------------------------------------

def test_a_retried_batch_never_duplicates():
    async def go():
        async with running() as (url, double, _):
            body = batch(10)
            for _ in range(3):
                status, answer, _ = await post(url, "/v1/readings", body, auth=token())
                assert (status, answer["stored"]) == (200, 10)
            assert len(double.state.readings) == 10
    run(go())


def test_concurrent_requests_share_bulk_inserts():
    async def go():
        async with running(linger_ms=50) as (url, double, _):
            start = now_ms() - 10_000
            answers = await asyncio.gather(*[
                post(url, "/v1/readings", batch(10, start=start + 100 * i), auth=token()) for i in range(40)])
            assert all(a[0] == 200 for a in answers)
            assert len(double.state.readings) == 400
            inserts = [s for s in double.state.statements if s.startswith("INSERT")]
            assert len(inserts) < 40  # 400 readings of 40 requests travelled in fewer bulk requests
    run(go())


def slow_database(delay_s: float) -> CrateState:
    return CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, delay_s=delay_s)


def inserts(double) -> int:
    return sum(s.startswith("INSERT") for s in double.state.statements)


def test_with_the_database_idle_a_small_request_is_written_at_once():
    async def go():
        async with running(linger_ms=3000) as (url, _, _):
            started = time.perf_counter()
            status, _, _ = await post(url, "/v1/readings", batch(5), auth=token())
            assert status == 200 and time.perf_counter() - started < 1.5
    run(go())


def test_while_an_insert_is_in_flight_small_requests_gather_and_go_together_when_it_returns():
    async def go():
        async with running(slow_database(1.0), linger_ms=5000) as (url, double, _):
            started = time.perf_counter()
            first = asyncio.create_task(post(url, "/v1/readings", batch(5), auth=token("a")))
            await asyncio.sleep(0.3)
            later = await asyncio.gather(*[post(url, "/v1/readings", batch(5, start=now_ms() - 9000 + 10 * i),
                                                auth=token(f"b{i}")) for i in range(10)])
            assert (await first)[0] == 200 and all(a[0] == 200 for a in later)
            assert time.perf_counter() - started < 3.5  # two inserts of 1 s, not the 5 s linger
            assert inserts(double) == 2 and len(double.state.readings) == 55
    run(go())


def test_a_bulk_sized_request_does_not_wait_for_the_insert_in_flight():
    """A tenth of a flush goes at once into a free slot, in parallel with the slow insert."""
    async def go():
        async with running(slow_database(1.5), linger_ms=5000, flush_rows=1000) as (url, double, _):
            first = asyncio.create_task(post(url, "/v1/readings", batch(5), auth=token("a")))
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            status, _, _ = await post(url, "/v1/readings", batch(100), auth=token("b"))
            assert status == 200 and time.perf_counter() - started < 2.5  # 1.5 s, not 1.2 s more behind the first
            assert (await first)[0] == 200 and inserts(double) == 2
    run(go())


def test_linger_bounds_the_wait_behind_a_slow_insert():
    async def go():
        async with running(slow_database(2.0), linger_ms=300) as (url, double, _):
            first = asyncio.create_task(post(url, "/v1/readings", batch(5), auth=token("a")))
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            status, _, _ = await post(url, "/v1/readings", batch(5), auth=token("b"))
            assert status == 200 and time.perf_counter() - started < 3.0  # 0.3 s linger + 2 s, not 1.8 s + 2 s
            assert (await first)[0] == 200 and inserts(double) == 2
    run(go())


def test_rows_the_database_refuses_are_reported_to_their_own_request():
    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, fail_sensors={"broken"})
        async with running(state, linger_ms=50) as (url, double, _):
            good = batch(2, start=now_ms() - 5000)
            bad = {"readings": [_reading(ts=now_ms() - 100), _reading(sensor="broken", ts=now_ms() - 99)]}
            (s1, b1, _), (s2, b2, _) = await asyncio.gather(
                post(url, "/v1/readings", good, auth=token("a")), post(url, "/v1/readings", bad, auth=token("b")))
            assert (s1, b1["stored"]) == (200, 2)
            assert s2 == 422 and b2["index"] == 1 and b2["failed"][0]["code"] == 4000
            assert "the others are stored" in b2["error"] and b2["stored"] == 1
            assert ("b", "t", bad["readings"][0]["ts"]) in double.state.readings
    run(go())


def _state(**kw) -> CrateState:
    return CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, **kw)


@pytest.mark.parametrize("sensor, state", [
    ("shard", _state(shard_fail_sensors={"shard"})),  # rowcount -2, code 5002: a shard failed
    ("lost", _state(lost_partition_sensors={"lost"})),  # rowcount 0, yet not stored (partition missing)
])
def test_rows_the_database_did_not_store_are_never_acknowledged(sensor, state):
    """-2 without a 4xxx code means "not stored, try again"; rowcount 0 is confirmed by reading the
    key back. Either way the request is answered 503 (retry), never 200 or 422 (dead letter)."""
    async def go():
        async with running(state) as (url, double, _):
            body = {"readings": [_reading(ts=now_ms() - 10), _reading(sensor=sensor, ts=now_ms() - 9)]}
            status, answer, headers = await post(url, "/v1/readings", body, auth=token())
            assert status == 503 and "Retry-After" in headers, answer
            assert "1 of 2 readings were not stored" not in answer["error"]  # the log says it, the client need not
            # the agent retries: the good row exists (rowcount 0, confirmed), the other still fails
            state.shard_fail_sensors.clear()
            state.lost_partition_sensors.clear()
            status, answer, _ = await post(url, "/v1/readings", body, auth=token())
            assert (status, answer["stored"]) == (200, 2) and len(double.state.readings) == 2
    run(go())


def test_a_value_the_database_refuses_for_the_whole_insert_fails_only_its_own_request():
    """A type conflict in a dynamic object fails CrateDB's whole bulk request (400/4000). The
    writer then writes the requests of that insert one by one: the culprit gets 422 with the
    reason, every other request is stored."""
    async def go():
        state = _state(dynamic_meta=True, meta_types={"meta['line']": "bigint"}, delay_s=0.3)
        async with running(state, linger_ms=5000) as (url, double, _):
            slow = asyncio.create_task(post(url, "/v1/readings", batch(1, start=now_ms() - 20_000), auth=token("warm")))
            await asyncio.sleep(0.1)  # the others gather behind it and go as one insert
            good = [post(url, "/v1/readings", batch(3, start=now_ms() - 9000 + 10 * i, meta={"line": i}), auth=token(f"g{i}"))
                    for i in range(5)]
            bad = post(url, "/v1/readings", batch(3, meta={"line": {"no": 1}}), auth=token("bad"))
            answers = await asyncio.gather(*good, bad)
            await slow
            assert [a[0] for a in answers[:5]] == [200] * 5
            status, body, _ = answers[5]
            assert status == 422 and "4000" in body["error"] and "nothing of it was stored" in body["error"]
            assert {k[0] for k in double.state.readings} == {"warm", "g0", "g1", "g2", "g3", "g4"}
            assert inserts(double) == 1 + 1 + 6  # warm; the six together, refused; each alone
    run(go())


def test_database_down_means_503_with_retry_after_and_nothing_acknowledged():
    async def go():
        async with running(write_timeout_s=2) as (url, double, _):
            double.server.shutdown()
            double.server.server_close()
            status, body, headers = await post(url, "/v1/readings", batch(), auth=token())
            assert status == 503 and headers["Retry-After"] == "2"
            assert "it may not have been stored; retrying is safe" in body["error"]
            ready, reason, _ = await post(url, "/readyz", method="GET")
            assert ready == 503 and reason["status"] == "not ready"
    run(go())


def test_a_failed_write_keeps_a_host_unready_only_for_a_while(monkeypatch):
    """Seen on the lab stack: the first writes failed (the ingest user did not exist yet), the agent
    moved to another host, and this one stayed not ready for ever, with CrateDB healthy."""
    from ingest.batch_writer import BatchWriter
    monkeypatch.setattr(BatchWriter, "FAILURE_MEMORY_S", 0.5)

    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})
        async with running(state) as (url, _, _):
            state.tables.discard("doc.readings")
            assert (await post(url, "/v1/readings", batch(), auth=token()))[0] == 503
            assert (await post(url, "/readyz", method="GET"))[:2] == (503, {"status": "not ready", "reason": "the last bulk insert failed"})
            state.tables.add("doc.readings")
            await asyncio.sleep(0.6)  # no request meanwhile
            assert (await post(url, "/readyz", method="GET"))[:2] == (200, {"status": "ready"})
    run(go())


def test_database_too_slow_means_503():
    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, delay_s=2)
        async with running(state, write_timeout_s=0.5) as (url, _, _):
            status, _, headers = await post(url, "/v1/readings", batch(), auth=token())
            assert status == 503 and "Retry-After" in headers
    run(go())


def test_missing_table_is_503_not_a_client_error():
    async def go():
        async with running(CrateState(users={"ingest": "ingest-password"})) as (url, _, _):
            status, _, _ = await post(url, "/v1/readings", batch(), auth=token())
            assert status == 503
    run(go())


def test_full_queue_answers_429_with_retry_after():
    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, delay_s=0.5)
        async with running(state, queue_rows=10, max_inflight=1) as (url, double, _):
            first = asyncio.create_task(post(url, "/v1/readings", batch(8), auth=token("a")))
            await asyncio.sleep(0.1)
            status, body, headers = await post(url, "/v1/readings", batch(5), auth=token("b"))
            assert status == 429 and headers["Retry-After"] == "2" and "retry later" in body["error"]
            assert (await first)[0] == 200
    run(go())


def test_health_ready_metrics_and_openapi():
    async def go():
        async with running() as (url, _, _):
            assert (await post(url, "/healthz", method="GET"))[0] == 200
            assert (await post(url, "/readyz", method="GET"))[:2] == (200, {"status": "ready"})
            await post(url, "/v1/readings", batch(4), auth=token())
            await post(url, "/v1/readings", data=b"nope", auth=token(), headers={"Content-Type": "application/json"})
            _, metrics, _ = await post(url, "/metrics", method="GET")
            text = metrics["text"]
            assert "ingest_readings_accepted_total 4.0" in text
            assert 'ingest_readings_rejected_total{reason="400"} 1.0' in text
            assert "ingest_queue_readings 0.0" in text and "ingest_bulk_insert_rows_count 1.0" in text
            status, spec, _ = await post(url, "/openapi.json", method="GET")
            assert status == 200 and "/v1/readings" in spec["paths"]
    run(go())


def test_wrong_database_password_is_not_ready():
    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "another-password"})
        async with running(state) as (url, _, _):
            assert (await post(url, "/readyz", method="GET"))[0] == 503
            assert (await post(url, "/v1/readings", batch(), auth=token()))[0] == 503
    run(go())


def test_starts_without_a_database_and_finds_it_later(monkeypatch):
    """CrateDB's task DNS name does not resolve yet: the service starts, is not ready, refuses
    writes with 503, and writes once the name resolves."""
    from ingest import app as app_module
    from ingest import cratedb_runner

    found: list[str] = []
    monkeypatch.setattr(app_module, "discover_servers", lambda *args: list(found))
    monkeypatch.setattr(cratedb_runner.CrateRunner, "REDISCOVER_S", 0.0)

    async def go():
        async with running(crate_urls=(), crate_dns="tasks.cratedb") as (url, double, _):
            assert (await post(url, "/readyz", method="GET"))[0] == 503
            assert (await post(url, "/v1/readings", batch(), auth=token()))[0] == 503
            found.append(double.url)
            assert (await post(url, "/v1/readings", batch(), auth=token()))[0] == 200
            assert (await post(url, "/readyz", method="GET"))[0] == 200
    run(go())
