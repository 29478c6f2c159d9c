# -*- coding: utf-8 -*-
"""AWX's engine: playbooks/site.yml and playbooks/upgrade.yml run through ansible-runner with a private data dir laid
out as AWX writes it (an executable inventory script in inventory/hosts, env/extravars, env/envvars,
env/ssh_key), the MLflow credential type of extensions/awx rendered the way AWX renders injectors, in check mode
and for real, against a real MLflow server with basic auth on PostgreSQL.

The job events carry no warning, and no file of the artifacts directory holds any form of the secrets."""

import json
import os
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from harness.runner import REPO_ROOT, ansible_env
from harness.services import MlflowServer, api

pytestmark = [pytest.mark.integration]
PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
CREDENTIAL_TYPE = os.path.join(REPO_ROOT, "extensions", "awx", "mlflow_credential_type.yml")
MLFLOW_ROLE = os.path.join(REPO_ROOT, "roles", "mlflow")


def _load_credential_type():
    with open(CREDENTIAL_TYPE) as handle:
        return yaml.safe_load(handle)


def render_injectors(credential_type, inputs):
    """What AWX does with a credential: render each injector template with the credential's inputs (fields left
    blank render empty). Returns (env, extra_vars)."""
    fields = [field["id"] for field in credential_type["inputs"]["fields"]]
    unknown = set(inputs) - set(fields)
    assert not unknown, unknown
    namespace = dict((field, inputs.get(field, "")) for field in fields)
    sandbox = ImmutableSandboxedEnvironment()
    injectors = credential_type["injectors"]
    env = dict((key, sandbox.from_string(tmpl).render(**namespace)) for key, tmpl in injectors.get("env", {}).items())
    extra = dict((key, sandbox.from_string(tmpl).render(**namespace))
                 for key, tmpl in injectors.get("extra_vars", {}).items())
    return env, extra


def test_credential_type_injects_only_what_the_roles_consume():
    credential_type = _load_credential_type()
    assert set(credential_type) >= {"name", "kind", "inputs", "injectors"}
    ids = [field["id"] for field in credential_type["inputs"]["fields"]]
    assert len(ids) == len(set(ids))
    with open(os.path.join(MLFLOW_ROLE, "meta", "argument_specs.yml")) as handle:
        role_vars = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    with open(os.path.join(MLFLOW_ROLE, "defaults", "main.yml")) as handle:
        defaults = handle.read()
    inputs = dict((field, "value-of-" + field) for field in ids)
    env, extra = render_injectors(credential_type, inputs)
    # Every injected variable is one the mlflow role declares; every secret one is declared no_log.
    secret_fields = set(field["id"] for field in credential_type["inputs"]["fields"] if field.get("secret"))
    for name, value in extra.items():
        assert name in role_vars, name
        if value[len("value-of-"):] in secret_fields:
            assert role_vars[name].get("no_log"), name
    # Every environment variable is one the mlflow role's defaults read, and none carries a secret
    # (ansible-runner writes the job's environment into artifacts/<job>/command).
    for name, value in env.items():
        assert "lookup('ansible.builtin.env', '%s')" % name in defaults, name
        assert value[len("value-of-"):] not in secret_fields, name
    # Every input reaches the job.
    assert sorted(value[len("value-of-"):] for value in list(env.values()) + list(extra.values())) == sorted(ids)


@pytest.fixture(scope="module")
def awx_server(postgres, tmp_path_factory):
    """MLflow with basic auth on PostgreSQL, passwords with URI-special characters."""
    db_password = "db:/@#%%+ %s" % os.urandom(4).hex()
    user = "mlflow_awx"
    postgres.create_database("mlflow_awx", user=user, password=db_password)
    server = MlflowServer(backend_store_uri=postgres.uri("mlflow_awx", user, quote(db_password, safe="")),
                          basic_auth=True, artifacts_destination=str(tmp_path_factory.mktemp("awx-artifacts")))
    # No '%' here: MLflow reads the admin password from an ini file (configparser interpolation).
    server.admin_password = "tr:/@# +%s" % os.urandom(4).hex()
    server.start(timeout=300)
    server.db_password = db_password
    server.store_uri_without_password = "postgresql+psycopg2://%s@127.0.0.1:%d/mlflow_awx" % (user, postgres.port)
    experiment = api(server.url, "experiments/create", {"name": "awx"},
                     auth=(server.admin_username, server.admin_password))
    assert experiment.get("experiment_id")
    yield server
    server.stop()


def _secret_forms(secret):
    forms = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    return sorted(form for form in forms if form)


def _job(tmp_path, name, server, playbook, extravars, check):
    """One AWX job: a private data dir as AWX lays it out, run with ansible-runner's Python API."""
    import ansible_runner  # pylint: disable=import-outside-toplevel
    private = tmp_path / name
    (private / "inventory").mkdir(parents=True)
    (private / "env").mkdir()
    inventory = {"all": {"hosts": ["mlflow-awx-1"], "children": ["mlflow_servers"]},
                 "mlflow_servers": {"hosts": ["mlflow-awx-1"]},
                 "_meta": {"hostvars": {"mlflow-awx-1": {
                     "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "mlflow_tracking_uri": server.url}}}}
    script = private / "inventory" / "hosts"
    script.write_text("#!%s\nimport json\nprint(json.dumps(%r))\n" % (sys.executable, inventory))
    os.chmod(str(script), 0o700)
    credential_env, credential_extra = render_injectors(_load_credential_type(), {
        "tracking_username": server.admin_username, "tracking_password": server.admin_password,
        "backend_store_uri": server.store_uri_without_password, "db_password": server.db_password,
        "s3_access_key": "AKIAAWXTEST", "s3_secret_key": server.s3_secret})
    (private / "env" / "extravars").write_text(yaml.safe_dump(dict(extravars, **credential_extra)))
    base = ansible_env()
    envvars = dict((key, base[key]) for key in ("ANSIBLE_COLLECTIONS_PATH", "PATH"))
    envvars.update(credential_env)
    (private / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    (private / "env" / "ssh_key").write_text(server.ssh_key)
    runner = ansible_runner.run(private_data_dir=str(private), playbook=os.path.join(PLAYBOOKS, playbook),
                                cmdline="--check" if check else None, quiet=True, timeout=600)
    stdout = runner.stdout.read()
    assert runner.rc == 0 and runner.status == "successful", stdout[-4000:]
    events = list(runner.events)
    assert any(event.get("event") == "playbook_on_stats" for event in events)
    warnings = [event for event in events if event.get("event") == "warning" or "[WARNING]" in event.get("stdout", "")
                or "[DEPRECATION WARNING]" in event.get("stdout", "")]
    assert not warnings, [event.get("stdout") for event in warnings]
    assert "[WARNING]" not in stdout and "DEPRECATION" not in stdout, stdout
    # No form of any secret in any file the runner kept (events, stdout, command, status, fact cache).
    secrets = [server.admin_password, server.db_password, server.s3_secret]
    files = 0
    for root, _dirs, names in os.walk(str(private / "artifacts")):
        for file_name in names:
            files += 1
            with open(os.path.join(root, file_name), "rb") as handle:
                data = handle.read().decode("utf-8", "replace")
            for secret in secrets:
                for form in _secret_forms(secret):
                    assert form not in data, (os.path.join(root, file_name), form)
    assert files > 5
    # The scan sees where an injected environment lands: the non-secret store URI is in the command artifact.
    commands = [os.path.join(root, "command") for root, _dirs, names in os.walk(str(private / "artifacts"))
                if "command" in names]
    with open(commands[0]) as handle:
        assert server.store_uri_without_password in handle.read()
    return events, stdout


def _ok_results(events, action):
    return [event["event_data"]["res"] for event in events
            if event.get("event") in ("runner_on_ok", "runner_on_failed")
            and event["event_data"].get("task_action", "").endswith(action)]


@pytest.fixture(scope="module")
def awx_credentials(awx_server, tmp_path_factory):
    awx_server.s3_secret = "s3:/@#%%+ %s" % os.urandom(4).hex()
    key = str(tmp_path_factory.mktemp("awx-key") / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True, timeout=60)
    with open(key) as handle:
        awx_server.ssh_key = handle.read()
    return awx_server


def _site_vars(tmp_path):
    return {"mlflow_hosts": "mlflow_servers", "backup_dest": str(tmp_path / "backups"),
            # a wrong or missing tracking credential fails the job (the authenticated API probe); latency on a loaded
            # test machine must not
            "health_fail_on_unhealthy": True, "health_check_resources": False, "health_thresholds": {"latency_ms": 60000},
            "cleanup_gc": False}


def test_site_through_ansible_runner_check_then_real(awx_credentials, tmp_path):
    server = awx_credentials
    backups = tmp_path / "backups"
    events, _stdout = _job(tmp_path, "site-check", server, "site.yml", _site_vars(tmp_path), check=True)
    assert not backups.exists() or not os.listdir(str(backups)), "check mode writes no backup"
    health = _ok_results(events, "server_info")
    assert health and health[0]["server"]["api_ok"], health

    events, _stdout = _job(tmp_path, "site-run", server, "site.yml", _site_vars(tmp_path), check=False)
    # The credential reached the modules: the authenticated API probe passed and the database (password injected
    # apart from its URI) was backed up.
    assert _ok_results(events, "server_info")[0]["server"]["api_ok"]
    backup = _ok_results(events, "db_backup")
    assert backup and backup[0]["created"], backup
    made = [name for root, _dirs, names in os.walk(str(backups)) for name in names if name.endswith(".manifest.json")]
    assert len(made) == 1, made


def test_upgrade_through_ansible_runner_plan_in_check_mode_and_real_no_op(awx_credentials, tmp_path):
    import mlflow  # pylint: disable=import-outside-toplevel
    server = awx_credentials
    venv = os.path.dirname(os.path.dirname(sys.executable))
    common = {"mlflow_hosts": "mlflow_servers", "upgrade_venv": venv, "upgrade_python": sys.executable,
              "upgrade_backup_dir": str(tmp_path / "upgrade-backups"), "mlflow_service_manager": "command",
              # never run: a no-op upgrade does not stop or start the server
              "mlflow_service_stop_command": "false", "mlflow_service_start_command": "false"}
    # A real plan (a newer release) in check mode: planned, nothing done.
    events, stdout = _job(tmp_path, "upgrade-check", server, "upgrade.yml",
                          dict(common, upgrade_mlflow_version="99.0.0"), check=True)
    plan = [event["event_data"]["res"]["msg"] for event in events if event.get("event") == "runner_on_ok"
            and event["event_data"].get("task", "") == "Pre-flight | plan"]
    assert plan and "-> 99.0.0" in plan[0], stdout[-3000:]
    assert not (tmp_path / "upgrade-backups").exists()
    # For real, on the installed version with the schema at head: nothing to do, nothing touched.
    events, stdout = _job(tmp_path, "upgrade-run", server, "upgrade.yml",
                          dict(common, upgrade_mlflow_version=mlflow.__version__), check=False)
    plan = [event["event_data"]["res"]["msg"] for event in events if event.get("event") == "runner_on_ok"
            and event["event_data"].get("task", "") == "Pre-flight | plan"]
    assert plan and "nothing to do" in plan[0], stdout[-3000:]
    assert not [event for event in events if event.get("event") == "runner_on_ok" and event["event_data"]["res"].get("changed")]
    assert not (tmp_path / "upgrade-backups").exists()
    assert api(server.url, "experiments/search", {"max_results": 10},
               auth=(server.admin_username, server.admin_password))["experiments"]
