# -*- coding: utf-8 -*-
"""The upgrade role against a real server: an MLflow 2.x store upgraded to the installed release.

One server, one store, in sequence (each step starts from where the previous one left off, which
is the point): the plan in check mode; a migration that fails on a conflicting table planted in the
database, which must roll back to the backed-up database, the old packages and a healthy old server;
the real upgrade with the data intact; and an idempotent rerun that changes nothing and takes no backup.
"""

import glob
import json
import os
import sqlite3
import time

import pytest

from harness import datagen
from harness.old_mlflow import OLD_VERSION, copy_venv
from harness.runner import REPO_ROOT, run_playbook
from harness.services import api, http_get
from harness.standin import StandIn

NEW_VERSION = "3.17.2"
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "upgrade.yml")


def counts(db_path):
    connection = sqlite3.connect(db_path)
    try:
        return dict((table, connection.execute("SELECT count(*) FROM %s" % table).fetchone()[0])
                    for table in ("runs", "metrics", "latest_metrics", "params", "tags", "experiments"))
    finally:
        connection.close()


def revision(db_path):
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        connection.close()


def task(run, name):
    """The last result of the role's task ``name`` (records carry the role prefix)."""
    for record in reversed(run.records):
        if record["task"] == name or record["task"].endswith(" : " + name):
            return record
    raise KeyError("no task %r in:\n%s" % (name, run.stdout[-4000:]))


def server_version(url):
    return http_get(url + "/version", timeout=5)[1].strip()


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
    extra_vars = dict(
        upgrade_mlflow_version=NEW_VERSION,
        upgrade_venv=os.path.dirname(os.path.dirname(service.python)),
        upgrade_backup_dir=os.path.join(service.root, "backups"),
        upgrade_health_delay=1,
        upgrade_health_retries=240,
        mlflow_tracking_uri=service.url,
        mlflow_backend_store_uri=service.backend_store_uri,
        mlflow_service_manager="command",
        mlflow_service_stop_command=service.stop_command,
        mlflow_service_start_command=service.start_command,
    )
    extra_vars.update(extra)
    return run_playbook(PLAYBOOK, extra_vars=extra_vars, check=check, timeout=1500)


@pytest.fixture(scope="module")
def baseline(old_server):
    db_path = old_server.backend_store_uri[len("sqlite:///"):]
    state = dict(db_path=db_path, counts=counts(db_path), revision=revision(db_path))
    assert state["counts"]["runs"] == 300 and state["counts"]["metrics"] == 300 * 5 * 3
    return state


# The tests below run in this order on one server and one store; each starts where the previous left off.


def test_1_check_mode_shows_the_plan_and_touches_nothing(old_server, baseline):
    planned = play(old_server, check=True)
    assert planned.rc == 0, planned.stdout[-3000:]
    plan = task(planned, "Pre-flight | plan")["result"]["msg"]
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
        summary = task(failed, "Rollback | fail with a summary")["result"]["msg"]
        assert "Migrate the schema" in summary and "logged_models" in summary, summary
        assert "restored from" in summary and "reinstalled" in summary
        assert "healthy on MLflow %s" % OLD_VERSION in summary, summary
        assert server_version(old_server.url) == OLD_VERSION
        assert revision(db_path) == baseline["revision"]
        assert counts(db_path) == baseline["counts"]
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


def test_3_upgrade_with_data_intact(old_server, baseline):
    db_path = baseline["db_path"]
    started = time.monotonic()
    upgraded = play(old_server)
    elapsed = time.monotonic() - started
    assert upgraded.rc == 0, upgraded.stdout[-4000:]
    assert server_version(old_server.url) == NEW_VERSION
    assert counts(db_path) == baseline["counts"]
    migration = task(upgraded, "Migrate the schema with MLflow %s" % NEW_VERSION)["result"]
    assert migration["changed"] is True and migration["at_head"] is True
    assert revision(db_path) == migration["tracking"]["head_revision"] != baseline["revision"]
    runs = api(old_server.url, "runs/search", {"experiment_ids": [old_server.experiment], "max_results": 1000})
    assert len(runs["runs"]) == 300
    assert len(runs["runs"][0]["data"]["params"]) == 3
    summary = task(upgraded, "Summary")["result"]["msg"]
    assert "Downtime" in summary
    assert not os.path.exists(os.path.join(old_server.root, "venv.pre-upgrade"))
    assert glob.glob(os.path.join(old_server.root, "backups", "*.manifest.json"))
    print("upgrade run %.1fs: %s" % (elapsed, summary))


def test_4_rerun_changes_nothing_and_takes_no_backup(old_server):
    backups = sorted(glob.glob(os.path.join(old_server.root, "backups", "*.manifest.json")))
    again = play(old_server)
    assert again.rc == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout
    assert "nothing to do" in task(again, "Pre-flight | plan")["result"]["msg"]
    assert sorted(glob.glob(os.path.join(old_server.root, "backups", "*.manifest.json"))) == backups
    assert server_version(old_server.url) == NEW_VERSION
    with open(backups[-1]) as handle:
        assert json.load(handle)
