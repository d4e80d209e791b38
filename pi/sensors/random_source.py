"""A random walk, for load tests and demos without hardware."""

from __future__ import annotations

import random

from pi.sensors import Reading


class RandomSource:
    def __init__(self, name: str = "random", *, start: float = 20.0, step: float = 0.1, seed: int | None = None) -> None:
        self.name, self.value, self.step = name, start, step
        self.random = random.Random(seed)

    def read(self) -> list[Reading]:
        self.value += self.random.uniform(-self.step, self.step)
        return [Reading(f"{self.name}.value", round(self.value, 4), "none")]
