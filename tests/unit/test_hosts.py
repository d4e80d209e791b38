"""The Host component: one provisioning command per host, over SSH, from the script file."""

import shlex
import subprocess

from components.remote import SCRIPTS_DIR
from tests.unit.conftest import SSH_KEY, hosts, is_secret, plain


def provision_of(declared, name):
    return declared[f"host-{name}-provision"]


def script_and_env(inputs: dict, step: str = "create") -> tuple[str, dict[str, str], bool]:
    """Split a component's command back into (script text, env, sudo): the env from the command
    line, the script from the stdin that the command's loader reads it from."""
    words = shlex.split(plain(inputs[step]))
    sudo = words[:2] == ["sudo", "-n"]
    words = words[2:] if sudo else words
    assert words[0] == "env"
    env = {}
    i = 1
    while "=" in words[i] and words[i] != "bash":
        k, v = words[i].split("=", 1)
        env[k] = v
        i += 1
    assert words[i:i + 2] == ["bash", "-c"] and words[i + 3] == ("delete" if step == "delete" else "run")
    lines = plain(inputs["stdin"]).split("\n")
    run_count = int(lines[0])
    delete_count = int(lines[1 + run_count])
    if step == "delete":
        script = lines[2 + run_count:2 + run_count + delete_count]
    else:
        script = lines[1:1 + run_count]
    assert words[i + 4] in "\n".join(script) or words[i + 4].endswith(".sh")
    return "\n".join(script) + "\n", env, sudo


def test_one_host_component_per_host_with_its_provision_command(deploy):
    declared, _ = deploy({"hosts": hosts(3)})
    for name in ("node1", "node2", "node3"):
        component = declared[f"host-{name}"]
        assert component.typ == "mds:hosts:Host"
        provision = provision_of(declared, name)
        assert provision.typ == "command:remote:Command"
        assert provision.parent == f"host-{name}"
    assert sum(d.typ == "mds:hosts:Host" for d in declared.values()) == 3


def test_provision_runs_the_script_file_with_the_host_environment(deploy):
    declared, _ = deploy({"hosts": hosts(1, services=["cratedb", "ingest", "grafana"]), "dataRoot": "/data/mds"})
    provision = provision_of(declared, "node1")
    script, env, sudo = script_and_env(provision.inputs)
    assert script == (SCRIPTS_DIR / "provision-host.sh").read_text()
    assert env == {"HOST_NAME": "node1", "DATA_ROOT": "/data/mds",
                   "DATA_DIRS": "cratedb=1000:1000 grafana=472:472", "VM_MAX_MAP_COUNT": "262144", "SSH_USER": "root"}
    assert not sudo
    # Re-run in place when the script changes, never replace (and so never delete) a host.
    assert provision.inputs["update"] == provision.inputs["create"]
    assert "delete" not in provision.inputs
    # No trigger: pulumi-command replaces on a changed trigger; the script text in `create` updates.
    assert "triggers" not in provision.inputs and provision.inputs["addPreviousOutputInEnv"] is False


def test_fs_backups_get_their_directory_on_every_cratedb_host(deploy):
    declared, _ = deploy({"hosts": [
        {"name": "db", "address": "10.0.0.1", "services": ["cratedb", "ingest", "grafana"], "role": "manager"},
        {"name": "db2", "address": "10.0.0.3", "services": ["cratedb"], "role": "worker"},
        {"name": "gw", "address": "10.0.0.2", "services": ["ingest"], "role": "worker"},
    ], "cratedb": {"backup": {"type": "fs", "location": "/mnt/backups"}}})
    env = {n: script_and_env(provision_of(declared, n).inputs)[1] for n in ("db", "db2", "gw")}
    assert (env["db"]["BACKUP_DIR"], env["db"]["BACKUP_OWNER"]) == ("/mnt/backups", "1000:1000")
    assert env["db2"]["BACKUP_DIR"] == "/mnt/backups" and "BACKUP_DIR" not in env["gw"]


def test_data_dirs_only_for_the_services_a_host_carries(deploy):
    declared, _ = deploy({"hosts": [
        {"name": "db", "address": "10.0.0.1", "services": ["cratedb", "ingest"], "role": "manager"},
        {"name": "ui", "address": "10.0.0.2", "services": ["grafana"], "role": "worker"},
        {"name": "gw", "address": "10.0.0.3", "services": ["ingest"], "role": "worker"},
    ]})
    dirs = {n: script_and_env(provision_of(declared, n).inputs)[1]["DATA_DIRS"] for n in ("db", "ui", "gw")}
    assert dirs == {"db": "cratedb=1000:1000", "ui": "grafana=472:472", "gw": ""}


def test_ssh_connection_is_secret_and_uses_the_host_fields(deploy):
    declared, _ = deploy({"hosts": [{"name": "pi", "address": "pi.example", "privateAddress": "10.0.0.9",
                                     "sshUser": "admin", "sshPort": 2222,
                                     "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx"}]})
    provision = provision_of(declared, "pi")
    assert is_secret(provision.inputs["connection"])  # it carries the private key
    connection = plain(provision.inputs["connection"])
    assert connection["host"] == "pi.example" and connection["port"] == 2222 and connection["user"] == "admin"
    assert connection["privateKey"] == SSH_KEY
    assert connection["hostKey"] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx"
    # A non-root SSH user runs the script through sudo, which must not prompt.
    assert script_and_env(provision.inputs)[2] is True
    assert SSH_KEY not in provision.inputs["create"]


def test_without_host_key_none_is_pinned(deploy):
    declared, _ = deploy({"hosts": hosts(1)})
    assert "hostKey" not in plain(provision_of(declared, "node1").inputs["connection"])


def test_every_script_is_valid_bash():
    for script in sorted(SCRIPTS_DIR.glob("*.sh")):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        text = script.read_text()
        assert "set -euo pipefail" in text, script.name
        assert text.rstrip().endswith('main "$@"'), f"{script.name} must parse whole before it runs"


def test_the_command_runs_the_script_in_a_real_shell(tmp_path):
    """The quoting survives a real shell: a script with quotes and $ gets exactly its environment,
    its name as $0, the data after the scripts on stdin, and the delete step its own script."""
    from components.remote import Script, Step, stdin_of

    def script(name: str, text: str) -> Script:
        made = Script(name)
        object.__setattr__(made, "text", text)
        return made

    run = script("echo-env.sh", """#!/usr/bin/env bash\nset -euo pipefail\nmain() { printf '%s|%s|%s|%s' "$A" "$B" "$0" "$(cat)"; }\nmain "$@"\n""")
    delete = script("bye.sh", "#!/usr/bin/env bash\nprintf 'bye %s' \"$A\"\n")
    stdin = stdin_of(run, delete, "data: it's $HOME\nline 2\n")
    env = {"A": "it's $HOME", "B": "two\nlines"}
    result = subprocess.run(["sh", "-c", Step(run).command_line(env)], input=stdin, capture_output=True, text=True, check=True)
    assert result.stdout == "it's $HOME|two\nlines|echo-env.sh|data: it's $HOME\nline 2"
    result = subprocess.run(["sh", "-c", Step(delete).command_line(env, "delete")], input=stdin, capture_output=True,
                            text=True, check=True)
    assert result.stdout == "bye it's $HOME"
    assert len(Step(run).command_line(env)) < 400  # what the provider prints with a failure stays short
