"""The Swarm component: init, joins, node roles and labels, and the order of leaving."""

import json

from components.remote import SCRIPTS_DIR
from tests.unit.conftest import command_data, hosts, is_secret, plain
from tests.unit.test_hosts import script_and_env


def script_name(inputs: dict, step: str = "create") -> str:
    script, _, _ = script_and_env(inputs, step)
    matches = [p.name for p in SCRIPTS_DIR.glob("*.sh") if p.read_text() == script]
    assert len(matches) == 1
    return matches[0]


def env_of(inputs: dict, step: str = "create") -> dict:
    return script_and_env(inputs, step)[1]


def commands(declared):
    return {n: d for n, d in declared.items() if d.typ == "command:remote:Command" and d.parent == "swarm"}


def test_resources_of_a_three_host_swarm(deploy):
    declared, outputs = deploy({"hosts": hosts(3)})
    assert declared["swarm"].typ == "mds:swarm:Swarm"
    assert sorted(commands(declared)) == sorted([
        "swarm-init", "swarm-forget-node2", "swarm-forget-node3", "swarm-join-node2", "swarm-join-node3",
        "swarm-node-node1", "swarm-node-node2", "swarm-node-node3",
    ])
    assert outputs["managerAddress"] == "192.0.2.11"
    assert outputs["nodeIds"] == {"node1": "node-init", "node2": "node-node2", "node3": "node-node3"}


def test_init_on_the_first_manager_keeps_tokens_secret(deploy):
    declared, _ = deploy({"hosts": hosts(3)})
    init = declared["swarm-init"]
    assert plain(init.inputs["connection"])["host"] == "192.0.2.11"
    assert script_name(init.inputs) == "swarm-init.sh"
    assert env_of(init.inputs) == {"HOST_NAME": "node1", "ADVERTISE_ADDR": "192.0.2.11", "SWARM_PORT": "2377"}
    assert script_name(init.inputs, "delete") == "swarm-leave.sh"
    assert "stdout" in init.secret_outputs and init.inputs["logging"] == "none"
    assert init.depends_on == ("host-node1-provision",)
    assert init.delete_before_replace


def test_join_reads_the_role_token_from_stdin_never_the_command(deploy):
    declared, _ = deploy({"hosts": hosts(4)})  # node1-3 managers, node4 worker
    for name, token in (("node2", "SWMTKN-manager"), ("node4", "SWMTKN-worker")):
        join = declared[f"swarm-join-{name}"]
        assert plain(join.inputs["connection"])["host"] == f"192.0.2.{10 + int(name[-1])}"
        assert is_secret(join.inputs["stdin"]) and command_data(join.inputs) == token + "\n"
        assert "SWMTKN" not in join.inputs["create"] and "SWMTKN" not in join.inputs["delete"]
        assert script_name(join.inputs) == "swarm-join.sh"
        assert env_of(join.inputs)["MANAGER_ADDR"] == "192.0.2.11"
        assert env_of(join.inputs)["CLUSTER_ID"] == "cluster-1"  # a member of another swarm is refused
        assert env_of(join.inputs)["ADVERTISE_ADDR"] == f"192.0.2.{10 + int(name[-1])}"
        assert script_name(join.inputs, "delete") == "swarm-leave.sh"
        assert join.inputs["update"] == join.inputs["create"]
        assert join.delete_before_replace


def test_private_address_is_what_swarm_advertises(deploy):
    declared, _ = deploy({"hosts": [
        {"name": f"n{i}", "address": f"n{i}.example", "privateAddress": f"10.9.0.{i}"} for i in range(1, 4)
    ]})
    assert env_of(declared["swarm-init"].inputs)["ADVERTISE_ADDR"] == "10.9.0.1"
    assert env_of(declared["swarm-join-n2"].inputs)["MANAGER_ADDR"] == "10.9.0.1"
    assert plain(declared["swarm-join-n2"].inputs["connection"])["host"] == "n2.example"


def test_leave_order_follows_from_dependencies(deploy):
    """Pulumi deletes dependents first: node (drain, demote) -> join (leave) -> forget (node rm) -> init."""
    declared, _ = deploy({"hosts": hosts(3)})
    for name in ("node2", "node3"):
        assert f"swarm-join-{name}" in declared[f"swarm-node-{name}"].depends_on
        assert f"swarm-forget-{name}" in declared[f"swarm-join-{name}"].depends_on
        assert f"host-{name}-provision" in declared[f"swarm-join-{name}"].depends_on
        assert "swarm-init" in declared[f"swarm-forget-{name}"].depends_on
        node = declared[f"swarm-node-{name}"]
        assert script_name(node.inputs, "delete") == "swarm-node-retire.sh"
        forget = declared[f"swarm-forget-{name}"]
        assert env_of(forget.inputs)["WAIT_FOR_DOWN"] == "0"
        assert env_of(forget.inputs, "delete")["WAIT_FOR_DOWN"] == "1"
        assert plain(forget.inputs["connection"])["host"] == "192.0.2.11"
    # The first manager is never drained or demoted: the swarm dissolves with it.
    assert "delete" not in declared["swarm-node-node1"].inputs


def test_node_roles_and_labels_come_from_config(deploy):
    declared, _ = deploy({"hosts": [
        {"name": "a", "address": "10.0.0.1", "role": "manager", "labels": {"site.hall": "north"}},
        {"name": "b", "address": "10.0.0.2", "role": "worker", "services": ["ingest"]},
    ]})
    a = env_of(declared["swarm-node-a"].inputs)
    b = env_of(declared["swarm-node-b"].inputs)
    assert (a["NODE_ID"], a["ROLE"]) == ("node-init", "manager")
    assert a["LABELS"].splitlines() == ["mds.cratedb=true", "mds.grafana=true", "mds.ingest=true", "site.hall=north"]
    assert (b["NODE_ID"], b["ROLE"], b["LABELS"]) == ("node-b", "worker", "mds.ingest=true")
    assert plain(declared["swarm-node-b"].inputs["connection"])["host"] == "10.0.0.1"  # run on the manager
    assert env_of(declared["swarm-node-b"].inputs, "delete") == {"HOST_NAME": "b", "NODE_ID": "node-b", "DRAIN_DEADLINE": "660"}


def test_an_edited_script_updates_its_commands_in_place_and_never_replaces_them(deploy):
    """pulumi-command 1.2.1 replaces a command whose `triggers` changed (replaceOnChanges in
    provider/pkg/provider/common/inputs.go): the old one's delete would drain, demote and remove
    every host. A changed `create`/`update` text or stdin is an update, and the script is on stdin."""
    declared, _ = deploy({"hosts": hosts(3)})
    for name, resource in commands(declared).items():
        assert "triggers" not in resource.inputs, name
        assert resource.inputs["update"] == resource.inputs["create"], name
        script, _, _ = script_and_env(resource.inputs)
        assert script == (SCRIPTS_DIR / script_name(resource.inputs)).read_text(), name


def test_no_command_sends_its_previous_output_to_the_host(deploy):
    """addPreviousOutputInEnv is on by default: swarm init's previous stdout (the join tokens)
    would travel as PULUMI_COMMAND_STDOUT with every update and delete."""
    declared, _ = deploy({"hosts": hosts(3), "agents": [{"name": "pi-1", "address": "192.0.2.99"}]})
    remote = {n: r for n, r in declared.items() if r.typ == "command:remote:Command"}
    assert remote and all(r.inputs["addPreviousOutputInEnv"] is False for r in remote.values()), sorted(remote)


def test_single_host_stack_has_no_joins(deploy):
    declared, outputs = deploy({"hosts": hosts(1)})
    assert sorted(commands(declared)) == ["swarm-init", "swarm-node-node1"]
    assert outputs["nodeIds"] == {"node1": "node-init"}


def ssh_options(declared) -> dict[str, str]:
    opts = plain(declared["swarm-docker"].inputs["sshOpts"])
    opts = json.loads(opts) if isinstance(opts, str) else opts  # provider config travels as JSON text
    assert opts[0] == "-i"
    return {"key": opts[1], **dict(o.split("=", 1) for o in opts[3::2])}


def test_the_docker_provider_reaches_the_manager_with_the_stack_key_and_a_checked_host_key(deploy, state_dir):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxManager"
    declared, _ = deploy({"hosts": [{**h, "hostKey": key} if h["name"] == "node1" else h for h in hosts(3)]})
    assert plain(declared["swarm-docker"].inputs["host"]) == "ssh://root@192.0.2.11:22"
    options = ssh_options(declared)
    assert options["StrictHostKeyChecking"] == "yes" and options["BatchMode"] == "yes"
    assert (state_dir / "known_hosts").read_text() == f"192.0.2.11 {key}\n"
    assert options["UserKnownHostsFile"] == str(state_dir / "known_hosts")
    key_file = state_dir / "ssh_key"
    assert options["key"] == str(key_file) and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert "unit-test-key" in key_file.read_text()


def test_without_a_host_key_the_first_one_seen_is_kept(deploy):
    declared, _ = deploy({"hosts": hosts(3)})
    assert ssh_options(declared)["StrictHostKeyChecking"] == "accept-new"


def test_only_simulated_lab_hosts_go_unchecked(deploy_without_key):
    """Lab hosts get new host keys with every new container: a kept key would fail the next up."""
    from tests.unit.test_lab_stack import lab_config
    declared, _ = deploy_without_key(lab_config())
    options = ssh_options(declared)
    assert (options["StrictHostKeyChecking"], options["UserKnownHostsFile"]) == ("no", "/dev/null")


def test_a_host_is_labelled_for_its_services_only_once_their_images_are_on_it(deploy):
    """Global tasks start on a node as soon as it carries their label; without the image they are
    rejected "No such image" (a host added by `up` joined before its images were shipped, on the
    real engine). So each host's label step waits for what puts its own services' images there."""
    declared, _ = deploy({
        "hosts": hosts(2) + [{"name": "pi", "address": "192.0.2.50", "services": ["ingest"]}],
        "cratedb": {"image": "crate", "version": "6.4.3", "imageSource": "local"},
        "grafana": {"image": "grafana/grafana", "version": "13.0.1", "imageSource": "local"},
        "ingest": {"build": "local"},
    })
    for name in ("node1", "node2"):
        needs = set(declared[f"swarm-node-{name}"].depends_on)
        assert {f"cratedb-ship-{name}", f"grafana-ship-{name}", f"ingest-ship-{name}"} <= needs
        assert not any(n.endswith("-pi") for n in needs if "-ship-" in n)
    needs = set(declared["swarm-node-pi"].depends_on)
    assert "ingest-ship-pi" in needs and "cratedb-ship-pi" not in declared
    # The labels come after the images, the services after the labels (through the Docker provider).
    assert set(declared["swarm-docker"].depends_on) >= {"swarm-node-node1", "swarm-node-node2", "swarm-node-pi"}


def test_images_built_on_the_hosts_come_before_their_labels_too(deploy):
    declared, _ = deploy({"hosts": hosts(2)})
    for name in ("node1", "node2"):
        assert f"ingest-image-{name}" in declared[f"swarm-node-{name}"].depends_on
        assert f"ingest-image-{name}" in declared["ingest-service"].depends_on
