"""The ingest service: a Swarm global service on the hosts labelled for ingest.

Its image (components/ingest_image.py) is on its hosts before the service is. The port is published
in host mode by default: every host answers for itself and no IPVS is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

from components.hosts import Host
from components.images import ServiceImage
from components.swarm_configs import SECRETS_DIR, fixed_name, restart_always, swarm_secret
from stack.checks import is_ip
from stack.model import IngestSettings
from stack.constants import CRATEDB_HTTP_PORT, CRATEDB_SERVICE, READINGS_TABLE

SERVICE = "ingest"


@dataclass(frozen=True, kw_only=True)
class IngestArgs:
    hosts: Sequence[Host]
    settings: IngestSettings
    image: ServiceImage  # components/service_images.py
    docker_provider: docker.Provider
    network: docker.Network
    crate_password_secret: docker.Secret  # the CrateDB ingest user's password, from CrateDb
    secrets: dict[str, Any]  # ingestTokenSecret, edenJwtSecret, ingestTlsCert, ingestTlsKey (optional)
    retention_months: int = 0  # CrateDB's retention: the ingest accepts nothing older than it keeps


def endpoints(hosts: Sequence[Host], settings: IngestSettings, *, private: bool = False) -> list[str]:
    """Every ingest host's URL: at its address (and published port), or on the private network."""
    scheme = "http" if settings.tls == "off" else "https"
    return [f"{scheme}://{h.spec.private_address}:{settings.port}" if private
            else f"{scheme}://{h.spec.address}:{h.spec.port_for('ingest', settings.port)}"
            for h in hosts if "ingest" in h.spec.services]


class Ingest(pulumi.ComponentResource):
    service: docker.Service
    endpoints: pulumi.Output[list[str]]
    private_endpoints: pulumi.Output[list[str]]  # the same hosts at their private addresses
    token_secret: pulumi.Output[str]  # secret: device tokens are HMACs under it (ingest/tokens.py)
    ca_certificate: pulumi.Output[str] | None  # the generated CA that agents verify, when tls=generated

    def __init__(self, name: str, args: IngestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:ingest:Ingest", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_swarm = child.merge(pulumi.ResourceOptions(provider=args.docker_provider))
        settings = args.settings
        hosts = [h for h in args.hosts if "ingest" in h.spec.services]


        token_secret = args.secrets.get("ingestTokenSecret") or random.RandomPassword(
            f"{name}-token-secret", length=48, special=False, opts=child).result
        self.token_secret = pulumi.Output.secret(token_secret)

        def secret(role: str, value: pulumi.Input[str]) -> docker.Secret:
            return swarm_secret(f"{name}-secret-{role}", value, on_swarm)

        secret_files = {"token-secret": secret("token-secret", self.token_secret),
                        "crate-password": args.crate_password_secret}
        env = {
            "INGEST_CRATE_DNS": f"tasks.{CRATEDB_SERVICE}",
            "INGEST_CRATE_PORT": str(CRATEDB_HTTP_PORT),
            "INGEST_TABLE": READINGS_TABLE,
            "INGEST_PORT": str(settings.port),
            "NODE_NAME": "{{.Node.Hostname}}",  # the CrateDB node of the same name is written through first
            "INGEST_TOKEN_SECRET_FILE": f"{SECRETS_DIR}/ingest-token-secret",
            "INGEST_CRATE_PASSWORD_FILE": f"{SECRETS_DIR}/ingest-crate-password",
            "INGEST_REVOKED_DEVICES": ",".join(settings.revoked_devices),
            # One worker process per CPU of the limit: a Python process uses one core at most.
            "INGEST_WORKERS": str(math.ceil(settings.cpus)),
        }
        if args.retention_months:
            env["INGEST_RETENTION_MONTHS"] = str(args.retention_months)
        if "edenJwtSecret" in args.secrets:
            secret_files["eden-jwt-secret"] = secret("eden-jwt-secret", args.secrets["edenJwtSecret"])
            env["INGEST_EDEN_JWT_SECRET_FILE"] = f"{SECRETS_DIR}/ingest-eden-jwt-secret"
            env["INGEST_EDEN_ROLES"] = json.dumps(list(settings.eden_roles))
            if settings.eden_issuers:
                env["INGEST_EDEN_ISSUERS"] = json.dumps(list(settings.eden_issuers))

        self.ca_certificate = None
        if settings.tls != "off":
            if settings.tls == "generated":
                cert, key, self.ca_certificate = self._generated_certificate(name, hosts, child)
            else:
                cert, key = args.secrets["ingestTlsCert"], args.secrets["ingestTlsKey"]
            secret_files["tls-cert"] = secret("tls-cert", cert)
            secret_files["tls-key"] = secret("tls-key", key)
            env.update(INGEST_TLS_CERT=f"{SECRETS_DIR}/ingest-tls-cert", INGEST_TLS_KEY=f"{SECRETS_DIR}/ingest-tls-key")

        scheme = "http" if settings.tls == "off" else "https"
        # Liveness (/healthz), not readiness: with /readyz, a CrateDB outage made Swarm kill and
        # restart every ingest task in a loop (seen in the lab tier), leaving agents with refused
        # connections instead of a clear 503 + Retry-After. /readyz is for operators and monitoring.
        alive_probe = ("import ssl,urllib.request;urllib.request.urlopen("
                       f"'{scheme}://127.0.0.1:{settings.port}/healthz',timeout=4,"
                       "context=ssl._create_unverified_context())")
        self.service = docker.Service(
            f"{name}-service",
            name=SERVICE,
            mode=docker.ServiceModeArgs(global_=True),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.image.reference,
                    env=env,
                    secrets=[docker.ServiceTaskSpecContainerSpecSecretArgs(
                        secret_id=secret.id, secret_name=secret.name, file_name=f"ingest-{role}", file_uid="10001",
                        file_mode=0o400) for role, secret in secret_files.items()],
                    healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                        tests=["CMD", "/venv/bin/python", "-c", alive_probe],
                        interval="10s", timeout="5s", retries=3, start_period="30s",
                    ),
                    stop_grace_period="10s",  # the service drains within 8 s (ingest/__main__.py)
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=["node.labels.mds.ingest==true"]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.network.id)],
                resources=docker.ServiceTaskSpecResourcesArgs(limits=docker.ServiceTaskSpecResourcesLimitsArgs(
                    memory_bytes=settings.memory_mb * 1024 * 1024, nano_cpus=int(settings.cpus * 1e9))),
                restart_policy=restart_always(5),
            ),
            # Never two hosts down at once; a host-mode port cannot hold two tasks, so stop first.
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, order="stop-first", delay="10s", failure_action="rollback", monitor="30s"),
            rollback_config=docker.ServiceRollbackConfigArgs(parallelism=1, order="stop-first"),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr" if settings.publish_mode == "host" else "vip",
                ports=[docker.ServiceEndpointSpecPortArgs(
                    target_port=settings.port, published_port=settings.port, publish_mode=settings.publish_mode)],
            ),
            opts=fixed_name(on_swarm).merge(pulumi.ResourceOptions(depends_on=args.image.commands)),
        )
        self.endpoints = pulumi.Output.from_input(endpoints(args.hosts, settings))
        self.private_endpoints = pulumi.Output.from_input(endpoints(args.hosts, settings, private=True))
        self.register_outputs({"endpoints": self.endpoints, "service": self.service.name})

    @staticmethod
    def _generated_certificate(name: str, hosts: Sequence[Host], opts: pulumi.ResourceOptions):
        """A stack CA and a server certificate for every ingest host's address."""
        addresses = [h.spec.address for h in hosts] + [h.spec.private_address for h in hosts]
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        ca = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name="mds ingest CA"), validity_period_hours=24 * 365 * 10,
            allowed_uses=["cert_signing", "crl_signing"], opts=opts)
        key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        request = tls.CertRequest(
            f"{name}-tls-request", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name="mds ingest"),
            ip_addresses=sorted({a for a in addresses if is_ip(a)} | {"127.0.0.1"}),
            dns_names=sorted({a for a in addresses if not is_ip(a)} | {h.spec.name for h in hosts} | {"localhost"}),
            opts=opts)
        cert = tls.LocallySignedCert(
            f"{name}-tls-cert", cert_request_pem=request.cert_request_pem, ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem, validity_period_hours=24 * 365 * 2, early_renewal_hours=24 * 30,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"], opts=opts)
        return cert.cert_pem, key.private_key_pem, ca.cert_pem
