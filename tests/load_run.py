"""`python -m tools.loadgen` as a process whose per-second progress is read as it comes: the node-loss
tests (lab tier and post-deploy) ask how many readings were acknowledged by a moment, and when
acknowledgements resumed after it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class LoadRun:
    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tools.loadgen", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        self.progress: list[tuple[float, int]] = []  # (monotonic time, acknowledged so far)
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("t="):
                self.progress.append((time.monotonic(), int(line.split("acked=")[1].split()[0])))

    def resumed_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first progress line with more acknowledgements than by then."""
        before = max((acked for t, acked in self.progress if t <= moment), default=0)
        return next((t - moment for t, acked in self.progress if t > moment and acked > before), None)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join()
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)
