"""InfluxDB line protocol to rows, for Telegraf and the InfluxDB client libraries.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

One reading per field. Its sensor is the series key of the field, written so that two different
series can never share one: `<measurement>.<field>` followed by every tag of the line as
`,key=value` in key order, with the characters that separate these parts escaped by a backslash
inside them (`\\.` `\\,` in the measurement, `\\,` in the field key and tag values, `\\,` `\\=` in tag
keys, and `\\\\` everywhere), so the name reads back into exactly one (measurement, field, tags).
A `unit` tag is one of the tags (InfluxDB's series key holds it too) and also fills the `unit`
column. A key longer than a sensor name may be becomes `<measurement>.<field>,#<32 hex digits of
SHA-256 of the whole key>`. The value by its type (float, integer `i`, unsigned `u`, string,
boolean); the other tags also in `meta`; the device from the credential, never from the body;
timestamps by `precision`, the server's time when absent. Escapes in the body as the
specification has them. `#` comments and blank lines are skipped. Every problem is a `BadInput`
naming the line.

Limits apply while the body is split, not after: at most `limit` lines and `limit` fields, so one
request costs time and memory in proportion to its size, whatever it holds.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import repeat

import orjson

from ingest.payload import MAX_SENSOR, MAX_TEXT, MAX_UNIT, BadInput, Window, check_meta, check_name, check_unique, printable

# Timestamp precision (v2 names and v1 names) -> divisor to milliseconds, as a fraction a/b.
PRECISIONS = {"ns": (1, 1_000_000), "n": (1, 1_000_000), "us": (1, 1_000), "u": (1, 1_000), "ms": (1, 1), "s": (1_000, 1),
              "m": (60_000, 1), "h": (3_600_000, 1)}
_INTEGER = re.compile(r"-?[0-9]{1,20}")  # longer than any 64-bit number (and int() refuses 4300+ digits)
_UNSIGNED = re.compile(r"[0-9]{1,20}")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TRUE, _FALSE = frozenset({"t", "T", "true", "True", "TRUE"}), frozenset({"f", "F", "false", "False", "FALSE"})
_TIMESTAMP = re.compile(r"-?[0-9]{1,19}")  # nanoseconds since 1970 fit 19 digits until the year 2286
REFUSED_SHOWN = 5  # refused lines named in an answer; the rest are counted


def _part(separators: str, quotes: bool) -> re.Pattern:
    """One part up to the next unescaped separator (a backslash escapes the next character; in
    the fields, a quoted string is one piece, separators and all), matched in C."""
    excluded = re.escape(separators) + "\\\\" + ('"' if quotes else "")
    pieces = [f"[^{excluded}]", r"\\.", r"\\\Z"] + ([r'"(?:[^"\\]|\\.)*"'] if quotes else [])
    return re.compile("(?:" + "|".join(pieces) + ")*", re.S)


_SERIES_PART, _KEY_VALUE_PART = _part(",", False), _part("=", False)
_HEAD = _part(" ", False)  # measurement and tags: up to the first unescaped space
_FIELDS_PART, _FIELD_KEY_VALUE, _SECTION = _part(",", True), _part("=", True), _part(" ", True)


class _TooMany(Exception):
    pass


def _split(text: str, pattern: re.Pattern, line: int, what: str, most: int) -> list[str]:
    """Split at unescaped separators (outside strings), into at most `most` parts."""
    parts, at, end = [], 0, len(text)
    while True:
        match = pattern.match(text, at)
        parts.append(match.group())
        at = match.end()
        if at == end:
            return parts
        if text[at] == '"':
            raise BadInput(400, f"line {line}: {what}: a string field has no closing quote", line - 1)
        if len(parts) >= most:
            raise _TooMany
        at += 1


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


def _escape(text: str, special: str) -> str:
    """Backslash before the backslash and every character of `special`."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    for char in special:
        if char in text:
            text = text.replace(char, "\\" + char)
    return text


def sensor_name(measurement: str, field_key: str, tags: dict[str, str]) -> str:
    """The series key of one field, one-to-one (see the module docstring)."""
    name = f"{_escape(measurement, '.,')}.{_escape(field_key, ',')}"
    key = name + "".join(f",{_escape(k, ',=')}={_escape(v, ',')}" for k, v in sorted(tags.items()))
    if len(key) <= MAX_SENSOR:
        return key
    prefix = name[:MAX_SENSOR - 34]
    if (len(prefix) - len(prefix.rstrip("\\"))) % 2:  # never end on half an escape
        prefix = prefix[:-1]
    return f"{prefix},#{hashlib.sha256(key.encode()).hexdigest()[:32]}"


class SeriesCache:
    """What a series text and a (series, field key) become, kept across requests per device: a
    device sends the same few series again and again. Only what passed every check is kept, only
    short texts, at most PER_DEVICE entries for each of the DEVICES devices seen last: one device's
    many series displace only its own."""

    DEVICES, PER_DEVICE, LONGEST = 64, 2_000, 1_000

    def __init__(self) -> None:
        self._devices: OrderedDict[str, tuple[dict, dict]] = OrderedDict()

    def of(self, device: str) -> tuple[dict, dict]:
        kept = self._devices.get(device)
        if kept is None:
            kept = self._devices[device] = ({}, {})
            if len(self._devices) > self.DEVICES:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(device)
        return kept

    def keep(self, kept: dict, key, value, text: str) -> None:
        if len(text) <= self.LONGEST:
            if len(kept) >= self.PER_DEVICE:
                kept.clear()
            kept[key] = value


CACHE = SeriesCache()


def parse(body: bytes, agent: str, *, precision: str, now_ms: int, window: Window, limit: int) -> list[list]:
    """Rows in the INSERT's column order (see rows.py); `index` in errors is the line's, from 0.
    All or nothing: the first wrong line refuses the body (400; 413 for too many lines or fields)."""
    text = _text(body, precision, limit)
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
    rejected: list[str]  # "line N: why" of the first lines left out
    rejected_count: int = 0  # every line left out
    line_of: object = field(default=lambda i: i + 1, repr=False)  # the line of row i, from 1


def parse_points(body: bytes, agent: str, *, precision: str, now_ms: int, window: Window, limit: int) -> Points:
    """As InfluxDB writes line protocol: a wrong line is left out and named, the others are written
    (a client such as Telegraf drops a whole batch answered 400, so refusing it all would lose every
    good point with it); a point written twice (one series, one timestamp) keeps its last value. What
    concerns the whole body (its encoding, the precision, too many lines or fields) still refuses it."""
    rows, line_of, rejected = _rows(_text(body, precision, limit), agent, precision, now_ms, window, limit, partial=True)
    count = rejected.count if isinstance(rejected, _Rejected) else len(rejected)
    if not rows and not count:
        raise BadInput(400, "the body holds no line with a field")
    if len({row[0] for row in rows}) != len(rows):  # distinct timestamps, the common case, settle it
        last = {(row[2], row[0]): i for i, row in enumerate(rows)}
        kept = sorted(last.values())
        rows, lines = [rows[i] for i in kept], [line_of(i) for i in kept]
        line_of = lines.__getitem__
    return Points(rows, list(rejected), count, line_of)


class _Rejected(list):
    """The first REFUSED_SHOWN reasons, and how many there were."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self) < REFUSED_SHOWN:
            self.append(reason)


def _rows(text: str, agent: str, precision: str, now_ms: int, window: Window, limit: int, *, partial: bool):
    """(rows, line of row, rejected lines): column by column when the body allows, else line by line."""
    plain = _plain_body(text, agent, precision, now_ms, window, limit)
    if plain is not None:
        return (*plain, _Rejected())
    return _parse(text, agent, precision=precision, now_ms=now_ms, window=window, limit=limit, partial=partial)


def _text(body: bytes, precision: str, limit: int) -> str:
    if precision not in PRECISIONS:
        raise BadInput(400, f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if body.count(b"\n") > limit:  # a line holds at least one field: more lines cannot be a valid body
        raise BadInput(413, f"the body holds more than {limit} lines; at most {limit} fields per request")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(400, f"the body is not UTF-8 text ({e})") from None


def _too_many(limit: int) -> BadInput:
    return BadInput(413, f"the body holds more than {limit} fields; at most {limit} per request")


def _plain_body(text: str, agent: str, precision: str, now_ms: int, window: Window, limit: int):
    """The common body, column by column: every line `series fields [timestamp]` without escapes,
    strings, comments or blank lines, every value a finite float. The work per reading is then a
    few C-level passes instead of a Python loop per line (at batch 1000 that loop made line protocol
    half as fast as JSON). Returns (rows, line of row) or None: anything else, including every
    error, is left to `_parse`, which gives the same rows for what this accepts, or the reason.
    Rows are tuples here (the writer only reads them).

    Timestamps and values are each read by one `orjson.loads` of the words joined into a JSON array:
    a JSON number is a line protocol float (or an integer timestamp) that `float()`/`int()` read to
    the same value, and anything else (`1.`, `.5`, `01`, `inf`, `t`, `7i`) fails the parse or the
    type check and goes to `_parse`. JSON also allows tabs between values, so a body with one does
    too. Per reading this takes a third to a quarter of the time of `map(int, …)` and `map(float, …)`
    with their checks."""
    if "\\" in text or '"' in text or "\r" in text or "\t" in text or text.count("\n") < 4:
        return None  # (a few lines: the loop is quicker than the passes' fixed cost)
    if text.endswith("\n"):
        text = text[:-1]  # a last newline, as Telegraf and the client libraries send
    lines, spaces = text.count("\n") + 1, text.count(" ")
    if spaces == 2 * lines:
        width = 3  # series fields timestamp
    elif spaces == lines and window.low <= now_ms <= window.high:
        width = 2  # series fields, at the server's time
    else:
        return None
    # One split of the whole body with each newline a word of its own: every line has exactly
    # `width` words when the newlines fall at every (width + 1)th word, and not otherwise.
    words = text.replace("\n", " \n ").split(" ")
    if words[width::width + 1] != ["\n"] * (lines - 1):
        return None
    series, fields = words[0::width + 1], words[1::width + 1]
    if width == 3:
        stamped = _json_numbers(words[2::4], int)
        if stamped is None:
            return None
        multiply, divide = PRECISIONS[precision]
        if (multiply, divide) != (1, 1):
            stamped = [stamp * multiply // divide for stamp in stamped]
        if min(stamped) < window.low or max(stamped) > window.high:
            return None
    else:
        stamped = repeat(now_ms)
    joined_fields = "".join(fields)
    has_commas = "," in joined_fields
    if (sum(map(str.count, fields, repeat(","))) if has_commas else 0) + len(fields) > limit:
        return None  # `_parse` decides: in a partial write, fields of lines it leaves out do not count
    series_kept, sensors_kept = CACHE.of(agent)
    distinct = set(series)
    try:
        known = {s: _series(s, 0, series_kept) for s in distinct if s and s[0] != "#"}
    except BadInput:
        return None
    owner = None  # one field per line: row i is line i
    if has_commas:
        split_fields = [f.split(",") for f in fields]
        owner = [i for i, parts in enumerate(split_fields) for _ in parts]
        fields = [p for parts in split_fields for p in parts]
        series = [series[i] for i in owner]
        if not isinstance(stamped, repeat):
            stamped = [stamped[i] for i in owner]
    if len(known) != len(distinct):
        return None
    halves = _keys_and_values(fields)
    if halves is None:
        return None
    keys, raws = halves
    values = _json_numbers(raws, float)
    if values is None:
        return None  # integers (i), unsigned (u), booleans, empty, out of range, or an error
    try:
        if isinstance(keys, str):  # one field name throughout (e.g. `value`): a sensor per series
            by_series = {s: _sensor(s, keys, parts, 0, sensors_kept) for s, parts in known.items()}
            sensors = map(by_series.__getitem__, series)
        else:
            series_keys = list(zip(series, keys))
            by_pair = {pair: _sensor(pair[0], pair[1], known[pair[0]], 0, sensors_kept) for pair in set(series_keys)}
            sensors = map(by_pair.__getitem__, series_keys)
    except BadInput:
        return None
    rows = list(zip(stamped, repeat(agent), sensors, [{"num": v} for v in values],
                    _per_series(known, 2, series), _per_series(known, 3, series)))
    return rows, (lambda i: i + 1) if owner is None else (lambda i: owner[i] + 1)


def _keys_and_values(fields: list[str]) -> tuple[str | list[str], list[str]] | None:
    """(key, values) when every field has the first one's key, else (keys, values) of fields that
    hold one `=` each, else None. No field holds a newline, so in the fields joined by newlines each
    `\\n<key>=` begins a field: as many of them as fields means every field begins so, and one
    count and one split give the values (a value holding another `=` is no JSON number, refused by
    the caller). At batch 1000 that takes a third of the time of checking every field's `=` and splitting."""
    key = fields[0].partition("=")[0]
    joined, head = "\n" + "\n".join(fields), f"\n{key}="
    if key and joined.count(head) == len(fields):
        return key, joined.split(head)[1:]
    if set(map(str.count, fields, repeat("="))) != {1}:
        return None
    halves = "=".join(fields).split("=")  # exactly one "=" in each field: key, value, key, value, ...
    keys = halves[0::2]
    if "" in keys:
        return None
    return keys, halves[1::2]


def _json_numbers(words: list[str], kind: type) -> list | None:
    """The words as numbers of `kind` (int: every one a JSON integer; float: every one a JSON
    number, whole ones read again by float() so that `-0` stays -0.0), or None."""
    try:
        numbers = orjson.loads("[" + ",".join(words) + "]")
    except orjson.JSONDecodeError:  # also NaN and numbers beyond a double
        return None
    if len(numbers) != len(words):
        return None
    types = set(map(type, numbers))
    if types == {kind}:
        return numbers
    if kind is float and types <= {float, int}:
        return list(map(float, words))
    return None


def _per_series(known: dict[str, tuple], part: int, series):
    """The unit (2) or meta (3) of each row's series, as an iterable."""
    values = {s: parts[part] for s, parts in known.items()}
    first = next(iter(values.values()))
    if all(value == first for value in values.values()):  # equal values: one shared object will do
        return repeat(first)
    return map(values.__getitem__, series)


def _series(text: str, number: int, kept: dict) -> tuple[str, dict[str, str], str | None, dict | None]:
    parts = kept.get(text)
    if parts is None:
        parts = _series_parts(text, number)
        CACHE.keep(kept, text, parts, text)
    return parts


def _sensor(series: str, key: str, parts: tuple, number: int, kept: dict) -> str:
    """The sensor of a field key (still escaped) of a series, checked."""
    sensor = kept.get((series, key))
    if sensor is None:
        field_key = _unescape(key, ",= ")
        if not field_key or not printable(field_key):
            check_name(field_key, "field key", f"line {number}", number - 1)
        sensor = sensor_name(parts[0], field_key, parts[1])
        if not 0 < len(sensor) <= MAX_SENSOR or not printable(sensor):
            check_name(sensor, "sensor (measurement.field)", f"line {number}", number - 1)
        CACHE.keep(kept, (series, key), sensor, series)
    return sensor


def _series_parts(text: str, number: int) -> tuple[str, dict[str, str], str | None, dict | None]:
    """measurement, tags (unit among them: the series key), unit, meta (the tags but unit)."""
    try:
        series = _split(text, _SERIES_PART, number, "measurement", MAX_SENSOR) if "\\" in text else text.split(",")
    except _TooMany:
        raise BadInput(400, f"line {number}: more than {MAX_SENSOR - 1} tags", number - 1) from None
    measurement = _unescape(series[0], ", ")
    if not measurement:
        raise BadInput(400, f"line {number}: the measurement is empty", number - 1)
    if not printable(measurement):
        check_name(measurement, "measurement", f"line {number}", number - 1)
    tags = {}
    for pair in series[1:]:
        key, value = _key_value(pair, number, "tag", _KEY_VALUE_PART)
        key, value = _unescape(key, ",= "), _unescape(value, ",= ")
        if not value:
            raise BadInput(400, f"line {number}: tag {key[:40]!r} has no value", number - 1)
        for what, name in (("tag key", key), ("tag value", value)):
            if not printable(name):
                check_name(name, what, f"line {number}", number - 1)
        tags[key] = value
    unit = tags.get("unit")
    others = {k: v for k, v in tags.items() if k != "unit"}
    meta = check_meta(others, f"line {number}: tags", number - 1) if others else None
    if unit is not None and (not 0 < len(unit) <= MAX_UNIT or not printable(unit)):
        check_name(unit, "unit", f"line {number}: tag", number - 1, MAX_UNIT)
    return measurement, tags, unit, meta


def _key_value(pair: str, line: int, what: str, pattern: re.Pattern) -> tuple[str, str]:
    try:
        parts = _split(pair, pattern, line, what, 2)
    except _TooMany:
        parts = []
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
    if raw.endswith("i") and raw[:-1].lstrip("-").isdigit():
        if not _INTEGER.fullmatch(raw[:-1]) or not -2**63 <= int(raw[:-1]) < 2**63:
            raise BadInput(400, f"line {line}: field {key!r}: {raw[:30]} is out of the signed 64-bit range", line - 1)
        return {"num": float(int(raw[:-1]))}
    if raw.endswith("u") and raw[:-1].isdigit():
        if not _UNSIGNED.fullmatch(raw[:-1]) or int(raw[:-1]) >= 2**64:
            raise BadInput(400, f"line {line}: field {key!r}: {raw[:30]} is out of the unsigned 64-bit range", line - 1)
        return {"num": float(int(raw[:-1]))}
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if math.isfinite(number):
            return {"num": number}
    raise BadInput(400, f"line {line}: field {key!r}: {raw[:40]!r} is not a float, integer (i), unsigned (u), "
                        "string (\"…\") or boolean", line - 1)


def _sections(text: str, line: int) -> list[str]:
    """measurement-and-tags, fields, timestamp: split at the unescaped spaces; in the fields, a
    space inside a quoted string value is part of it (quotes mean nothing before the fields)."""
    head = _HEAD.match(text).group()
    if len(head) == len(text):
        return [text]
    try:
        return [head, *_split(text[len(head) + 1:], _SECTION, line, "the fields", 2)]
    except _TooMany:
        return [head, "", "", ""]  # more than three sections: the caller names the shape


def _parse(text: str, agent: str, *, precision: str, now_ms: int, window: Window, limit: int, partial: bool = False):
    """Line by line, for every body: (rows, line of row, rejected lines), or the reason the body is
    refused; `partial`: a wrong line is left out and named instead (except too many fields)."""
    multiply, divide = PRECISIONS[precision]
    rows: list[list] = []
    lines: list[int] = []
    rejected = _Rejected()
    series_kept, sensors_kept = CACHE.of(agent)
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
            sections = line_text.split(" ", 3) if plain else _sections(line_text, number)
            if len(sections) not in (2, 3) or not all(sections):
                raise BadInput(400, f"line {number}: expected `measurement[,tags] fields [timestamp]`, "
                                    f"got {line_text[:60]!r}", number - 1)
            series = sections[0]
            parts = series_kept.get(series) or _series(series, number, series_kept)
            unit, meta = parts[2], parts[3]
            if len(sections) == 3:
                stamp = sections[2]
                if not _TIMESTAMP.fullmatch(stamp):
                    what = "is not an integer" if not stamp.lstrip("-").isdigit() else "is out of range"
                    raise BadInput(400, f"line {number}: timestamp {stamp[:30]!r} {what}", number - 1)
                ts = int(stamp) * multiply // divide
            else:
                ts = now_ms
            if not low <= ts <= high:
                raise BadInput(400, f"line {number}: timestamp {ts} ms (precision {precision}) is outside the accepted "
                                    f"window ({window.text})", number - 1)
            room = limit - len(rows)
            if plain:
                fields = sections[1].split(",", room)
                if len(fields) > room:
                    raise _too_many(limit)
            else:
                try:
                    fields = _split(sections[1], _FIELDS_PART, number, "fields", room)
                except _TooMany:
                    raise _too_many(limit) from None
            for field_text in fields:
                if plain:
                    key, _, raw = field_text.partition("=")
                    if "=" in raw:
                        raise BadInput(400, f"line {number}: field {field_text[:40]!r} is not key=value", number - 1)
                else:
                    key, raw = _key_value(field_text, number, "field", _FIELD_KEY_VALUE)
                if not key or not raw:
                    raise BadInput(400, f"line {number}: field {field_text[:40]!r} is not key=value", number - 1)
                sensor = sensors_kept.get((series, key)) or _sensor(series, key, parts, number, sensors_kept)
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
            if not partial or e.status == 413:
                raise
            del rows[first:], lines[first:]  # the fields of the line before the one that was wrong
            rejected.add(e.message)
            continue
    return rows, lines.__getitem__, rejected
