"""The Docker Swarm over the stack's hosts, driven over SSH.

Per host, three commands whose create and delete steps fall in the right order on their own
(Pulumi deletes dependents first):

  forget-<host>  on the first manager: clears stale entries on create; on delete, after the host
                 has left, removes it from the node list
  join-<host>    on the host: joins with the token from stdin; on delete, leaves
  node-<host>    on the first manager: role, availability and labels; on delete, drain and demote

so removing a host from the config drains it, demotes it, makes it leave and forgets it, and
`pulumi destroy` does that for every host before the first manager dissolves the swarm. A node gets
its labels, and so its services' tasks, only once their images are on it (components/service_images.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.docker_access import docker_host, ssh_opts
from components.hosts import Host
from components.remote import Script, Step, remote_command
from components.swarm_configs import fixed_name
from stack.constants import CRATEDB_STOP_GRACE_SECONDS, OVERLAY_NETWORK, SWARM_PORT

INIT = Script("swarm-init.sh")
JOIN = Script("swarm-join.sh")
LEAVE = Script("swarm-leave.sh")
NODE = Script("swarm-node.sh")
RETIRE = Script("swarm-node-retire.sh")
FORGET = Script("swarm-forget.sh")

# Deadlines inside the scripts, in seconds: generous for Raspberry Pis on a busy network.
JOIN_DEADLINE = 120
NODE_DEADLINE = 120
# A drained CrateDB task may wait for GREEN until Swarm kills it at its stop grace period.
DRAIN_DEADLINE = CRATEDB_STOP_GRACE_SECONDS + 60
LEAVE_DEADLINE = 120


@dataclass(frozen=True, kw_only=True)
class SwarmArgs:
    hosts: Sequence[Host]
    ssh_private_key: pulumi.Input[str]  # for the Docker provider's ssh:// transport
    simulated: bool = False  # lab hosts: new host keys with every new container, so none is checked
    # host name -> what must finish on the host before it is labelled (its services' images)
    before_labels: Callable[[str], Sequence[pulumi.Resource]] = lambda host_name: ()


def last_json_line(stdout: str) -> dict:
    """Scripts print their status line first and their data as the last line."""
    return json.loads(stdout.strip().splitlines()[-1])


class Swarm(pulumi.ComponentResource):
    manager: Host  # the first manager: it initialises the swarm and runs the control commands
    manager_address: pulumi.Output[str]
    node_ids: pulumi.Output[dict]  # host name -> Swarm node id
    nodes_ready: list[command.remote.Command]  # labelled nodes, for services to wait on
    docker: docker.Provider  # the Docker API of the first manager, over SSH
    network: docker.Network  # the stack's overlay network

    def __init__(self, name: str, args: SwarmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:swarm:Swarm", name, None, opts)
        self.manager = next(h for h in args.hosts if h.spec.is_manager)
        manager = self.manager
        child = pulumi.ResourceOptions(parent=self)

        def on_manager(script: Script, env: dict) -> Step:
            return Step(script, env, manager.sudo)

        init = remote_command(
            f"{name}-init",
            connection=manager.connection,
            run=on_manager(INIT, {"HOST_NAME": manager.spec.name, "ADVERTISE_ADDR": manager.spec.private_address,
                                  "SWARM_PORT": str(SWARM_PORT)}),
            delete=on_manager(LEAVE, {"HOST_NAME": manager.spec.name}),
            logging=command.remote.Logging.NONE,  # stdout carries the join tokens
            opts=child.merge(pulumi.ResourceOptions(
                additional_secret_outputs=["stdout"], depends_on=[manager.provision], delete_before_replace=True,
            )),
        )
        init_data = init.stdout.apply(last_json_line)
        tokens = {role: pulumi.Output.secret(init_data[f"{role}_token"]) for role in ("manager", "worker")}
        node_ids: dict[str, pulumi.Output[str]] = {manager.spec.name: pulumi.Output.unsecret(init_data["node_id"])}
        cluster_id = pulumi.Output.unsecret(init_data["cluster_id"])

        for host in args.hosts:
            if host is manager:
                continue
            spec = host.spec
            forget_env = {"HOST_NAME": spec.name, "LEAVE_DEADLINE": str(LEAVE_DEADLINE)}
            forget = remote_command(
                f"{name}-forget-{spec.name}",
                connection=manager.connection,
                run=on_manager(FORGET, {**forget_env, "WAIT_FOR_DOWN": "0"}),
                delete=on_manager(FORGET, {**forget_env, "WAIT_FOR_DOWN": "1"}),
                opts=child.merge(pulumi.ResourceOptions(depends_on=[init])),
            )
            join = remote_command(
                f"{name}-join-{spec.name}",
                connection=host.connection,
                run=Step(JOIN, {
                    "HOST_NAME": spec.name, "ADVERTISE_ADDR": spec.private_address,
                    "MANAGER_ADDR": manager.spec.private_address, "SWARM_PORT": str(SWARM_PORT),
                    "CLUSTER_ID": cluster_id, "JOIN_DEADLINE": str(JOIN_DEADLINE),
                }, host.sudo),
                delete=Step(LEAVE, {"HOST_NAME": spec.name}, host.sudo),
                data=tokens[spec.role].apply(lambda token: token + "\n"),
                # A replacement (the join is recreated) leaves before it joins again.
                opts=child.merge(pulumi.ResourceOptions(
                    depends_on=[forget, host.provision], delete_before_replace=True,
                )),
            )
            node_ids[spec.name] = join.stdout.apply(lambda out: last_json_line(out)["node_id"])

        self.nodes_ready = []
        for host in args.hosts:
            spec = host.spec
            node_env = {"HOST_NAME": spec.name, "NODE_ID": node_ids[spec.name]}
            # The first manager is not retired: the swarm dissolves with it.
            retire = None if host is manager else on_manager(RETIRE, {**node_env, "DRAIN_DEADLINE": str(DRAIN_DEADLINE)})
            # Each node command depends on the one before: the engine runs independent deletes in
            # parallel, and two hosts removed in one `up` would drain two CrateDB nodes at once
            # (shards lost with one replica). Chained, they drain one after another, each waiting
            # for GREEN before its CrateDB task stops.
            self.nodes_ready.append(remote_command(
                f"{name}-node-{spec.name}",
                connection=manager.connection,
                run=on_manager(NODE, {
                    **node_env, "ROLE": spec.role, "NODE_DEADLINE": str(NODE_DEADLINE),
                    "LABELS": "\n".join(f"{k}={v}" for k, v in spec.node_labels().items()),
                }),
                delete=retire,
                opts=child.merge(pulumi.ResourceOptions(
                    depends_on=[*self.nodes_ready[-1:], *args.before_labels(spec.name)])),
            ))

        self.docker = docker.Provider(
            f"{name}-docker",
            host=docker_host(manager.spec),
            ssh_opts=ssh_opts(manager.spec, args.ssh_private_key, simulated=args.simulated),
            opts=child.merge(pulumi.ResourceOptions(depends_on=self.nodes_ready)),
        )
        # Attachable, so that tests and operators can run one-off containers beside the services.
        # Its name is fixed (operators and tests find it by name); the services on it are replaced
        # with it.
        self.network = docker.Network(
            f"{name}-network",
            name=OVERLAY_NETWORK,
            driver="overlay",
            attachable=True,
            opts=fixed_name(child.merge(pulumi.ResourceOptions(provider=self.docker))),
        )
        self.manager_address = pulumi.Output.from_input(manager.spec.address)
        self.node_ids = pulumi.Output.all(**node_ids)
        self.register_outputs({"manager_address": self.manager_address, "node_ids": self.node_ids})
