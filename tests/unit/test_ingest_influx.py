"""InfluxDB line protocol on the ingest: the specification's examples parse exactly, malformed lines
say which line and what, and the real InfluxDB client libraries (`influxdb-client` for v2,
`influxdb` for v1) write to the ingest unchanged, retries included. The database is the CrateDB
contract double (not CrateDB)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb import InfluxDBClient as V1Client
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write.retry import WritesRetry
from influxdb_client.client.write_api import SYNCHRONOUS

from ingest import line_protocol
from ingest.payload import BadInput, accepted_window
from tests.cratedb_double import CrateState
from tests.unit.ingest_support import now_ms, post, run, running, token

def everything():
    """A window that takes the specification's 2019 timestamps, around the clock of the moment."""
    return accepted_window(now_ms(), 20 * 365 * 86400, 300)


def parse(text: str, precision: str = "ns"):
    return line_protocol.parse(text.encode(), "dev", precision=precision, now_ms=now_ms(), window=everything(), limit=1000)


# The examples of the line protocol reference (InfluxDB 2.x docs, "Line protocol"), each with what
# it must become: (sensor, value, unit, meta).
SPEC_EXAMPLES = [
    ('measurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000',
     [("measurement.fieldKey,tag1=value1,tag2=value2", {"txt": "fieldValue"}, None, {"tag1": "value1", "tag2": "value2"})]),
    ('myMeasurement fieldKey="This is a string"', [("myMeasurement.fieldKey", {"txt": "This is a string"}, None, None)]),
    ("myMeasurement fieldKey=1.0", [("myMeasurement.fieldKey", {"num": 1.0}, None, None)]),
    ("myMeasurement fieldKey=1", [("myMeasurement.fieldKey", {"num": 1.0}, None, None)]),
    ("myMeasurement fieldKey=-1.234456e+78", [("myMeasurement.fieldKey", {"num": -1.234456e78}, None, None)]),
    ("myMeasurement fieldKey=1i", [("myMeasurement.fieldKey", {"num": 1.0}, None, None)]),
    ("myMeasurement fieldKey=12485903u", [("myMeasurement.fieldKey", {"num": 12485903.0}, None, None)]),
    ("myMeasurement fieldKey=true", [("myMeasurement.fieldKey", {"bool": True}, None, None)]),
    ("myMeasurement fieldKey=F", [("myMeasurement.fieldKey", {"bool": False}, None, None)]),
    ('my\\ Measurement fieldKey="string value"', [("my Measurement.fieldKey", {"txt": "string value"}, None, None)]),
    ('myMeasurement fieldKey="\\"string\\" within a string"',
     [("myMeasurement.fieldKey", {"txt": '"string" within a string'}, None, None)]),
    ("myMeasurement,tagKey=tag\\ Value fieldKey=1", [("myMeasurement.fieldKey,tagKey=tag Value", {"num": 1.0}, None, {"tagKey": "tag Value"})]),
    ("my\\,Measurement,tag\\=Key=tag\\,Value field\\ Key=1",
     [("my\\,Measurement.field Key,tag\\=Key=tag\\,Value", {"num": 1.0}, None, {"tag=Key": "tag,Value"})]),
    ('myMeasurement fieldKey="string with a \\\\ backslash, a comma and = sign"',
     [("myMeasurement.fieldKey", {"txt": "string with a \\ backslash, a comma and = sign"}, None, None)]),
    ("cpu,host=pi-1,unit=percent usage_idle=99.5,usage_user=0.25",
     [("cpu.usage_idle,host=pi-1,unit=percent", {"num": 99.5}, "percent", {"host": "pi-1"}),
      ("cpu.usage_user,host=pi-1,unit=percent", {"num": 0.25}, "percent", {"host": "pi-1"})]),
]


@pytest.mark.parametrize("text, expected", SPEC_EXAMPLES, ids=[t for t, _ in SPEC_EXAMPLES])
def test_the_specification_s_examples_parse_exactly(text, expected):
    assert [(r[2], r[3], r[4], r[5]) for r in parse(text)] == expected


def test_comments_blank_lines_and_precision():
    rows = parse("# a comment\n\nm a=1 1556813561\n   \nm b=2 1556813562\r\n", precision="s")
    assert [(r[0], r[2]) for r in rows] == [(1556813561000, "m.a"), (1556813562000, "m.b")]
    assert parse("m a=1 1556813561098123456")[0][0] == 1556813561098  # ns cut to ms
    assert parse("m a=1 25946892", precision="m")[0][0] == 25946892 * 60_000


def test_two_series_of_one_measurement_are_two_sensors():
    rows = parse("cpu,cpu=cpu0 usage_idle=90 1556813561098000000\ncpu,cpu=cpu1 usage_idle=80 1556813561098000000")
    assert [r[2] for r in rows] == ["cpu.usage_idle,cpu=cpu0", "cpu.usage_idle,cpu=cpu1"]


def test_a_long_series_key_becomes_a_hash():
    (row,) = parse("m," + ",".join(f"tag{i}=value-{i}" for i in range(20)) + " f=1")
    assert row[2].startswith("m.f,#") and len(row[2]) <= 128 and row[5]["tag19"] == "value-19"


@pytest.mark.parametrize("text, message", [
    ("m", "line 1: expected `measurement[,tags] fields [timestamp]`"),
    ("m a=1 12 extra", "line 1: expected"),
    ("m a=1\nm a=", "line 2: field 'a=' is not key=value"),
    ("m a=1.2.3", "line 1: field 'a': '1.2.3' is not a float"),
    ("m a=1 1.5", "line 1: timestamp '1.5' is not an integer"),
    ('m a="open', "a string field has no closing quote"),
    ("m a=99999999999999999999i", "out of the signed 64-bit range"),
    ("m a=-1u", "is not a float, integer (i), unsigned (u)"),
    ("m,t a=1", "line 1: tag 't' is not key=value"),
    (",t=1 a=1", "the measurement is empty"),
    (f"m a=1 {now_ms() * 10**6}\nm a=2 {now_ms() * 10**6}", "line 2 repeats sensor 'm.a'"),
    ("m\u200b a=1", "control, format or separator"),
    ("m a=NaN", "is not a float"),
    ("# only a comment", "the body holds no line with a field"),
])
def test_malformed_lines_name_the_line_and_what_is_wrong(text, message):
    with pytest.raises(BadInput) as refused:
        parse(text)
    assert refused.value.status == 400 and message in refused.value.message


def test_timestamps_outside_the_window_are_refused():
    window = accepted_window(now_ms(), 86400, 300)
    with pytest.raises(BadInput, match="line 1: timestamp 1000 ms .* is outside the accepted window"):
        line_protocol.parse(b"m a=1 1", "dev", precision="s", now_ms=now_ms(), window=window, limit=10)


def test_a_body_of_a_thousand_lines_gives_a_thousand_readings():
    """The benchmark's shape (its figures: `python -m tools.bench.ingest`)."""
    start = now_ms()
    body = "\n".join(f"cpu,host=pi usage_idle={i}.5 {(start - i) * 1_000_000}" for i in range(1000)).encode()
    rows = line_protocol.parse(body, "dev", precision="ns", now_ms=now_ms(), window=everything(), limit=10_000)
    assert len(rows) == 1000


# -- the real client libraries ---------------------------------------------------------------------

def in_thread(function):
    """Run a blocking client call beside the in-process server's event loop."""
    return asyncio.to_thread(function)


def test_influxdb_client_v2_writes_unchanged():
    async def go():
        async with running() as (url, double, _):
            def write():
                with InfluxDBClient(url=url, token=token("telegraf-1"), org="factory") as client:
                    api = client.write_api(write_options=SYNCHRONOUS)
                    at = time.time_ns()
                    api.write(bucket="machines", record=[
                        Point("spindle").tag("line", "3").tag("unit", "rpm").field("speed", 1200.5).time(at, WritePrecision.NS),
                        Point("spindle").tag("line", "3").field("running", True).time(at, WritePrecision.NS),
                        f"counter,line=3 parts=17i {at}",
                    ])
            await in_thread(write)
            rows = {r[2]: r for r in double.state.readings.values()}
            speed = "spindle.speed,line=3,unit=rpm"  # the unit tag is part of the series, as in InfluxDB
            assert set(rows) == {speed, "spindle.running,line=3", "counter.parts,line=3"}
            assert rows[speed][1] == "telegraf-1" and rows[speed][3] == {"num": 1200.5}
            assert rows[speed][4] == "rpm" and rows["spindle.running,line=3"][3] == {"bool": True}
            assert rows["counter.parts,line=3"][5] == {"line": "3"}
    run(go())


def test_influxdb_client_v2_retries_a_503_until_the_database_is_back():
    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, master=False)
        async with running(state, retry_after_s=1) as (url, double, _):
            threading.Timer(1.0, lambda: setattr(state, "master", True)).start()

            def write():
                # the library's retry strategy; POST must be allowed for synchronous writes (urllib3's default leaves it out)
                retries = WritesRetry(total=5, retry_interval=1, max_retry_delay=3, exponential_base=1, allowed_methods=["POST"])
                with InfluxDBClient(url=url, token=token("pi-9"), org="o", retries=retries) as client:
                    client.write_api(write_options=SYNCHRONOUS).write(bucket="b", record=f"m v=1 {time.time_ns()}")
            await in_thread(write)
            assert [r[2] for r in double.state.readings.values()] == ["m.v"]
    run(go())


def test_errors_come_back_as_influxdb_answers_them():
    async def go():
        async with running() as (url, _, _):
            status, body, _ = await post(url, "/api/v2/write?bucket=b&org=o", data=b"m a=1.2.3",
                                         headers={"Authorization": f"Token {token()}"})
            assert status == 400 and body["code"] == "invalid" and "line 1: field 'a'" in body["message"]
            status, body, _ = await post(url, "/api/v2/write", data=b"m a=1", headers={"Authorization": "Token forged"})
            assert (status, body["code"]) == (401, "unauthorized")
            status, body, _ = await post(url, "/write?db=x&precision=q", data=b"m a=1", headers={"Authorization": f"Token {token()}"})
            assert status == 400 and "precision 'q'" in body["error"]
    run(go())


def test_a_wrong_line_is_left_out_and_named_and_the_others_are_stored():
    """InfluxDB's partial write: Telegraf drops a whole batch answered 400, so refusing it all would
    lose every good point of it."""
    async def go():
        async with running() as (url, double, _):
            ts = now_ms()
            body = f"m a=1 {ts}\nm b=1.2.3 {ts}\nm c=3 {ts}\nm d=4 1".encode()
            for path, key in (("/api/v2/write?precision=ms", "message"), ("/write?precision=ms", "error")):
                double.state.readings.clear()
                status, answer, _ = await post(url, path, data=body, headers={"Authorization": f"Token {token()}"})
                assert status == 400 and answer[key].startswith("partial write: 2 readings stored; left out: line 2: field 'b'")
                assert "line 4: timestamp 1 ms" in answer[key]
                assert sorted(r[2] for r in double.state.readings.values()) == ["m.a", "m.c"]
            double.state.readings.clear()
            status, answer, _ = await post(url, "/api/v2/write", data=b"m b=x", headers={"Authorization": f"Token {token()}"})
            assert status == 400 and answer["message"].startswith("nothing was written: line 1: field 'b'")
            assert not double.state.readings
    run(go())


def test_a_point_written_twice_in_one_request_keeps_its_last_value():
    """As InfluxDB does (one series, one timestamp: the last write wins); a retry of the whole body
    later stores nothing new (the first stored value stays: a retry must never change data)."""
    async def go():
        async with running() as (url, double, _):
            ts = now_ms()
            body = f"m,host=a v=1 {ts}\nm,host=b v=5 {ts}\nm,host=a v=2 {ts}".encode()
            status, _, _ = await post(url, "/api/v2/write?precision=ms", data=body, headers={"Authorization": f"Token {token()}"})
            assert status == 204
            values = {r[2]: r[3]["num"] for r in double.state.readings.values()}
            assert values == {"m.v,host=a": 2.0, "m.v,host=b": 5.0}
    run(go())


def test_influxdb_v1_client_writes_unchanged_and_creates_its_database():
    async def go():
        async with running() as (url, double, _):
            host, port = url.removeprefix("http://").split(":")

            def write():
                client = V1Client(host=host, port=int(port), username="pi-7", password=token("pi-7"), database="telegraf")
                client.create_database("telegraf")  # what Telegraf's v1 output does at start
                assert client.ping()
                assert client.write_points([{"measurement": "temperature", "tags": {"room": "hall"},
                                             "fields": {"value": 21.5}, "time": int(time.time() * 1000)}],
                                           time_precision="ms")
                client.close()
            await in_thread(write)
            (row,) = double.state.readings.values()
            assert (row[1], row[2], row[3], row[5]) == ("pi-7", "temperature.value,room=hall", {"num": 21.5}, {"room": "hall"})
    run(go())


def test_the_v1_token_may_come_as_the_p_query_parameter_or_basic_auth():
    import base64
    async def go():
        async with running() as (url, double, _):
            ts = now_ms()
            assert (await post(url, f"/write?db=x&precision=ms&u=any&p={token('a')}", data=f"m v=1 {ts}".encode()))[0] == 204
            basic = "Basic " + base64.b64encode(f"any:{token('b')}".encode()).decode()
            assert (await post(url, "/write?precision=ms", data=f"m v=1 {ts}".encode(), headers={"Authorization": basic}))[0] == 204
            assert {r[1] for r in double.state.readings.values()} == {"a", "b"}
            status, _, headers = await post(url, "/ping", method="HEAD")
            assert status == 204 and headers["X-Influxdb-Version"]
    run(go())


# -- the column-wise fast path gives what the line-by-line parser gives ---------------------------

_NOW = now_ms()
_piece = st.sampled_from(["m", "cpu", "a", "b", "unit", "x_y", "1", "-", ".", "e", "i", "u", "t", "true", "#", "_",
                          "\t", "\\", '"', "\u00e9", "\u200b", "=", ",", " ", "1.5", "-2e3", "inf", "nan", "1_0", "7i"])
_text = st.lists(_piece, max_size=6).map("".join)
_stamp = st.one_of(st.integers(_NOW - 5_000, _NOW + 5_000).map(str), st.integers(_NOW // 1000 - 5, _NOW // 1000 + 5).map(str),
                   st.integers(_NOW - 5_000, _NOW + 5_000).map(lambda ms: str(ms * 1_000_000 + 123)),
                   st.integers(0, 10**20).map(str), _text)
_field = st.one_of(st.tuples(st.sampled_from(["v", "a", "b", "x_y", "v"]),
                             st.sampled_from(["1.5", "-2e3", "20", ".5", "3.", "1_0", "7i", "t", "inf", "1e999", "-0", "01",
                                              "1E+5", "5e-324", "18446744073709551616", "[1]", "true", "null"]))
                   .map("=".join), _text)
_series = st.one_of(st.tuples(st.sampled_from(["m", "cpu", "m2"]),
                              st.lists(st.sampled_from([",unit=kN", ",host=a", ",host=b", ",cpu=0"]), max_size=2).map("".join))
                    .map("".join), _text)
_line = st.one_of(st.tuples(_series, st.lists(_field, min_size=1, max_size=3).map(",".join),
                            st.one_of(st.none(), _stamp))
                  .map(lambda p: f"{p[0]} {p[1]}" + ("" if p[2] is None else f" {p[2]}")), _text)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(_line, min_size=1, max_size=6), newline=st.booleans(), limit=st.sampled_from([3, 1000]),
       precision=st.sampled_from(["ms", "s", "ns"]))
def test_the_fast_path_takes_only_what_the_line_parser_takes_and_gives_the_same_rows(lines, newline, limit, precision):
    text = "\n".join(lines) + ("\n" if newline else "")
    window = accepted_window(_NOW, 86400, 300)
    fast = line_protocol._plain_body(text, "dev", precision, _NOW, window, limit)
    try:
        rows, line_of, _ = line_protocol._parse(text, "dev", precision=precision, now_ms=_NOW, window=window, limit=limit)
    except BadInput:
        assert fast is None, f"the fast path took what the parser refuses: {text!r}"
        return
    if fast is not None:
        fast_rows, fast_line_of = fast
        # As the database gets them: 20 and 20.0, or 0.0 and -0.0, are equal in Python, not in JSON.
        assert orjson.dumps([list(r) for r in fast_rows]) == orjson.dumps(rows)
        assert [fast_line_of(i) for i in range(len(rows))] == [line_of(i) for i in range(len(rows))]


_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False).flatmap(
    lambda f: st.sampled_from([repr(f), f"{f:.17g}", f"{f:e}", f"{f:f}", f"{f:.3E}"])),
    st.integers(-2**70, 2**70).map(str)).filter(lambda text: math.isfinite(float(text)))  # 1.798E+308 is not


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_number, min_size=5, max_size=5))
def test_the_fast_path_reads_every_number_as_the_line_parser_does(values):
    text = "\n".join(f"m v={value} {_NOW + i}" for i, value in enumerate(values))
    window = accepted_window(_NOW, 86400, 300)
    fast = line_protocol._plain_body(text, "dev", "ms", _NOW, window, 10)
    rows, _, _ = line_protocol._parse(text, "dev", precision="ms", now_ms=_NOW, window=window, limit=10)
    assert fast is not None, f"a JSON number went the long way: {values}"
    assert orjson.dumps([list(r) for r in fast[0]]) == orjson.dumps(rows)
    assert [row[3]["num"] for row in rows] == [float(v) for v in values]


@pytest.mark.parametrize("value", ["1_0", "\t1", "1\t", "1\x0b", "inf", "-Infinity", "nan", "1e999", "0x10", "\u0661", "1e", ".", "7i",
                                   "3u", "t", "1.5.2"])
def test_values_float_takes_and_line_protocol_does_not_are_left_to_the_line_parser(value):
    text = "\n".join([f"m v={value} {_NOW}"] + [f"m w=1 {_NOW + i}" for i in range(1, 5)])  # enough lines for the fast path
    window = accepted_window(_NOW, 86400, 300)
    assert line_protocol._plain_body(text, "dev", "ms", _NOW, window, 10) is None
    with pytest.raises(BadInput) if value not in ("7i", "3u", "t") else contextlib.nullcontext():
        line_protocol._parse(text, "dev", precision="ms", now_ms=_NOW, window=window, limit=10)


def test_a_partial_write_counts_only_the_fields_it_stores_against_the_limit():
    """Five lines of two fields, one line wrong, at most eight fields: the eight good fields are
    stored and the wrong line named. The column-wise pass refused such a body whole (413), counting
    the fields of the line it would leave out (found by the equivalence test above)."""
    window = accepted_window(_NOW, 86400, 300)
    text = "\n".join([f"m v={i},w={i} {_NOW + i}" for i in range(4)] + [f"\u200b v=9,w=9 {_NOW + 9}"])
    points = line_protocol.parse_points(text.encode(), "dev", precision="ms", now_ms=_NOW, window=window, limit=8)
    assert len(points.rows) == 8 and points.rejected_count == 1 and points.rejected[0].startswith("line 5:")


def test_lines_whose_spaces_only_add_up_are_left_to_the_line_parser():
    """Two spaces per line on average is not two on every line: a line of one space beside a line
    of three would line up as two good lines if the fast path counted the body's spaces alone."""
    window = accepted_window(_NOW, 86400, 300)
    text = "\n".join([f"m v=1 {_NOW}", f"m v=2 {_NOW}", f"m v=3 {_NOW}", "m v=4", f"{_NOW} v=5 w=6 {_NOW}"])
    assert text.count(" ") == 2 * 5
    assert line_protocol._plain_body(text, "dev", "ms", _NOW, window, 100) is None
    _, _, rejected = line_protocol._parse(text, "dev", precision="ms", now_ms=_NOW, window=window, limit=100, partial=True)
    assert len(rejected) == 1 and rejected[0].startswith("line 5:")


def test_fields_read_as_one_key_throughout_only_when_each_begins_with_it():
    """The fast path reads `key=` once when every field begins with the first field's key: a key
    that merely starts the same (`v` and `vv`) is another sensor, and a value holding another `=`
    is left to the line parser, which names the line."""
    window = accepted_window(_NOW, 86400, 300)
    mixed = "\n".join(f"m {'v' if i % 2 else 'vv'}={i} {_NOW + i}" for i in range(6))
    fast_rows, _ = line_protocol._plain_body(mixed, "dev", "ms", _NOW, window, 100)
    rows, _, _ = line_protocol._parse(mixed, "dev", precision="ms", now_ms=_NOW, window=window, limit=100)
    assert [r[2] for r in fast_rows] == [r[2] for r in rows] == ["m.vv", "m.v"] * 3
    doubled = "\n".join([f"m v={i} {_NOW + i}" for i in range(5)] + [f"m v=5=6 {_NOW + 5}"])
    assert line_protocol._plain_body(doubled, "dev", "ms", _NOW, window, 100) is None
    with pytest.raises(BadInput, match="^line 6: "):
        line_protocol._parse(doubled, "dev", precision="ms", now_ms=_NOW, window=window, limit=100)


def test_the_benchmark_s_bodies_take_the_fast_path():
    from tools.bench.ingest import line_bodies
    now = now_ms()  # the bodies are made now: CI collects (and sets _NOW) minutes before this runs
    window = accepted_window(now, 86400, 300)
    assert line_protocol._plain_body(line_bodies(1000, count=1)[0].decode(), "d", "ms", now, window, 10_000) is not None
    telegraf = "".join(f"cpu,cpu=cpu{i},host=a usage_idle=99.5,usage_user=0.25 1556813561098000000\n" for i in range(8))
    assert line_protocol._plain_body(telegraf, "d", "ns", 1556813561098, everything(), 100) is not None
