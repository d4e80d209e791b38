"""Request bodies to rows. Every problem is a `BadInput` that says what was wrong and where.

A row is the parameter list of the INSERT in `writer.INSERT_COLUMNS`:
[ts (epoch ms), agent, sensor, reading {num|txt|bool: value}, unit, meta].
"""

from __future__ import annotations

import math
from math import isfinite
from datetime import datetime

import orjson

MAX_SENSOR = 128
MAX_TEXT = 4096


class BadInput(Exception):
    def __init__(self, status: int, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.index = status, message, index


def decode_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadInput(400, f"body is not valid JSON ({e}); NaN and Infinity are not JSON") from None


def _timestamp_ms(value, where: str, index: int, now_ms: int, past_ms: int, future_ms: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadInput(422, f"{where}: ts must be epoch milliseconds or an RFC 3339 text", index)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadInput(422, f"{where}: ts {value[:40]!r} is not an RFC 3339 timestamp", index) from None
        if parsed.tzinfo is None:
            raise BadInput(422, f"{where}: ts {value[:40]!r} has no time zone", index)
        ms = int(parsed.timestamp() * 1000)
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput(422, f"{where}: ts is not a finite number", index)
        ms = int(value)
    if ms < now_ms - past_ms or ms > now_ms + future_ms:
        raise BadInput(422, f"{where}: ts {ms} is outside the accepted window "
                            f"({past_ms // 1000} s before to {future_ms // 1000} s after the server's clock)", index)
    return ms


def _reading(value, where: str, index: int) -> dict:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > 1.7e308:
            raise BadInput(422, f"{where}: value is not a finite number", index)
        return {"num": float(value)}
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadInput(422, f"{where}: text value longer than {MAX_TEXT} characters", index)
        return {"txt": value}
    raise BadInput(422, f"{where}: value must be a number, text or boolean", index)


def _name(value, what: str, where: str, index: int, limit: int = MAX_SENSOR) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadInput(422, f"{where}: {what} must be a non-empty text of at most {limit} characters", index)
    return value


def _unit(value, where: str, index: int) -> str | None:
    if value is None:
        return None
    return _name(value, "unit", where, index, 32)


def _check_count(items, limit: int, what: str) -> None:
    if not isinstance(items, list):
        raise BadInput(422, f"{what} must be a list")
    if not items:
        raise BadInput(422, f"{what} is empty: send at least one reading")
    if len(items) > limit:
        raise BadInput(413, f"{what} holds {len(items)} readings; at most {limit} per request")


READING_FIELDS = frozenset({"ts", "sensor", "value", "unit"})


def _check_reading(r, i: int) -> None:
    where = f"readings[{i}]"
    if not isinstance(r, dict):
        raise BadInput(422, f"{where} must be an object", i)
    if not r.keys() <= READING_FIELDS:
        extra = sorted(map(str, set(r) - READING_FIELDS))
        raise BadInput(422, f"{where}: unknown field(s) {', '.join(extra)}; allowed: ts, sensor, value, unit", i)
    if "value" not in r:
        raise BadInput(422, f"{where}: value is missing", i)


def parse_batch(doc, agent: str, *, now_ms: int, past_ms: int, future_ms: int, limit: int) -> list[list]:
    """`POST /v1/readings`: {"readings": [{"ts", "sensor", "value", "unit"?}], "meta"?: {}}.

    The loop takes the common shapes (integer ts, short names, finite float) inline and hands
    anything else to the checking functions, which accept or explain it: validation is most of
    the service's CPU per reading."""
    if not isinstance(doc, dict):
        raise BadInput(422, "body must be a JSON object with a `readings` list")
    unknown = set(doc) - {"readings", "meta"}
    if unknown:
        raise BadInput(422, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: readings, meta")
    meta = doc.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise BadInput(422, "meta must be an object")
    readings = doc.get("readings")
    _check_count(readings, limit, "readings")
    low, high = now_ms - past_ms, now_ms + future_ms
    rows = []
    append = rows.append
    for i, r in enumerate(readings):
        if type(r) is not dict or not r.keys() <= READING_FIELDS or "value" not in r:
            _check_reading(r, i)
        ts, sensor, value, unit = r.get("ts"), r.get("sensor"), r["value"], r.get("unit")
        if type(ts) is not int or not low <= ts <= high:
            ts = _timestamp_ms(ts, f"readings[{i}]", i, now_ms, past_ms, future_ms)
        if type(sensor) is not str or not 0 < len(sensor) <= MAX_SENSOR:
            _name(sensor, "sensor", f"readings[{i}]", i)
        if type(value) is float and isfinite(value):
            reading = {"num": value}
        else:
            reading = _reading(value, f"readings[{i}]", i)
        if unit is not None and (type(unit) is not str or not 0 < len(unit) <= 32):
            _unit(unit, f"readings[{i}]", i)
        append([ts, agent, sensor, reading, unit, meta])
    return rows


def parse_eden(doc, agent: str, *, now_ms: int, past_ms: int, future_ms: int, limit: int) -> list[list]:
    """The original Eden payload: a list of messages
    {"meta": {"name"}, "data": [{"sensor", "value", "unit"} | {"Simple": {"name", "value", "unit"}}],
     "timestamp": <epoch ms>}; the index in errors counts readings across messages."""
    if not isinstance(doc, list):
        raise BadInput(422, "an Eden body must be a JSON list of messages")
    rows: list[list] = []
    for m, message in enumerate(doc):
        where = f"[{m}]"
        if not isinstance(message, dict) or not isinstance(message.get("data"), list):
            raise BadInput(422, f"{where}: a message needs a `data` list", len(rows))
        meta = message.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise BadInput(422, f"{where}.meta must be an object", len(rows))
        ts = _timestamp_ms(message.get("timestamp"), f"{where}.timestamp", len(rows), now_ms, past_ms, future_ms)
        for d, item in enumerate(message["data"]):
            index, item_where = len(rows), f"{where}.data[{d}]"
            if isinstance(item, dict) and isinstance(item.get("Simple"), dict):
                item, sensor_key = item["Simple"], "name"
            else:
                sensor_key = "sensor"
            if not isinstance(item, dict) or "value" not in item:
                raise BadInput(422, f"{item_where}: needs `{sensor_key}` and `value`", index)
            rows.append([ts, agent, _name(item.get(sensor_key), sensor_key, item_where, index),
                         _reading(item["value"], item_where, index), _unit(item.get("unit"), item_where, index), meta])
            if len(rows) > limit:
                raise BadInput(413, f"the body holds more than {limit} readings; at most {limit} per request")
    if not rows:
        raise BadInput(422, "the body holds no readings")
    return rows
