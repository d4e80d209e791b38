"""The machine data stack: typed config in, components out, outputs exported. Nothing else."""

import signal

import pulumi

import stack
from components.agents import Agents, AgentsArgs
from components.cratedb import CrateDb, CrateDbArgs
from components.docker_access import SshAccess
from components.grafana import Grafana, GrafanaArgs
from components.hosts import Host, HostArgs
from components.ingest import Ingest, IngestArgs
from components.lab import Lab, LabArgs
from components.service_images import ServiceImages, ServiceImagesArgs
from components.swarm import Swarm, SwarmArgs

# When a resource fails, the engine stops the program with SIGINT; Python would print a
# KeyboardInterrupt traceback that reads like a crash of ours (seen on the real engine).
signal.signal(signal.SIGINT, signal.SIG_DFL)

config = stack.load()

# The lab stack simulates its hosts and makes their SSH key; a real stack has both in its config.
lab = Lab("lab", LabArgs(settings=config.lab, host_names=tuple(h.name for h in config.hosts))) if config.lab else None
ssh_key = lab.private_key if lab else config.ssh_private_key
after_lab = pulumi.ResourceOptions(depends_on=lab.containers) if lab else None
ssh = SshAccess(ssh_key, simulated=lab is not None)

backup = config.cratedb.backup
hosts = [
    Host(f"host-{spec.name}", HostArgs(spec=spec, ssh_private_key=ssh_key, data_root=config.data_root,
                                       backup_dir=backup.location if backup and backup.type == "fs" else None), after_lab)
    for spec in config.hosts
]
images = ServiceImages("images", ServiceImagesArgs(
    hosts=hosts, cratedb=config.cratedb, grafana=config.grafana, ingest=config.ingest, ssh=ssh,
))
swarm = Swarm("swarm", SwarmArgs(hosts=hosts, ssh_private_key=ssh_key, simulated=lab is not None,
                                 before_labels=images.on_host))
cratedb = CrateDb("cratedb", CrateDbArgs(
    hosts=hosts, settings=config.cratedb, image=images.cratedb, data_root=config.data_root,
    docker_provider=swarm.docker, network=swarm.network, passwords=config.secrets.passwords,
    backup_keys=config.secrets.backup_keys,
))
ingest = Ingest("ingest", IngestArgs(
    hosts=hosts, settings=config.ingest, image=images.ingest, docker_provider=swarm.docker, network=swarm.network,
    crate_password_secret=cratedb.secrets["ingest"], secrets=config.secrets.ingest,
    retention_months=config.cratedb.retention_months,
))
grafana = Grafana("grafana", GrafanaArgs(
    hosts=hosts, settings=config.grafana, image=images.grafana, docker_provider=swarm.docker, network=swarm.network,
    db_password_secret=cratedb.secrets["grafana"], database_ready=cratedb.schema,
    admin_password=config.secrets.grafana_admin_password,
    smtp_password=config.secrets.grafana_smtp_password,
))
agents = Agents("agents", AgentsArgs(
    # A lab agent runs inside a simulated host: it reaches the ingest on the lab bridge.
    agents=config.agents, ssh_private_key=ssh_key, endpoints=ingest.private_endpoints if lab else ingest.endpoints,
    token_secret=ingest.token_secret, ca_certificate=ingest.ca_certificate,
), after_lab) if config.agents else None

pulumi.export("hosts", [
    {"name": h.name, "address": h.address, "privateAddress": h.private_address, "sshUser": h.ssh_user,
     "sshPort": h.ssh_port, "role": h.role, "services": list(h.services)}
    for h in config.hosts
])
pulumi.export("managerAddress", swarm.manager_address)
pulumi.export("nodeIds", swarm.node_ids)
pulumi.export("provisioned", {h.spec.name: h.provisioned for h in hosts})
pulumi.export("cratedb", {"service": cratedb.service.name, "endpoints": cratedb.endpoints, "schema": cratedb.schema.stdout})
pulumi.export("cratedbPasswords", pulumi.Output.secret(cratedb.passwords))
pulumi.export("ingestEndpoints", ingest.endpoints)
pulumi.export("ingestTokenSecret", ingest.token_secret)
if ingest.ca_certificate is not None:
    pulumi.export("ingestCaCertificate", ingest.ca_certificate)
pulumi.export("grafanaUrls", grafana.urls)
pulumi.export("grafanaAdminPassword", grafana.admin_password)
if agents is not None:
    pulumi.export("agents", agents.installed)
if lab is not None:
    pulumi.export("labSshPrivateKey", lab.private_key)  # secret: the post-deploy tests reach the lab hosts with it
