"""The ingest service as a real server process (`python -m ingest`): start, serve, SIGTERM."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
        env={**os.environ, "INGEST_PORT": str(port), "INGEST_CRATE_URLS": crate_url,
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


def test_sigterm_finishes_accepted_batches_and_exits_well_within_the_grace_period(tmp_path):
    state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, delay_s=1.5)
    with CrateDouble(state) as double:
        process, url = start(tmp_path, double.url)
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
