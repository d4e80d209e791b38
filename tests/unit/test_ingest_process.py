"""The ingest service as a real server process (`python -m ingest`): start, serve, SIGTERM."""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tools.bench.ingest import wait_for_listeners
from tests.cratedb_double import CrateDouble, CrateState
from tests.unit.ingest_support import SECRET, batch, post, token

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path, crate_url, **env):
    (tmp_path / "secret").write_text(SECRET.decode())
    (tmp_path / "password").write_text("ingest-password\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "INGEST_BIND": "127.0.0.1", "INGEST_PORT": str(port), "INGEST_CRATE_URLS": crate_url,
             "INGEST_TOKEN_SECRET_FILE": str(tmp_path / "secret"), "INGEST_CRATE_PASSWORD_FILE": str(tmp_path / "password"),
             **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, url
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"ingest exited: {process.stdout.read()}")
            time.sleep(0.1)
    process.kill()
    pytest.fail("ingest did not listen within 20 s")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_accepted_batches_and_exits_well_within_the_grace_period(tmp_path, workers):
    state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, delay_s=1.5)
    with CrateDouble(state) as double:
        process, url = start(tmp_path, double.url, INGEST_WORKERS=str(workers))
        try:
            async def go():
                request = asyncio.create_task(post(url, "/v1/readings", batch(50), auth=token()))
                await asyncio.sleep(0.5)  # the batch is with the (slow) database now
                sent = time.monotonic()
                process.send_signal(signal.SIGTERM)
                status, body, _ = await request
                return status, body, sent

            status, body, sent = asyncio.run(go())
            assert (status, body["stored"]) == (200, 50)
            assert len(double.state.readings) == 50
            process.wait(timeout=10)
            assert time.monotonic() - sent < 8  # Swarm's stop grace period is 10 s
            assert process.returncode == 0
        finally:
            process.kill()


def workers_of(process) -> list[int]:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return sorted(map(int, children))


def accepted_by(metrics_file: Path, tmp_path) -> float:
    """The readings one worker counted, from its own Prometheus multiprocess file."""
    alone = tmp_path / f"alone-{metrics_file.stem}"
    alone.mkdir()
    shutil.copy(metrics_file, alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(alone))
    return registry.get_sample_value("ingest_readings_accepted_total") or 0.0


def test_workers_share_the_port_and_the_metrics_sum_over_them(tmp_path):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, url = start(tmp_path, double.url, INGEST_WORKERS="2", TMPDIR=str(tmp_path))
        try:
            assert len(workers_of(process)) == 2
            wait_for_listeners(int(url.rsplit(':', 1)[1]), 2)

            async def go():
                start_ms = int(time.time() * 1000) - 60_000
                answers = await asyncio.gather(*[post(url, "/v1/readings", batch(5, start=start_ms + 10 * i), auth=token())
                                                 for i in range(40)])  # a connection each
                assert all(status == 200 for status, _, _ in answers)
                return [(await post(url, "/metrics", method="GET"))[1]["text"] for _ in range(6)]

            scrapes = asyncio.run(go())
            assert len(double.state.readings) == 200
            for text in scrapes:  # whichever worker answered, it reports the sum
                assert "ingest_readings_accepted_total 200.0" in text and "ingest_queue_readings 0.0" in text
            files = list(tmp_path.glob("ingest-metrics-*/counter_*.db"))
            per_worker = [accepted_by(f, tmp_path) for f in files]
            assert len(files) == 2 and sum(per_worker) == 200 and min(per_worker) > 0, per_worker
        finally:
            process.kill()


def test_a_dead_worker_stops_the_service_with_an_error(tmp_path):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, _ = start(tmp_path, double.url, INGEST_WORKERS="2")
        try:
            dead, other = workers_of(process)
            os.kill(dead, signal.SIGKILL)
            assert process.wait(timeout=15) == 1
            assert f"worker {dead} exited (killed by SIGKILL); stopping the others" in process.stdout.read()
            assert not Path(f"/proc/{other}").exists()
        finally:
            process.kill()


def listening(port: int) -> list[str]:
    """The local addresses with a listening TCP socket on this port (Linux, /proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_workers_die_with_a_killed_supervisor(tmp_path):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, url = start(tmp_path, double.url, INGEST_WORKERS="2")
        port = int(url.rsplit(":", 1)[1])
        try:
            wait_for_listeners(port, 2)
            workers = workers_of(process)
            process.kill()
            process.wait(timeout=5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
                time.sleep(0.1)
            alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
            assert alive == [] and listening(port) == []
        finally:
            process.kill()


def test_the_service_listens_on_the_bind_address_only(tmp_path):
    with CrateDouble(CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"})) as double:
        process, url = start(tmp_path, double.url)
        try:
            assert listening(int(url.rsplit(":", 1)[1])) == ["127.0.0.1"]
        finally:
            process.terminate()
            process.wait(timeout=15)


def test_bad_settings_stop_the_process_naming_the_variable(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ingest"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "INGEST_TOKEN_SECRET": "short", "INGEST_CRATE_URLS": "http://x"})
    assert result.returncode == 2
    assert "INGEST_TOKEN_SECRET_FILE: the device token secret must have at least 32 characters" in result.stderr


def test_tokens_cli_issues_what_the_service_accepts(tmp_path):
    (tmp_path / "secret").write_text(SECRET.decode())
    result = subprocess.run([sys.executable, "-m", "ingest.tokens", "pi-9"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "INGEST_TOKEN_SECRET_FILE": str(tmp_path / "secret")}, check=True)
    assert result.stdout.strip() == token("pi-9")


def test_the_benchmark_runs_and_every_request_succeeds():
    """`python -m tools.bench.ingest`, briefly: its table has no errors and its last line has the agreed form."""
    result = subprocess.run([sys.executable, "-m", "tools.bench.ingest", "--seconds", "0.5", "--workers", "1,2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["2"])]
    errors = [row[7] if row[2] in ("max", "JSON") else row[8] for row in rows]  # "half rate", "line proto": two words
    assert len(rows) == 16 and errors == ["0"] * 16, result.stdout
    assert re.fullmatch(r"line protocol: \d+ readings/s at batch 1000 beside JSON's \d+ \(ratio [\d.]+, medians of 3 "
                        r"alternating runs\)", lines[-2]), lines[-2]
    assert re.fullmatch(r"ingest: \d+ readings/s at batch 1000, p99 [\d.]+ ms \(2 workers\)", lines[-1]), lines[-1]
