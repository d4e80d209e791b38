"""Telegraf itself writes to the ingest unchanged: its `inputs.mqtt_consumer` reads a real Mosquitto
broker and both of its InfluxDB outputs (v2 and v1) write what it read to the real ingest app, which
stores into the CrateDB contract double (not CrateDB). Every published message must be stored once
per output, also when the database is away for a while (Telegraf keeps the metrics and retries).

Telegraf is built from the Go module proxy by `tools/build-telegraf.sh` (only the plugins used here);
`MDS_TELEGRAF` names the binary. Without Telegraf or Mosquitto these tests skip with the reason,
unless MDS_REQUIRE_TELEGRAF=1 (CI), which turns that into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cratedb_double import CrateState
from tests.unit.ingest_support import run, running, token

MESSAGES = 120  # per topic, two topics


def _require(what: str, path: str | None) -> str:
    if path and Path(path).is_file():
        return path
    message = f"{what} is not installed"
    if os.environ.get("MDS_REQUIRE_TELEGRAF") == "1":
        pytest.fail(message + " (MDS_REQUIRE_TELEGRAF=1)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def telegraf() -> str:
    return _require("Telegraf (tools/build-telegraf.sh builds it; MDS_TELEGRAF names it)",
                    os.environ.get("MDS_TELEGRAF") or shutil.which("telegraf"))


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto broker on a free loopback port; yields (port, log file)."""
    binary = _require("mosquitto (Debian package mosquitto)", shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    from tools.bench.ingest import free_port
    port, log = free_port(), tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    # The log goes to stderr (unbuffered): as root, Mosquitto drops to its own user before it opens a log file.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest stderr\nlog_type all\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait(lambda: log.exists() and "Opening ipv4 listen socket" in log.read_text(), 10, "mosquitto to listen")
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _config(broker_port: int, ingest_url: str) -> str:
    """Telegraf reading line protocol from MQTT and writing it through both InfluxDB outputs, each as
    a device of its own (the token is the identity; org, bucket and database are ignored)."""
    return f"""
[agent]
  interval = "1s"
  flush_interval = "1s"
  flush_jitter = "0s"
  metric_batch_size = 50
  omit_hostname = true

[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{broker_port}"]
  topics = ["factory/#"]
  qos = 1
  client_id = "mds-telegraf-test"
  persistent_session = true
  topic_tag = ""
  data_format = "influx"

[[outputs.influxdb_v2]]
  urls = ["{ingest_url}"]
  token = "{token("telegraf-v2")}"
  organization = "factory"
  bucket = "machines"

[[outputs.influxdb]]
  urls = ["{ingest_url}"]
  database = "telegraf"
  username = "ignored"
  password = "{token("telegraf-v1")}"
"""


# A publisher of its own process: the test process may hold more than 1024 descriptors by now
# (the whole suite runs in it), and paho's loop uses select(), which cannot take them (seen in CI:
# the client dropped its connection and every publish waited out its timeout).
PUBLISHER = """
import json, sys
import paho.mqtt.client as mqtt
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mds-test-plc")
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_start()
for topic, payload in json.load(sys.stdin):
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    if not info.is_published():
        sys.exit(f"not published within 10 s: {topic} {payload}")
client.loop_stop()
client.disconnect()
"""


def _publish(port: int, start_ns: int) -> list[tuple[str, int]]:
    """Publish line protocol on two topics with QoS 1; returns (sensor, ms) of every reading."""
    messages, sent = [], []
    for i in range(MESSAGES):
        for line in ("3", "4"):
            ts = start_ns + i * 10_000_000  # 10 ms apart: distinct keys after the cut to milliseconds
            messages.append((f"factory/line{line}/press", f"press,line={line},unit=kN force={10 + i * 0.5} {ts}"))
            sent.append((f"press.force,line={line},unit=kN", ts // 1_000_000))  # unit is part of the series key
    # A value sent twice for one moment (a PLC resending): the batch must not be refused for it,
    # or Telegraf drops every other point in it (it drops a batch answered 400).
    ts = start_ns + MESSAGES * 10_000_000
    messages += [("factory/line3/press", f"press,line=3,unit=kN force={value} {ts}") for value in (1.0, 2.0)]
    sent.append(("press.force,line=3,unit=kN", ts // 1_000_000))
    result = subprocess.run([sys.executable, "-c", PUBLISHER, str(port)], input=json.dumps(messages), text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return sent


def _telegraf_run(telegraf: str, conf: Path, log: Path, broker_log: Path, state: CrateState, expected: int,
                  outage_s: float = 0.0, publish=None) -> None:
    process = subprocess.Popen([telegraf, "--config", str(conf)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait(lambda: "SUBSCRIBE from mds-telegraf-test" in broker_log.read_text(), 30, "Telegraf to subscribe")
        publish()
        if outage_s:
            time.sleep(outage_s)
            state.master = True
        _wait(lambda: len(state.readings) >= expected, 60, f"{expected} readings stored")
        time.sleep(2.5)  # two more flushes: nothing may arrive twice or beyond what was sent
    finally:
        process.terminate()
        process.wait(timeout=15)


def _check(state: CrateState, sent: list[tuple[str, int]]) -> None:
    stored = list(state.readings.values())
    for device in ("telegraf-v2", "telegraf-v1"):
        mine = sorted((r[2], r[0]) for r in stored if r[1] == device)
        assert mine == sorted(sent), f"{device}: {len(mine)} stored of {len(sent)} sent"
    assert len(stored) == 2 * len(sent)
    sample = next(r for r in stored if r[1] == "telegraf-v2" and r[2] == "press.force,line=3,unit=kN")
    assert sample[4] == "kN" and sample[5] == {"line": "3"} and "num" in sample[3]


def test_telegraf_from_mqtt_writes_every_message_once_through_both_outputs(telegraf, broker, tmp_path):
    port, broker_log = broker

    async def go():
        async with running() as (url, double, _):
            conf = tmp_path / "telegraf.conf"
            conf.write_text(_config(port, url))
            holder = {}
            start = (int(time.time()) - 60) * 1_000_000_000
            await asyncio.to_thread(_telegraf_run, telegraf, conf, tmp_path / "telegraf.log", broker_log, double.state,
                                    2 * (2 * MESSAGES + 1), publish=lambda: holder.update(sent=_publish(port, start)))
            _check(double.state, holder["sent"])
    run(go())


def test_telegraf_keeps_and_resends_what_it_read_while_the_database_is_away(telegraf, broker, tmp_path):
    """The ingest answers 503 with Retry-After while CrateDB has no master; Telegraf keeps the metrics
    in its buffer and sends them again: all of them are stored once the database is back."""
    port, broker_log = broker

    async def go():
        state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, master=False)
        async with running(state, retry_after_s=1) as (url, double, _):
            conf = tmp_path / "telegraf.conf"
            conf.write_text(_config(port, url))
            holder = {}
            start = (int(time.time()) - 60) * 1_000_000_000
            log = tmp_path / "telegraf.log"
            await asyncio.to_thread(_telegraf_run, telegraf, conf, log, broker_log, state, 2 * (2 * MESSAGES + 1),
                                    outage_s=4, publish=lambda: holder.update(sent=_publish(port, start)))
            assert "503" in log.read_text(), "the outage never reached Telegraf"
            _check(double.state, holder["sent"])
    run(go())
