"""The lab engine's stand-in for the pulumi-docker provider: the program's declared networks,
Swarm configs, secrets and services, created with the `docker` CLI on the swarm manager over SSH.

Only the inputs this project uses are translated; anything else fails loudly, so a new input in a
component cannot be silently ignored in the lab. An update replaces a service (rm, then create):
unlike the real provider it does not roll tasks one by one. Configs and secrets without a `name`
get one as the provider makes it (the resource's name and a suffix; here a digest of the content
instead of random characters), and a changed one is made anew before the old one goes.
"""

from __future__ import annotations

import base64
import hashlib
import shlex

from tests.program import Declared, plain

KINDS = {
    "docker:index/network:Network": "network",
    "docker:index/serviceConfig:ServiceConfig": "config",
    "docker:index/secret:Secret": "secret",
    "docker:index/service:Service": "service",
}
KNOWN_CONTAINER = {"image", "env", "hostname", "commands", "args", "init", "mounts", "configs", "secrets",
                   "healthcheck", "stopGracePeriod"}


def octal(mode) -> str:
    """Mock inputs carry numbers as floats; the CLI wants an octal file mode such as 0400."""
    return f"0{int(mode):o}"


def name_of(resource: Declared) -> str:
    inputs = plain(resource.inputs)
    if inputs.get("name"):
        return inputs["name"]
    if KINDS[resource.typ] in ("config", "secret"):
        return f"{resource.name}-{hashlib.sha256(inputs['data'].encode()).hexdigest()[:7]}"
    return resource.name


def replaced_create_first(resource: Declared) -> bool:
    """Provider-named configs and secrets: the new one is made before the old one is removed."""
    return KINDS[resource.typ] in ("config", "secret") and not plain(resource.inputs).get("name")


def create_command(resource: Declared) -> tuple[str, bytes | None]:
    """(shell command for the manager, its stdin); the command prints the new object's id."""
    kind, inputs = KINDS[resource.typ], plain(resource.inputs)
    name = shlex.quote(name_of(resource))
    if kind == "network":
        flags = ["--driver", inputs.get("driver", "overlay")] + (["--attachable"] if inputs.get("attachable") else [])
        return f"docker network create {' '.join(flags)} {name}", None
    if kind in ("config", "secret"):
        return f"docker {kind} create {name} -", base64.b64decode(inputs["data"])
    return "docker service create --detach --quiet " + " ".join(map(shlex.quote, service_flags(inputs))), None


def delete_command(resource: Declared) -> str:
    kind = KINDS[resource.typ]
    return f"docker {kind} rm {shlex.quote(resource.physical_id or name_of(resource))}"


def service_flags(inputs: dict) -> list[str]:
    spec = inputs["taskSpec"]
    container = spec["containerSpec"]
    unknown = set(container) - KNOWN_CONTAINER
    assert not unknown, f"the lab's docker CLI translation does not know {unknown}"
    flags = ["--name", inputs["name"]]
    mode = inputs.get("mode", {})
    flags += ["--mode", "global"] if mode.get("global") else ["--replicas", str(mode.get("replicated", {}).get("replicas", 1))]
    for key, value in sorted(container.get("env", {}).items()):
        flags += ["--env", f"{key}={value}"]
    if container.get("hostname"):
        flags += ["--hostname", container["hostname"]]
    if container.get("commands"):
        flags += ["--entrypoint", shlex.join(container["commands"])]
    if container.get("init"):
        flags += ["--init"]
    for mount in container.get("mounts", []):
        flags += ["--mount", f"type={mount['type']},source={mount['source']},target={mount['target']}"]
    for config in container.get("configs", []):
        flags += ["--config", f"source={config['configName']},target={config['fileName']},mode={octal(config.get('fileMode', 0o444))}"]
    for secret in container.get("secrets", []):
        extra = f",uid={int(float(secret['fileUid']))}" if secret.get("fileUid") else ""
        flags += ["--secret", f"source={secret['secretName']},target={secret['fileName']},mode={octal(secret.get('fileMode', 0o444))}{extra}"]
    if check := container.get("healthcheck"):
        test = check["tests"]
        command = test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:])
        flags += ["--health-cmd", command, "--health-interval", check["interval"], "--health-timeout", check["timeout"],
                  "--health-retries", str(int(check["retries"])), "--health-start-period", check["startPeriod"]]
    if container.get("stopGracePeriod"):
        flags += ["--stop-grace-period", container["stopGracePeriod"]]
    for constraint in spec.get("placement", {}).get("constraints", []):
        flags += ["--constraint", constraint]
    for network in spec.get("networksAdvanceds", []):
        flags += ["--network", network["id"]]
    if restart := spec.get("restartPolicy"):
        flags += ["--restart-condition", restart["condition"], "--restart-delay", restart["delay"]]
    if limits := spec.get("resources", {}).get("limits"):
        flags += ["--limit-memory", str(int(limits["memoryBytes"])), "--limit-cpu", str(limits["nanoCpus"] / 1e9)]
    if update := inputs.get("updateConfig"):
        flags += ["--update-parallelism", str(int(update["parallelism"])), "--update-order", update["order"],
                  "--update-delay", update["delay"], "--update-failure-action", update["failureAction"],
                  "--update-monitor", update["monitor"]]
    if rollback := inputs.get("rollbackConfig"):
        flags += ["--rollback-parallelism", str(int(rollback["parallelism"])), "--rollback-order", rollback["order"]]
    endpoint = inputs.get("endpointSpec", {})
    if endpoint.get("mode"):
        flags += ["--endpoint-mode", endpoint["mode"]]
    for port in endpoint.get("ports") or []:
        flags += ["--publish", f"mode={port['publishMode']},target={int(port['targetPort'])},published={int(port['publishedPort'])}"]
    return flags + [container["image"], *container.get("args", [])]
