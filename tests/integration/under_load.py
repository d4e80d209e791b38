"""What the disruptive post-deploy tests share: the load generator writing through every ingest
endpoint while something happens to the cluster, the cluster's health as its master sees it, and
the check that every acknowledged reading is stored exactly once."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ingest.tokens import issue
from tests.load_run import LoadRun


def health(stack, host) -> str | None:
    """sys.cluster_health from this host's CrateDB node; None while it cannot answer."""
    try:
        status, body = stack.sql("SELECT health FROM sys.cluster_health", host=host)
    except AssertionError:
        return None
    return body["rows"][0][0] if status == 200 and body.get("rows") else None


class Load:
    """`tools.loadgen` with devices of its own: every acknowledged key is recorded."""

    def __init__(self, stack, tmp_path: Path, name: str, seconds: int, rate: int = 1000) -> None:
        self.stack, self.record = stack, tmp_path / "acked.jsonl"
        self.devices = [f"{name}-{int(time.time())}-{i}" for i in range(6)]
        tokens = tmp_path / "tokens"
        tokens.write_text("".join(issue(stack.outputs["ingestTokenSecret"].encode(), d) + "\n" for d in self.devices))
        command = ["--endpoints", ",".join(stack.outputs["ingestEndpoints"]), "--tokens", str(tokens), "--rate", str(rate),
                   "--batch", "50", "--seconds", str(seconds), "--record", str(self.record)]
        if stack.outputs.get("ingestCaCertificate"):
            ca = Path(tempfile.mkdtemp()) / "ca.pem"
            ca.write_text(stack.outputs["ingestCaCertificate"])
            command += ["--ca", str(ca)]
        self.seconds = seconds
        self.run = LoadRun(command)

    def longest_pause(self) -> float:
        """The longest time between two progress lines that added acknowledgements."""
        moments = [t for (t, acked), (_, before) in zip(self.run.progress[1:], self.run.progress) if acked > before]
        return max((b - a for a, b in zip(moments, moments[1:])), default=float("inf"))

    def check_stored(self, host) -> tuple[int, int, int]:
        """(acknowledged, stored, missing) once the load ended; asserts exactly once."""
        assert self.run.finish(timeout=self.seconds + 300) == 0, "".join(self.run.output[-20:])
        acked = {tuple(json.loads(line)) for line in self.record.read_text().splitlines()}
        self.stack.sql("REFRESH TABLE doc.readings", host=host)
        status, body = self.stack.sql("SELECT agent, sensor, ts, count(*) FROM doc.readings WHERE agent = ANY(?) "
                                      "GROUP BY agent, sensor, ts", host=host, args=[self.devices])
        assert status == 200, body
        stored = {(a, s, ts) for a, s, ts, _ in body["rows"]}
        assert all(n == 1 for *_, n in body["rows"]), "a reading stored twice"
        return len(acked), len(stored), len(acked - stored)
