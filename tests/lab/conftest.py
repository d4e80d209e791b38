"""Lab tier fixtures: three simulated bare-metal hosts and the engine that deploys onto them.

Without a Docker engine the lab tests skip with a reason, unless MDS_REQUIRE_LAB=1 (CI), which
turns that into a failure. MDS_LAB_KEEP=1 leaves the hosts running after the tests.
"""

import os

import pytest

from tests.lab.harness import LabHosts, engine_available, ensure_probe_image
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


@pytest.fixture(scope="session")
def engine(lab, tmp_path_factory):
    os.environ["MDS_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    # CrateDB's image cannot be pulled here: its service (and the schema step after it) is not
    # created, which leaves the ingest service with an unreachable database, as on a real outage.
    return SshEngine({h.address: h for h in lab.hosts}, not_run=frozenset({"cratedb-service", "grafana-service"}))


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
