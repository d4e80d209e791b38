"""A fixed sampling schedule that does not drift: tick n is due at start + n × interval on the
monotonic clock; a tick whose time passed while the previous one ran is counted as missed, never
run late in a bunch. Timestamps of readings come from the wall clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Schedule:
    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if interval_s <= 0:
            raise ValueError("the sampling interval must be positive")
        self.interval, self.clock, self.sleep = interval_s, clock, sleep
        self.start = clock()
        self.tick = 0  # the tick that runs next
        self.missed = 0

    def wait(self) -> int:
        """Sleep until the next due tick and return its number; skipped ticks are counted."""
        now = self.clock()
        due = self.start + self.tick * self.interval
        if now > due + self.interval:  # at least one whole tick went by while we were busy
            late = math.floor((now - due) / self.interval)
            self.tick += late
            self.missed += late
            due = self.start + self.tick * self.interval
        if due > now:
            self.sleep(due - now)
        current = self.tick
        self.tick += 1
        return current
