"""The sensor agent: `python -m pi.agent --config agent.toml` (or `--probe`).

A sampler thread reads every sensor on a fixed schedule; a sender thread batches the readings by
size and age and posts them. A batch that cannot be delivered now goes to the on-disk buffer and is
replayed oldest first; a batch the ingest refuses for good goes to the dead-letter file with the
reason. Nothing is dropped silently: the only loss is the buffer's bound, counted and logged.
Each reading's key at the ingest is (device, sensor, ts): a replay stores nothing twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

from pi.buffer import Buffer
from pi.config import AgentConfig, ConfigError, SensorConfig, load
from pi.delivery import Acknowledged, Backoff, Delivery, Rejected, Retry
from pi.schedule import Schedule
from pi.sensors import Sensor, SensorError

log = logging.getLogger("pi.agent")
STATS_EVERY_S = 60.0


def make_sensor(config: SensorConfig) -> Sensor:
    options = dict(config.options)
    for key in ("address", "bus"):
        if isinstance(options.get(key), str):
            options[key] = int(options[key], 0)  # "0x77" as well as 119
    if "bus" in options:
        options["bus_number"] = options.pop("bus")
    if config.type == "bmp180":
        from pi.sensors.bmp180 import Bmp180
        return Bmp180(**options)
    if config.type == "bme280":
        from pi.sensors.bme280 import Bme280
        return Bme280(**options)
    if config.type == "ds18b20":
        from pi.sensors.ds18b20 import Ds18b20
        return Ds18b20(**{k: Path(v) if k == "devices" else v for k, v in options.items()})
    if config.type == "thermal":
        from pi.sensors.thermal import CpuThermal
        return CpuThermal(**{k: Path(v) if k == "path" else v for k, v in options.items()})
    from pi.sensors.random_source import RandomSource
    return RandomSource(**options)


class SensorSlot:
    """A sensor with its failure backoff: after k failures in a row it sits out 2^k ticks (capped)."""

    def __init__(self, sensor: Sensor, max_skip: int) -> None:
        self.sensor, self.max_skip, self.failures, self.skip = sensor, max_skip, 0, 0

    def due(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def failed(self, error: Exception) -> None:
        self.failures += 1
        self.skip = min(2 ** self.failures, self.max_skip)
        if self.failures in (1, 2, 4, 8) or self.failures % 100 == 0:
            log.warning("sensor %s failed (%d in a row, next try in %d ticks): %s",
                        self.sensor.name, self.failures, self.skip, error)

    def succeeded(self) -> None:
        if self.failures:
            log.info("sensor %s reads again after %d failures", self.sensor.name, self.failures)
        self.failures = 0


class Agent:
    def __init__(self, config: AgentConfig, sensors: list[Sensor], *, delivery: Delivery | None = None,
                 buffer: Buffer | None = None, backoff: Backoff | None = None) -> None:
        self.config = config
        self.slots = [SensorSlot(s, max(1, 10_000 // config.interval_ms)) for s in sensors]
        self.delivery = delivery or Delivery(config.endpoints, config.token, timeout_s=config.timeout_s, ca_file=config.ca_file)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.buffer = buffer or Buffer(config.state_dir / "buffer.db", max_readings=config.buffer_max_readings)
        self.dead_letters = config.state_dir / "dead-letter.jsonl"
        self.backoff = backoff or Backoff()
        self.pending: deque[dict] = deque()  # sampled, not yet in a batch (memory only: ~1 s of data)
        self.stop = threading.Event()
        self.retry_at = 0.0  # monotonic time before which the ingest is not tried again
        self.counts = dict.fromkeys(("sampled", "acknowledged", "buffered", "dead_lettered", "sensor_errors", "retries"), 0)
        self.schedule: Schedule | None = None
        self.last_ts = 0

    # -- sampling ---------------------------------------------------------------------------
    def sample_once(self) -> None:
        # Wall clock (what the reading means), but strictly increasing: a late tick followed by one on
        # time can fall into the same millisecond, and (device, sensor, ts) is the reading's key at
        # the ingest, where a repeated key is dropped as a retry.
        ts = max(time.time_ns() // 1_000_000, self.last_ts + 1)
        self.last_ts = ts
        for slot in self.slots:
            if not slot.due():
                continue
            try:
                readings = slot.sensor.read()
            except Exception as e:  # noqa: BLE001 - a failing sensor never stops the others
                self.counts["sensor_errors"] += 1
                slot.failed(e)
                continue
            slot.succeeded()
            for r in readings:
                if isinstance(r.value, float) and not math.isfinite(r.value):
                    self.counts["sensor_errors"] += 1
                    log.warning("sensor %s gave %r: not stored", r.sensor, r.value)
                    continue
                self.pending.append({"ts": ts, "sensor": r.sensor, "value": r.value, "unit": r.unit})
                self.counts["sampled"] += 1

    def run_sampler(self) -> None:
        self.schedule = Schedule(self.config.interval_ms / 1000)
        while not self.stop.is_set():
            self.schedule.wait()
            if not self.stop.is_set():
                self.sample_once()

    # -- delivery ---------------------------------------------------------------------------
    def _dead_letter(self, readings: list[dict], status: int, reason: str) -> None:
        with open(self.dead_letters, "a") as f:
            f.write(json.dumps({"time": time.time(), "status": status, "reason": reason, "readings": readings}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.counts["dead_lettered"] += len(readings)
        log.error("the ingest refused %d readings (%d %s): kept in %s", len(readings), status, reason, self.dead_letters)

    def deliver(self, readings: list[dict]) -> bool:
        """One attempt; True when every reading is acknowledged or dead-lettered (the batch is done)."""
        while readings:
            outcome = self.delivery.send(readings)
            if isinstance(outcome, Acknowledged):
                self.counts["acknowledged"] += len(readings)
                self.backoff.reset()
                return True
            if isinstance(outcome, Retry):
                self.counts["retries"] += 1
                delay = self.backoff.next_delay(outcome.after_s)
                self.retry_at = time.monotonic() + delay
                log.warning("no ingest took the batch (%s); next try in %.1f s", outcome.reason, delay)
                return False
            assert isinstance(outcome, Rejected)
            if outcome.failed is not None:  # the others are stored
                refused = set(outcome.failed)
                self._dead_letter([r for i, r in enumerate(readings) if i in refused], outcome.status, outcome.reason)
                self.counts["acknowledged"] += len(readings) - len(refused)
                return True
            if outcome.index is not None and 0 <= outcome.index < len(readings):  # nothing stored: drop the bad one, resend
                self._dead_letter([readings[outcome.index]], outcome.status, outcome.reason)
                readings = readings[:outcome.index] + readings[outcome.index + 1:]
                continue
            self._dead_letter(readings, outcome.status, outcome.reason)
            return True
        return True

    def take_batch(self, force: bool = False) -> list[dict] | None:
        """A batch when enough readings wait, or the oldest is old enough (or `force`)."""
        if not self.pending:
            return None
        age_ms = time.time_ns() // 1_000_000 - self.pending[0]["ts"]
        if not force and len(self.pending) < self.config.batch_max_readings and age_ms < self.config.batch_max_age_ms:
            return None
        count = min(len(self.pending), self.config.batch_max_readings)
        return [self.pending.popleft() for _ in range(count)]

    def send_step(self, force: bool = False) -> None:
        """Replay the buffer first (oldest first), then the fresh batch; what cannot go now goes to disk."""
        ingest_open = time.monotonic() >= self.retry_at
        while ingest_open and (item := self.buffer.oldest()) is not None:
            batch_id, readings = item
            if not self.deliver(readings):
                ingest_open = False
                break
            self.buffer.remove(batch_id)
        while (batch := self.take_batch(force)) is not None:
            if ingest_open and self.buffer.oldest() is None and self.deliver(batch):
                continue
            ingest_open = False
            self.buffer.put(batch)  # not acknowledged: now it must survive a power cut
            self.counts["buffered"] += len(batch)

    def run_sender(self) -> None:
        last_stats = time.monotonic()
        while not self.stop.wait(0.05):
            self.send_step()
            if time.monotonic() - last_stats >= STATS_EVERY_S:
                last_stats = time.monotonic()
                log.info("stats %s missed_ticks=%d buffer=%d dropped=%d", " ".join(f"{k}={v}" for k, v in self.counts.items()),
                         self.schedule.missed if self.schedule else 0, self.buffer.size(), self.buffer.dropped)

    def shutdown(self) -> None:
        """After the threads stopped: one last attempt to deliver; what is not acknowledged goes to
        the buffer (on disk) and out after the next start."""
        self.send_step(force=True)
        self.buffer.close()
        self.delivery.close()

    def run(self) -> None:
        threads = [threading.Thread(target=self.run_sampler, name="sampler"),
                   threading.Thread(target=self.run_sender, name="sender")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.shutdown()


def probe() -> int:
    """List the sensors this machine has, with one reading each."""
    candidates = [SensorConfig("thermal"), SensorConfig("bmp180"), SensorConfig("bme280", {"address": 0x76}),
                  SensorConfig("bme280", {"address": 0x77}), SensorConfig("ds18b20")]
    found = 0
    for candidate in candidates:
        label = f"{candidate.type} {candidate.options or ''}".strip()
        try:
            readings = make_sensor(candidate).read()
        except (SensorError, OSError) as e:
            print(f"-  {label}: {e}")
            continue
        found += 1
        print(f"ok {label}: " + ", ".join(f"{r.sensor} = {r.value} {r.unit}" for r in readings))
    return 0 if found else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pi.agent", description="The machine data stack's sensor agent")
    parser.add_argument("--config", type=Path, help="the agent's TOML file")
    parser.add_argument("--probe", action="store_true", help="list the sensors found here, one reading each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.probe:
        return probe()
    if not args.config:
        parser.error("--config is required (or --probe)")
    try:
        config = load(args.config)
        sensors = [make_sensor(s) for s in config.sensors]
    except (ConfigError, SensorError, TypeError) as e:
        print(f"agent: {e}", file=sys.stderr)
        return 2
    agent = Agent(config, sensors)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop.set())
    log.info("sampling %d sensors every %d ms, delivering to %s", len(sensors), config.interval_ms, ", ".join(config.endpoints))
    agent.run()
    log.info("stopped; %d readings wait in the buffer", Buffer(config.state_dir / "buffer.db").size())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
