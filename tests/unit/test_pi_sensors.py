"""Sensor math against the datasheets' worked examples, with a fake I²C bus; 1-wire and thermal
files in a temporary sysfs tree."""

from __future__ import annotations

import struct

import pytest

from pi.sensors import SensorError, bme280, bmp180, c_div
from pi.sensors.ds18b20 import Ds18b20
from pi.sensors.random_source import RandomSource
from pi.sensors.thermal import CpuThermal

# BMP180 datasheet (BST-BMP180-DS000), section 3.5, "calculation of true temperature and pressure".
BMP180_EXAMPLE = {"AC1": 408, "AC2": -72, "AC3": -14383, "AC4": 32741, "AC5": 32757, "AC6": 23153,
                  "B1": 6190, "B2": 4, "MB": -32768, "MC": -8711, "MD": 2868}
# BMP280 datasheet (BST-BMP280-DS001), section 3.12: the BME280 uses the same temperature and
# pressure compensation (BME280 datasheet, section 4.2.3).
BMP280_EXAMPLE = {"T1": 27504, "T2": 26435, "T3": -1000, "P1": 36477, "P2": -10685, "P3": 3024, "P4": 2855,
                  "P5": 140, "P6": -7, "P7": 15500, "P8": -14600, "P9": 6000}


def test_c_division_truncates_toward_zero():
    assert (c_div(7, 2), c_div(-7, 2), c_div(7, -2), c_div(-7, -2)) == (3, -3, -3, 3)


def test_bmp180_datasheet_example():
    temperature, pressure = bmp180.compensate(BMP180_EXAMPLE, ut=27898, up=23843, oss=0)
    assert temperature == 15.0 and pressure == 69964


class FakeBus:
    """smbus2's calls over a register map of one device."""

    def __init__(self, address: int, registers: dict[int, int]) -> None:
        self.address, self.registers, self.writes = address, dict(registers), []

    def _check(self, address: int) -> None:
        if address != self.address:
            raise OSError(121, "Remote I/O error")

    def read_byte_data(self, address, register):
        self._check(address)
        return self.registers.get(register, 0)

    def read_i2c_block_data(self, address, register, length):
        self._check(address)
        return [self.registers.get(register + i, 0) for i in range(length)]

    def write_byte_data(self, address, register, value):
        self._check(address)
        self.writes.append((register, value))


def bmp180_bus(ut: int, up: int, oss: int) -> FakeBus:
    cal = struct.pack(">hhhHHHhhhhh", *BMP180_EXAMPLE.values())
    registers = {0xD0: 0x55} | {0xAA + i: b for i, b in enumerate(cal)}
    bus = FakeBus(0x77, registers)
    original = bus.write_byte_data

    def convert(address, register, value):  # the chip puts UT or UP into 0xF6.. on a conversion
        original(address, register, value)
        raw = [ut >> 8, ut & 0xFF] if value == 0x2E else list((up << (8 - oss)).to_bytes(3, "big"))
        bus.registers.update({0xF6 + i: b for i, b in enumerate(raw)})

    bus.write_byte_data = convert
    return bus


def test_bmp180_reads_through_the_bus():
    sensor = bmp180.Bmp180(bus=bmp180_bus(27898, 23843, oss=0), oss=0)
    readings = {r.sensor: (r.value, r.unit) for r in sensor.read()}
    assert readings == {"bmp180.temperature": (15.0, "celsius"), "bmp180.pressure": (69964.0, "pascal")}


def test_a_missing_bmp180_is_a_sensor_error():
    with pytest.raises(SensorError, match="BMP180 at 0x77"):
        bmp180.Bmp180(bus=FakeBus(0x76, {}), oss=0).read()
    with pytest.raises(SensorError, match="chip id"):
        bmp180.Bmp180(bus=FakeBus(0x77, {0xD0: 0x58}), oss=0).read()


def test_bme280_temperature_and_pressure_datasheet_example():
    fine = bme280.t_fine(BMP280_EXAMPLE, 519888)
    assert fine == 128422 and bme280.temperature(fine) == 25.08
    # The example's figure comes from the floating-point formula; the integer one (1/256 Pa) is within 0.03 Pa.
    assert bme280.pressure(BMP280_EXAMPLE, fine, 415148) == pytest.approx(100653.27, abs=0.03)


def test_bme280_humidity_integer_formula_agrees_with_the_datasheets_floating_point_one():
    cal = {"H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30}

    def floating(fine: int, adc_h: int) -> float:  # datasheet 8.1, the double precision version
        h = fine - 76800.0
        h = (adc_h - (cal["H4"] * 64.0 + cal["H5"] / 16384.0 * h)) * (cal["H2"] / 65536.0 * (
            1.0 + cal["H6"] / 67108864.0 * h * (1.0 + cal["H3"] / 67108864.0 * h)))
        return min(max(h * (1.0 - cal["H1"] * h / 524288.0), 0.0), 100.0)

    for fine, adc_h in ((128422, 30000), (100000, 25000), (150000, 35000), (128422, 20000)):
        assert bme280.humidity(cal, fine, adc_h) == pytest.approx(floating(fine, adc_h), abs=0.05)


def test_bme280_calibration_layout_with_signed_12_bit_fields():
    block1 = struct.pack("<HhhHhhhhhhhh", *BMP280_EXAMPLE.values())
    cal = bme280.parse_calibration(block1, 75, bytes([0x6A, 0x01, 0x00, 0x13, 0x2F, 0x03, 0xE2]))
    assert (cal["H1"], cal["H2"], cal["H3"], cal["H4"], cal["H5"], cal["H6"]) == (75, 362, 0, 319, 50, -30)
    assert cal["T3"] == -1000 and cal["P9"] == 6000


def w1_tree(tmp_path, devices: dict[str, str]):
    for device, text in devices.items():
        (tmp_path / device).mkdir()
        (tmp_path / device / "w1_slave").write_text(text)
    return tmp_path


def test_ds18b20_reads_millidegrees_and_checks_the_crc(tmp_path):
    good = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    sensor = Ds18b20(devices=w1_tree(tmp_path, {"28-000005e2fdc3": good}))
    [reading] = sensor.read()
    assert (reading.sensor, reading.value, reading.unit) == ("ds18b20.temperature", 23.125, "celsius")


@pytest.mark.parametrize("text, message", [
    ("72 01 4b 46 7f ff 0e 10 57 : crc=ff NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n", "CRC check failed"),
    ("50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n", "power-on reset"),
    ("", "CRC check failed"),
])
def test_ds18b20_bad_reads_are_sensor_errors(tmp_path, text, message):
    with pytest.raises(SensorError, match=message):
        Ds18b20(devices=w1_tree(tmp_path, {"28-000005e2fdc3": text})).read()


def test_no_ds18b20_says_how_to_enable_1_wire(tmp_path):
    with pytest.raises(SensorError, match="dtoverlay=w1-gpio"):
        Ds18b20(devices=tmp_path).read()


def test_cpu_thermal_zone(tmp_path):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert CpuThermal(path=zone).read()[0].value == 48.312
    zone.write_text("garbage")
    with pytest.raises(SensorError, match="not millidegrees"):
        CpuThermal(path=zone).read()
    with pytest.raises(SensorError):
        CpuThermal(path=tmp_path / "missing").read()


def test_random_source_walks_in_small_steps():
    source = RandomSource(seed=1, step=0.5)
    values = [source.read()[0].value for _ in range(100)]
    assert all(abs(b - a) <= 0.5 + 1e-9 for a, b in zip(values, values[1:])) and len(set(values)) > 50
