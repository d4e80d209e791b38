"""The CrateDB cluster: one node per CrateDB host as a Swarm global service, its users and schema.

Settings derive from the host list (never typed twice): node names are the Swarm hostnames,
`cluster.initial_master_nodes` lists them all, discovery uses the service's task DNS on the overlay.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_random as random

from components.hosts import Host
from components.images import ServiceImage
from components.remote import Script, Step, remote_command
from components.swarm_configs import fixed_name, go_duration, restart_always, swarm_config, swarm_secret, warn_unpinned
from stack.model import BackupSettings, CrateDbSettings, HostSpec
from stack.constants import (
    CRATEDB_HTTP_PORT, CRATEDB_SERVICE, CRATEDB_STOP_GRACE_SECONDS, CRATEDB_TRANSPORT_PORT, READINGS_TABLE, ROLLUP_TABLES,
)

FILES = Path(__file__).parent / "cratedb_files"
SQL = Path(__file__).parent / "sql"
SCHEMA = Script("cratedb-schema.sh")
USERS = ("admin", "ingest", "grafana")
REPOSITORY = "mds_backups"
SNAPSHOTS_DIR = "/snapshots"
SETTINGS_ATTRIBUTE = "mds_settings"
SCHEMA_DEADLINE_S = 1800  # a rolling update of every node (each waits for GREEN) comes first  # where an fs repository's shared directory appears in the nodes


@dataclass(frozen=True, kw_only=True)
class CrateDbArgs:
    hosts: Sequence[Host]  # every host of the stack; the component picks those carrying cratedb
    settings: CrateDbSettings
    image: ServiceImage  # components/service_images.py
    data_root: str
    docker_provider: docker.Provider
    network: docker.Network
    passwords: dict[str, Any]  # user -> secret Output; missing users get a generated password
    backup_keys: dict[str, Any] | None = None  # backupAccessKey / backupSecretKey for s3, secret


def cluster_settings(nodes: Sequence[HostSpec]) -> dict[str, str]:
    """The settings of crate.yml that follow from the host list."""
    names = [h.name for h in nodes]
    return {
        "seed_hosts": f"tasks.{CRATEDB_SERVICE}:{CRATEDB_TRANSPORT_PORT}",
        "initial_master_nodes": "[" + ", ".join(names) + "]",
        "expected_data_nodes": str(len(names)),
        # Start recovering with one node missing, so that a cluster restart survives a dead host.
        "recover_after_data_nodes": str(max(1, len(names) - 1)),
    }


def render_crate_yml(nodes: Sequence[HostSpec], backup: BackupSettings | None = None) -> str:
    text = (FILES / "crate.yml").read_text()
    for key, value in cluster_settings(nodes).items():
        text = text.replace("{" + key + "}", value)
    if backup and backup.type == "fs":
        text += f"\n# Snapshots go to a directory every node shares (CREATE REPOSITORY ... TYPE fs).\npath.repo: [{SNAPSHOTS_DIR}]\n"
    return text + (
        "\n# Which version of these settings the node started with (sys.nodes.attributes): the schema step\n"
        "# waits until every node runs it, so that a rolling update has reached them all first.\n"
        f"node.attr.{SETTINGS_ATTRIBUTE}: {hashlib.sha256(text.encode()).hexdigest()[:12]}\n")


def settings_version(crate_yml: str) -> str:
    """The version a rendered crate.yml gives its nodes."""
    return re.search(rf"^node\.attr\.{SETTINGS_ATTRIBUTE}: (\w+)$", crate_yml, re.M).group(1)


def repository_options(backup: BackupSettings, keys: dict[str, str]) -> dict[str, str]:
    """The repository's settings; s3 keys come from the stack's secrets."""
    if backup.type == "fs":
        options = {"location": f"{SNAPSHOTS_DIR}/mds", "compress": "true"}
    else:
        options = {"bucket": backup.bucket, "base_path": backup.base_path, "endpoint": backup.endpoint,
                   "region": backup.region, "access_key": keys.get("backupAccessKey"),
                   "secret_key": keys.get("backupSecretKey")}
    return {k: v for k, v in options.items() if v is not None}


def _rendered(options: dict[str, str]) -> str:
    return ", ".join(f"{k} = {v}" if v == "true" else f"{k} = '{v}'" for k, v in options.items())


def repository_sql(backup: BackupSettings, keys: dict[str, str]) -> tuple[str, str, str | None]:
    """(CREATE, ALTER, the query that finds it as configured) for the stack's backup repository.

    An existing repository is altered, never dropped and created again (DROP REPOSITORY and ALTER
    REPOSITORY are refused while a snapshot runs, and a schema run must not fail for that): and
    only when its settings differ. CrateDB masks the keys in sys.repositories, so with s3 keys the
    comparison cannot see them and the ALTER runs every time (a key rotation must reach it)."""
    options = repository_options(backup, keys)
    create = f"CREATE REPOSITORY {REPOSITORY} TYPE {backup.type} WITH ({_rendered(options)})"
    alter = f"ALTER REPOSITORY {REPOSITORY} SET ({_rendered(options)})"
    if "access_key" in options or "secret_key" in options:
        return create, alter, None
    conditions = "".join(f" AND settings['{k}'] = '{v}'" for k, v in options.items())
    return create, alter, f"SELECT name FROM sys.repositories WHERE name = '{REPOSITORY}' AND type = '{backup.type}'{conditions}"


def table_sql(settings: CrateDbSettings) -> str:
    """The CREATE TABLE statement on one line (comments dropped), with the replica count."""
    lines = [line for line in (SQL / "readings.sql").read_text().splitlines() if not line.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split()).replace("{replicas}", f"'{settings.replicas}'")


def retention_tables(settings: CrateDbSettings) -> str:
    """retention.sh's list: `table=months` for each table that keeps a limited history."""
    kept = {READINGS_TABLE: settings.retention_months, ROLLUP_TABLES["1m"]: settings.rollups.minutes_retention_months,
            ROLLUP_TABLES["1h"]: settings.rollups.hours_retention_months}
    return " ".join(f"{table}={months}" for table, months in kept.items() if months)


def rollup_tables_sql(settings: CrateDbSettings) -> list[tuple[str, str]]:
    """(table, CREATE TABLE statement on one line) of the roll-up tables and their status."""
    text = (SQL / "rollups.sql").read_text().replace("{replicas}", f"'{settings.replicas}'")
    body = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = [" ".join(part.split()) for part in body.split(";") if part.strip()]
    return [(re.search(r"CREATE TABLE IF NOT EXISTS (\S+)", s).group(1), s) for s in statements]


def sql_statements(path: Path) -> list[str]:
    """Statements of a .sql file: one per line, `--` comments skipped."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("--")]


def user_statements(user: str, password: str) -> tuple[str, str]:
    """(create, alter): the schema script runs alter when create finds the user (HTTP 409)."""
    create, alter = sql_statements(SQL / "users.sql")
    return tuple(s.replace("{user}", user).replace("{password}", password) for s in (create, alter))


def schema_requests(settings: CrateDbSettings, passwords: dict[str, str], backup_keys: dict[str, str] | None = None) -> str:
    """Stdin of cratedb-schema.sh: one line per step, `label<TAB>body<TAB>[bodies to run on 409]<TAB>
    1 if CrateDB's error may be shown, else 0<TAB>body of a query that finds the step done, or empty`
    (bash's read joins empty tab-separated fields: only the last may be empty)."""
    tables = [(READINGS_TABLE, table_sql(settings)), *rollup_tables_sql(settings)]
    lines = [(f"table {table}", create, [], None, True) for table, create in tables]
    # CREATE TABLE IF NOT EXISTS keeps an existing table as it is: a changed replica count needs this.
    lines += [(f"replicas {table}", f"ALTER TABLE {table} SET (number_of_replicas = '{settings.replicas}')", [], None, True)
              for table, _ in tables]
    for user in USERS:
        create, alter = user_statements(user, passwords[user])
        lines.append((f"user {user}", create, [alter], None, False))
    lines += [(f"grant: {s}", s, [], None, True) for s in sql_statements(SQL / "grants.sql")]
    if settings.backup:
        create, alter, done = repository_sql(settings.backup, backup_keys or {})
        lines.append((f"repository {REPOSITORY} (a change is refused while a snapshot runs: run pulumi up again "
                       "after it)", create, [alter], done, settings.backup.type == "fs"))
    return "".join(
        f"{label}\t{json.dumps({'stmt': stmt})}\t{json.dumps([{'stmt': s} for s in on_conflict])}\t{int(show)}\t"
        f"{json.dumps({'stmt': done}) if done else ''}\n"
        for label, stmt, on_conflict, done, show in lines
    )


class CrateDb(pulumi.ComponentResource):
    service: docker.Service
    passwords: dict[str, pulumi.Output[str]]  # secret
    secrets: dict[str, docker.Secret]  # Swarm secrets of the ingest and grafana passwords
    schema: command.remote.Command
    endpoints: pulumi.Output[list[str]]  # where the services on the overlay reach CrateDB

    def __init__(self, name: str, args: CrateDbArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:cratedb:CrateDb", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_swarm = child.merge(pulumi.ResourceOptions(provider=args.docker_provider))
        nodes = [h for h in args.hosts if "cratedb" in h.spec.services]
        settings = args.settings

        self.passwords = {}
        for user in USERS:
            given = args.passwords.get(user)
            if given is None:
                given = random.RandomPassword(f"{name}-password-{user}", length=32, special=False, opts=child).result
            self.passwords[user] = pulumi.Output.secret(given)
        # The services that log in get their password as a Swarm secret (a file), never as env.
        self.secrets = {user: swarm_secret(f"{name}-secret-{user}", self.passwords[user], on_swarm)
                        for user in ("ingest", "grafana")}

        backup = settings.backup
        crate_yml = render_crate_yml([h.spec for h in nodes], backup)
        configs = {"/crate/config/crate.yml": swarm_config(f"{name}-crate-yml", crate_yml, on_swarm)}
        for script in ("start-crate.sh", "retention.sh", "rollup.py") + (("snapshot.sh",) if backup else ()):
            configs[f"/mds/{script}"] = swarm_config(f"{name}-{script.rsplit('.', 1)[0]}", (FILES / script).read_text(), on_swarm)
        mounts = [docker.ServiceTaskSpecContainerSpecMountArgs(type="bind", source=f"{args.data_root}/cratedb", target="/data")]
        if backup and backup.type == "fs":
            mounts.append(docker.ServiceTaskSpecContainerSpecMountArgs(type="bind", source=backup.location, target=SNAPSHOTS_DIR))
        env = {
            "CLUSTER_NAME": settings.cluster_name,
            "NODE_NAME": "{{.Node.Hostname}}",
            "RETENTION_TABLES": retention_tables(settings),
            "STOP_GATE_SECONDS": str(CRATEDB_STOP_GRACE_SECONDS - 60),
        }
        if settings.heap_size:  # the image sets CRATE_HEAP_SIZE=512M: start-crate.sh reads this one
            env["MDS_HEAP_SIZE"] = settings.heap_size
        if backup:
            env.update(BACKUP_REPOSITORY=REPOSITORY, BACKUP_EVERY_HOURS=str(backup.every_hours), BACKUP_KEEP=str(backup.keep))

        if settings.image_source.kind == "registry" and settings.digest is None:
            warn_unpinned("mds:cratedb", settings.image_ref, self)
        self.service = docker.Service(
            f"{name}-service",
            name=CRATEDB_SERVICE,
            mode=docker.ServiceModeArgs(global_=True),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.image.reference,
                    hostname="{{.Node.Hostname}}",
                    commands=["/bin/sh", "/mds/start-crate.sh"],
                    env=env,
                    init=True,
                    mounts=mounts,
                    configs=[
                        docker.ServiceTaskSpecContainerSpecConfigArgs(
                            config_id=config.id, config_name=config.name, file_name=path,
                            file_mode=0o555 if path.endswith((".sh", ".py")) else 0o444,
                        )
                        for path, config in configs.items()
                    ],
                    # Liveness only: 200 (in a cluster) or 503 (no master yet) both mean the node
                    # runs. A check that waits for a master would keep the task out of
                    # tasks.cratedb DNS and a new cluster from ever forming (moby/moby#36737; docs/cratedb.md).
                    healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                        tests=["CMD-SHELL", "curl -s -o /dev/null -w '%{http_code}' "
                               f"http://127.0.0.1:{CRATEDB_HTTP_PORT}/ | grep -qE '^(200|503)$'"],
                        interval="10s", timeout="5s", retries=6, start_period=go_duration(120),
                    ),
                    stop_grace_period=go_duration(CRATEDB_STOP_GRACE_SECONDS),
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=["node.labels.mds.cratedb==true"]),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.network.id)],
                restart_policy=restart_always(10),
            ),
            # One node at a time; the old task's shutdown gate waits for GREEN before it stops.
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, order="stop-first", failure_action="pause", delay="30s", monitor=go_duration(120),
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(parallelism=1, order="stop-first"),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr",
                ports=[docker.ServiceEndpointSpecPortArgs(
                    target_port=CRATEDB_HTTP_PORT, published_port=CRATEDB_HTTP_PORT, publish_mode="host",
                )] if settings.publish_admin_ui else None,
            ),
            opts=fixed_name(on_swarm).merge(pulumi.ResourceOptions(depends_on=args.image.commands)),
        )

        # Users and schema, from inside a CrateDB container on the first CrateDB host: the
        # superuser has no password and is trusted on loopback only (crate/crate docs/admin/auth/hba.rst).
        runner = nodes[0]
        self.schema = remote_command(
            f"{name}-schema",
            connection=runner.connection,
            run=Step(SCHEMA, {"HOST_NAME": runner.spec.name, "SERVICE": CRATEDB_SERVICE,
                              "EXPECTED_NODES": str(len(nodes)), "DEADLINE": str(SCHEMA_DEADLINE_S),
                              "SETTINGS_ATTRIBUTE": SETTINGS_ATTRIBUTE, "SETTINGS_VERSION": settings_version(crate_yml)},
                     runner.sudo),
            data=pulumi.Output.all(
                pulumi.Output.all(**self.passwords), pulumi.Output.all(**(args.backup_keys or {})),
            ).apply(lambda both: schema_requests(settings, both[0], both[1])),
            triggers=[self.service.id],  # a new service (no delete step here): apply the schema again
            logging=command.remote.Logging.STDOUT,  # stdout names steps only; never a password
            opts=child.merge(pulumi.ResourceOptions(depends_on=[self.service])),
        )
        self.endpoints = pulumi.Output.from_input([f"{CRATEDB_SERVICE}:{CRATEDB_HTTP_PORT}"])
        self.register_outputs({"service": self.service.name, "endpoints": self.endpoints})

