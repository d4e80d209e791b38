"""Every bad stack config value stops the program with a message naming the key and what is allowed."""

import pulumi
import pytest

from stack import ConfigError, parse
from tests.unit.conftest import hosts


def parse_hosts(host_list, **extra):
    return parse({"hosts": host_list, **extra}, ssh_private_key="KEY")


def test_defaults_for_three_hosts():
    config = parse_hosts(hosts(3))
    assert [h.role for h in config.hosts] == ["manager"] * 3
    assert next(h for h in config.hosts if h.is_manager).name == "node1"  # the swarm's first manager
    assert config.hosts[0].private_address == "192.0.2.11"
    assert config.hosts[0].ssh_user == "root" and config.hosts[0].ssh_port == 22
    assert config.hosts[0].node_labels() == {"mds.cratedb": "true", "mds.grafana": "true", "mds.ingest": "true"}
    assert config.data_root == "/srv/mds"


@pytest.mark.parametrize("count, managers", [(1, 1), (2, 1), (3, 3), (4, 3), (6, 3)])
def test_default_manager_count_is_odd_and_at_most_three(count, managers):
    config = parse_hosts(hosts(count))
    assert [h.name for h in config.hosts if h.is_manager] == [f"node{i + 1}" for i in range(managers)]


def test_explicit_roles_make_the_others_workers():
    config = parse_hosts([{"name": "a", "address": "10.0.0.1", "role": "manager"}, {"name": "b", "address": "10.0.0.2"}])
    assert [h.role for h in config.hosts] == ["manager", "worker"]


def test_full_host_entry():
    config = parse_hosts([{
        "name": "pi-1", "address": "pi-1.factory.example", "privateAddress": "10.1.0.5", "sshUser": "pi",
        "sshPort": "2222", "role": "manager", "services": ["ingest", "cratedb"], "labels": {"site.hall": 3},
        "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx",
    }, {"name": "pi-2", "address": "10.1.0.6", "services": ["grafana"]}], dataRoot="/data/mds/")
    host = config.hosts[0]
    assert (host.address, host.private_address, host.ssh_user, host.ssh_port) == ("pi-1.factory.example", "10.1.0.5", "pi", 2222)
    assert host.services == ("cratedb", "ingest")
    assert host.labels == (("site.hall", "3"),)
    assert host.node_labels() == {"mds.cratedb": "true", "mds.ingest": "true", "site.hall": "3"}
    assert host.host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx"
    assert config.data_root == "/data/mds"
    assert [h.name for h in config.hosts if "grafana" in h.services] == ["pi-2"]


def test_every_service_needs_a_host():
    with pytest.raises(ConfigError, match="no host carries the service 'grafana'; add it to the `services`"):
        parse_hosts([{"name": "a", "address": "10.0.0.1", "services": ["ingest", "cratedb"]}])


def test_config_error_is_a_clean_pulumi_error():
    # RunError makes `pulumi preview` print the message without a Python traceback.
    assert issubclass(ConfigError, pulumi.RunError)


BAD = [
    ({"hosts": None}, "mds:hosts is missing"),
    ({"hosts": []}, "mds:hosts is empty"),
    ({"hosts": "node1"}, "mds:hosts must be a list"),
    ({"hosts": ["node1"]}, r"mds:hosts\[0\] must be a mapping"),
    ({"hosts": [{"address": "10.0.0.1"}]}, r"mds:hosts\[0\]\.name is missing"),
    ({"hosts": [{"name": "a"}]}, r"mds:hosts\[0\]\.address is missing"),
    ({"hosts": [{"name": "a", "adress": "10.0.0.1", "address": "10.0.0.1"}]}, r"unknown field\(s\) adress; allowed: name, address"),
    ({"hosts": [{"name": "bad_name", "address": "10.0.0.1"}]}, r"mds:hosts\[0\]\.name: 'bad_name' is not a host name"),
    ({"hosts": [{"name": "a", "address": "not an address!"}]}, r"mds:hosts\[0\]\.address: 'not an address!' is not an IP address or host name"),
    ({"hosts": [{"name": "a", "address": "10.0.0.300"}]}, r"'10\.0\.0\.300' is not an IP address or host name"),
    ({"hosts": [{"name": "a", "address": "a.example"}]}, r"mds:hosts\[0\]\.privateAddress is missing: it is required when address"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "privateAddress": "eth0"}]}, r"privateAddress: 'eth0' is not an IP address"),
    ({"hosts": hosts(2, address="10.0.0.1")}, r"mds:hosts\[1\]\.address: '10\.0\.0\.1' is already used by mds:hosts\[0\]"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1"}, {"name": "A", "address": "10.0.0.2"}]}, r"mds:hosts\[1\]\.name: 'a' is already used"),
    ({"hosts": [{"name": "a", "address": "h1.example", "privateAddress": "10.0.0.1"},
                {"name": "b", "address": "h2.example", "privateAddress": "10.0.0.1"}]}, r"mds:hosts\[1\]\.privateAddress: '10\.0\.0\.1' is already used"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "sshUser": "Root Admin"}]}, r"sshUser: 'Root Admin' is not a Unix user name"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "sshPort": 70000}]}, r"sshPort: 70000 is not a port number \(1-65535\)"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "sshPort": True}]}, r"sshPort: True is not a port number"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "role": "leader"}]}, r"role: 'leader' is not a role; allowed: manager, worker"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "role": "worker"}]}, r"no host has role 'manager'"),
    ({"hosts": [{"name": f"n{i}", "address": f"10.0.0.{i + 1}", "role": "manager"} for i in range(2)]},
     r"2 hosts have role 'manager'; use an odd number up to 7 \(1, 3, 5 or 7\)"),
    ({"hosts": [{"name": f"n{i}", "address": f"10.0.0.{i + 1}", "role": "manager"} for i in range(9)]},
     r"9 hosts have role 'manager'; use an odd number up to 7"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "services": ["postgres"]}]}, r"services: 'postgres' is not a service; allowed: cratedb, ingest, grafana"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "services": "cratedb"}]}, r"services must be a list"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "services": ["ingest", "ingest", "cratedb", "grafana"]}]}, r"lists a service twice"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"Site": "x"}}]}, r"labels: 'Site' is not a label key Docker accepts"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"a..b": "x"}}]}, r"'a\.\.b' is not a label key Docker accepts"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"key=x": "y"}}]}, r"'key=x' is not a label key"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"com.docker.x": "y"}}]}, r"'com\.docker\.x' is in a reserved namespace"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"mds.cratedb": "false"}}]}, r"'mds\.cratedb' is in a reserved namespace"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {"site": "two\nlines"}}]}, r"labels\.site: the value must be one line"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": ["site"]}]}, r"labels must be a mapping"),
    ({"hosts": [{"name": "a", "address": "10.0.0.1", "hostKey": "AAAA"}]}, r"hostKey: 'AAAA' is not an SSH public host key"),
    ({"hosts": hosts(1), "dataRoot": "relative/path"}, r"mds:dataRoot: 'relative/path' is not allowed; use an absolute path"),
    ({"hosts": hosts(1), "dataRoot": "/srv/../etc"}, r"mds:dataRoot: '/srv/\.\./etc' is not allowed"),
    ({"hosts": hosts(1), "dataRoot": "/srv/my data"}, r"mds:dataRoot: '/srv/my data' is not allowed"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m for _, m in BAD])
def test_bad_value_names_the_key(raw, message):
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse(raw, ssh_private_key="KEY")


def test_program_stops_on_missing_ssh_key(deploy_without_key):
    with pytest.raises(Exception, match="mds:sshPrivateKey is missing"):
        deploy_without_key({"hosts": hosts(1)})


def test_program_stops_on_bad_config_before_declaring_anything(deploy):
    with pytest.raises(Exception, match=r"mds:hosts\[0\]\.address"):
        deploy({"hosts": [{"name": "a", "address": "::not-ip"}]})
