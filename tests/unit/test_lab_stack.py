"""The lab stack (Pulumi.lab.yaml) under mocks: simulated hosts as pulumi-docker resources, their
generated SSH key, ports on 127.0.0.1, and the same components deployed onto them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.lab import host_image_tag
from stack import ConfigError, parse
from tests.unit.conftest import is_secret, plain

ROOT = Path(__file__).resolve().parents[2]


def lab_config() -> dict:
    config = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in config.items()}


@pytest.fixture
def lab(deploy_without_key):
    return deploy_without_key(lab_config())


def containers(declared):
    return {n: d for n, d in declared.items() if d.typ == "docker:index/container:Container"}


def test_three_simulated_hosts_with_ports_on_loopback(lab):
    declared, _ = lab
    hosts = containers(declared)
    assert sorted(hosts) == ["lab-lab1", "lab-lab2", "lab-lab3"]
    one = hosts["lab-lab1"].inputs
    # The capability workaround by default: --privileged is refused on some machines (this one).
    assert (one["name"], one["hostname"], "privileged" in one, one["init"]) == ("mds-lab-lab1", "lab1", False, True)
    image = declared["lab-host-image"].inputs
    assert image["name"] == host_image_tag("debian:bookworm") and image["keepLocally"] is False  # destroy removes it
    assert one["image"] == declared["lab-host-image"].outputs["imageId"] and one["tmpfs"] == {"/run": "rw"}
    assert one["networksAdvanced"] == [{"name": "lab-network-id", "ipv4Address": "172.30.0.11"}]
    assert sorted((p["internal"], p["external"], p["ip"]) for p in one["ports"]) == [
        (22, 2201, "127.0.0.1"), (3000, 13001, "127.0.0.1"), (8080, 18081, "127.0.0.1")]
    assert one["volumes"] == [{"volumeName": "mds-lab-lab1-docker", "containerPath": "/var/lib/docker"},
                              {"volumeName": "mds-lab-shared", "containerPath": "/srv/shared"},  # like an NFS export
                              {"hostPath": "/sys/fs/cgroup", "containerPath": "/sys/fs/cgroup"}]
    assert one["envs"] == ["LAB_AUTHORIZED_KEY=ssh-ed25519 AAAAlab-ssh-key"]
    assert declared["lab-network"].inputs["ipamConfigs"] == [{"subnet": "172.30.0.0/24"}]
    build = declared["lab-host-image"].inputs["build"]
    assert build["context"].endswith("components/lab-host") and build["buildArgs"] == {"BASE_IMAGE": "debian:bookworm"}
    assert declared["lab-ssh-key"].inputs["algorithm"] == "ED25519"


def test_the_components_use_the_generated_key_and_wait_for_the_hosts(lab):
    declared, outputs = lab
    provision = declared["host-lab2-provision"]
    assert is_secret(provision.inputs["connection"])  # it holds the private key
    connection = plain(provision.inputs["connection"])
    assert connection["privateKey"] == "-----PEM privateKeyOpenssh of lab-ssh-key-----"
    assert (connection["host"], connection["port"]) == ("127.0.0.1", 2202)
    assert "lab-lab2" in declared["host-lab2"].depends_on
    assert outputs["ingestEndpoints"] == [f"https://127.0.0.1:{18081 + i}" for i in range(3)]
    assert outputs["grafanaUrls"] == [f"http://127.0.0.1:{13001 + i}" for i in range(3)]


def test_a_simulated_agent_on_lab1_reaches_the_ingest_on_the_lab_bridge(lab):
    declared, _ = lab
    agent = declared["agents-lab-agent"]
    assert (plain(agent.inputs["connection"])["host"], plain(agent.inputs["connection"])["port"]) == ("127.0.0.1", 2201)
    from tests.unit.test_agents_component import bundle_of
    toml = bundle_of(declared, "agents-lab-agent")["agent.toml"].decode()
    assert 'endpoints = ["https://172.30.0.11:8080", "https://172.30.0.12:8080", "https://172.30.0.13:8080"]' in toml
    assert 'type = "random"' in toml


def test_the_capability_workaround_or_plain_privileged(deploy_without_key):
    declared, _ = deploy_without_key(lab_config())
    one = containers(declared)["lab-lab1"].inputs
    assert "privileged" not in one and one["capabilities"] == {"adds": ["ALL"], "drops": ["SYS_RESOURCE"]}
    assert "seccomp=unconfined" in one["securityOpts"] and one["cgroupnsMode"] == "host"
    assert one["deviceCgroupRules"] == ["a *:* rwm"]
    declared, _ = deploy_without_key({**lab_config(), "lab": {"privileged": True}})
    one = containers(declared)["lab-lab1"].inputs
    assert one["privileged"] is True and "capabilities" not in one
    assert one["volumes"] == [{"volumeName": "mds-lab-lab1-docker", "containerPath": "/var/lib/docker"},
                              {"volumeName": "mds-lab-shared", "containerPath": "/srv/shared"}]


def test_a_real_stack_has_no_lab_resources(deploy):
    declared, _ = deploy({"hosts": [{"name": "n1", "address": "192.0.2.1"}]})
    assert not any(d.typ.startswith("docker:index/container") or n.startswith("lab") for n, d in declared.items())


@pytest.mark.parametrize("raw, message", [
    ({"lab": {}, "hosts": [{"name": "n1", "address": "192.0.2.1"}]}, "mds:lab and mds:hosts: a lab stack makes its own hosts"),
    ({"lab": {"hosts": 9}}, "mds:lab.hosts: 9 must be a whole number from 1 to 7"),
    ({"lab": {"subnet": "10.0.0.0/30"}}, "mds:lab.subnet: '10.0.0.0/30' must be an IPv4 network of at least 32"),
    ({"lab": {"privileged": "yes"}}, "mds:lab.privileged: 'yes' must be true or false"),
])
def test_bad_lab_settings_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(raw, ssh_private_key=None)
