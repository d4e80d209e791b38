"""What the real providers do with the resources the program declares, as their sources show it
(pulumi-docker 5.1 over kreuzwerker/terraform-provider-docker v4.5.0; pulumi-command 1.2.1), and
what the program does about it. Checked under mocks: the Pulumi engine cannot run here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from components.lab import host_image_tag
from components.swarm_configs import go_duration
from stack import ConfigError, parse
from tests.unit.conftest import hosts

SERVICE = "docker:index/service:Service"
DURATION_KEYS = {"interval", "timeout", "startPeriod", "stopGracePeriod", "delay", "monitor", "window"}


def of_type(declared, typ):
    return {n: d for n, d in declared.items() if d.typ == typ}


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (10, "10s"), (59, "59s"), (60, "1m"), (90, "1m30s"), (120, "2m"),
                                           (600, "10m"), (3600, "1h"), (3660, "1h1m"), (3601, "1h0m1s")])
def test_durations_are_written_the_way_the_provider_reads_them_back(seconds, text):
    """kreuzwerker's shortDur: Go's Duration.String() with a trailing "0s" (then "0m") cut."""
    assert go_duration(seconds) == text


def durations(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            if k in DURATION_KEYS and isinstance(v, str):
                yield f"{path}.{k}", v
            else:
                yield from durations(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from durations(v, f"{path}[{i}]")


def test_every_service_duration_is_in_the_providers_form(deploy):
    """`600s` is read back as `10m`: the next `up` would update the service and roll every task."""
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"backup": {"type": "fs", "location": "/mnt/backup"}}})
    found = [(name, path, text) for name, d in of_type(declared, SERVICE).items() for path, text in durations(d.inputs)]
    assert len(found) >= 15  # healthchecks, update and rollback configs, restart policies, stop grace periods
    for name, path, text in found:
        seconds = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", text))
        assert go_duration(seconds) == text, f"{name}{path} = {text!r}, the provider reads back {go_duration(seconds)!r}"


def test_image_digests_are_written_as_docker_stores_them(deploy):
    digest = "sha256:" + "ab" * 32
    declared, _ = deploy({"hosts": hosts(3), "cratedb": {"digest": digest}, "grafana": {"digest": digest}})
    images = {n: d.inputs["taskSpec"]["containerSpec"]["image"] for n, d in of_type(declared, SERVICE).items()}
    assert images["cratedb-service"] == f"crate:6.4.3@{digest}"
    assert images["grafana-service"] == f"grafana/grafana:13.0.1@{digest}"
    with pytest.raises(ConfigError, match=re.escape("mds:cratedb.digest: 'latest' is not an image digest sha256:")):
        parse({"hosts": hosts(3), "cratedb": {"digest": "latest"}}, ssh_private_key=None)


def test_an_image_without_a_digest_is_warned_about_at_preview(deploy, monkeypatch):
    import pulumi
    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, resource=None, **_: warnings.append(message))
    deploy({"hosts": hosts(3), "grafana": {"digest": "sha256:" + "cd" * 32}})
    assert len(warnings) == 1 and warnings[0].startswith("mds:cratedb.digest is not set: Docker will pin crate:6.4.3")


def test_secrets_are_replaced_create_first_under_names_of_their_own(deploy):
    """pulumi-docker names a Secret with no `name` itself (autonaming: a random suffix), so a new value
    is a new secret beside the old one; the services move to it in a rolling update, then the old
    one is deleted. Delete-first would fail while a service uses it (or stop every task at once)."""
    declared, _ = deploy({"hosts": hosts(3), "ingest": {"tls": "generated"}})
    secrets = of_type(declared, "docker:index/secret:Secret")
    assert len(secrets) >= 5
    for name, secret in secrets.items():
        assert not secret.delete_before_replace, name
        assert "name" not in secret.inputs, f"{name}: a fixed name would collide with its replacement"


def test_swarm_objects_with_fixed_names_are_replaced_delete_first(deploy):
    """A service's name is its DNS name on the overlay, the network's its handle: a replacement
    (a changed name, mode or network; any change of a network) must delete the old one first."""
    declared, _ = deploy({"hosts": hosts(3)})
    fixed = {**of_type(declared, SERVICE), **of_type(declared, "docker:index/network:Network")}
    assert sorted(d.inputs["name"] for d in fixed.values()) == ["cratedb", "grafana", "ingest", "mds"]
    assert all(d.delete_before_replace for d in fixed.values())
    for name, config in of_type(declared, "docker:index/serviceConfig:ServiceConfig").items():
        # With a `name`, the bridge replaces delete-first (seen on the real engine): the delete
        # fails while the service uses the config. Provider-made names replace create-first.
        assert "name" not in config.inputs and not config.delete_before_replace, name


def test_hosts_leave_one_after_another(deploy):
    """The engine runs independent deletes in parallel: every node command depends on the one
    before it, so removing hosts drains them one at a time (each CrateDB node waits for GREEN)."""
    declared, _ = deploy({"hosts": hosts(5)})
    chain = [declared[f"swarm-node-node{i}"] for i in range(1, 6)]
    for before, after in zip(chain, chain[1:]):
        assert before.name in after.depends_on
    from components.swarm import DRAIN_DEADLINE
    from stack.constants import CRATEDB_STOP_GRACE_SECONDS
    assert DRAIN_DEADLINE > CRATEDB_STOP_GRACE_SECONDS  # a drain outlasts CrateDB's shutdown gate


def test_the_lab_hosts_survive_a_second_up(deploy_without_key):
    """The provider reads `securityOpts` back without systempaths=unconfined (it turns that into
    empty masked paths): ignored, or the capability workaround would replace every host on every up."""
    from tests.unit.test_lab_stack import containers, lab_config
    declared, _ = deploy_without_key({**lab_config(), "lab": {"privileged": False}})
    for name, container in containers(declared).items():
        assert "systempaths=unconfined" in container.inputs["securityOpts"]
        assert container.ignore_changes == ("securityOpts",), name


def test_a_changed_lab_host_image_gets_a_new_tag(tmp_path):
    """A fixed tag (`latest`) would rebuild the image but never reach the running hosts."""
    from components.lab import HOST_IMAGE_DIR
    copy = tmp_path / "lab-host"
    shutil.copytree(HOST_IMAGE_DIR, copy)
    first = host_image_tag("debian:bookworm", copy)
    assert first == host_image_tag("debian:bookworm", copy) and first.startswith("mds-lab-host:")
    assert host_image_tag("debian:trixie", copy) != first
    (copy / "Dockerfile").write_text((copy / "Dockerfile").read_text() + "\n# edited\n")
    assert host_image_tag("debian:bookworm", copy) != first
    assert Path(HOST_IMAGE_DIR).is_dir()
