"""The sensor agent installed on a simulated host by the provisioning script over real SSH, as
components/agents.py installs it on a Pi, delivering to a recording receiver on this machine
(tests/recording_receiver.py, not the ingest) through an outage of every endpoint."""

from __future__ import annotations

import time

import pytest

from components.agents import INSTALL, REMOVE, bundle
from components.remote import Step, standalone
from ingest import tokens
from stack.model import AgentSpec
from tests.recording_receiver import RecordingReceiver

SECRET = b"lab-token-secret-of-at-least-32-chars"
READ_BUFFER = ("python3 -c \"import sqlite3; db = sqlite3.connect('/var/lib/mds-agent/buffer.db'); "
               "print(db.execute('SELECT coalesce(sum(readings), 0) FROM batches').fetchone()[0])\"")


def wait_until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def receiver(lab):
    # This machine, as the lab hosts reach it: their default gateway on the lab bridge.
    gateway = lab.hosts[0].sh("ip route show default").split()[2]
    with RecordingReceiver("0.0.0.0") as receiver:
        receiver.lab_url = f"http://{gateway}:{receiver.server.server_address[1]}"
        yield receiver


def test_agent_installs_delivers_buffers_an_outage_and_is_removed(lab, receiver):
    host = lab.hosts[0]
    agent = AgentSpec(name="lab-agent", address=host.address, ssh_user="root", sensors=({"type": "random", "seed": 1},),
                      interval_ms=100)
    stdin = bundle(agent, [receiver.lab_url], tokens.issue(SECRET, agent.name), None)
    install, install_stdin = standalone(Step(INSTALL), {"AGENT_NAME": agent.name}, stdin)
    report = host.sh(install, input=install_stdin.encode())
    assert report.startswith("agent-install lab-agent: changed: ") and "started (no systemd" in report
    assert host.sh(install, input=install_stdin.encode()) == "agent-install lab-agent: unchanged"  # idempotent
    assert host.sh("stat -c '%U %a' /etc/mds-agent/token /var/lib/mds-agent") == "mds-agent 400\nmds-agent 750"
    agent_users = "ps -eo user:32=,comm= | awk '$2 ~ /^python/ {print $1}' | sort -u"
    wait_until(lambda: host.sh(agent_users) == "mds-agent", 20, "the agent running as mds-agent, not root")

    def stored() -> list[dict]:
        return sorted((r for (device, _, _), r in list(receiver.stored.items()) if device == "lab-agent"), key=lambda r: r["ts"])

    wait_until(lambda: len(stored()) >= 20, 60, "first readings from the lab host")
    receiver.go_away()  # every endpoint the agent knows is gone
    outage_started = time.time()
    # Every tick is in the buffer until delivered; a healthy agent holds at most about a batch's
    # age (1 s at 10 Hz: 10 readings) there.
    wait_until(lambda: int(host.sh(READ_BUFFER)) > 15, 30, "readings held on disk during the outage")
    time.sleep(5)
    buffered = int(host.sh(READ_BUFFER))
    receiver.come_back()
    drained = wait_until(lambda: int(host.sh(READ_BUFFER)) <= 12, 60, "buffer drained after the outage")
    time.sleep(2)
    readings = stored()
    gaps = [b["ts"] - a["ts"] for a, b in zip(readings, readings[1:])]
    during = [r for r in readings if outage_started * 1000 <= r["ts"] <= outage_started * 1000 + 5000]
    assert buffered >= 40 and len(during) >= 40  # the outage's readings arrived
    assert max(gaps) < 1000, f"a gap of {max(gaps)} ms in what arrived"  # none lost at 10 Hz
    assert receiver.repeats == 0
    print(f"\nagent outage: {buffered} readings buffered, drained in {drained:.1f} s; {len(readings)} delivered")

    remove, remove_stdin = standalone(Step(REMOVE), {"AGENT_NAME": agent.name})
    report = host.sh(remove, input=remove_stdin.encode())
    assert report == "agent-remove lab-agent: removed"
    assert host.sh("ls /opt/mds-agent /etc/mds-agent /var/lib/mds-agent 2>&1 | grep -c 'No such file'") == "3"
    assert host.ssh("pgrep -u mds-agent python3", check=False).returncode != 0
