"""The `agents` section: sensor agents' machines, reached over SSH, and their sensors (checked by
the agent's own reader, pi/config.py, so the stack accepts exactly what the agent will)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pi.config import ConfigError as AgentConfigError
from pi.config import parse_sensors
from stack.checks import DEVICE_ID, a_list, address, known_fields, unique, whole_number
from stack.errors import ConfigError, key
from stack.hosts import ssh_login
from stack.model import AgentSpec

AGENT_KEYS = ("name", "address", "sshUser", "sshPort", "hostKey", "sensors", "intervalMs")
_interval = whole_number("must be a whole number of milliseconds, 10 to 3600000", minimum=10, maximum=3_600_000)


def parse_agents(raw: Any) -> tuple[AgentSpec, ...]:
    a_list(raw, key("agents"), "agent machines")
    agents = tuple(_agent(f"{key('agents')}[{i}]", entry) for i, entry in enumerate(raw))
    unique(agents, "name", lambda a: a.name.lower(), "agents")
    return agents


def _agent(where: str, raw: Any) -> AgentSpec:
    known_fields(raw, where, AGENT_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not DEVICE_ID.match(name):
        raise ConfigError(f"{where}.name: {name!r} is not a device id (1-64 letters, digits, '.', '_' or '-')")
    sensors = raw.get("sensors", [{"type": "thermal"}])
    if not isinstance(sensors, Sequence) or isinstance(sensors, str) or not sensors or not all(isinstance(s, Mapping) for s in sensors):
        raise ConfigError(f"{where}.sensors: list at least one sensor, such as {{type: thermal}}")
    try:
        parse_sensors(list(sensors), f"{where}.sensors")
    except AgentConfigError as e:
        raise ConfigError(str(e)) from None
    return AgentSpec(name=name, address=address(raw, where), **ssh_login(raw, where, default_user="pi"),
                     sensors=tuple(dict(s) for s in sensors), interval_ms=_interval(raw.get("intervalMs", 100), f"{where}.intervalMs"))
