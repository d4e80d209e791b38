"""components/agents.py under mocks: what each Pi gets over SSH, and config errors."""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
import tomllib

import pytest

from ingest import tokens
from pi.config import parse as parse_agent_config
from stack import ConfigError, parse
from tests.unit.conftest import command_data, hosts, is_secret, plain
from tests.unit.test_hosts import script_and_env

AGENTS = [{"name": "pi-hall-1", "address": "192.0.2.101", "sensors": [{"type": "bmp180", "address": "0x77"}]},
          {"name": "pi-hall-2", "address": "192.0.2.102", "sshUser": "root", "intervalMs": 500}]


def bundle_of(declared, name: str) -> dict[str, bytes]:
    stdin = declared[name].inputs["stdin"]
    assert is_secret(stdin)  # it carries the device token
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(command_data(declared[name].inputs)))))
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_each_agent_gets_the_package_its_config_token_and_the_stack_ca(deploy, tmp_path):
    declared, outputs = deploy({"hosts": hosts(3), "agents": AGENTS})
    commands = sorted(n for n in declared if n.startswith("agents-"))
    assert commands == ["agents-pi-hall-1", "agents-pi-hall-2"]
    files = bundle_of(declared, "agents-pi-hall-1")
    assert {"pi/agent.py", "pi/sensors/bmp180.py", "agent.toml", "token", "ca.pem", "mds-agent.service"} <= set(files)
    assert not any("__pycache__" in n for n in files)
    token = files["token"].decode().strip()
    assert tokens.verify(outputs["ingestTokenSecret"].encode(), token) == "pi-hall-1"
    assert files["ca.pem"].decode() == outputs["ingestCaCertificate"]
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    raw = tomllib.loads(files["agent.toml"].decode())
    raw["ingest"]["token_file"] = str(tmp_path / "token")
    config = parse_agent_config(raw, env={})  # the agent accepts what the stack writes
    assert config.endpoints == tuple(outputs["ingestEndpoints"]) and config.ca_file == "/etc/mds-agent/ca.pem"
    assert [(s.type, s.options) for s in config.sensors] == [("bmp180", {"address": "0x77"})]
    assert config.interval_ms == 100 and str(config.state_dir) == "/var/lib/mds-agent"
    second = tomllib.loads(bundle_of(declared, "agents-pi-hall-2")["agent.toml"].decode())
    assert second["agent"]["interval_ms"] == 500 and second["sensors"] == [{"type": "thermal"}]


def test_install_update_and_remove_commands(deploy):
    declared, _ = deploy({"hosts": hosts(3), "agents": AGENTS})
    one, two = declared["agents-pi-hall-1"].inputs, declared["agents-pi-hall-2"].inputs
    script, env, _ = script_and_env(one)
    assert "agent-install.sh" in one["create"] and env == {"AGENT_NAME": "pi-hall-1"}
    assert one["create"].startswith("sudo -n ") and not two["create"].startswith("sudo")  # user pi needs sudo
    assert one["update"] == one["create"] and "agent-remove.sh" in one["delete"]
    assert "mds1." not in one["create"] + one["delete"]  # the token never travels in a command line
    assert plain(one["connection"])["host"] == "192.0.2.101" and plain(one["connection"])["user"] == "pi"


def test_no_agents_no_agent_resources(deploy):
    declared, outputs = deploy({"hosts": hosts(3)})
    assert not any(n.startswith("agents") for n in declared) and "agents" not in outputs


@pytest.mark.parametrize("agents, message", [
    ([{"name": "pi 1", "address": "192.0.2.1"}], "mds:agents[0].name: 'pi 1' is not a device id"),
    ([{"name": "pi", "address": "no address!"}], "mds:agents[0].address"),
    ([{"name": "pi", "address": "192.0.2.1", "sensors": []}], "mds:agents[0].sensors: list at least one sensor"),
    ([{"name": "pi", "address": "192.0.2.1", "intervalMs": 1}], "mds:agents[0].intervalMs: 1"),
    ([{"name": "pi", "address": "192.0.2.1"}, {"name": "PI", "address": "192.0.2.2"}], "mds:agents[1].name: 'pi' is already used"),
    ([{"name": "pi", "address": "192.0.2.1", "colour": 1}], "mds:agents[0]: unknown field(s) colour"),
])
def test_bad_agent_entries_name_the_key(agents, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"hosts": hosts(3), "agents": agents}, ssh_private_key="k")


def test_a_bad_sensor_fails_preview_naming_the_key(deploy):
    with pytest.raises(Exception, match=re.escape("mds:agents[0].sensors[0].type: 'dht22' is not one of")):
        deploy({"hosts": hosts(3), "agents": [{"name": "pi", "address": "192.0.2.1", "sensors": [{"type": "dht22"}]}]})
