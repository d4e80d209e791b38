"""One module per sensor behind one interface: `read()` returns readings or raises `SensorError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Reading:
    sensor: str
    value: float
    unit: str


class SensorError(Exception):
    """A read failed (bus error, bad checksum, missing device); the agent retries with backoff."""


class Sensor(Protocol):
    name: str

    def read(self) -> list[Reading]: ...


def c_div(a: int, b: int) -> int:
    """C's integer division (truncates toward zero): the datasheets' formulas assume it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def smbus(bus_number: int):
    """The I²C bus, imported only when a hardware sensor is used (the package imports anywhere)."""
    try:
        from smbus2 import SMBus
    except ImportError as e:
        raise SensorError("I²C sensors need the smbus2 package (pip install smbus2)") from e
    return SMBus(bus_number)
