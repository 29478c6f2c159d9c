# -*- coding: utf-8 -*-
"""Secrets in URI-bearing options never show, in any form, and one module_defaults block fits every module.

One playbook per behaviour family (ansible-playbook start-up costs seconds): every task of a play runs at
-vvv, and the test searches its output, the registered results and every file the modules wrote for each
form of the password (as written, decoded, quote, quote_plus).
"""

import json
import os
import secrets
import subprocess
import sys
import tempfile

import pytest

from ansible.module_utils.six.moves.urllib.parse import quote, quote_plus

from harness.backup_tools import run_tasks
from harness.datagen import create_experiment
from harness.runner import run_playbook
from harness.services import api, closed_port_url

DB_SECRET = "MlPw#Sec%ret/1"
HTTP_SECRET = "TrPw#Sec%ret/2 x"
ROLE = "mlflowops_secret_user"


def forms(secret):
    return set([secret, quote(secret, safe=""), quote(secret), quote_plus(secret)])


def leaks_in_text(text, secret):
    return sorted(form for form in forms(secret) if form in text)


def leaks_in_tree(root, secret):
    """(path, form) of every file under ``root`` that holds a form of ``secret``."""
    found = []
    needles = [form.encode() for form in forms(secret)]
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            found.extend((path, needle.decode()) for needle in needles if needle in data)
    return found


def assert_never_shown(secret, results, run, *roots):
    assert leaks_in_text(run.stdout, secret) == [], run.stdout
    assert leaks_in_text(run.stderr, secret) == [], run.stderr
    assert leaks_in_text(json.dumps(results), secret) == []
    for root in roots:
        assert leaks_in_tree(root, secret) == []


@pytest.fixture(scope="module")
def secret_store(postgres):
    """An MLflow database owned by a role whose password needs percent-encoding; an empty auth database."""
    exists = postgres.psql("SELECT 1 FROM pg_roles WHERE rolname = '%s'" % ROLE)
    verb = "ALTER" if exists else "CREATE"
    postgres.psql("%s ROLE %s LOGIN CREATEDB PASSWORD '%s'" % (verb, ROLE, DB_SECRET))
    suffix = secrets.token_hex(3)
    database, auth_database = "secrets_store_%s" % suffix, "secrets_auth_%s" % suffix
    for name in (database, auth_database):
        postgres.psql('CREATE DATABASE "%s" OWNER %s' % (name, ROLE))
    encoded = quote(DB_SECRET, safe="")
    uri = "postgresql+psycopg2://%s:%s@127.0.0.1:%d/%s" % (ROLE, encoded, postgres.port, database)
    # The test's own setup (mlflow's migrations) has the URI in its argv; the modules never do.
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "mlflow"), "db", "upgrade", uri],
                   check=True, capture_output=True, timeout=600)
    return dict(
        database=database,
        uri=uri,
        query_uri="postgresql://%s@127.0.0.1:%d/%s?password=%s&application_name=secrets"
                  % (ROLE, postgres.port, database, encoded),
        auth_uri="postgresql://%s:%s@127.0.0.1:%d/%s" % (ROLE, encoded, postgres.port, auth_database),
        bad_port_uri="postgresql://%s:%s@127.0.0.1:99999/%s" % (ROLE, encoded, database),
    )


def test_database_passwords_never_shown_in_any_form(secret_store, postgres, tmp_path):
    uri, query_uri = secret_store["uri"], secret_store["query_uri"]
    dest, query_dest = str(tmp_path / "backups"), str(tmp_path / "query-backups")
    restored = "secrets_restored_%s" % secrets.token_hex(3)
    check = {"check_mode": True}
    results, run = run_tasks([
        # percent-encoded password in the userinfo: every store module works
        ("backup", "db_backup", {"backend_store_uri": uri, "dest": dest}),
        ("restore", "db_restore", {"backend_store_uri": uri, "src": dest, "target_database": restored}),
        ("optimize", "db_optimize", {"backend_store_uri": uri}),
        ("schema", "db_schema", {"backend_store_uri": uri}),
        ("schema_auth", "db_schema", {"backend_store_uri": uri, "auth_database_uri": secret_store["auth_uri"]}),
        ("gc", "gc", {"backend_store_uri": uri, "older_than": "30d"}, check),
        # the ?password= form works too
        ("backup_query", "db_backup", {"backend_store_uri": query_uri, "dest": query_dest}),
        ("optimize_query", "db_optimize", {"backend_store_uri": query_uri}),
        ("gc_query", "gc", {"backend_store_uri": query_uri, "older_than": "30d"}, check),
        # the URI comes from MLFLOW_BACKEND_STORE_URI (set for the whole play below)
        ("optimize_env", "db_optimize", {}),
        # failures before (or while) the URI is parsed
        ("jobs_0", "db_backup", {"backend_store_uri": uri, "dest": dest, "jobs": 0}),
        ("jobs_abc", "db_restore", {"backend_store_uri": uri, "src": dest, "jobs": "many"}),
        ("grace_abc", "db_backup", {"backend_store_uri": uri, "dest": dest, "incomplete_grace": "abc"}),
        ("older_than_abc", "gc", {"backend_store_uri": uri, "older_than": "abc"}),
        ("port_99999", "db_backup", {"backend_store_uri": secret_store["bad_port_uri"], "dest": dest}),
        ("unknown_option", "db_optimize", {"backend_store_uri": uri, "no_such_option": 1}),
        ("unknown_option_env", "db_schema", {"no_such_option": 1}),
        ("unknown_option_query", "gc", {"backend_store_uri": query_uri, "no_such_option": 1}),
        ("auth_uri_bad_port", "db_schema", {"backend_store_uri": uri,
                                            "auth_database_uri": secret_store["bad_port_uri"]}),
    ], env={"MLFLOW_BACKEND_STORE_URI": query_uri}, verbosity=3)

    for name in ("backup", "restore", "optimize", "schema", "gc", "backup_query", "optimize_query", "gc_query",
                 "optimize_env"):
        assert results[name]["_status"] == "ok", (name, results[name])
    for name in ("jobs_0", "jobs_abc", "grace_abc", "older_than_abc", "port_99999", "unknown_option",
                 "unknown_option_env", "unknown_option_query", "auth_uri_bad_port"):
        assert results[name]["_status"] == "failed", (name, results[name])
        assert "duration_s" in results[name], (name, results[name])
    assert "Unsupported parameters" in results["unknown_option_env"]["msg"]
    # real outcomes: the restore created the database, both backups are on disk, the query password was used
    assert postgres.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % restored) == "1"
    assert os.listdir(dest) and os.listdir(query_dest)
    assert results["optimize_query"]["store"]["user"] == ROLE
    # the redacted store location is still shown
    assert ":***@" in json.dumps(results["backup"]) or "***" in json.dumps(results["backup"])
    assert_never_shown(DB_SECRET, results, run, str(tmp_path))


@pytest.fixture(scope="module")
def tracking_user(mlflow_basic_auth):
    """A basic-auth user of the tracking server whose password needs percent-encoding."""
    username = "secret-user-%s" % secrets.token_hex(3)
    api(mlflow_basic_auth.url, "users/create", {"username": username, "password": HTTP_SECRET},
        auth=(mlflow_basic_auth.admin_username, mlflow_basic_auth.admin_password))
    return username


def test_tracking_uri_credentials_are_used_and_never_shown(mlflow_basic_auth, tracking_user, tmp_path):
    with_user = mlflow_basic_auth.url.replace("http://", "http://%s:%s@" % (tracking_user, quote(HTTP_SECRET, safe="")))
    closed = closed_port_url().replace("http://", "http://%s:%s@" % (tracking_user, quote(HTTP_SECRET, safe="")))
    results, run = run_tasks([
        ("info", "server_info", {"tracking_uri": with_user, "check_resources": False}),
        ("unreachable", "runs_cleanup", {"tracking_uri": closed, "retries": 0, "timeout": 2}),
        ("bad_option", "runs_cleanup", {"tracking_uri": with_user, "older_than": "abc"}),
        ("unknown_option", "server_info", {"tracking_uri": with_user, "no_such_option": 1}),
    ], verbosity=3)
    info = results["info"]
    assert info["_status"] == "ok", info
    # the credentials from the URI authenticated the API probe (anonymous requests get HTTP 401)
    assert info["healthy"] is True, info["checks"]
    for name in ("unreachable", "bad_option", "unknown_option"):
        assert results[name]["_status"] == "failed", (name, results[name])
    assert "127.0.0.1" in results["unreachable"]["msg"]
    assert_never_shown(HTTP_SECRET, results, run, str(tmp_path))


def test_one_module_defaults_block_configures_every_module(mlflow_basic_auth, moto_s3, tmp_path):
    server = mlflow_basic_auth
    admin = (server.admin_username, server.admin_password)
    experiment = "defaults-%s" % secrets.token_hex(4)
    experiment_id = create_experiment(server.url, experiment, auth=admin)
    os.makedirs(server.artifacts_destination, exist_ok=True)  # the server creates it with the first artifact
    src, backups = tmp_path / "src", tmp_path / "backups"
    src.mkdir()
    (src / "file.txt").write_text("artifact")
    check = {"check_mode": True}
    tasks = [
        ("server_info", {"check_resources": False}, {}),
        ("runs_cleanup", {"experiments": [experiment], "older_than": "30d"}, {}),
        ("artifacts_audit", {"experiment_ids": [experiment_id]}, {}),
        ("artifacts_backup", {"src": str(src), "dest": str(tmp_path / "copy")}, {}),
        ("db_backup", {"dest": str(backups)}, {}),
        ("backup_info", {"path": str(backups)}, {}),
        ("db_restore", {"src": str(backups), "force": True}, check),
        ("db_optimize", {}, check),
        ("db_schema", {}, {}),
        ("gc", {"older_than": "3650d"}, check),
    ]
    play = [{
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/mlflowops.maintenance.mlflow": {
            "tracking_uri": server.url,
            "username": server.admin_username,
            "password": server.admin_password,
            "backend_store_uri": server.backend_store_uri,
            "artifacts_destination": server.artifacts_destination,
            "endpoint_url": moto_s3.endpoint_url,
            "deadline": 600,
        }},
        "tasks": [dict({"name": module, "mlflowops.maintenance." + module: args, "ignore_errors": True}, **extra)
                  for module, args, extra in tasks],
    }]
    with tempfile.NamedTemporaryFile("w", prefix="mlflowops-play-", suffix=".json", delete=False) as handle:
        json.dump(play, handle)
    try:
        run = run_playbook(handle.name)
    finally:
        os.unlink(handle.name)
    assert len(tasks) == 10
    for module, _args, _extra in tasks:
        record = run.task(module)
        result = record["result"]
        assert "Unsupported parameters" not in str(result.get("msg")), (module, result)
        assert record["status"] == "ok", (module, result)
        assert isinstance(result.get("duration_s"), float), (module, result)
    # the defaults reached the modules: the tracking ones authenticated, the store ones found the store
    assert run.task("server_info")["result"]["healthy"] is True
    assert run.task("backup_info")["result"]["counts"]["complete"] == 1
    assert leaks_in_text(run.stdout + run.stderr, server.admin_password) == []
