"""Maxim DS18B20 on 1-wire, through the kernel's w1-therm sysfs files (dtoverlay=w1-gpio)."""

from __future__ import annotations

from pathlib import Path

from pi.sensors import Reading, SensorError

DEVICES = Path("/sys/bus/w1/devices")
POWER_ON_RESET_MILLI_C = 85000  # what the chip reports before its first conversion


def parse(text: str, device: str) -> float:
    """The two lines of w1_slave: `... : crc=xx YES` and `... t=23125` (millidegrees)."""
    lines = text.strip().splitlines()
    if len(lines) != 2 or not lines[0].endswith("YES"):
        raise SensorError(f"DS18B20 {device}: CRC check failed ({lines[0] if lines else 'empty read'})")
    _, sep, value = lines[1].partition(" t=")
    if not sep or not value.lstrip("-").isdigit():
        raise SensorError(f"DS18B20 {device}: no temperature in {lines[1]!r}")
    if int(value) == POWER_ON_RESET_MILLI_C:
        raise SensorError(f"DS18B20 {device}: power-on reset value (85 °C): the conversion did not run")
    return int(value) / 1000


class Ds18b20:
    def __init__(self, name: str = "ds18b20", *, device: str | None = None, devices: Path = DEVICES) -> None:
        self.name, self.device, self.devices = name, device, devices

    def read(self) -> list[Reading]:
        found = sorted(p.name for p in self.devices.glob("28-*")) if self.devices.is_dir() else []
        wanted = [self.device] if self.device else found
        if not wanted:
            raise SensorError(f"no DS18B20 under {self.devices} (is 1-wire enabled: dtoverlay=w1-gpio?)")
        readings = []
        for device in wanted:
            try:
                text = (self.devices / device / "w1_slave").read_text()
            except OSError as e:
                raise SensorError(f"DS18B20 {device}: {e.strerror or e}") from e
            suffix = "" if len(wanted) == 1 else f".{device}"
            readings.append(Reading(f"{self.name}{suffix}.temperature", parse(text, device), "celsius"))
        return readings
