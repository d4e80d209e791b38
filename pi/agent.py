"""The sensor agent: `python -m pi.agent --config agent.toml` (or `--probe`).

A sampler thread reads every sensor on a fixed schedule and puts each tick's readings into the
on-disk buffer before anything else happens to them; a sender thread takes batches from the
buffer by size and age, oldest first, posts them and deletes them once acknowledged. A batch too
large for the ingest (413) is split and resent; while the ingest refuses the token (401/403) the
readings stay in the buffer, loudly logged; a reading the ingest refuses for good (422) goes to the
dead-letter file with the reason (`--resend-dead-letters` puts them back). Nothing is dropped
silently: the only loss is the buffer's bound, counted and logged (and, with durability "crash",
the last seconds before a power cut: pi/buffer.py). Each reading's key at the ingest is
(device, sensor, ts): a replay stores nothing twice.
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
from pathlib import Path

from pi.buffer import Buffer
from pi.config import AgentConfig, ConfigError, SensorConfig, load
from pi.delivery import Acknowledged, Backoff, Delivery, Rejected, Retry
from pi.schedule import Schedule
from pi.sensors import Sensor, SensorError

log = logging.getLogger("pi.agent")
STATS_EVERY_S = 60.0
UNAUTHORIZED_RETRY_S = 30.0  # a refused token is retried no faster than this (a rotation takes a while)
SHUTDOWN_DELIVERY_S = 5.0  # the last delivery attempt at SIGTERM; the rest stays in the buffer


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
        self.buffer = buffer or Buffer(config.state_dir / "buffer.db", max_readings=config.buffer_max_readings,
                                       durability=config.durability)
        self.dead_letters = config.state_dir / DEAD_LETTERS
        self.backoff = backoff or Backoff()
        self.stop = threading.Event()
        self.retry_at = 0.0  # monotonic time before which the ingest is not tried again
        self.counts = dict.fromkeys(("sampled", "acknowledged", "dead_lettered", "sensor_errors", "retries",
                                     "split", "unauthorized"), 0)
        self.schedule: Schedule | None = None
        self.last_ts = self.buffer.newest_ts()  # keys stay distinct from what a previous run left

    # -- sampling ---------------------------------------------------------------------------
    def sample_once(self) -> None:
        # Wall clock (what the reading means), but strictly increasing: a late tick followed by one on
        # time can fall into the same millisecond, and (device, sensor, ts) is the reading's key at
        # the ingest, where a repeated key is dropped as a retry.
        ts = max(time.time_ns() // 1_000_000, self.last_ts + 1)
        self.last_ts = ts
        tick: list[dict] = []
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
                tick.append({"ts": ts, "sensor": r.sensor, "value": r.value, "unit": r.unit})
        if tick:
            self.buffer.put(tick)  # on disk before anything else happens to them
            self.counts["sampled"] += len(tick)

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
        """One attempt; True when every reading is acknowledged or dead-lettered (the rows can go)."""
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
            if outcome.status in (401, 403):  # a rotated or revoked token: keep everything until it works
                self.counts["unauthorized"] += 1
                delay = self.backoff.next_delay(UNAUTHORIZED_RETRY_S)
                self.retry_at = time.monotonic() + delay
                log.error("the ingest refuses this device's token (%d %s): %d readings wait in the buffer until it is "
                          "accepted again (next try in %.0f s); check the token file", outcome.status, outcome.reason,
                          self.buffer.size(), delay)
                return False
            if outcome.status == 413 and len(readings) > 1:  # a lower limit at the ingest: halves, each in turn
                self.counts["split"] += 1
                half = len(readings) // 2
                log.warning("the ingest refused %d readings as too large (%s); sending them in two halves",
                            len(readings), outcome.reason)
                return self.deliver(readings[:half]) and self.deliver(readings[half:])
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

    def batch_due(self, force: bool = False) -> bool:
        """Enough readings wait, or the oldest is old enough (or `force` and any wait)."""
        held = self.buffer.size()
        if not held:
            return False
        if force or held >= self.config.batch_max_readings:
            return True
        oldest = self.buffer.oldest_ts()
        return oldest is not None and time.time_ns() // 1_000_000 - oldest >= self.config.batch_max_age_ms

    def send_step(self, force: bool = False, deadline: float | None = None) -> None:
        """Deliver from the buffer, oldest first, while the ingest takes batches."""
        while time.monotonic() >= self.retry_at and self.batch_due(force):
            if deadline is not None and time.monotonic() >= deadline:
                return
            ids, readings = self.buffer.take(self.config.batch_max_readings)
            if not self.deliver(readings):
                return
            self.buffer.remove(*ids)

    def run_sender(self) -> None:
        last_stats = time.monotonic()
        while not self.stop.wait(0.05):
            self.send_step()
            if time.monotonic() - last_stats >= STATS_EVERY_S:
                last_stats = time.monotonic()
                log.info("stats %s missed_ticks=%d buffer=%d dropped=%d", " ".join(f"{k}={v}" for k, v in self.counts.items()),
                         self.schedule.missed if self.schedule else 0, self.buffer.size(), self.buffer.dropped)

    def shutdown(self) -> None:
        """After the threads stopped: a last attempt to deliver, for a few seconds; the rest is in
        the buffer already and goes out after the next start."""
        self.send_step(force=True, deadline=time.monotonic() + SHUTDOWN_DELIVERY_S)
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


DEAD_LETTERS = "dead-letter.jsonl"


def resend_dead_letters(config: AgentConfig) -> int:
    """Put every dead letter's readings back into the buffer: the agent (running or next started)
    delivers them. The file is renamed first, so an agent writing new letters meanwhile starts a
    new one; a resend cut short leaves its renamed file, which the next resend takes too (readings
    sent twice are stored once)."""
    state = config.state_dir
    current = state / DEAD_LETTERS
    if current.exists():
        current.rename(state / f"dead-letter.resending-{time.time_ns()}.jsonl")
    taken = sorted(state.glob("dead-letter.resending-*.jsonl"))
    if not taken:
        print(f"no dead letters in {state}")
        return 0
    buffer = Buffer(state / "buffer.db", max_readings=config.buffer_max_readings, durability="power-cut")
    letters = readings = 0
    for path in taken:
        for line in path.read_text().splitlines():
            if line.strip():
                letter = json.loads(line)
                buffer.put(letter["readings"])
                letters, readings = letters + 1, readings + len(letter["readings"])
        path.unlink()
    buffer.close()
    print(f"{readings} readings of {letters} dead letters are back in {state / 'buffer.db'}; the agent delivers them "
          "(readings the ingest still refuses come back as dead letters)")
    return 0


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
    parser.add_argument("--resend-dead-letters", action="store_true",
                        help="put the readings of the dead-letter file back into the buffer, for delivery")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.probe:
        return probe()
    if not args.config:
        parser.error("--config is required (or --probe)")
    try:
        config = load(args.config)
        if args.resend_dead_letters:
            return resend_dead_letters(config)
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
