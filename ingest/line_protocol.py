"""InfluxDB line protocol to rows, for Telegraf and the InfluxDB client libraries.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

One reading per field: sensor `<measurement>.<field>`, followed by the line's other tags as
`,key=value` in key order when it has any (like InfluxDB's series key: two series of one
measurement, e.g. per CPU, must not share a reading's key), cut to a hash of the tags when that
gets longer than a sensor name may be; the value by its type (float, integer `i`, unsigned `u`,
string, boolean); `unit` from a tag named `unit`; the other tags also in `meta`; the device
comes from the credential, never from the body; timestamps by `precision`, the server's time when
absent. Escapes as the specification has them: `\\,` and `\\ ` in measurements, also `\\=` in tag
keys, tag values and field keys; `\\"` and `\\\\` in string fields. `#` comments and blank lines are
skipped. Every problem is a `BadInput` naming the line.
"""

from __future__ import annotations

import hashlib
import math
import re

from ingest.payload import MAX_SENSOR, MAX_TEXT, MAX_UNIT, BadInput, Window, check_meta, check_name, check_unique, printable

# Timestamp precision (v2 names and v1 names) -> divisor to milliseconds, as a fraction a/b.
PRECISIONS = {"ns": (1, 1_000_000), "n": (1, 1_000_000), "us": (1, 1_000), "u": (1, 1_000), "ms": (1, 1), "s": (1_000, 1),
              "m": (60_000, 1), "h": (3_600_000, 1)}
_INTEGER = re.compile(r"-?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE, _FALSE = frozenset({"t", "T", "true", "True", "TRUE"}), frozenset({"f", "F", "false", "False", "FALSE"})
_TIMESTAMP = re.compile(r"-?[0-9]+")


def _sections(text: str, line: int) -> list[str]:
    """measurement-and-tags, fields, timestamp: split at the unescaped spaces; in the fields, a
    space inside a quoted string value is part of it (quotes mean nothing before the fields)."""
    first = 0
    while True:
        first = text.find(" ", first)
        if first < 0:
            return [text]
        if not _escaped(text, first):
            break
        first += 1
    return [text[:first], *_split(text[first + 1:], " ", line, "the fields")]


def _escaped(text: str, at: int) -> bool:
    backslashes = 0
    while at - backslashes - 1 >= 0 and text[at - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _split(text: str, separators: str, line: int, what: str, quotes: bool = True) -> list[str]:
    """Split at unescaped separators (a backslash escapes the next character), outside quotes."""
    parts, current, i, quoted = [], [], 0, False
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if char == '"' and quotes:
            quoted = not quoted
        elif char in separators and not quoted:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    if quoted:
        raise BadInput(400, f"line {line}: {what}: a string field has no closing quote", line - 1)
    parts.append("".join(current))
    return parts


def _unescape(text: str, escaped: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escaped:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _key_value(pair: str, line: int, what: str, quotes: bool = True) -> tuple[str, str]:
    parts = _split(pair, "=", line, what, quotes)
    if len(parts) != 2 or not parts[0]:
        raise BadInput(400, f"line {line}: {what} {pair[:40]!r} is not key=value", line - 1)
    return parts[0], parts[1]


def _field_value(raw: str, line: int, key: str):
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise BadInput(400, f"line {line}: field {key!r}: a string needs closing quotes", line - 1)
        text = _unescape(raw[1:-1], '"\\')
        if len(text) > MAX_TEXT:
            raise BadInput(400, f"line {line}: field {key!r}: text longer than {MAX_TEXT} characters", line - 1)
        return {"txt": text}
    if raw in _TRUE:
        return {"bool": True}
    if raw in _FALSE:
        return {"bool": False}
    if raw.endswith("i") and _INTEGER.fullmatch(raw[:-1]):
        number = int(raw[:-1])
        if not -2**63 <= number < 2**63:
            raise BadInput(400, f"line {line}: field {key!r}: {raw} is out of the signed 64-bit range", line - 1)
        return {"num": float(number)}
    if raw.endswith("u") and _UNSIGNED.fullmatch(raw[:-1]):
        number = int(raw[:-1])
        if number >= 2**64:
            raise BadInput(400, f"line {line}: field {key!r}: {raw} is out of the unsigned 64-bit range", line - 1)
        return {"num": float(number)}
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if math.isfinite(number):
            return {"num": number}
    raise BadInput(400, f"line {line}: field {key!r}: {raw[:40]!r} is not a float, integer (i), unsigned (u), "
                        "string (\"…\") or boolean", line - 1)


def sensor_name(measurement: str, field: str, tags: dict[str, str]) -> str:
    name = f"{measurement}.{field}"
    if not tags:
        return name
    series = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    if len(name) + 1 + len(series) <= MAX_SENSOR:
        return f"{name},{series}"
    return f"{name},#{hashlib.sha256(series.encode()).hexdigest()[:16]}"


def parse(body: bytes, agent: str, *, precision: str, now_ms: int, window: Window, limit: int) -> list[list]:
    """Rows in the INSERT's column order (see payload.py); `index` in errors is the line's, from 0.
    Every refusal is a 400 (413 for too many fields), as InfluxDB answers bad line protocol."""
    try:
        return _parse(body, agent, precision=precision, now_ms=now_ms, window=window, limit=limit)
    except BadInput as e:
        if e.status == 422:
            raise BadInput(400, e.message, e.index) from None
        raise


def _series(text: str, number: int) -> tuple[str, dict[str, str], str | None, dict | None]:
    """measurement, tags (without unit), unit, meta: once per distinct series text in a body."""
    series = _split(text, ",", number, "measurement", quotes=False) if "\\" in text else text.split(",")
    measurement = _unescape(series[0], ", ")
    if not measurement:
        raise BadInput(400, f"line {number}: the measurement is empty", number - 1)
    tags, unit = {}, None
    for pair in series[1:]:
        key, value = _key_value(pair, number, "tag", quotes=False)
        key, value = _unescape(key, ",= "), _unescape(value, ",= ")
        if key == "unit":
            unit = value
        else:
            tags[key] = value
    meta = check_meta(tags, f"line {number}: tags", number - 1) if tags else None
    if unit is not None and (not 0 < len(unit) <= MAX_UNIT or not printable(unit)):
        check_name(unit, "unit", f"line {number}: tag", number - 1, MAX_UNIT)
    return measurement, tags, unit, meta


def _parse(body: bytes, agent: str, *, precision: str, now_ms: int, window: Window, limit: int) -> list[list]:
    if precision not in PRECISIONS:
        raise BadInput(400, f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    multiply, divide = PRECISIONS[precision]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(400, f"the body is not UTF-8 text ({e})") from None
    rows: list[list] = []
    lines: list[int] = []
    known: dict[str, tuple] = {}  # series text -> its parts
    sensors: dict[tuple[str, str], str] = {}  # (series text, field key) -> sensor name
    low, high = window.low, window.high
    isfinite = math.isfinite
    append, note = rows.append, lines.append
    for number, line_text in enumerate(text.split("\n"), start=1):
        if line_text.endswith("\r"):
            line_text = line_text[:-1]
        if not line_text or line_text[0] in "# \t":
            if not line_text.strip() or line_text.lstrip().startswith("#"):
                continue
        plain = "\\" not in line_text and '"' not in line_text  # no escapes, no strings: split() is exact
        sections = line_text.split(" ") if plain else _sections(line_text, number)
        if len(sections) not in (2, 3) or not all(sections):
            raise BadInput(400, f"line {number}: expected `measurement[,tags] fields [timestamp]`, "
                                f"got {line_text[:60]!r}", number - 1)
        series = sections[0]
        parts = known.get(series)
        if parts is None:
            parts = known[series] = _series(series, number)
        measurement, tags, unit, meta = parts
        if len(sections) == 3:
            stamp = sections[2]
            if not (stamp.isascii() and stamp.isdigit()) and not _TIMESTAMP.fullmatch(stamp):
                raise BadInput(400, f"line {number}: timestamp {stamp[:30]!r} is not an integer", number - 1)
            ts = int(stamp) * multiply // divide
        else:
            ts = now_ms
        if not low <= ts <= high:
            raise BadInput(400, f"line {number}: timestamp {ts} ms (precision {precision}) is outside the accepted "
                                f"window ({window.text})", number - 1)
        for field in (sections[1].split(",") if plain else _split(sections[1], ",", number, "fields")):
            if plain:
                key, _, raw = field.partition("=")
                if "=" in raw:
                    raise BadInput(400, f"line {number}: field {field[:40]!r} is not key=value", number - 1)
            else:
                key, raw = _key_value(field, number, "field")
            if not key or not raw:
                raise BadInput(400, f"line {number}: field {field[:40]!r} is not key=value", number - 1)
            sensor = sensors.get((series, key))
            if sensor is None:
                sensor = sensor_name(measurement, _unescape(key, ",= "), tags)
                if not 0 < len(sensor) <= MAX_SENSOR or not printable(sensor):
                    check_name(sensor, "sensor (measurement.field)", f"line {number}", number - 1)
                sensors[series, key] = sensor
            value = None
            if raw[-1].isdigit() and raw.isascii() and "_" not in raw:  # a plain float, the common case
                try:
                    number_value = float(raw)
                    if isfinite(number_value):
                        value = {"num": number_value}
                except ValueError:
                    pass
            append([ts, agent, sensor, value or _field_value(raw, number, _unescape(key, ",= ")), unit, meta])
            note(number)
        if len(rows) > limit:
            raise BadInput(413, f"the body holds more than {limit} fields; at most {limit} per request")
    if not rows:
        raise BadInput(400, "the body holds no line with a field")
    try:
        check_unique(rows, lambda i: f"line {lines[i]}")
    except BadInput as e:
        raise BadInput(400, e.message + " (lines without a timestamp share the server's time)", e.index) from None
    return rows
