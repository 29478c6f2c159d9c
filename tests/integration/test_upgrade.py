# -*- coding: utf-8 -*-
"""The upgrade role against a real server: an MLflow 2.x store upgraded to the installed release.

One server, one store, in sequence (each step starts from where the previous one left off, which
is the point): the plan in check mode; a migration that fails on a conflicting table planted in the
database, which must roll back to the backed-up database, the old packages and a healthy old server;
a run logged while the new release is installed, then a start that fails after both the store and the
auth database were migrated, which must give both back, that run included; the real upgrade with the
data intact; and an idempotent rerun that changes nothing and takes no backup.
"""

import glob
import json
import os
import sqlite3
import sys
import time

import pytest

from harness import datagen
from harness.auth_db import init_auth, sqlite_users
from harness.old_mlflow import OLD_VERSION, copy_venv
from harness.runner import REPO_ROOT, run_playbook
from harness.services import api
from harness.standin import StandIn, server_version, sqlite_counts, sqlite_revision, sqlite_tables

NEW_VERSION = "3.17.2"
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "upgrade.yml")


@pytest.fixture(scope="module")
def old_server(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("upgrade"))
    python = copy_venv(OLD_VERSION, os.path.join(root, "venv"))
    db_path = os.path.join(root, "mlflow.db")
    service = StandIn(root, python, "sqlite:///%s" % db_path)
    service.start()
    try:
        assert server_version(service.url) == OLD_VERSION
        experiment = datagen.create_experiment(service.url, "upgrade-data")
        datagen.add_runs(service.url, service.backend_store_uri, experiment,
                         [datagen.RunSpec(metrics=5, steps=3, params=3, tags={"team": "a"}) for _i in range(300)])
        service.experiment = experiment
        yield service
    finally:
        service.stop()


def play(service, check=False, **extra):
    return run_playbook(PLAYBOOK, extra_vars=service.upgrade_vars(NEW_VERSION, **extra), check=check, timeout=1500)


@pytest.fixture(scope="module")
def baseline(old_server):
    db_path = old_server.backend_store_uri[len("sqlite:///"):]
    state = dict(db_path=db_path, counts=sqlite_counts(db_path), revision=sqlite_revision(db_path))
    assert state["counts"]["runs"] == 300 and state["counts"]["metrics"] == 300 * 5 * 3
    return state


# The tests below run in this order on one server and one store; each starts where the previous left off.


def test_1_check_mode_shows_the_plan_and_touches_nothing(old_server, baseline):
    planned = play(old_server, check=True)
    assert planned.rc == 0, planned.stdout[-3000:]
    plan = planned.role_task("Pre-flight | plan")["result"]["msg"]
    assert "%s -> %s" % (OLD_VERSION, NEW_VERSION) in plan and "migrate schema from %s" % baseline["revision"] in plan
    assert not os.path.exists(os.path.join(old_server.root, "backups"))
    assert server_version(old_server.url) == OLD_VERSION


def test_2_failed_migration_rolls_back_database_packages_and_server(old_server, baseline):
    db_path = baseline["db_path"]
    # A real failure of the real migration, caused from outside the role: a table that a later migration
    # creates is already in the database (as a manual change or an earlier half-finished attempt leaves it).
    # The role backs the database up as it is, the migration fails on that table halfway, and the rollback
    # must give back exactly the database it backed up, the old packages and a healthy old server.
    connection = sqlite3.connect(db_path)
    connection.execute("CREATE TABLE logged_models (planted INTEGER)")
    connection.execute("INSERT INTO logged_models VALUES (42)")
    connection.commit()
    connection.close()
    try:
        failed = play(old_server)
        assert failed.rc != 0, failed.stdout[-3000:]
        summary = failed.role_task("Rollback | fail with a summary")["result"]["msg"]
        assert "Migrate the schema" in summary and "logged_models" in summary, summary
        # Nothing was written between the first backup and the stop: the second one found the store unchanged.
        stopped = failed.role_task("Back up the stopped database (only what changed since the backup above)")
        assert stopped["result"]["unchanged"] is True and stopped["result"]["changed"] is False, stopped["result"]
        assert "restored from" in summary and "reinstalled" in summary
        assert "healthy on MLflow %s" % OLD_VERSION in summary, summary
        assert server_version(old_server.url) == OLD_VERSION
        assert sqlite_revision(db_path) == baseline["revision"]
        assert sqlite_counts(db_path) == baseline["counts"]
        # db_restore put the backup in place and kept the file it replaced.
        assert glob.glob(db_path + ".pre-restore-*")
        connection = sqlite3.connect(db_path)
        try:
            # The backed-up database, planted table included, not the half-migrated one.
            assert connection.execute("SELECT planted FROM logged_models").fetchall() == [(42,)]
        finally:
            connection.close()
        runs = api(old_server.url, "runs/search", {"experiment_ids": [old_server.experiment], "max_results": 1000})
        assert len(runs["runs"]) == 300
    finally:
        connection = sqlite3.connect(db_path)
        connection.execute("DROP TABLE IF EXISTS logged_models")
        connection.commit()
        connection.close()


STOP_AFTER_A_WRITE = """#!/bin/sh
if [ -e %(flag)s ]; then
  rm -f %(flag)s
  %(python)s -c 'import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/api/2.0/mlflow/runs/create", method="POST",
    data=json.dumps({"experiment_id": sys.argv[2], "run_name": "logged-during-the-install"}).encode(),
    headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(request, timeout=30))["run"]["info"]["run_id"])' %(url)s %(experiment)s \
    > %(run_id_file)s || exit 4
fi
exec %(stop)s
"""


def test_2b_failed_start_after_migrating_restores_the_auth_database_too(old_server, baseline):
    db_path = baseline["db_path"]
    # The basic-auth app's database of the old release (its revision in alembic_version), with one user. Both
    # databases are backed up and migrated; then the new server fails to start (once: a flag file the wrapper
    # removes), after the auth migration. The old release cannot read the new auth schema: the rollback must
    # give back the auth database it backed up, as well as the store.
    # And a client logs a run after the first backup, while the new release is being installed (in the stop
    # step, just before the stop): the rollback restores the backup taken after the stop, so the run is kept.
    experiment = datagen.create_experiment(old_server.url, "logged-during-the-install")
    written, run_id_file = os.path.join(old_server.root, "write-before-stop"), os.path.join(old_server.root, "run-id")
    stop_wrapper = os.path.join(old_server.root, "write-then-stop.sh")
    with open(stop_wrapper, "w") as handle:
        handle.write(STOP_AFTER_A_WRITE % dict(flag=written, python=sys.executable, url=old_server.url,
                                               experiment=experiment, run_id_file=run_id_file,
                                               stop=old_server.stop_command))
    os.chmod(stop_wrapper, 0o700)
    open(written, "w").close()
    auth_path = os.path.join(old_server.root, "basic_auth.db")
    init_auth(old_server.python, "sqlite:///%s" % auth_path, ["alice"])
    auth_before = dict(tables=sqlite_tables(auth_path), revision=sqlite_revision(auth_path))
    assert "alembic_version_auth" not in auth_before["tables"]
    flag = os.path.join(old_server.root, "fail-next-start")
    wrapper = os.path.join(old_server.root, "start-or-fail-once.sh")
    with open(wrapper, "w") as handle:
        handle.write("#!/bin/sh\nif [ -e %s ]; then rm -f %s; echo planted start failure >&2; exit 3; fi\nexec %s\n"
                     % (flag, flag, old_server.start_command))
    os.chmod(wrapper, 0o700)
    open(flag, "w").close()
    failed = play(old_server, mlflow_auth_database_uri="sqlite:///%s" % auth_path, mlflow_service_start_command=wrapper,
                  mlflow_service_stop_command=stop_wrapper)
    assert failed.rc != 0, failed.stdout[-3000:]
    assert not os.path.exists(flag), "the start never ran"
    assert not os.path.exists(written), "the stop never ran"
    with open(run_id_file) as handle:
        run_id = handle.read().strip()
    stopped = failed.role_task("Back up the stopped database (only what changed since the backup above)")["result"]
    assert stopped["created"] is True, stopped
    migration = failed.role_task("Migrate the schema with MLflow %s" % NEW_VERSION)["result"]
    assert migration["migrated"] == ["tracking", "auth"], migration
    summary = failed.role_task("Rollback | fail with a summary")["result"]["msg"]
    assert "(stage start)" in summary and "auth database restored from" in summary, summary
    assert "healthy on MLflow %s" % OLD_VERSION in summary, summary
    assert server_version(old_server.url) == OLD_VERSION
    assert sqlite_revision(db_path) == baseline["revision"]
    counts = sqlite_counts(db_path)
    assert counts["runs"] == baseline["counts"]["runs"] + 1 and counts["experiments"] == baseline["counts"]["experiments"] + 1
    logged = api(old_server.url, "runs/get?run_id=%s" % run_id)["run"]["info"]
    assert logged["run_name"] == "logged-during-the-install" and logged["lifecycle_stage"] == "active"
    baseline["counts"] = counts  # the next step starts from here
    assert sqlite_tables(auth_path) == auth_before["tables"] and sqlite_users(auth_path) == ["alice"]
    assert sqlite_revision(auth_path) == auth_before["revision"]
    backup = failed.role_task("Back up the stopped auth database (verified)")["result"]
    with open(backup["backup"]["manifest"]) as handle:
        manifest = json.load(handle)
    assert manifest["store_kind"] == "auth" and manifest["schema_revision"] == auth_before["revision"]


def test_3_upgrade_with_data_intact(old_server, baseline):
    db_path = baseline["db_path"]
    started = time.monotonic()
    upgraded = play(old_server)
    elapsed = time.monotonic() - started
    assert upgraded.rc == 0, upgraded.stdout[-4000:]
    assert server_version(old_server.url) == NEW_VERSION
    assert sqlite_counts(db_path) == baseline["counts"]
    migration = upgraded.role_task("Migrate the schema with MLflow %s" % NEW_VERSION)["result"]
    assert migration["changed"] is True and migration["at_head"] is True
    assert sqlite_revision(db_path) == migration["tracking"]["head_revision"] != baseline["revision"]
    runs = api(old_server.url, "runs/search", {"experiment_ids": [old_server.experiment], "max_results": 1000})
    assert len(runs["runs"]) == 300
    assert len(runs["runs"][0]["data"]["params"]) == 3
    summary = upgraded.role_task("Summary")["result"]["msg"]
    assert "Downtime" in summary
    assert not os.path.exists(os.path.join(old_server.root, "venv.pre-upgrade"))
    assert old_server.backup_manifests()
    print("upgrade run %.1fs: %s" % (elapsed, summary))


def test_4_rerun_changes_nothing_and_takes_no_backup(old_server):
    backups = old_server.backup_manifests()
    again = play(old_server)
    assert again.rc == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout
    assert "nothing to do" in again.role_task("Pre-flight | plan")["result"]["msg"]
    assert old_server.backup_manifests() == backups
    assert server_version(old_server.url) == NEW_VERSION
    with open(backups[-1]) as handle:
        assert json.load(handle)
