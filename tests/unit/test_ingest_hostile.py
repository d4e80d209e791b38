"""What a hostile client tries: Eden identities, bodies that are almost right, names with hidden
characters, answers that would claim more than was stored. Driven over HTTP in-process against
the CrateDB contract double (not CrateDB)."""

import gzip
import json
import unicodedata
import zlib

import pytest

from ingest import eden_jwt, tokens
from ingest.payload import MAX_META_DEPTH, MAX_META_KEYS, NAME_PATTERN
from tests.unit.ingest_support import EDEN_SECRET, now_ms, post, run, running, token


def eden_body(*data, ts=None):
    return [{"meta": {"name": "BMP180"}, "data": list(data), "timestamp": ts or now_ms() - 1000}]


TEMPERATURE = {"sensor": "temperature", "value": 21.4, "unit": "celsius"}


# -- Eden identities ------------------------------------------------------------------------------

def test_the_original_demo_s_issuer_is_accepted_under_a_device_id_of_its_own():
    """The 2017 demo's config names its device "Raspberry 1" (celaus/eden config.toml)."""
    async def go():
        async with running() as (url, double, _):
            jwt = eden_jwt.sign({"iss": "Raspberry 1", "role": "sensor"}, EDEN_SECRET)
            status, body, _ = await post(url, "/data", eden_body(TEMPERATURE), auth=jwt, method="PUT")
            assert status == 200 and body["device"] == eden_jwt.device_id("Raspberry 1")
            assert body["device"].startswith("eden.Raspberry-1-") and tokens.DEVICE_ID.match(body["device"])
            assert {k[0] for k in double.state.readings} == {body["device"]}
    run(go())


def test_eden_device_ids_are_deterministic_and_distinct():
    issuers = ["Raspberry 1", "Raspberry_1", "raspberry 1", "Raspberry  1", "x" * 200, "x" * 201, "ü", "?"]
    ids = [eden_jwt.device_id(i) for i in issuers]
    assert ids == [eden_jwt.device_id(i) for i in issuers]
    assert len(set(ids)) == len(ids) and all(tokens.DEVICE_ID.match(i) and i.startswith("eden.") for i in ids)


def test_a_shared_secret_holder_cannot_write_as_a_device_with_a_token():
    async def go():
        async with running() as (url, double, _):
            jwt = eden_jwt.sign({"iss": "pi-7", "role": "sensor"}, EDEN_SECRET)  # pi-7 has a device token
            status, body, _ = await post(url, "/data", eden_body(TEMPERATURE), auth=jwt)
            assert (status, body["device"]) == (200, "eden.pi-7")
            assert {k[0] for k in double.state.readings} == {"eden.pi-7"}
    run(go())


def test_no_device_token_can_carry_an_eden_device_id():
    with pytest.raises(ValueError, match="belong to Eden devices"):
        tokens.issue(b"s" * 32, "eden.pi-7")
    forged = "mds1.eden.pi-7." + tokens._signature(b"s" * 32, "eden.pi-7")  # signed with the real secret
    assert tokens.verify(b"s" * 32, forged) is None


@pytest.mark.parametrize("claims, settings", [
    ({"iss": "pi", "role": "admin"}, {}),  # a role the stack does not accept
    ({"iss": "pi"}, {}),  # no role
    ({"iss": "pi", "role": "sensor"}, {"eden_issuers": frozenset({"Raspberry 1"})}),  # not on the list
    ({"iss": "pi", "role": "sensor"}, {"revoked_devices": frozenset({"eden.pi"})}),
])
def test_eden_jwts_need_an_accepted_role_and_issuer(claims, settings):
    async def go():
        async with running(**settings) as (url, double, _):
            status, body, _ = await post(url, "/data", eden_body(TEMPERATURE), auth=eden_jwt.sign(claims, EDEN_SECRET))
            assert (status, body) == (401, {"error": "unauthorized"}) and double.state.readings == {}
    run(go())


# -- answers that are true ------------------------------------------------------------------------

def test_two_readings_with_one_key_are_refused_not_counted_twice():
    async def go():
        async with running() as (url, double, _):
            ts = now_ms() - 1000
            body = {"readings": [{"ts": ts, "sensor": "t", "value": 1.0}, {"ts": ts + 1, "sensor": "t", "value": 2.0},
                                 {"ts": ts, "sensor": "t", "value": 3.0}]}
            status, answer, _ = await post(url, "/v1/readings", body, auth=token())
            assert status == 422 and answer["index"] == 2 and "repeats sensor 't'" in answer["error"]
            assert "readings[0]" in answer["error"] and double.state.readings == {}
    run(go())


def test_an_eden_message_repeating_a_sensor_is_refused():
    async def go():
        async with running() as (url, double, _):
            jwt = eden_jwt.sign({"iss": "pi", "role": "sensor"}, EDEN_SECRET)
            status, answer, _ = await post(url, "/data", eden_body(TEMPERATURE, {"Simple": {**TEMPERATURE, "name": "temperature"}}),
                                           auth=jwt)
            assert status == 422 and answer["index"] == 1 and "[0].data[1] repeats" in answer["error"]
    run(go())


@pytest.mark.parametrize("ts", [1.2, 1.7])
def test_fractions_of_a_millisecond_are_refused(ts):
    async def go():
        async with running() as (url, double, _):
            status, answer, _ = await post(url, "/v1/readings", {"readings": [{"ts": now_ms() - 1000 + ts, "sensor": "t", "value": 1}]},
                                           auth=token())
            assert status == 422 and "not a whole number of milliseconds" in answer["error"]
    run(go())


# -- gzip -------------------------------------------------------------------------------------------

def _readings_json(n: int, start: int) -> bytes:
    return json.dumps({"readings": [{"ts": start + i, "sensor": "t", "value": i} for i in range(n)]}).encode()


def test_every_gzip_member_is_decoded():
    """`{"readings": [...]}` split over two members, as `cat a.gz b.gz` makes it."""
    async def go():
        async with running() as (url, double, _):
            whole = _readings_json(4, now_ms() - 1000)
            data = gzip.compress(whole[:17]) + gzip.compress(whole[17:])
            status, answer, _ = await post(url, "/v1/readings", data=data, auth=token(),
                                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert (status, answer.get("stored")) == (200, 4)
    run(go())


@pytest.mark.parametrize("damage, message", [
    (lambda g: g + b"garbage!", "bytes of something else after member 1"),
    (lambda g: g[:-8], "cut short"),  # no CRC and length
    (lambda g: g[:-4] + b"\x00\x00\x00\x00", "not valid gzip"),  # wrong length
    (lambda g: g[:-8] + bytes(8), "not valid gzip"),  # wrong CRC
    (lambda g: g + gzip.compress(b"x")[:-3], "member 2 is cut short"),
])
def test_a_broken_gzip_stream_is_400(damage, message):
    async def go():
        async with running() as (url, double, _):
            data = damage(gzip.compress(_readings_json(2, now_ms() - 1000)))
            status, answer, _ = await post(url, "/v1/readings", data=data, auth=token(),
                                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert status == 400 and message in answer["error"], answer
            assert double.state.readings == {}
    run(go())


def test_the_size_limit_holds_across_members():
    async def go():
        async with running(max_body_bytes=4096) as (url, _, _):
            data = b"".join(gzip.compress(b" " * 3000) for _ in range(2))
            status, answer, _ = await post(url, "/v1/readings", data=data, auth=token(),
                                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert status == 413 and "decompressed body larger than 4096" in answer["error"]
    run(go())


# -- timestamps --------------------------------------------------------------------------------------

def _iso(offset_ms: int = -1000) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp((now_ms() + offset_ms) / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.parametrize("suffix", ["Z", "z", ".5Z", ".123456789Z", "+00:00", "-00:00"])
def test_rfc_3339_forms_are_accepted(suffix):
    async def go():
        async with running() as (url, double, _):
            text = _iso()
            text = text.replace("T", "t") if suffix == "z" else text
            status, answer, _ = await post(url, "/v1/readings", {"readings": [{"ts": text + suffix, "sensor": "t", "value": 1}]},
                                           auth=token())
            assert status == 200, answer
    run(go())


@pytest.mark.parametrize("make", [
    lambda t: t + "+05",  # offset without minutes
    lambda t: t + "+0530",  # offset without a colon
    lambda t: t.replace("T", " ") + "Z",  # a space for T
    lambda t: t,  # no offset at all
    lambda t: t[:10],  # a date alone
    lambda t: "2026-W49-2T10:00:00Z",  # a week date
    lambda t: t.replace("-", "", 2) + "Z",  # basic format
    lambda t: t + ",5Z",  # a comma fraction
    lambda t: t.replace("0", "\u0660", 1) + "Z",  # an Arabic-Indic digit
    lambda t: t + "+24:00",  # an offset out of range
])
def test_forms_that_are_not_rfc_3339_are_refused_saying_so(make):
    async def go():
        async with running() as (url, double, _):
            text = make(_iso())
            status, answer, _ = await post(url, "/v1/readings", {"readings": [{"ts": text, "sensor": "t", "value": 1}]},
                                           auth=token())
            assert status == 422 and answer["index"] == 0, answer
            assert "RFC 3339" in answer["error"] or "not a valid date" in answer["error"], answer
    run(go())


# -- names ----------------------------------------------------------------------------------------------

BAD_NAMES = ["t\x00", "line\nbreak", "\x1b[31mred", "evil\u202egnp.exe", "zero\u200bwidth", "   ", "\t", "a\u2028b",
             "\ufeffbom", "tag\U000e0041"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
@pytest.mark.parametrize("field", ["sensor", "unit"])
def test_names_with_control_or_format_characters_are_refused(name, field):
    async def go():
        async with running() as (url, double, _):
            reading = {"ts": now_ms() - 1000, "sensor": "t", "value": 1, field: name}
            status, answer, _ = await post(url, "/v1/readings", {"readings": [reading]}, auth=token())
            assert status == 422 and f"{field} " in answer["error"] and "control, format or separator" in answer["error"]
            assert double.state.readings == {}
    run(go())


def test_ordinary_names_in_any_script_are_accepted():
    async def go():
        async with running() as (url, double, _):
            names = ["temperature", "Temperatur Halle 1", "température", "温度", "cpu.usage_idle", "m/s²"]
            body = {"readings": [{"ts": now_ms() - 1000 + i, "sensor": n, "value": 1, "unit": n[:32]} for i, n in enumerate(names)]}
            status, answer, _ = await post(url, "/v1/readings", body, auth=token())
            assert (status, answer.get("stored")) == (200, len(names)), answer
    run(go())


def test_the_name_rule_refuses_every_control_format_and_separator_character():
    """The pattern is written out (it is also in openapi.json); this Python's Unicode database
    says which characters it must refuse."""
    import re
    pattern = re.compile(NAME_PATTERN)
    refused = {"Cc", "Cf", "Co", "Zl", "Zp"}  # surrogates (Cs) the JSON parser refuses already
    for code in range(0x110000):
        char = chr(code)
        if unicodedata.category(char) in refused:
            assert pattern.match("a" + char + "b") is None, hex(code)


# -- meta ---------------------------------------------------------------------------------------------

def _nested(depth: int) -> dict:
    meta: dict = {}
    node = meta
    for _ in range(depth - 1):
        node["n"] = {}
        node = node["n"]
    return meta


@pytest.mark.parametrize("meta, message", [
    (_nested(MAX_META_DEPTH + 1), f"nested deeper than {MAX_META_DEPTH} levels"),
    ("DEEP", f"nested deeper than {MAX_META_DEPTH} levels"),  # 1,000 levels: more than a client serialises
    ({f"k{i}": i for i in range(MAX_META_KEYS + 1)}, f"more than {MAX_META_KEYS} keys"),
    ({"big": "x" * 9000}, "larger than 8192 bytes"),
    ({"a.b": 1}, "may not start with '_'"),
    ({"_id": 1}, "may not start with '_'"),
    ({"x\u200b": 1}, "control, format or separator"),
    ({"": 1}, "key must be a non-empty text"),
])
def test_meta_is_bounded_with_a_clear_422(meta, message):
    async def go():
        async with running() as (url, double, _):
            body = json.dumps({"readings": [{"ts": now_ms() - 1000, "sensor": "t", "value": 1}], "meta": meta})
            body = body.replace('"DEEP"', '{"n": ' * 999 + "{}" + "}" * 999)
            status, answer, _ = await post(url, "/v1/readings", data=body.encode(), auth=token(),
                                           headers={"Content-Type": "application/json"})
            assert status == 422 and message in answer["error"], answer
            assert double.state.readings == {}
    run(go())


def test_meta_at_the_bounds_is_accepted():
    async def go():
        async with running() as (url, double, _):
            body = {"readings": [{"ts": now_ms() - 1000, "sensor": "t", "value": 1}], "meta": _nested(MAX_META_DEPTH)}
            assert (await post(url, "/v1/readings", body, auth=token()))[0] == 200
    run(go())


# -- credentials never echoed -------------------------------------------------------------------------

def test_a_huge_authorization_header_is_refused_without_echoing_it(caplog):
    async def go():
        async with running() as (url, double, _):
            secret_part = "S3CR3T" * 2000
            status, answer, _ = await post(url, "/v1/readings", {"readings": []}, headers={"Authorization": "Bearer " + secret_part})
            assert status in (400, 401, 431)
            assert "S3CR3T" not in json.dumps(answer)
    caplog.set_level("DEBUG")
    run(go())
    assert "S3CR3T" not in caplog.text


def test_zlib_raw_deflate_is_not_gzip():
    async def go():
        async with running() as (url, double, _):
            status, answer, _ = await post(url, "/v1/readings", data=zlib.compress(b"{}"), auth=token(),
                                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert status == 400 and "not valid gzip" in answer["error"]
    run(go())
