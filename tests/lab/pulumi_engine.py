"""The real Pulumi engine for the lab tier: the `pulumi` CLI and the four provider plugins from
PATH, a local backend in a temporary directory, and this repository's program.

It answers the lab tests as the SSH stand-in engine does (tests/lab/ssh_engine.py): `up(config)`
returns the stack's outputs, `state` holds every resource as the engine stored it (inputs and
outputs, secrets in plain text), and `log` lists the commands that ran, in the order the engine
reported them (from its event log), with what they printed (from the state).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from tests.lab.ssh_engine import COMMAND, LOCAL_COMMAND, Ran
from tests.program import PROJECT, ROOT, Declared

PLUGINS = ("pulumi-resource-command", "pulumi-resource-docker", "pulumi-resource-random", "pulumi-resource-tls")
SECRET_SIG = "4dabf18193072939515e22adb298388d"
STEPS = {"create": "create", "create-replacement": "create", "update": "update", "delete": "delete",
         "delete-replaced": "delete", "replace": "update"}


def missing_parts() -> list[str]:
    """What of the engine is not on PATH: the CLI, its Python language host, the four providers."""
    return [p for p in ("pulumi", "pulumi-language-python", *PLUGINS) if shutil.which(p) is None]


def unsecret(value):
    """A value of `pulumi stack export --show-secrets`, its secrets decoded."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unsecret(json.loads(value["plaintext"])) if "plaintext" in value else value
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


class EngineError(RuntimeError):
    pass


class PulumiEngine:
    real = True

    def __init__(self, work: Path, state_dir: Path, stack: str = "labtier") -> None:
        self.work, self.stack = work, stack
        (work / "backend").mkdir(parents=True, exist_ok=True)
        self.config_file = work / f"Pulumi.{stack}.yaml"
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{work / 'backend'}",
                    "PULUMI_CONFIG_PASSPHRASE": "lab-tier", "PULUMI_SKIP_UPDATE_CHECK": "true",
                    # `--event-log` exists only with debug commands on (pkg/cmd/pulumi/operations/up.go,
                    # v3.259.0), as the Automation API runs the CLI.
                    "PULUMI_DEBUG_COMMANDS": "true",
                    "MDS_STATE_DIR": str(state_dir)}
        self.state: dict[str, Declared] = {}
        self.log: list[Ran] = []
        self.skipped: set[str] = set()  # the real engine runs everything
        self.timings: dict[str, float] = {}
        self.initialised = False

    def _cli(self, *args: str, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["pulumi", *args, "--stack", self.stack, "--non-interactive"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise EngineError(f"pulumi {args[0]} exited {result.returncode}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
        return result

    def _write_config(self, config: dict) -> None:
        if not self.initialised:
            self._cli("stack", "init", check=False)  # exists already after an interrupted run: fine
            self.initialised = True
        # Plain values, secrets too: get_secret() reads them as secrets all the same.
        values = {f"{PROJECT}:{k}": v for k, v in config.items()}
        self.config_file.write_text(yaml.safe_dump({"config": values}, sort_keys=True))

    def up(self, config: dict, *, rerun_all: bool = False) -> dict:
        """`pulumi up`. rerun_all has no meaning here: the engine runs only what changed."""
        self._write_config(config)
        events = self.work / f"events-{time.time_ns()}.jsonl"
        started = time.monotonic()
        self._cli("up", "--yes", "--skip-preview", "--config-file", str(self.config_file), "--event-log", str(events))
        self.timings["up"] = time.monotonic() - started
        before = self.state
        self._read_state()
        self._read_events(events, before)
        return json.loads(self._cli("stack", "output", "--json", "--show-secrets").stdout)

    def preview_changes(self, config: dict) -> str:
        """`pulumi preview --expect-no-changes`: its output, or EngineError naming the changes."""
        self._write_config(config)
        return self._cli("preview", "--expect-no-changes", "--diff", "--config-file", str(self.config_file)).stdout

    def destroy(self) -> None:
        events = self.work / f"events-{time.time_ns()}.jsonl"
        self._cli("destroy", "--yes", "--skip-preview", "--config-file", str(self.config_file), "--event-log", str(events))
        before = self.state
        self._read_state()
        self._read_events(events, before)

    def remove(self) -> None:
        """Forget the stack (after a destroy, or to leave an interrupted one behind)."""
        self._cli("stack", "rm", "--yes", "--force", check=False)

    def _read_state(self) -> None:
        exported = json.loads(self._cli("stack", "export", "--show-secrets").stdout)
        self.state = {}
        for r in exported["deployment"].get("resources") or []:
            if r["type"].startswith("pulumi:"):
                continue
            name = r["urn"].rsplit("::", 1)[-1]
            self.state[name] = Declared(r["type"], name, unsecret(r.get("inputs", {})), unsecret(r.get("outputs", {})),
                                        physical_id=r.get("id", ""))

    def _read_events(self, path: Path, before: dict[str, Declared]) -> None:
        """Commands the engine ran, in its order; a delete only where the command had a delete step
        (as the stand-in logs them)."""
        began: dict[str, int] = {}
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if "resourcePreEvent" in event:
                began[event["resourcePreEvent"]["metadata"]["urn"]] = event["timestamp"]
            meta = (event.get("resOutputsEvent") or {}).get("metadata")
            if not meta or meta["type"] not in (COMMAND, LOCAL_COMMAND) or meta["op"] not in STEPS:
                continue
            name = meta["urn"].rsplit("::", 1)[-1]
            step = STEPS[meta["op"]]
            if step == "delete" and not (name in before and before[name].inputs.get("delete")):
                continue
            stdout = self.state[name].outputs.get("stdout", "") if step != "delete" and name in self.state else ""
            self.log.append(Ran(name, step, stdout or "", float(event["timestamp"] - began.get(meta["urn"], event["timestamp"]))))
