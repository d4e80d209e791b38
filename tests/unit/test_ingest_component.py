"""The ingest component under mocks: image builds on the hosts, the global service, TLS, secrets."""

import base64
import os
import re
import gzip
import io
import tarfile

import pytest

from components.ingest_image import build_context, image_tag
from stack import ConfigError, parse
from tests.unit.conftest import command_data, hosts, is_secret, plain
from tests.unit.test_hosts import script_and_env


def service(declared):
    return declared["ingest-service"].inputs


def test_global_service_on_ingest_hosts_published_in_host_mode(deploy):
    declared, outputs = deploy({"hosts": hosts(3)})
    inputs = service(declared)
    assert inputs["name"] == "ingest" and inputs["mode"] == {"global": True}
    spec = inputs["taskSpec"]
    assert spec["placement"]["constraints"] == ["node.labels.mds.ingest==true"]
    assert inputs["endpointSpec"] == {"mode": "dnsrr", "ports": [
        {"targetPort": 8080, "publishedPort": 8080, "publishMode": "host"}]}
    update = inputs["updateConfig"]
    assert (update["parallelism"], update["order"], update["failureAction"]) == (1, "stop-first", "rollback")
    assert spec["resources"]["limits"] == {"memoryBytes": 512 * 1024 * 1024, "nanoCpus": 1_000_000_000}
    container = spec["containerSpec"]
    assert "/healthz" in " ".join(container["healthcheck"]["tests"])  # liveness: no restart loop in a DB outage
    env = container["env"]
    assert env["INGEST_CRATE_DNS"] == "tasks.cratedb" and env["NODE_NAME"] == "{{.Node.Hostname}}"
    assert env["INGEST_TABLE"] == "doc.readings" and env["INGEST_WORKERS"] == "1"
    secrets = {s["fileName"]: s["secretId"] for s in container["secrets"]}
    assert secrets["ingest-crate-password"] == "cratedb-secret-ingest-id"  # the CrateDB ingest user's
    assert env["INGEST_CRATE_PASSWORD_FILE"] == "/run/secrets/ingest-crate-password"
    assert env["INGEST_TOKEN_SECRET_FILE"] == "/run/secrets/ingest-token-secret" and "ingest-token-secret" in secrets
    assert outputs["ingestEndpoints"] == [f"https://192.0.2.{11 + i}:8080" for i in range(3)]
    assert outputs["ingestTokenSecret"] == "generated-ingest-token-secret"


def test_image_is_built_on_every_ingest_host_from_the_repository(deploy):
    declared, _ = deploy({"hosts": hosts(3, services=["ingest"], role="manager") + [
        {"name": "db", "address": "192.0.2.99", "services": ["cratedb", "grafana"], "role": "worker"}]})
    builds = {n: d for n, d in declared.items() if n.startswith("ingest-image-")}
    assert sorted(builds) == ["ingest-image-node1", "ingest-image-node2", "ingest-image-node3"]
    tar = build_context()
    tag = image_tag("debian:bookworm-slim", tar)
    assert service(declared)["taskSpec"]["containerSpec"]["image"] == tag
    build = builds["ingest-image-node2"]
    _, env, _ = script_and_env(build.inputs)
    assert env == {"HOST_NAME": "node2", "IMAGE": tag, "BASE_IMAGE": "debian:bookworm-slim"}
    context = tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(command_data(build.inputs)))))
    names = set(context.getnames())
    assert {"Dockerfile", "app.py", "requirements.txt", "openapi.json", "extra-ca.crt"} <= names
    assert "triggers" not in build.inputs  # a new tag changes the command: an update, not a replacement
    assert "ingest-image-node1" in declared["ingest-service"].depends_on


def test_the_tag_follows_the_content(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    assert image_tag("debian:bookworm-slim", build_context()) == image_tag("debian:bookworm-slim", build_context())
    assert image_tag("debian:bookworm-slim", build_context(ca.read_bytes())) != image_tag("debian:bookworm-slim", build_context())
    assert image_tag("ubuntu:24.04", build_context()) != image_tag("debian:bookworm-slim", build_context())


def test_a_registry_image_means_no_builds(deploy):
    declared, _ = deploy({"hosts": hosts(3), "ingest": {"image": "registry.example/mds-ingest:1.2", "publishMode": "ingress",
                                                        "tls": "off", "revokedDevices": ["pi-lost"]}})
    assert not any(n.startswith("ingest-image-") for n in declared)
    inputs = service(declared)
    assert inputs["taskSpec"]["containerSpec"]["image"] == "registry.example/mds-ingest:1.2"
    assert inputs["endpointSpec"]["mode"] == "vip" and inputs["endpointSpec"]["ports"][0]["publishMode"] == "ingress"
    assert inputs["taskSpec"]["containerSpec"]["env"]["INGEST_REVOKED_DEVICES"] == "pi-lost"
    assert "INGEST_TLS_CERT" not in inputs["taskSpec"]["containerSpec"]["env"]


def test_one_worker_per_cpu_of_the_limit(deploy):
    declared, _ = deploy({"hosts": hosts(1), "ingest": {"cpus": 2.5, "memoryMb": 1024}})
    spec = service(declared)["taskSpec"]
    assert spec["resources"]["limits"]["nanoCpus"] == 2_500_000_000
    assert spec["containerSpec"]["env"]["INGEST_WORKERS"] == "3"


def test_generated_tls_covers_every_ingest_address(deploy):
    declared, outputs = deploy({"hosts": [{"name": f"n{i}", "address": f"n{i}.example", "privateAddress": f"10.0.0.{i}"}
                                          for i in (1, 2, 3)]})
    request = declared["ingest-tls-request"].inputs
    assert request["ipAddresses"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "127.0.0.1"]
    assert set(request["dnsNames"]) >= {"n1.example", "n2", "localhost"}
    assert declared["ingest-ca"].inputs["isCaCertificate"] is True
    env = service(declared)["taskSpec"]["containerSpec"]["env"]
    assert env["INGEST_TLS_CERT"] == "/run/secrets/ingest-tls-cert" and env["INGEST_TLS_KEY"] == "/run/secrets/ingest-tls-key"
    assert is_secret(declared["ingest-secret-tls-key"].inputs["data"])
    assert outputs["ingestCaCertificate"] == "-----PEM certPem of ingest-ca-----"


def test_provided_tls_needs_both_secrets(deploy):
    with pytest.raises(Exception, match="mds:ingest.tls is 'provided': set the secrets ingestTlsCert and ingestTlsKey"):
        deploy({"hosts": hosts(1), "ingest": {"tls": "provided"}})
    declared, _ = deploy({"hosts": hosts(1), "ingest": {"tls": "provided"}, "ingestTlsCert": "CERT", "ingestTlsKey": "KEY"})
    assert base64.b64decode(plain(declared["ingest-secret-tls-key"].inputs["data"])).decode() == "KEY"


def test_eden_secret_mounts_only_when_given(deploy):
    declared, _ = deploy({"hosts": hosts(1), "edenJwtSecret": "old-shared-secret"})
    env = service(declared)["taskSpec"]["containerSpec"]["env"]
    assert env["INGEST_EDEN_JWT_SECRET_FILE"] == "/run/secrets/ingest-eden-jwt-secret"
    assert "old-shared-secret" not in str({n: d.inputs for n, d in declared.items() if n != "ingest-secret-eden-jwt-secret"})
    assert env["INGEST_EDEN_ROLES"] == '["sensor"]' and "INGEST_EDEN_ISSUERS" not in env
    declared, _ = deploy({"hosts": hosts(1), "edenJwtSecret": "s", "ingest": {"edenRoles": ["sensor", "gateway"],
                                                                             "edenIssuers": ["Raspberry 1"]}})
    env = service(declared)["taskSpec"]["containerSpec"]["env"]
    assert env["INGEST_EDEN_ROLES"] == '["sensor", "gateway"]' and env["INGEST_EDEN_ISSUERS"] == '["Raspberry 1"]'


def test_the_ingest_accepts_nothing_older_than_retention_keeps(deploy):
    declared, _ = deploy({"hosts": hosts(1)})
    assert "INGEST_RETENTION_MONTHS" not in service(declared)["taskSpec"]["containerSpec"]["env"]
    declared, _ = deploy({"hosts": hosts(1), "cratedb": {"retentionMonths": 3}})
    assert service(declared)["taskSpec"]["containerSpec"]["env"]["INGEST_RETENTION_MONTHS"] == "3"


@pytest.mark.parametrize("ingest, message", [
    ({"port": 0}, r"mds:ingest\.port: 0 is not a port number"),
    ({"publishMode": "mesh"}, r"mds:ingest\.publishMode: 'mesh' is not allowed; use host"),
    ({"tls": "maybe"}, r"mds:ingest\.tls: 'maybe' is not allowed"),
    ({"revokedDevices": "pi-1"}, r"mds:ingest\.revokedDevices: 'pi-1' must be a list of device ids"),
    ({"image": "Not An Image"}, r"mds:ingest\.image: 'Not An Image' is not an image reference"),
    ({"extraCaFile": "/nonexistent/ca.pem"}, r"mds:ingest\.extraCaFile: '/nonexistent/ca\.pem' is not a readable file"),
    ({"memoryMb": 64}, r"mds:ingest\.memoryMb: 64 must be a whole number of at least 128"),
    ({"workers": 4}, r"mds:ingest: unknown field\(s\) workers"),
    ({"edenRoles": []}, r"mds:ingest\.edenRoles: an empty list would refuse every Eden device"),
    ({"edenIssuers": "Raspberry 1"}, r"mds:ingest\.edenIssuers: 'Raspberry 1' must be a list of non-empty texts"),
])
def test_bad_ingest_settings_name_the_key(ingest, message):
    with pytest.raises(ConfigError, match=message):
        parse({"hosts": hosts(1), "ingest": ingest}, ssh_private_key="K")


FAKE_LOCAL_DOCKER = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$1 $2" in
  "image inspect") grep -q '^build ' "$CALLS" && echo sha256:new ;;  # there once built
  "image ls") printf 'mds-ingest:0000000000000001\\n%s\\n' "$CURRENT" ;;
  *) cat > /dev/null ;;
esac
"""


def test_a_build_here_removes_the_images_it_built_before_for_older_content(deploy, tmp_path):
    """An edit of ingest/ runs the build command's create again (an update), never its delete:
    every earlier image stayed on the operator's machine."""
    import subprocess

    from tests.program import plain
    declared, _ = deploy({"hosts": hosts(1), "ingest": {"build": "local"}})
    build = plain(declared["ingest-build-here"].inputs)
    tag = re.search(r"-t (mds-ingest:\w+)", build["create"]).group(1)
    assert "--label mds.stack=mds/test" in build["create"]
    (tmp_path / "docker").write_text(FAKE_LOCAL_DOCKER)
    (tmp_path / "docker").chmod(0o755)
    result = subprocess.run([*build["interpreter"], build["create"]], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
                                 "CURRENT": tag})
    assert result.returncode == 0 and result.stdout.strip() == "sha256:new", result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert any(c.startswith("build ") for c in calls)
    assert "image rm mds-ingest:0000000000000001" in calls and not any(c == f"image rm {tag}" for c in calls)
