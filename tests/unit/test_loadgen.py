"""The load generator against the real ingest process writing to the CrateDB contract double (not
CrateDB): its figures, its failover, and its final check of acknowledged against stored readings."""

from __future__ import annotations

import subprocess
import sys

from tests.cratedb_double import CrateDouble, CrateState
from tests.unit.ingest_support import token
from tests.unit.test_ingest_process import ROOT, free_port, start


def test_loadgen_through_a_dead_and_a_live_endpoint_accounts_for_every_reading(tmp_path):
    state = CrateState(tables={"doc.readings"}, users={"ingest": "ingest-password"}, keep_statements=False)
    with CrateDouble(state) as crate:
        ingest, url = start(tmp_path, crate.url)
        try:
            tokens = tmp_path / "tokens"
            tokens.write_text("".join(token(f"load-{i}") + "\n" for i in range(3)))
            dead = f"http://127.0.0.1:{free_port()}"
            result = subprocess.run(
                [sys.executable, "-m", "tools.loadgen", "--endpoints", f"{dead},{url}", "--tokens", str(tokens),
                 "--rate", "3000", "--batch", "50", "--seconds", "3", "--record", str(tmp_path / "acked.jsonl"),
                 "--check-crate", crate.url], cwd=ROOT, capture_output=True, text=True, timeout=120)
        finally:
            ingest.terminate()
            ingest.wait(timeout=15)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(line.startswith("t=") for line in lines) >= 2  # a progress line every second
    done = next(line for line in lines if line.startswith("done:"))
    assert "rejected 0" in done and "pending 0" in done
    checks = [line for line in lines if line.startswith("check ")]
    assert len(checks) == 3 and not any("MISSING" in line for line in checks)
    acked = (tmp_path / "acked.jsonl").read_text().splitlines()
    assert len(acked) == len(set(acked)) == len(state.readings) and len(acked) > 3000 * 3 * 0.6


def test_loadgen_refuses_a_tokens_file_without_tokens(tmp_path):
    (tmp_path / "tokens").write_text("not-a-token\n")
    result = subprocess.run([sys.executable, "-m", "tools.loadgen", "--endpoints", "http://127.0.0.1:9", "--tokens",
                             str(tmp_path / "tokens")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--tokens" in result.stderr
