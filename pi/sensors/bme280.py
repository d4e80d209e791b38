"""Bosch BME280 on I²C (0x76 or 0x77): temperature, pressure and humidity in forced mode, compensated
with the integer formulas of the datasheet (BST-BME280-DS002, section 4.2.3 and 8.2)."""

from __future__ import annotations

import struct
import time

from pi.sensors import Reading, SensorError, smbus

CHIP_ID_REGISTER, CHIP_ID = 0xD0, 0x60
CTRL_HUM, CTRL_MEAS, DATA = 0xF2, 0xF4, 0xF7
FORCED_X1 = 0b001_001_01  # temperature x1, pressure x1, forced mode


def parse_calibration(block1: bytes, h1: int, block2: bytes) -> dict[str, int]:
    """0x88..0x9F (T1..P9, little-endian), 0xA1 (H1), 0xE1..0xE7 (H2..H6, H4/H5 are 12-bit)."""
    names = ("T1", "T2", "T3", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")
    cal = dict(zip(names, struct.unpack("<HhhHhhhhhhhh", bytes(block1))))
    e1, e2, e3, e4, e5, e6, e7 = block2
    h4 = (e4 << 4) | (e5 & 0x0F)
    h5 = (e6 << 4) | (e5 >> 4)
    cal.update(H1=h1, H2=struct.unpack("<h", bytes((e1, e2)))[0], H3=e3,
               H4=h4 - (1 << 12) if h4 & 0x800 else h4, H5=h5 - (1 << 12) if h5 & 0x800 else h5,
               H6=e7 - 256 if e7 > 127 else e7)
    return cal


def t_fine(cal: dict[str, int], adc_t: int) -> int:
    var1 = (((adc_t >> 3) - (cal["T1"] << 1)) * cal["T2"]) >> 11
    var2 = (((((adc_t >> 4) - cal["T1"]) * ((adc_t >> 4) - cal["T1"])) >> 12) * cal["T3"]) >> 14
    return var1 + var2


def temperature(fine: int) -> float:
    return ((fine * 5 + 128) >> 8) / 100


def pressure(cal: dict[str, int], fine: int, adc_p: int) -> float:
    """Pa, from the 64-bit integer formula (its result is Q24.8)."""
    var1 = fine - 128000
    var2 = var1 * var1 * cal["P6"] + ((var1 * cal["P5"]) << 17) + (cal["P4"] << 35)
    var1 = ((var1 * var1 * cal["P3"]) >> 8) + ((var1 * cal["P2"]) << 12)
    var1 = (((1 << 47) + var1) * cal["P1"]) >> 33
    if var1 == 0:
        raise SensorError("BME280 pressure compensation divides by zero (bad calibration)")
    p = 1048576 - adc_p
    p = (((p << 31) - var2) * 3125) // var1
    var1 = (cal["P9"] * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal["P8"] * p) >> 19
    return (((p + var1 + var2) >> 8) + (cal["P7"] << 4)) / 256


def humidity(cal: dict[str, int], fine: int, adc_h: int) -> float:
    """%RH, from the 32-bit integer formula (its result is Q22.10)."""
    v = fine - 76800
    v = ((((adc_h << 14) - (cal["H4"] << 20) - (cal["H5"] * v)) + 16384) >> 15) * (
        ((((((v * cal["H6"]) >> 10) * (((v * cal["H3"]) >> 11) + 32768)) >> 10) + 2097152) * cal["H2"] + 8192) >> 14)
    v -= ((((v >> 15) * (v >> 15)) >> 7) * cal["H1"]) >> 4
    return (min(max(v, 0), 419430400) >> 12) / 1024


class Bme280:
    def __init__(self, name: str = "bme280", *, bus=None, bus_number: int = 1, address: int = 0x76) -> None:
        self.name, self.address = name, address
        self.bus = bus if bus is not None else smbus(bus_number)
        self.cal: dict[str, int] | None = None

    def read(self) -> list[Reading]:
        try:
            if self.cal is None:
                if self.bus.read_byte_data(self.address, CHIP_ID_REGISTER) != CHIP_ID:
                    raise SensorError(f"no BME280 at I²C 0x{self.address:02x} (chip id is not 0x60)")
                self.cal = parse_calibration(self.bus.read_i2c_block_data(self.address, 0x88, 24),
                                             self.bus.read_byte_data(self.address, 0xA1),
                                             self.bus.read_i2c_block_data(self.address, 0xE1, 7))
            self.bus.write_byte_data(self.address, CTRL_HUM, 0b001)  # humidity x1; applies with CTRL_MEAS
            self.bus.write_byte_data(self.address, CTRL_MEAS, FORCED_X1)
            time.sleep(0.01)  # forced mode, x1 oversampling: at most 9.3 ms (datasheet 9.1)
            d = self.bus.read_i2c_block_data(self.address, DATA, 8)
        except OSError as e:
            raise SensorError(f"BME280 at 0x{self.address:02x}: {e}") from e
        adc_p, adc_t = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4), (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000:
            raise SensorError("BME280 returned the reset value: no measurement yet")
        fine = t_fine(self.cal, adc_t)
        return [Reading(f"{self.name}.temperature", temperature(fine), "celsius"),
                Reading(f"{self.name}.pressure", pressure(self.cal, fine, adc_p), "pascal"),
                Reading(f"{self.name}.humidity", humidity(self.cal, fine, adc_h), "percent")]
