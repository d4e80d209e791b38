"""Bosch BMP180 (the original demo's sensor) on I²C 0x77: temperature and pressure, compensated with
the integer algorithm of the datasheet (BST-BMP180-DS000, section 3.5)."""

from __future__ import annotations

import struct
import time

from pi.sensors import Reading, SensorError, c_div, smbus

ADDRESS = 0x77
CALIBRATION, CONTROL, DATA, CHIP_ID = 0xAA, 0xF4, 0xF6, 0xD0
READ_TEMPERATURE, READ_PRESSURE = 0x2E, 0x34
WAIT_S = {0: 0.005, 1: 0.008, 2: 0.014, 3: 0.026}  # conversion time per oversampling setting


def parse_calibration(raw: bytes) -> dict[str, int]:
    """22 bytes from 0xAA, big-endian; AC4..AC6 are unsigned."""
    names = ("AC1", "AC2", "AC3", "AC4", "AC5", "AC6", "B1", "B2", "MB", "MC", "MD")
    values = struct.unpack(">hhhHHHhhhhh", bytes(raw))
    if all(v in (0, -1, 0xFFFF) for v in values):
        raise SensorError("BMP180 calibration reads all 0 or all 1: no sensor answering")
    return dict(zip(names, values))


def compensate(cal: dict[str, int], ut: int, up: int, oss: int = 0) -> tuple[float, int]:
    """(temperature in °C, pressure in Pa) from the raw values."""
    # Divisions by powers of two are arithmetic shifts (floor) as in Bosch's reference driver; the
    # others truncate like C. The datasheet's example only comes out with exactly this mix.
    x1 = ((ut - cal["AC6"]) * cal["AC5"]) >> 15
    x2 = c_div(cal["MC"] << 11, x1 + cal["MD"])
    b5 = x1 + x2
    temperature = (b5 + 8) >> 4  # 0.1 °C
    b6 = b5 - 4000
    x1 = (cal["B2"] * ((b6 * b6) >> 12)) >> 11
    x2 = (cal["AC2"] * b6) >> 11
    x3 = x1 + x2
    b3 = (((cal["AC1"] * 4 + x3) << oss) + 2) >> 2
    x1 = (cal["AC3"] * b6) >> 13
    x2 = (cal["B1"] * ((b6 * b6) >> 12)) >> 16
    x3 = (x1 + x2 + 2) >> 2
    b4 = (cal["AC4"] * ((x3 + 32768) & 0xFFFFFFFF)) >> 15
    b7 = ((up - b3) & 0xFFFFFFFF) * (50000 >> oss)
    p = c_div(b7 * 2, b4) if b7 < 0x80000000 else c_div(b7, b4) * 2
    x1 = (p >> 8) * (p >> 8)
    x1 = (x1 * 3038) >> 16
    x2 = (-7357 * p) >> 16
    p = p + ((x1 + x2 + 3791) >> 4)
    return temperature / 10, p


class Bmp180:
    def __init__(self, name: str = "bmp180", *, bus=None, bus_number: int = 1, address: int = ADDRESS, oss: int = 1) -> None:
        self.name, self.address, self.oss = name, address, oss
        self.bus = bus if bus is not None else smbus(bus_number)
        self.cal: dict[str, int] | None = None

    def read(self) -> list[Reading]:
        try:
            if self.cal is None:
                if self.bus.read_byte_data(self.address, CHIP_ID) != 0x55:
                    raise SensorError(f"no BMP180 at I²C 0x{self.address:02x} (chip id is not 0x55)")
                self.cal = parse_calibration(self.bus.read_i2c_block_data(self.address, CALIBRATION, 22))
            self.bus.write_byte_data(self.address, CONTROL, READ_TEMPERATURE)
            time.sleep(WAIT_S[0])
            msb, lsb = self.bus.read_i2c_block_data(self.address, DATA, 2)
            ut = (msb << 8) | lsb
            self.bus.write_byte_data(self.address, CONTROL, READ_PRESSURE + (self.oss << 6))
            time.sleep(WAIT_S[self.oss])
            msb, lsb, xlsb = self.bus.read_i2c_block_data(self.address, DATA, 3)
            up = ((msb << 16) | (lsb << 8) | xlsb) >> (8 - self.oss)
        except OSError as e:
            raise SensorError(f"BMP180 at 0x{self.address:02x}: {e}") from e
        temperature, pressure = compensate(self.cal, ut, up, self.oss)
        return [Reading(f"{self.name}.temperature", temperature, "celsius"),
                Reading(f"{self.name}.pressure", float(pressure), "pascal")]
