"""The sampling schedule with a fake clock, and the offline buffer across `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pi.buffer import Buffer
from pi.schedule import Schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def test_no_drift_over_ten_thousand_ticks_even_with_jittery_work():
    clock = FakeClock()
    schedule = Schedule(0.1, clock=clock, sleep=clock.sleep)
    for n in range(10_000):
        assert schedule.wait() == n
        assert abs(clock.now - (1000.0 + n * 0.1)) < 1e-6  # each tick starts on its own time
        clock.now += 0.003 + (n % 7) * 0.01  # the work of a tick: 3-63 ms, less than the interval
    assert schedule.missed == 0


def test_a_slow_tick_skips_the_ticks_it_overran_and_counts_them():
    clock = FakeClock()
    schedule = Schedule(0.1, clock=clock, sleep=clock.sleep)
    assert schedule.wait() == 0
    clock.now += 0.35  # a sensor hung for 3.5 intervals
    assert schedule.wait() == 3  # ticks 1 and 2 are gone, not run late in a bunch
    assert schedule.missed == 2 and abs(clock.now - 1000.35) < 1e-9  # tick 3 (due at 0.3) runs at once
    assert schedule.wait() == 4 and abs(clock.now - 1000.4) < 1e-9  # and the grid holds


def batch(n: int, size: int = 3) -> list[dict]:
    return [{"key": f"b{n}-{i}", "ts": n * 1000 + i, "sensor": "s", "value": float(i)} for i in range(size)]


def test_buffer_replays_oldest_first_and_survives_reopening(tmp_path):
    buffer = Buffer(tmp_path / "buffer.db")
    for n in range(3):
        buffer.put(batch(n))
    buffer.close()
    buffer = Buffer(tmp_path / "buffer.db")
    seen = []
    while (item := buffer.oldest()) is not None:
        batch_id, readings = item
        seen.append(readings[0]["key"])
        buffer.remove(batch_id)
    assert seen == ["b0-0", "b1-0", "b2-0"] and buffer.size() == 0


def test_buffer_at_its_bound_drops_the_oldest_with_a_count(tmp_path, caplog):
    buffer = Buffer(tmp_path / "buffer.db", max_readings=6)
    for n in range(4):
        buffer.put(batch(n))
    assert buffer.size() == 6 and buffer.dropped == 6
    assert buffer.oldest()[1][0]["key"] == "b2-0"
    assert "offline buffer full" in caplog.text


WRITER = """
import sys
from pathlib import Path
from pi.buffer import Buffer
# No bound within reach: this is about kill -9, and a fast disk fills the default million readings
# within the test's few seconds (then the oldest are dropped, as they should be, and look "lost").
buffer = Buffer(Path(sys.argv[1]), max_readings=10**9)
n = int(sys.argv[2])
while True:
    buffer.put([{"key": f"b{n}-{i}", "value": i} for i in range(50)])
    print(n, flush=True)  # printed only after put returned: this batch is on disk
    n += 1
"""


def test_buffer_loses_nothing_when_the_process_is_killed_mid_write(tmp_path):
    """kill -9 of a real writer process at random moments, five times; every batch it reported as
    stored is there after each restart, whole and once."""
    path = tmp_path / "buffer.db"
    confirmed: set[int] = set()
    next_batch = 0
    root = Path(__file__).resolve().parents[2]
    for round_ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(next_batch)], cwd=root,
                                  stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 0.3 + 0.17 * round_
        while time.monotonic() < deadline:
            confirmed.add(int(writer.stdout.readline()))
        os.kill(writer.pid, signal.SIGKILL)
        rest = writer.stdout.read()  # lines printed before the kill landed
        confirmed.update(int(line) for line in rest.split())
        writer.wait()
        buffer = Buffer(path)
        stored = [r[0] for r in buffer.db.execute("SELECT body FROM batches ORDER BY id")]
        keys = [k for body in stored for k in json.loads(body)]
        batches = {int(k["key"].split("-")[0][1:]) for k in keys}
        assert confirmed <= batches, f"round {round_}: lost {sorted(confirmed - batches)[:5]}"
        assert len(keys) == len({k["key"] for k in keys}) and len(keys) % 50 == 0  # whole batches, once
        next_batch = max(batches) + 1
        buffer.close()
    assert len(confirmed) > 20
