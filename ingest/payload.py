"""Request bodies to rows. Every problem is a `BadInput` that says what was wrong and where.

A row is the parameter list of the INSERT in `writer.INSERT_COLUMNS`:
[ts (epoch ms), agent, sensor, reading {num|txt|bool: value}, unit, meta].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import repeat
from math import isfinite

import orjson

MAX_SENSOR = 128
MAX_UNIT = 32
MAX_TEXT = 4096
# `meta` becomes part of every row: bounded so that one request cannot exhaust the client's
# serialiser (about 250 levels) or add thousands of columns to the table.
MAX_META_DEPTH = 8
MAX_META_KEYS = 100  # keys at all levels together
MAX_META_BYTES = 8192  # as JSON
MAX_META_KEY = 64

# Names (sensor, unit, meta keys) are printable text: no control, format (zero-width, bidi
# overrides), private-use or line/paragraph separator characters (Unicode categories Cc, Cf, Co,
# Zl, Zp), and not whitespace only. (Surrogates, Cs, never get this far: the JSON parser refuses
# them, and ECMA patterns cannot name them.) The same pattern is in openapi.json.
NAME_EXCLUDED = ("\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891"
                 "\\u08e2\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ue000-\\uf8ff"
                 "\\ufeff\\ufff9-\\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
                 "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000f0000-\U0010ffff")
# White space, written out: the characters Python's `\\s` matches that are not excluded above.
SPACES = "\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"
NAME_PATTERN = f"^[^{NAME_EXCLUDED}]*[^{NAME_EXCLUDED}{SPACES}][^{NAME_EXCLUDED}]*$"
_NAME = re.compile(NAME_PATTERN)
# A meta key also becomes a column name in CrateDB: no leading `_` or white space, no . [ ] ' ".
META_KEY_PATTERN = f"^[^{NAME_EXCLUDED}{SPACES}_.\\[\\]'\"][^{NAME_EXCLUDED}.\\[\\]'\"]*$"
_META_KEY = re.compile(META_KEY_PATTERN)
_good_names: set[str] = set()  # names seen valid: sensors repeat, the check runs once per name

# RFC 3339 date-time, exactly: ASCII digits, `T`/`t`, `Z`/`z` or a numeric offset with a colon.
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
                      r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")


class BadInput(Exception):
    def __init__(self, status: int, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.index = status, message, index


def decode_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadInput(400, f"body is not valid JSON ({e}); NaN and Infinity are not JSON") from None


@dataclass(frozen=True)
class Window:
    """The accepted timestamps, in epoch ms: `low` to `high` inclusive, `text` says why."""
    low: int
    high: int
    text: str


def accepted_window(now_ms: int, past_s: float, future_s: float, retention_months: int = 0) -> Window:
    """`past_s` back to `future_s` ahead of now; with retention, not before the oldest month that
    retention keeps (a reading older than that would be acknowledged, then dropped within a day)."""
    low, text = now_ms - int(past_s * 1000), f"{int(past_s)} s before to {int(future_s)} s after the server's clock"
    if retention_months > 0:
        now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
        month = now.year * 12 + now.month - 1 - retention_months
        kept_from = datetime(month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
        if int(kept_from.timestamp() * 1000) > low:
            low = int(kept_from.timestamp() * 1000)
            text = (f"from {kept_from:%Y-%m-%d}, the oldest month that retention ({retention_months} months) keeps, "
                    f"to {int(future_s)} s after the server's clock")
    return Window(low, now_ms + int(future_s * 1000), text)


def _rfc3339_ms(value: str, where: str, index: int) -> int:
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise BadInput(422, f"{where}: ts {value[:40]!r} is not an RFC 3339 timestamp "
                            "(e.g. 2026-12-01T19:00:00.123Z or 2026-12-01T20:00:00+01:00)", index)
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10)
    if second == 60:
        raise BadInput(422, f"{where}: ts {value[:40]!r} is a leap second; send :59.999 instead", index)
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) if sign else timedelta(0)
        if sign and (int(off_h) > 23 or int(off_m) > 59):
            raise ValueError("the offset is out of range")
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as e:
        raise BadInput(422, f"{where}: ts {value[:40]!r} is not a valid date and time ({e})", index) from None
    if sign == "-":
        offset = -offset
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return (int(moment.timestamp()) - int(offset.total_seconds())) * 1000 + millis


def _timestamp_ms(value, where: str, index: int, window: Window) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadInput(422, f"{where}: ts must be epoch milliseconds or an RFC 3339 text", index)
    if isinstance(value, str):
        ms = _rfc3339_ms(value, where, index)
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise BadInput(422, f"{where}: ts {value!r} is not a whole number of milliseconds", index)
        ms = int(value)
    else:
        ms = value
    if not window.low <= ms <= window.high:
        raise BadInput(422, f"{where}: ts {ms} is outside the accepted window ({window.text})", index)
    return ms


def _reading(value, where: str, index: int) -> dict:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # orjson already refuses numbers beyond a double
            raise BadInput(422, f"{where}: value is not a finite number", index)
        return {"num": float(value)}
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadInput(422, f"{where}: text value longer than {MAX_TEXT} characters", index)
        return {"txt": value}
    raise BadInput(422, f"{where}: value must be a number, text or boolean", index)


def printable(name: str) -> bool:
    if name in _good_names:
        return True
    if _NAME.match(name) is None:
        return False
    if len(_good_names) < 100_000:
        _good_names.add(name)
    return True


def check_name(value, what: str, where: str, index: int | None, limit: int = MAX_SENSOR) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadInput(422, f"{where}: {what} must be a non-empty text of at most {limit} characters", index)
    if not printable(value):
        raise BadInput(422, f"{where}: {what} {value[:40]!r} holds a control, format or separator character, "
                            "or only white space", index)
    return value


def _unit(value, where: str, index: int) -> str | None:
    if value is None:
        return None
    return check_name(value, "unit", where, index, MAX_UNIT)


def check_meta(meta, where: str = "meta", index: int | None = None) -> dict | None:
    """`meta` as given, once it is known to be a small object of printable keys."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise BadInput(422, f"{where} must be an object", index)
    keys = 0
    stack = [(meta, where, 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_META_DEPTH:
            raise BadInput(422, f"{path}: nested deeper than {MAX_META_DEPTH} levels", index)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(node, dict):
                keys += 1
                if keys > MAX_META_KEYS:
                    raise BadInput(422, f"{where} has more than {MAX_META_KEYS} keys (all levels together)", index)
                check_name(key, "key", path, index, MAX_META_KEY)
                if _META_KEY.match(key) is None:
                    raise BadInput(422, f"{path}: key {key[:40]!r} may not start with '_' or white space, or hold . [ ] ' \"",
                                   index)
            if isinstance(value, (dict, list)):
                stack.append((value, f"{path}.{key}" if isinstance(node, dict) else f"{path}[{key}]", depth + 1))
    if len(orjson.dumps(meta)) > MAX_META_BYTES:
        raise BadInput(422, f"{where} is larger than {MAX_META_BYTES} bytes as JSON", index)
    return meta


def _check_count(items, limit: int, what: str) -> None:
    if not isinstance(items, list):
        raise BadInput(422, f"{what} must be a list")
    if not items:
        raise BadInput(422, f"{what} is empty: send at least one reading")
    if len(items) > limit:
        raise BadInput(413, f"{what} holds {len(items)} readings; at most {limit} per request")


def check_unique(rows: list[list], where) -> None:
    """Two readings with one key (sensor, ts) in one request: the database would keep the first
    and skip the second as a retry, so the answer would claim more than was stored. Refused.
    (Distinct timestamps, the common case, settle it without building the keys.)"""
    if len({row[0] for row in rows}) == len(rows):
        return
    keys = [(row[2], row[0]) for row in rows]
    if len(set(keys)) == len(keys):
        return
    first: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            raise BadInput(422, f"{where(i)} repeats sensor {key[0][:40]!r} at ts {key[1]} of {where(first[key])}: "
                                "a reading's key is (sensor, ts in milliseconds); send one value per key", i)
        first[key] = i


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


def parse_batch(doc, agent: str, *, window: Window, limit: int) -> list:
    """`POST /v1/readings`: {"readings": [{"ts", "sensor", "value", "unit"?}], "meta"?: {}}.

    Validation is most of the service's CPU per reading: the common batch is checked column by
    column (`_plain_rows`), anything else reading by reading (`_checked_rows`), which accepts or
    explains it."""
    if not isinstance(doc, dict):
        raise BadInput(422, "body must be a JSON object with a `readings` list")
    unknown = set(doc) - {"readings", "meta"}
    if unknown:
        raise BadInput(422, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: readings, meta")
    meta = check_meta(doc.get("meta"))
    readings = doc.get("readings")
    _check_count(readings, limit, "readings")
    rows = _plain_rows(readings, agent, meta, window)
    if rows is None:
        rows = _checked_rows(readings, agent, meta, window)
    check_unique(rows, lambda i: f"readings[{i}]")
    return rows


def _plain_rows(readings: list, agent: str, meta: dict | None, window: Window) -> list[tuple] | None:
    """The common batch, column by column: every reading an object of known fields, its ts an
    integer inside the window, its sensor and unit (or none) valid names, its value a number. A few
    passes in C over each field instead of a Python loop per reading (batch 1000 in one process:
    0.68 -> 0.44 ms). None for anything else, which `_checked_rows` takes or explains; for what this
    takes it gives the same rows (as tuples: the writer only reads them)."""
    if set(map(type, readings)) != {dict}:
        return None
    # The keys all readings use, collected in C (a tuple of keys per reading took 40 % of this
    # function); a missing value is None below, where a number must be.
    if not READING_FIELDS.issuperset(set().union(*readings)):
        return None
    field = dict.get
    stamps = list(map(field, readings, repeat("ts")))
    if set(map(type, stamps)) != {int} or min(stamps) < window.low or max(stamps) > window.high:
        return None
    values = list(map(field, readings, repeat("value")))
    kinds = set(map(type, values))
    if kinds != {float}:
        if not kinds <= {float, int}:  # (a bool is neither)
            return None
        values = list(map(float, values))
    if not all(map(isfinite, values)):
        return None
    sensors = list(map(field, readings, repeat("sensor")))
    units = list(map(field, readings, repeat("unit")))
    if set(map(type, sensors)) != {str} or not set(map(type, units)) <= {str, type(None)}:
        return None
    if not all(0 < len(name) <= MAX_SENSOR and printable(name) for name in set(sensors)):
        return None
    if not all(0 < len(name) <= MAX_UNIT and printable(name) for name in set(units) - {None}):
        return None
    return list(zip(stamps, repeat(agent), sensors, [{"num": value} for value in values], units, repeat(meta)))


def _checked_rows(readings: list, agent: str, meta: dict | None, window: Window) -> list[list]:
    """Reading by reading: the common shapes (integer ts, known names, finite float) inline, and
    anything else handed to the checking functions, which accept it or raise BadInput."""
    low, high, good = window.low, window.high, _good_names
    rows = []
    append = rows.append
    for i, r in enumerate(readings):
        if type(r) is not dict or not r.keys() <= READING_FIELDS or "value" not in r:
            _check_reading(r, i)
        ts, sensor, value, unit = r.get("ts"), r.get("sensor"), r["value"], r.get("unit")
        if type(ts) is not int or not low <= ts <= high:
            ts = _timestamp_ms(ts, f"readings[{i}]", i, window)
        # Printable ASCII is what the name rule allows, checked in C; anything else by the rule.
        if type(sensor) is not str or not 0 < len(sensor) <= MAX_SENSOR or not (
                sensor.isascii() and sensor.isprintable() and not sensor.isspace() or sensor in good):
            check_name(sensor, "sensor", f"readings[{i}]", i)
        if type(value) is float and isfinite(value):
            reading = {"num": value}
        else:
            reading = _reading(value, f"readings[{i}]", i)
        if unit is not None and (type(unit) is not str or not 0 < len(unit) <= MAX_UNIT or not (
                unit.isascii() and unit.isprintable() and not unit.isspace() or unit in good)):
            _unit(unit, f"readings[{i}]", i)
        append([ts, agent, sensor, reading, unit, meta])
    return rows


def parse_eden(doc, agent: str, *, window: Window, limit: int) -> list[list]:
    """The original Eden payload: a list of messages
    {"meta": {"name"}, "data": [{"sensor", "value", "unit"} | {"Simple": {"name", "value", "unit"}}],
     "timestamp": <epoch ms>}; the index in errors counts readings across messages."""
    if not isinstance(doc, list):
        raise BadInput(422, "an Eden body must be a JSON list of messages")
    rows: list[list] = []
    places: list[str] = []
    for m, message in enumerate(doc):
        where = f"[{m}]"
        if not isinstance(message, dict) or not isinstance(message.get("data"), list):
            raise BadInput(422, f"{where}: a message needs a `data` list", len(rows))
        if not message["data"]:
            raise BadInput(422, f"{where}.data is empty: send at least one reading", len(rows))
        meta = check_meta(message.get("meta"), f"{where}.meta", len(rows))
        ts = _timestamp_ms(message.get("timestamp"), f"{where}.timestamp", len(rows), window)
        for d, item in enumerate(message["data"]):
            index, item_where = len(rows), f"{where}.data[{d}]"
            if isinstance(item, dict) and isinstance(item.get("Simple"), dict):
                item, sensor_key = item["Simple"], "name"
            else:
                sensor_key = "sensor"
            if not isinstance(item, dict) or "value" not in item:
                raise BadInput(422, f"{item_where}: needs `{sensor_key}` and `value`", index)
            rows.append([ts, agent, check_name(item.get(sensor_key), sensor_key, item_where, index),
                         _reading(item["value"], item_where, index), _unit(item.get("unit"), item_where, index), meta])
            places.append(item_where)
            if len(rows) > limit:
                raise BadInput(413, f"the body holds more than {limit} readings; at most {limit} per request")
    if not rows:
        raise BadInput(422, "the body holds no readings")
    check_unique(rows, places.__getitem__)
    return rows
