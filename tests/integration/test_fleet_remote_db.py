# -*- coding: utf-8 -*-
"""A fleet host whose backend store is a remote (managed-style) PostgreSQL database: with
``mlflow_store_delegate_to: localhost`` the store tasks run on the controller, the rest over SSH on the host.

The SSH host's Python is a wrapper that logs the name of every module it runs and has no PostgreSQL client
tools on its PATH: the log shows that only the tracking-server modules ran there; the job events show the store
tasks delegated to localhost, and the backups are on the controller under the host's name."""

import glob
import json
import os
import re
import sys

import pytest

from harness.fleet import Fleet
from harness.runner import REPO_ROOT, run_playbook
from harness.services import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = os.path.join(REPO_ROOT, "playbooks", "site.yml")
# Actions that open the backend store or its backups (delegated), and those that only talk to the server (not).
STORE_ACTIONS = ("db_backup", "backup_info", "gc")
HOST_ACTIONS = ("server_info", "runs_cleanup")
# The host's interpreter: logs which module it runs (the AnsiballZ payload names it), with a PATH without pg tools.
WRAPPER = """#!/bin/sh
payload=$(mktemp)
cat > "$payload"
name=$(grep -o 'mlflowops\\.maintenance\\.plugins\\.modules\\.[a-z_]*' "$payload" | head -n 1)
echo "${name:-unknown}" >> %(log)s
PATH=/nonexistent-bin %(python)s "$@" < "$payload"
status=$?
rm -f "$payload"
exit $status
"""


@pytest.fixture(scope="module")
def remote_db(postgres, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the fleet harness needs root")
    root = str(tmp_path_factory.mktemp("remote-db"))
    uri = postgres.create_database("fleet_remote_db")
    server = MlflowServer(backend_store_uri=uri, artifacts_destination=os.path.join(root, "artifacts"))
    fleet = Fleet(1, root=str(tmp_path_factory.mktemp("remote-db-fleet")), mlflow=False)
    try:
        server.start()
        fleet.start()
        backup_dest = os.path.join(root, "controller-backups")
        host = fleet.hosts[0]
        log = os.path.join(root, "host-modules.log")
        wrapper = os.path.join(root, "host-python")
        with open(wrapper, "w") as handle:
            handle.write(WRAPPER % dict(log=log, python=sys.executable))
        os.chmod(wrapper, 0o755)
        inventory = fleet.write_inventory(host_vars={host.name: dict(
            mlflow_tracking_uri=server.url, mlflow_backend_store_uri=uri, mlflow_store_delegate_to="localhost",
            ansible_python_interpreter=wrapper, cleanup_state_file="")},
            group_vars=dict(backup_dest=backup_dest, health_check_resources=False))
        yield dict(fleet=fleet, host=host, uri=uri, backup_dest=backup_dest, inventory=inventory, log=log)
    finally:
        fleet.stop()
        server.stop()


def _site(env):
    # Not pinned by the runner: the SSH host uses the wrapper, the delegated tasks the controller's own Python.
    run = run_playbook(SITE, inventory=env["inventory"], timeout=600, extra_vars={"ansible_python_interpreter": None})
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-3000:]
    return run


def _labels(run):
    """{task name: [host labels]} from the job output: "ok: [host01 -> localhost]" is a delegated result."""
    labels = {}
    for chunk in run.stdout.split("\nTASK [")[1:]:
        name = chunk.split("]", 1)[0]
        labels[name] = re.findall(r"^(?:ok|changed|skipping|failed|fatal): \[([^\]]+)\]", chunk, re.MULTILINE)
    return labels


def _delegated_to(run, record):
    """Where a task's result came from: None (the host itself) or the host it was delegated to."""
    label = _labels(run)[record["task"]]
    assert len(label) == 1, label
    return label[0].split(" -> ", 1)[1] if " -> " in label[0] else None


def test_store_tasks_run_on_the_controller_and_backups_land_in_the_hosts_namespace(remote_db):
    host, backup_dest = remote_db["host"], remote_db["backup_dest"]
    run = _site(remote_db)
    assert run.recap()[host.name]["failed"] == 0

    # Which tasks ran where, from the job events.
    by_action = {}
    for record in run.records:
        by_action.setdefault(record["action"].rsplit(".", 1)[-1], []).append(record)
    for action in STORE_ACTIONS:
        assert [r["status"] for r in by_action[action]] == ["ok"], by_action.get(action)
        assert _delegated_to(run, by_action[action][0]) == "localhost", by_action[action][0]
    for action in HOST_ACTIONS:
        assert [r["status"] for r in by_action[action]] == ["ok"], by_action.get(action)
        assert _delegated_to(run, by_action[action][0]) is None, by_action[action][0]

    # Only the tracking-server modules ran on the SSH host (its PATH has no pg_dump: a backup there would fail).
    with open(remote_db["log"]) as handle:
        ran = sorted(set(line.strip().rsplit(".", 1)[-1] for line in handle if line.strip()))
    assert ran == sorted(HOST_ACTIONS), ran

    # The backup is on the controller, under the host's name, private.
    assert os.listdir(backup_dest) == [host.name]
    manifests = glob.glob(os.path.join(backup_dest, host.name, "*.manifest.json"))
    assert len(manifests) == 1, os.listdir(os.path.join(backup_dest, host.name))
    data = manifests[0][:-len(".manifest.json")]
    assert os.path.exists(data)
    for path in (data, manifests[0]):
        assert os.stat(path).st_mode & 0o077 == 0, path
    with open(manifests[0]) as handle:
        manifest = handle.read()
    recorded = json.loads(manifest)
    assert (recorded["engine"], recorded["database"], recorded["format"]) == ("postgresql", "fleet_remote_db", "custom")
    assert recorded["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL)")  # found on the controller's PATH
    password = remote_db["uri"].split("@", 1)[0].rsplit(":", 1)[1]
    assert password not in manifest and password not in run.stdout

    # Unchanged database: the second run changes nothing, and still on the controller.
    again = _site(remote_db)
    assert again.recap()[host.name]["changed"] == 0, again.stdout[-3000:]
    assert len(glob.glob(os.path.join(backup_dest, host.name, "*.manifest.json"))) == 1
    backup = [r for r in again.records if r["action"].endswith("db_backup")][0]
    assert _delegated_to(again, backup) == "localhost" and backup["result"]["unchanged"] is True


def test_report_reads_the_store_and_the_backups_from_the_controller(remote_db):
    host = remote_db["host"]
    with open(remote_db["log"], "w"):
        pass  # only this run's modules from here on
    report_dir = os.path.join(os.path.dirname(remote_db["backup_dest"]), "reports")
    run = run_playbook(os.path.join(REPO_ROOT, "playbooks", "report.yml"), inventory=remote_db["inventory"],
                       timeout=600, extra_vars={"ansible_python_interpreter": None, "report_dest": report_dir})
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-3000:]
    for action in ("store_info", "backup_info"):
        record = [r for r in run.records if r["action"].endswith(action)][0]
        assert _delegated_to(run, record) == "localhost", record
    with open(remote_db["log"]) as handle:
        # The collection's modules that ran on the SSH host ("unknown": ansible.builtin ones, such as the stat of
        # the host's own cleanup record).
        ran = set(line.strip().rsplit(".", 1)[-1] for line in handle if line.strip()) - {"unknown"}
    assert ran == {"server_info"}, ran
    with open(os.path.join(report_dir, "report.json")) as handle:
        row = json.load(handle)["hosts"][0]
    manifest = glob.glob(os.path.join(remote_db["backup_dest"], host.name, "*.manifest.json"))[0]
    assert row["host"] == host.name and row["engine"] == "postgresql" and row["errors"] == [], row
    assert row["backup"]["name"] == os.path.basename(manifest)[:-len(".manifest.json")] and row["backup_ok"] is True
