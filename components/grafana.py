"""Grafana: one replica on a host labelled for Grafana, everything it shows provisioned from here.

Its state is entirely provisioned (datasource, dashboards, alert rules, admin password), so it keeps
no volume: losing its host loses nothing, Swarm starts it on another Grafana host. Every file is a
Swarm config, replaced when its content changes, so an edited dashboard rolls out on `pulumi up`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import yaml

from components import grafana_dashboards as provisioning
from components.hosts import Host
from components.images import ServiceImage
from components.swarm_configs import SECRETS_DIR, fixed_name, go_duration, restart_always, swarm_config, swarm_secret, warn_unpinned
from stack.model import GrafanaSettings
from stack.constants import CRATEDB_PG_PORT, CRATEDB_SERVICE

SERVICE = "grafana"
GRAFANA_UID = "472"  # the image's user
PROVISIONING = "/etc/grafana/provisioning"


@dataclass(frozen=True, kw_only=True)
class GrafanaArgs:
    hosts: Sequence[Host]
    settings: GrafanaSettings
    image: ServiceImage  # components/service_images.py
    docker_provider: docker.Provider
    network: docker.Network
    db_password_secret: docker.Secret  # the CrateDB grafana user's password, from CrateDb
    database_ready: Any = None  # what gives the grafana user its privileges (CrateDb.schema): started after it
    admin_password: Any = None  # secret Output from the stack config; None: generated
    smtp_password: Any = None  # secret Output: the mail server login's password (settings.smtp)


def provisioning_files(settings: GrafanaSettings, *, database: str = f"{CRATEDB_SERVICE}:{CRATEDB_PG_PORT}",
                       password_file: str = f"{SECRETS_DIR}/grafana-db-password",
                       dashboards_dir: str = provisioning.DASHBOARDS_DIR) -> dict[str, tuple[str, str]]:
    """Role -> (path, content): datasource, dashboard provider, alerting, dashboards. The paths are
    the container's; the keywords let the Grafana contract tier run the same files elsewhere."""
    def as_yaml(document: dict) -> str:
        return yaml.safe_dump(document, sort_keys=True)

    boards = {file_name.removesuffix(".json"): model for file_name, model in provisioning.dashboards(settings.alerts).items()}
    files = {
        # pgx tries every address of the dnsrr name in turn: any CrateDB node will do.
        "datasource": (f"{PROVISIONING}/datasources/mds.yaml", as_yaml(provisioning.datasource(database, password_file))),
        "dashboard-provider": (f"{PROVISIONING}/dashboards/mds.yaml",
                               as_yaml(provisioning.dashboard_provider(sorted(boards), dashboards_dir))),
        "alerting": (f"{PROVISIONING}/alerting/mds.yaml", as_yaml(provisioning.alerting(settings.alerts))),
    }
    for name, model in boards.items():
        files[f"dashboard-{name}"] = (f"{dashboards_dir}/{name}/{name}.json", json.dumps(model, indent=1, sort_keys=True))
    return files


def grafana_env(settings: GrafanaSettings, *, with_smtp_password: bool) -> dict[str, str]:
    """Grafana's settings as environment variables: the same in the service and in the contract tier."""
    return {
        "GF_PATHS_PROVISIONING": PROVISIONING,
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": f"{SECRETS_DIR}/grafana-admin-password",
        "GF_AUTH_ANONYMOUS_ENABLED": "false",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_SERVER_HTTP_PORT": str(settings.port),
        # No calls home: many sites have no way out (each of these logged an error there).
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",  # also Angular detection patterns
        "GF_PLUGINS_PUBLIC_KEY_RETRIEVAL_DISABLED": "true",  # plugin signatures use the key built in
        # No state, so every start would install the preinstalled app plugins from the internet
        # again; and no news feed from grafana.com.
        "GF_PLUGINS_PREINSTALL_DISABLED": "true",
        "GF_NEWS_NEWS_FEED_ENABLED": "false",
        **smtp_env(settings, with_password=with_smtp_password),
    }


def smtp_env(settings: GrafanaSettings, *, with_password: bool) -> dict[str, str]:
    """Grafana's [smtp] section ([smtp] enabled is false by default: no alert e-mail without it)."""
    smtp = settings.smtp
    if smtp is None:
        return {}
    env = {"GF_SMTP_ENABLED": "true", "GF_SMTP_HOST": smtp.host, "GF_SMTP_FROM_ADDRESS": smtp.from_address,
           "GF_SMTP_FROM_NAME": "Machine Data Stack"}
    if smtp.user:
        env["GF_SMTP_USER"] = smtp.user
    if with_password:
        env["GF_SMTP_PASSWORD__FILE"] = f"{SECRETS_DIR}/grafana-smtp-password"
    return env


def urls(hosts: Sequence[Host], settings: GrafanaSettings) -> list[str]:
    """Where Grafana may answer: its one task runs on one of these hosts (host mode), on any with ingress."""
    return [f"http://{h.spec.address}:{h.spec.port_for(SERVICE, settings.port)}" for h in hosts if SERVICE in h.spec.services]


class Grafana(pulumi.ComponentResource):
    service: docker.Service
    admin_password: pulumi.Output[str]  # secret
    urls: pulumi.Output[list[str]]

    def __init__(self, name: str, args: GrafanaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:grafana:Grafana", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_swarm = child.merge(pulumi.ResourceOptions(provider=args.docker_provider))
        settings = args.settings

        admin = args.admin_password or random.RandomPassword(
            f"{name}-admin-password", length=32, special=False, opts=child).result
        self.admin_password = pulumi.Output.secret(admin)
        admin_secret = swarm_secret(f"{name}-secret-admin", self.admin_password, on_swarm)
        secrets = {"grafana-admin-password": admin_secret, "grafana-db-password": args.db_password_secret}
        if args.smtp_password is not None:
            secrets["grafana-smtp-password"] = swarm_secret(f"{name}-secret-smtp", args.smtp_password, on_swarm)
        configs = {
            path: swarm_config(f"{name}-{role}", text, on_swarm)
            for role, (path, text) in sorted(provisioning_files(settings).items())
        }

        if settings.image_source.kind == "registry" and settings.digest is None:
            warn_unpinned("mds:grafana", settings.image_ref, self)
        self.service = docker.Service(
            f"{name}-service",
            name=SERVICE,
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.image.reference,
                    env=grafana_env(settings, with_smtp_password=args.smtp_password is not None),
                    secrets=[docker.ServiceTaskSpecContainerSpecSecretArgs(
                        secret_id=secret.id, secret_name=secret.name, file_name=file_name, file_uid=GRAFANA_UID,
                        file_mode=0o400) for file_name, secret in secrets.items()],
                    configs=[docker.ServiceTaskSpecContainerSpecConfigArgs(
                        config_id=config.id, config_name=config.name, file_name=path, file_uid=GRAFANA_UID,
                        file_mode=0o444) for path, config in configs.items()],
                    healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                        tests=["CMD-SHELL", f"curl -fsS -o /dev/null http://127.0.0.1:{settings.port}/api/health"],
                        interval="15s", timeout="5s", retries=4, start_period=go_duration(60),
                    ),
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=[f"node.labels.mds.{SERVICE}==true"]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.network.id)],
                restart_policy=restart_always(5),
            ),
            # One replica with a host-mode port: the old task stops before the new one starts.
            update_config=docker.ServiceUpdateConfigArgs(parallelism=1, order="stop-first", failure_action="rollback",
                                                         monitor=go_duration(60)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr" if settings.publish_mode == "host" else "vip",
                ports=[docker.ServiceEndpointSpecPortArgs(
                    target_port=settings.port, published_port=settings.port, publish_mode=settings.publish_mode)],
            ),
            # After the schema step: a CrateDB session checks privileges against the user as it was
            # when the session began (io/crate/role/Roles.java, hasPrivilege on the session's Role),
            # so a datasource connection opened before the GRANT answered "Schema 'doc' unknown"
            # for as long as it lived (seen on the lab stack, 2026-12-06).
            opts=fixed_name(on_swarm).merge(pulumi.ResourceOptions(
                depends_on=[*args.image.commands, *([args.database_ready] if args.database_ready else [])])),
        )
        self.urls = pulumi.Output.from_input(urls(args.hosts, settings))
        self.register_outputs({"service": self.service.name, "urls": self.urls, "adminPassword": self.admin_password})
