"""The agent against a real local HTTP server (tests/recording_receiver.py, not the ingest) that
fails, stalls, throttles and goes away: every reading arrives, once by key; refused ones are in the
dead-letter file; config errors name the key."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pi.agent import Agent
from pi.buffer import Buffer
from pi.config import AgentConfig, ConfigError, parse
from pi.delivery import Acknowledged, Backoff, Delivery, Retry
from pi.sensors import Reading, SensorError
from tests.recording_receiver import RecordingReceiver

TOKEN = "mds1.pi-test.signature"
ROOT = Path(__file__).resolve().parents[2]


class Counter:
    """A sensor whose n-th successful read is n; it fails on every 7th call."""

    name = "counter"

    def __init__(self) -> None:
        self.calls, self.value = 0, 0

    def read(self) -> list[Reading]:
        self.calls += 1
        if self.calls % 7 == 0:
            raise SensorError("simulated bus error")
        self.value += 1
        return [Reading("counter", float(self.value), "none")]


def make_agent(tmp_path, endpoints, **overrides) -> tuple[Agent, Counter]:
    config = AgentConfig(endpoints=tuple(endpoints), token=TOKEN, sensors=(), timeout_s=0.5, interval_ms=10,
                         batch_max_readings=20, batch_max_age_ms=100, state_dir=tmp_path / "state", **overrides)
    counter = Counter()
    agent = Agent(config, [counter], backoff=Backoff(base_s=0.05, cap_s=0.3))
    return agent, counter


@contextlib.contextmanager
def running(agent: Agent):
    """The agent's threads, stopped whatever the test does."""
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        yield
    finally:
        agent.stop.set()
        thread.join(timeout=10)


def stored_values(receiver: RecordingReceiver) -> list[float]:
    return sorted(r["value"] for r in receiver.stored.values())


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_every_reading_arrives_once_through_failures_stalls_throttling_and_an_outage(tmp_path):
    with RecordingReceiver() as receiver:
        agent, counter = make_agent(tmp_path, [receiver.url])
        with running(agent):
            for mode, seconds in (("ok", 0.5), ("503", 1.0), ("ok", 0.5), ("429", 1.0), ("500", 0.5), ("stall", 1.5), ("ok", 0.5)):
                receiver.mode = mode
                time.sleep(seconds)
            receiver.go_away()  # the ingest host is gone for a while: connections refused
            time.sleep(1.5)
            assert agent.buffer.size() > 0  # the outage went to disk
            receiver.come_back()
            time.sleep(0.5)
        # What was left in the buffer at stop goes out on the next start.
        agent2, _ = make_agent(tmp_path, [receiver.url])
        agent2.send_step(force=True)
        agent2.shutdown()
        assert stored_values(receiver) == [float(n) for n in range(1, counter.value + 1)]
        assert counter.value > 100 and agent.counts["sensor_errors"] > 0 and agent.counts["retries"] > 0
        assert Buffer(tmp_path / "state" / "buffer.db").size() == 0


def test_fails_over_to_the_next_endpoint_and_stays_there(tmp_path):
    with RecordingReceiver() as down, RecordingReceiver() as up:
        down.go_away()
        agent, counter = make_agent(tmp_path, [down.url, up.url])
        with running(agent):
            time.sleep(1.0)
        buffer = Buffer(tmp_path / "state" / "buffer.db")  # what was sampled after the last send, kept at stop
        left = [r["value"] for body, in buffer.db.execute("SELECT body FROM batches") for r in json.loads(body)]
        assert sorted(stored_values(up) + left) == [float(n) for n in range(1, counter.value + 1)]
        assert agent.delivery.preferred == 1 and agent.counts["retries"] == 0  # failover within the attempt


def test_a_refused_reading_goes_to_the_dead_letter_file_and_the_rest_is_resent(tmp_path):
    with RecordingReceiver() as receiver:
        agent, _ = make_agent(tmp_path, [receiver.url])
        batch = [{"ts": 1000 + i, "sensor": "s", "value": float(i), "unit": None} for i in range(5)]
        receiver.mode = "reject"
        threading.Timer(0.2, lambda: setattr(receiver, "mode", "ok")).start()
        assert agent.deliver(batch)  # index 0 refused and dead-lettered; the remainder meets the same fate until ok
        letters = [json.loads(line) for line in (tmp_path / "state" / "dead-letter.jsonl").read_text().splitlines()]
        dead = [r["value"] for letter in letters for r in letter["readings"]]
        assert letters[0]["status"] == 422 and "outside the accepted window" in letters[0]["reason"]
        assert sorted(dead + stored_values(receiver)) == [0.0, 1.0, 2.0, 3.0, 4.0]  # each reading in one place
        agent.shutdown()


def test_while_the_token_is_refused_readings_stay_in_the_buffer_and_go_once_it_works(tmp_path, caplog):
    """A rotated token answers 401 until the new one is installed: nothing may end up as a dead
    letter, everything sampled meanwhile arrives afterwards."""
    with RecordingReceiver() as receiver:
        agent, counter = make_agent(tmp_path, [receiver.url])
        good = agent.delivery.token
        agent.delivery.token = "forged"
        with running(agent):
            wait_until(lambda: agent.counts["unauthorized"] >= 1 and agent.buffer.size() > 20)
            assert receiver.stored == {} and not (tmp_path / "state" / "dead-letter.jsonl").exists()
            agent.delivery.token = good
            agent.retry_at = 0.0  # as if the back-off (30 s and more) had passed
            wait_until(lambda: len(receiver.stored) >= 60)
        assert stored_values(receiver) == [float(v) for v in range(1, counter.value + 1)]
        assert "refuses this device's token (401" in caplog.text
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()


def test_a_batch_too_large_for_the_ingest_is_split_and_sent(tmp_path):
    with RecordingReceiver() as receiver:
        receiver.max_batch = 3
        agent, _ = make_agent(tmp_path, [receiver.url])
        batch = [{"ts": 1000 + i, "sensor": "s", "value": float(i), "unit": None} for i in range(10)]
        assert agent.deliver(batch)
        assert stored_values(receiver) == [float(i) for i in range(10)] and agent.counts["split"] >= 3
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
        agent.shutdown()


def test_dead_letters_can_be_resent(tmp_path):
    token = write_token(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "agent.toml").write_text(f'[agent]\nstate_dir = "{state}"\n[ingest]\nendpoints = ["http://127.0.0.1:9"]\n'
                                         f'token_file = "{token}"\n')
    state.mkdir()
    letters = [{"time": 1, "status": 422, "reason": "r", "readings": [{"ts": 10 + i, "sensor": "s", "value": i}]} for i in range(3)]
    (state / "dead-letter.jsonl").write_text("".join(json.dumps(letter) + "\n" for letter in letters))
    (state / "dead-letter.resending-1.jsonl").write_text(json.dumps(letters[0]) + "\n")  # a resend cut short earlier
    result = subprocess.run([sys.executable, "-m", "pi.agent", "--config", str(tmp_path / "agent.toml"), "--resend-dead-letters"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "4 readings of 4 dead letters are back in" in result.stdout, result
    buffer = Buffer(state / "buffer.db")
    ids, readings = buffer.take(100)
    assert sorted(r["ts"] for r in readings) == [10, 10, 11, 12] and list(state.glob("dead-letter*")) == []
    buffer.close()


def write_token(tmp_path, mode=0o600) -> Path:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(mode)
    return token


def test_config_with_environment_overrides(tmp_path):
    token = write_token(tmp_path)
    raw = {"agent": {"interval_ms": 100}, "ingest": {"endpoints": ["https://a:8080"], "token_file": str(token)},
           "sensors": [{"type": "bmp180", "address": "0x77"}, {"type": "random", "seed": 3}]}
    config = parse(raw, env={"MDS_AGENT_INGEST_ENDPOINTS": "https://a:8080,https://b:8080", "MDS_AGENT_AGENT_INTERVAL_MS": "250"})
    assert config.endpoints == ("https://a:8080", "https://b:8080") and config.interval_ms == 250
    assert config.token == TOKEN and [s.type for s in config.sensors] == ["bmp180", "random"]


@pytest.mark.parametrize("raw, message", [
    ({"agent": {"interval_ms": 0}}, "agent.interval_ms: 0 must be between 10"),
    ({"agent": {"intervall_ms": 100}}, "[agent]: unknown key(s) intervall_ms"),
    ({"ingest": {"endpoints": "http://a"}}, "ingest.endpoints: 'http://a' must be a non-empty list"),
    ({"sensors": [{"type": "dht22"}]}, "sensors[0].type: 'dht22' is not one of"),
    ({"sensors": [{"type": "thermal", "address": 1}]}, "sensors[0]: unknown key(s) address for thermal"),
    ({"agent": {"batch_max_readings": 20000}}, "agent.batch_max_readings: 20000 must be between 1 and 10000"),
])
def test_bad_config_names_the_key(tmp_path, raw, message):
    token = write_token(tmp_path)
    base = {"ingest": {"endpoints": ["http://a:8080"], "token_file": str(token)}}
    merged = {**base, **raw, "ingest": {**base["ingest"], **raw.get("ingest", {})}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(merged, env={})


def test_a_token_file_others_can_read_is_refused(tmp_path):
    token = write_token(tmp_path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        parse({"ingest": {"endpoints": ["http://a:8080"], "token_file": str(token)}}, env={})


def test_a_real_agent_process_killed_repeatedly_while_buffering_loses_nothing_it_stored(tmp_path):
    """`kill -9` of `python -m pi.agent` while the ingest is away; every batch that reached its buffer
    arrives once it is back, and a stopped agent leaves nothing behind."""
    receiver = RecordingReceiver()
    receiver.go_away()  # nothing listens: the agent buffers
    token = write_token(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "agent.toml").write_text(
        f'[agent]\ninterval_ms = 20\nbatch_max_readings = 10\nbatch_max_age_ms = 100\nstate_dir = "{state}"\n'
        f'[ingest]\nendpoints = ["{receiver.url}"]\ntoken_file = "{token}"\ntimeout_s = 1\n'
        f'[[sensors]]\ntype = "random"\n')
    seen: set[tuple] = set()
    for round_ in range(4):
        agent = subprocess.Popen([sys.executable, "-m", "pi.agent", "--config", str(tmp_path / "agent.toml")], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0 + 0.3 * round_)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        buffer = Buffer(state / "buffer.db")
        keys = [(r["sensor"], r["ts"]) for body, in buffer.db.execute("SELECT body FROM batches") for r in json.loads(body)]
        buffer.close()
        assert len(keys) == len(set(keys)) and seen <= set(keys)  # nothing stored earlier went missing
        seen = set(keys)
    assert len(seen) > 50
    receiver.come_back()
    with receiver:
        agent = subprocess.Popen([sys.executable, "-m", "pi.agent", "--config", str(tmp_path / "agent.toml")], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: seen <= {(s, ts) for (_, s, ts) in receiver.stored})
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        assert Buffer(state / "buffer.db").size() == 0 and receiver.repeats == 0


def test_two_ticks_in_the_same_millisecond_get_distinct_keys(tmp_path, monkeypatch):
    """(device, sensor, ts) is a reading's key at the ingest: a repeated key would be dropped as a retry."""
    agent, _ = make_agent(tmp_path, ["http://127.0.0.1:9"])
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_150_000_000_000_000)  # the clock stands still
    for _ in range(3):
        agent.sample_once()
    assert [r["ts"] for r in agent.buffer.take(100)[1]] == [1_764_150_000_000, 1_764_150_000_001, 1_764_150_000_002]
    agent.buffer.close()
    restarted, _ = make_agent(tmp_path, ["http://127.0.0.1:9"])  # the clock still stands (or went back)
    restarted.sample_once()
    assert restarted.buffer.take(100)[1][-1]["ts"] == 1_764_150_000_003
    restarted.buffer.close()


def test_kill_9_loses_nothing_that_was_sampled(tmp_path):
    """A real `python -m pi.agent` sampling every 20 ms with the ingest away and batches of up to
    3 s: killed at random moments, its buffer always reaches to the last tick before the kill (the
    agent used to hold up to a batch's age in memory), with no gap."""
    import random
    receiver = RecordingReceiver()
    receiver.go_away()
    token = write_token(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "agent.toml").write_text(
        f'[agent]\ninterval_ms = 20\nbatch_max_readings = 1000\nbatch_max_age_ms = 3000\nstate_dir = "{state}"\n'
        f'[ingest]\nendpoints = ["{receiver.url}"]\ntoken_file = "{token}"\ntimeout_s = 1\n[[sensors]]\ntype = "random"\n')
    rng = random.Random(7)
    previous = 0
    for _ in range(4):
        agent = subprocess.Popen([sys.executable, "-m", "pi.agent", "--config", str(tmp_path / "agent.toml")], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5 + rng.random())
        killed_ms = time.time_ns() // 1_000_000
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        buffer = Buffer(state / "buffer.db")
        ts = sorted(r["ts"] for r in buffer.take(10**6)[1])
        buffer.close()
        assert killed_ms - ts[-1] < 300, f"the last {killed_ms - ts[-1]} ms before the kill are not in the buffer"
        this_run = [t for t in ts if t > previous]
        assert len(this_run) > 40 and max(b - a for a, b in zip(this_run, this_run[1:])) < 300  # ticks of 20 ms
        previous = ts[-1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a CA")
def test_https_endpoints_are_verified_with_the_stack_ca(tmp_path):
    """The agent trusts the CA it is given, and nothing else: an unknown certificate is a failed attempt."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "tls.key", "tls.csr", "tls.pem"))
    openssl = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "1", "-subj", "/CN=test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=ingest")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
            "-days", "1", "-extfile", str(tmp_path / "san.ext"))
    with RecordingReceiver() as receiver:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
        url = receiver.url.replace("http://", "https://")
        reading = [{"ts": 1, "sensor": "s", "value": 1.0, "unit": None}]
        assert isinstance(Delivery((url,), TOKEN, timeout_s=2, ca_file=str(ca)).send(reading), Acknowledged)
        refused = Delivery((url,), TOKEN, timeout_s=2).send(reading)  # the system's CAs do not know it
        assert isinstance(refused, Retry) and "CERTIFICATE_VERIFY_FAILED" in refused.reason
