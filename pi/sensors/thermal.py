"""The CPU's thermal zone: on any Linux, the sensor for a first try."""

from __future__ import annotations

from pathlib import Path

from pi.sensors import Reading, SensorError

ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


class CpuThermal:
    def __init__(self, name: str = "cpu", *, path: Path = ZONE) -> None:
        self.name, self.path = name, path

    def read(self) -> list[Reading]:
        try:
            text = self.path.read_text().strip()
        except OSError as e:
            raise SensorError(f"{self.path}: {e.strerror or e}") from e
        if not text.lstrip("-").isdigit():
            raise SensorError(f"{self.path}: {text[:20]!r} is not millidegrees")
        return [Reading(f"{self.name}.temperature", int(text) / 1000, "celsius")]
