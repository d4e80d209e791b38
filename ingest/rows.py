"""A row: one reading as the INSERT's parameters, in `INSERT_COLUMNS` order. Rows are lists (or
tuples), not objects: the parsers make them and the writer sends them by the thousand, and the
client serialises plain lists fastest. These names say which position is which."""

from __future__ import annotations

INSERT_COLUMNS = ("ts", "agent", "sensor", "reading", "unit", "meta")
TS, AGENT, SENSOR, READING, UNIT, META = range(len(INSERT_COLUMNS))

Key = tuple[str, str, int]  # (agent, sensor, ts): the readings table's key within a month


def key_of(row) -> Key:
    return row[AGENT], row[SENSOR], row[TS]


def insert_statement(table: str) -> str:
    columns = ", ".join(INSERT_COLUMNS)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))}) ON CONFLICT DO NOTHING"
