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
from dataclasses import dataclass
from itertools import repeat

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
    All or nothing: the first wrong line refuses the body (400; 413 for too many fields)."""
    text = _text(body, precision)
    try:
        rows, line_of, _ = _rows(text, agent, precision, now_ms, window, limit, partial=False)
        if not rows:
            raise BadInput(400, "the body holds no line with a field")
        try:
            check_unique(rows, lambda i: f"line {line_of(i)}")
        except BadInput as e:
            raise BadInput(400, e.message + " (lines without a timestamp share the server's time)", e.index) from None
        return rows
    except BadInput as e:
        if e.status == 422:
            raise BadInput(400, e.message, e.index) from None
        raise


@dataclass(frozen=True)
class Points:
    rows: list  # what is to be stored
    rejected: list[str]  # "line N: why" of every line left out


def parse_points(body: bytes, agent: str, *, precision: str, now_ms: int, window: Window, limit: int) -> Points:
    """As InfluxDB writes line protocol: a wrong line is left out and named, the others are written
    (a client such as Telegraf drops a whole batch answered 400, so refusing it all would lose every
    good point with it); a point written twice (one series, one timestamp) keeps its last value. What
    concerns the whole body (its encoding, the precision, too many fields) still refuses it."""
    rows, _, rejected = _rows(_text(body, precision), agent, precision, now_ms, window, limit, partial=True)
    if not rows and not rejected:
        raise BadInput(400, "the body holds no line with a field")
    if len({row[0] for row in rows}) != len(rows):  # distinct timestamps, the common case, settle it
        rows = list({(row[2], row[0]): row for row in rows}.values())
    return Points(rows, rejected)


def _rows(text: str, agent: str, precision: str, now_ms: int, window: Window, limit: int, *, partial: bool):
    """(rows, line of row, rejected lines): column by column when the body allows, else line by line."""
    plain = _plain_body(text, agent, precision, now_ms, window, limit)
    if plain is not None:
        return (*plain, [])
    return _parse(text, agent, precision=precision, now_ms=now_ms, window=window, limit=limit, partial=partial)


def _text(body: bytes, precision: str) -> str:
    if precision not in PRECISIONS:
        raise BadInput(400, f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(400, f"the body is not UTF-8 text ({e})") from None


def _plain_body(text: str, agent: str, precision: str, now_ms: int, window: Window, limit: int):
    """The common body, column by column: every line `series fields [timestamp]` without escapes,
    strings, comments or blank lines, every value a finite float. The work per reading is then a
    few C-level passes instead of a Python loop per line (at batch 1000 that loop made line protocol
    half as fast as JSON). Returns (rows, line of row) or None: anything else, including every
    error, is left to `_parse`, which gives the same rows for what this accepts, or the reason.
    Rows are tuples here (the writer only reads them)."""
    if "\\" in text or '"' in text or "\r" in text or text.count("\n") < 4:
        return None  # (a few lines: the loop is quicker than the passes' fixed cost)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # a last newline, as Telegraf and the client libraries send
    if not lines:
        return None
    sections = [line.split(" ") for line in lines]
    widths = set(map(len, sections))
    if widths == {3}:
        series, fields, stamps = zip(*sections)
        joined = "".join(stamps)
        if not (joined.isascii() and joined.isdigit()):
            return None
        try:
            stamped = list(map(int, stamps))
        except ValueError:
            return None  # an empty one
        multiply, divide = PRECISIONS[precision]
        if (multiply, divide) != (1, 1):
            stamped = [stamp * multiply // divide for stamp in stamped]
        if min(stamped) < window.low or max(stamped) > window.high:
            return None
    elif widths == {2} and window.low <= now_ms <= window.high:
        series, fields = zip(*sections)
        stamped = repeat(now_ms)
    else:
        return None
    distinct = set(series)
    try:
        known = {s: _series(s, 0) for s in distinct if s and s[0] != "#"}
    except BadInput:
        return None
    owner = None  # one field per line: row i is line i
    if "," in "".join(fields):
        split_fields = [f.split(",") for f in fields]
        owner = [i for i, parts in enumerate(split_fields) for _ in parts]
        fields = [p for parts in split_fields for p in parts]
        series = [series[i] for i in owner]
        if not isinstance(stamped, repeat):
            stamped = [stamped[i] for i in owner]
    if len(fields) > limit or len(known) != len(distinct):
        return None
    if set(map(str.count, fields, repeat("="))) != {1}:
        return None
    halves = "=".join(fields).split("=")  # exactly one "=" in each field: key, value, key, value, ...
    keys, raws = halves[0::2], halves[1::2]
    joined = "".join(raws)
    if "" in keys or not (joined.isascii() and joined.isprintable()) or "_" in joined:
        return None  # float() also takes "1_0" and white space; line protocol does not
    try:
        values = list(map(float, raws))
    except ValueError:
        return None  # integers (i), unsigned (u), booleans, empty, or an error
    if not all(map(math.isfinite, values)):
        return None
    try:
        distinct_keys = set(keys)
        if len(distinct_keys) == 1:  # one field name throughout (e.g. `value`): a sensor per series
            (key,) = distinct_keys
            by_series = {s: _sensor(s, key, parts, 0) for s, parts in known.items()}
            sensors = map(by_series.__getitem__, series)
        else:
            series_keys = list(zip(series, keys))
            by_pair = {pair: _sensor(pair[0], pair[1], known[pair[0]], 0) for pair in set(series_keys)}
            sensors = map(by_pair.__getitem__, series_keys)
    except BadInput:
        return None
    rows = list(zip(stamped, repeat(agent), sensors, [{"num": v} for v in values],
                    _per_series(known, 2, series), _per_series(known, 3, series)))
    return rows, (lambda i: i + 1) if owner is None else (lambda i: owner[i] + 1)


def _per_series(known: dict[str, tuple], part: int, series):
    """The unit (2) or meta (3) of each row's series, as an iterable."""
    values = {s: parts[part] for s, parts in known.items()}
    first = next(iter(values.values()))
    if all(value == first for value in values.values()):  # equal values: one shared object will do
        return repeat(first)
    return map(values.__getitem__, series)


# What a series text and a (series, field key) become, kept across requests: a device sends the
# same few series again and again. Only what passed every check is kept, and only short texts; the
# kept tags and meta are shared by rows of many requests, which only read them.
_SERIES: dict[str, tuple] = {}
_SENSORS: dict[tuple[str, str], str] = {}
_KEEP_AT_MOST, _KEEP_TEXT = 10_000, 1_000


def _keep(kept: dict, key, value, text: str) -> None:
    if len(text) <= _KEEP_TEXT:
        if len(kept) >= _KEEP_AT_MOST:
            kept.clear()
        kept[key] = value


def _series(text: str, number: int) -> tuple[str, dict[str, str], str | None, dict | None]:
    parts = _SERIES.get(text)
    if parts is None:
        parts = _series_parts(text, number)
        _keep(_SERIES, text, parts, text)
    return parts


def _sensor(series: str, key: str, parts: tuple, number: int) -> str:
    """The sensor of a field key (still escaped) of a series, checked."""
    sensor = _SENSORS.get((series, key))
    if sensor is None:
        sensor = sensor_name(parts[0], _unescape(key, ",= "), parts[1])
        if not 0 < len(sensor) <= MAX_SENSOR or not printable(sensor):
            check_name(sensor, "sensor (measurement.field)", f"line {number}", number - 1)
        _keep(_SENSORS, (series, key), sensor, series)
    return sensor


def _series_parts(text: str, number: int) -> tuple[str, dict[str, str], str | None, dict | None]:
    """measurement, tags (without unit), unit, meta."""
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


def _parse(text: str, agent: str, *, precision: str, now_ms: int, window: Window, limit: int, partial: bool = False):
    """Line by line, for every body: (rows, line of row, rejected lines), or the reason the body is
    refused; `partial`: a wrong line is left out and named instead (except too many fields)."""
    multiply, divide = PRECISIONS[precision]
    rows: list[list] = []
    lines: list[int] = []
    rejected: list[str] = []
    kept_series, kept_sensor = _SERIES.get, _SENSORS.get
    low, high = window.low, window.high
    isfinite = math.isfinite
    append, note = rows.append, lines.append
    for number, line_text in enumerate(text.split("\n"), start=1):
        if line_text.endswith("\r"):
            line_text = line_text[:-1]
        if not line_text or line_text[0] in "# \t":
            if not line_text.strip() or line_text.lstrip().startswith("#"):
                continue
        first = len(rows)
        try:
            plain = "\\" not in line_text and '"' not in line_text  # no escapes, no strings: split() is exact
            sections = line_text.split(" ") if plain else _sections(line_text, number)
            if len(sections) not in (2, 3) or not all(sections):
                raise BadInput(400, f"line {number}: expected `measurement[,tags] fields [timestamp]`, "
                                    f"got {line_text[:60]!r}", number - 1)
            series = sections[0]
            parts = kept_series(series) or _series(series, number)
            unit, meta = parts[2], parts[3]
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
                sensor = kept_sensor((series, key)) or _sensor(series, key, parts, number)
                value = None
                # A plain float, the common case (float() also takes white space and 1_0: they go the long way).
                if raw[-1].isdigit() and raw.isascii() and raw.isprintable() and "_" not in raw:
                    try:
                        number_value = float(raw)
                        if isfinite(number_value):
                            value = {"num": number_value}
                    except ValueError:
                        pass
                append([ts, agent, sensor, value or _field_value(raw, number, _unescape(key, ",= ")), unit, meta])
                note(number)
        except BadInput as e:
            if not partial:
                raise
            del rows[first:], lines[first:]  # the fields of the line before the one that was wrong
            rejected.append(e.message)
            continue
        if len(rows) > limit:
            raise BadInput(413, f"the body holds more than {limit} fields; at most {limit} per request")
    return rows, lines.__getitem__, rejected
