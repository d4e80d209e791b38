"""Lab tier fixtures: three simulated bare-metal hosts and the engine that deploys onto them.

Without a Docker engine the lab tests skip with a reason, unless MDS_REQUIRE_LAB=1 (CI), which
turns that into a failure. MDS_LAB_KEEP=1 leaves the hosts running after the tests.

The engine is the real Pulumi engine (tests/lab/pulumi_engine.py) wherever `pulumi`, its Python
language host and the four provider plugins are on PATH, and this machine's Docker engine holds
the CrateDB and Grafana images named by MDS_LAB_CRATEDB_IMAGE and MDS_LAB_GRAFANA_IMAGE (no
registry is reachable from the lab hosts: they are shipped). Otherwise it is the SSH stand-in
engine (tests/lab/ssh_engine.py), which CI uses: it cannot have the engine, CrateDB or Grafana.
MDS_REQUIRE_REAL_ENGINE=1 turns the stand-in into a failure.
"""

import os

import pytest

from tests.lab.harness import LabHosts, engine_available, ensure_probe_image, image_exists
from tests.lab.pulumi_engine import PulumiEngine, missing_parts
from tests.lab.ssh_engine import SshEngine

TIMINGS: dict[str, float] = {}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not engine_available():
        message = "no Docker engine answers `docker info`; the lab tier needs one"
        if os.environ.get("MDS_REQUIRE_LAB") == "1":
            pytest.fail(message + " (MDS_REQUIRE_LAB=1)")
        pytest.skip(message)
    hosts = LabHosts(tmp_path_factory.mktemp("lab"))
    hosts.start(3)
    TIMINGS.update({f"lab {k}": v for k, v in hosts.timings.items()})
    yield hosts
    if os.environ.get("MDS_LAB_KEEP") != "1":
        hosts.remove()


def service_images() -> dict[str, str] | None:
    """The CrateDB and Grafana images the real engine ships to the lab hosts, if this machine has them."""
    images = {"cratedb": os.environ.get("MDS_LAB_CRATEDB_IMAGE", ""), "grafana": os.environ.get("MDS_LAB_GRAFANA_IMAGE", "")}
    return images if all(images.values()) and all(map(image_exists, images.values())) else None


def real_engine_missing() -> str | None:
    """Why the real engine cannot run here, or None."""
    if missing_parts():
        return f"not on PATH: {', '.join(missing_parts())}"
    if service_images() is None:
        return "MDS_LAB_CRATEDB_IMAGE and MDS_LAB_GRAFANA_IMAGE must name images this machine's Docker engine holds"
    return None


@pytest.fixture(scope="session")
def engine(lab, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    why_not = real_engine_missing()
    if why_not is None:
        engine = PulumiEngine(tmp_path_factory.mktemp("pulumi"), state_dir)
        yield engine
        engine.remove()
        return
    if os.environ.get("MDS_REQUIRE_REAL_ENGINE") == "1":
        pytest.fail(f"the real Pulumi engine cannot run: {why_not} (MDS_REQUIRE_REAL_ENGINE=1)")
    os.environ["MDS_STATE_DIR"] = str(state_dir)
    # The stand-in cannot run CrateDB or Grafana (no image here): their services (and the schema
    # step after CrateDB) are not created, which leaves the ingest service with an unreachable
    # database, as on a real outage.
    yield SshEngine({h.address: h for h in lab.hosts}, not_run=frozenset({"cratedb-service", "grafana-service"}))


@pytest.fixture(scope="session")
def probe_image(lab):
    image = ensure_probe_image()
    lab.load_image(image)
    return image


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("lab timings (seconds)")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name:<48} {seconds:7.1f}")
