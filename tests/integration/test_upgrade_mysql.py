# -*- coding: utf-8 -*-
"""The upgrade role on a MariaDB-backed MLflow 2.x server (PyMySQL), upgraded to the installed release.

One server, one database, in sequence (each step starts where the previous one left off): a MySQL auth
database is refused before anything is touched (mlflow/mlflow#9642); a real migration failure (a table a
later migration creates is planted in the database) rolls back database (db_restore: MySQL DDL is not
transactional, so the half-migrated tables must go), packages and server; the real upgrade keeps every
count and ends at head; a rerun changes nothing.
"""

import os
import secrets
import subprocess

import pytest

from harness import datagen
from harness.old_mlflow import OLD_VERSION, copy_venv
from harness.runner import REPO_ROOT, run_playbook
from harness.services import api
from harness.standin import StandIn

NEW_VERSION = "3.17.2"
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "upgrade.yml")
RUNS = 40
COUNTED = ("runs", "metrics", "latest_metrics", "params", "tags", "experiments")


def state(mariadb, database):
    """(counts, revision, table names) read from the database itself."""
    counts = dict((t, mariadb.sql("SELECT COUNT(*) FROM `%s`.`%s`" % (database, t))[0][0]) for t in COUNTED)
    revision = mariadb.sql("SELECT version_num FROM `%s`.alembic_version" % database)[0][0]
    tables = set(row[0] for row in mariadb.sql("SHOW TABLES FROM `%s`" % database))
    return counts, revision, tables


@pytest.fixture(scope="module")
def old_server(mariadb, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("upgrade-mysql"))
    python = copy_venv(OLD_VERSION, os.path.join(root, "venv"))
    # The server's own driver, as an operator installs it next to MLflow (the role keeps it: extra packages).
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "PyMySQL"],
                   check=True, capture_output=True, timeout=600)
    service = StandIn(root, python, mariadb.create_database("up_%s" % secrets.token_hex(4)))
    service.database = service.backend_store_uri.rsplit("/", 1)[1]
    service.start(timeout=400)
    try:
        assert service.version() == OLD_VERSION
        service.experiment = datagen.create_experiment(service.url, "upgrade-mysql")
        datagen.add_runs(service.url, service.backend_store_uri, service.experiment,
                         [datagen.RunSpec(metrics=3, steps=2, params=3, tags={"team": "a"}) for _i in range(RUNS)])
        yield service
    finally:
        service.stop()
        mariadb.sql("DROP DATABASE IF EXISTS `%s`" % service.database)


@pytest.fixture(scope="module")
def baseline(old_server, mariadb):
    counts, revision, tables = state(mariadb, old_server.database)
    assert counts["runs"] == RUNS and counts["metrics"] == RUNS * 3 * 2
    return dict(counts=counts, revision=revision, tables=tables)


def play(service, check=False, **extra):
    extra = dict(dict(upgrade_pip_extra_packages=["PyMySQL"], upgrade_health_retries=300), **extra)
    return run_playbook(PLAYBOOK, extra_vars=service.upgrade_vars(NEW_VERSION, **extra), check=check, timeout=1500)


def runs_via_api(service):
    return api(service.url, "runs/search", {"experiment_ids": [service.experiment], "max_results": 1000})["runs"]


# The tests below run in this order on one server and one database; each starts where the previous left off.


def test_1_mysql_auth_database_is_refused_before_anything(old_server, baseline, mariadb):
    auth = old_server.backend_store_uri.rsplit("/", 1)[0] + "/mlflow_auth"
    refused = play(old_server, mlflow_auth_database_uri=auth)
    assert refused.rc != 0
    msg = refused.role_task("Check that no MySQL auth database would be migrated (mlflow/mlflow#9642)")["result"]["msg"]
    assert "mlflow/mlflow#9642" in msg and "auth database" in msg, msg
    assert not [r for r in refused.records if "Pre-flight" in r["task"]]
    assert not os.path.exists(os.path.join(old_server.root, "backups"))
    assert old_server.version() == OLD_VERSION
    assert state(mariadb, old_server.database)[1] == baseline["revision"]


def test_2_failed_migration_rolls_back_database_packages_and_server(old_server, baseline, mariadb):
    database = old_server.database
    # A real failure of the real migration: a table a later migration creates is already there. MySQL DDL is
    # not transactional, so the migrations before it stay applied: only the restore gives the old schema back.
    mariadb.sql("CREATE TABLE logged_models (planted INT)", database=database)
    mariadb.sql("INSERT INTO logged_models VALUES (42)", database=database)
    try:
        failed = play(old_server)
        assert failed.rc != 0, failed.stdout[-3000:]
        summary = failed.role_task("Rollback | fail with a summary")["result"]["msg"]
        assert "Migrate the schema" in summary and "logged_models" in summary, summary
        assert "restored from" in summary and "reinstalled" in summary, summary
        assert "healthy on MLflow %s" % OLD_VERSION in summary, summary
        backup = failed.role_task("Back up the database (verified)")["result"]
        assert backup["backup"]["engine"] == "mysql" and backup["verified"] == "restore", backup
        restore = failed.role_task("Rollback | restore the database backup")["result"]
        # the migration really got halfway: the tables it had created were dropped by the restore
        assert restore["dropped_tables"], restore
        assert old_server.version() == OLD_VERSION
        counts, revision, tables = state(mariadb, database)
        assert (counts, revision) == (baseline["counts"], baseline["revision"])
        assert tables == baseline["tables"] | {"logged_models"}
        assert mariadb.sql("SELECT planted FROM logged_models", database=database) == ((42,),)
        assert len(runs_via_api(old_server)) == RUNS
    finally:
        mariadb.sql("DROP TABLE IF EXISTS logged_models", database=database)


def test_3_upgrade_with_data_intact(old_server, baseline, mariadb):
    upgraded = play(old_server)
    assert upgraded.rc == 0, upgraded.stdout[-4000:]
    assert old_server.version() == NEW_VERSION
    migration = upgraded.role_task("Migrate the schema with MLflow %s" % NEW_VERSION)["result"]
    assert migration["changed"] is True and migration["at_head"] is True
    counts, revision, tables = state(mariadb, old_server.database)
    assert counts == baseline["counts"]
    assert revision == migration["tracking"]["head_revision"] != baseline["revision"]
    assert tables > baseline["tables"]
    runs = runs_via_api(old_server)
    assert len(runs) == RUNS and len(runs[0]["data"]["params"]) == 3
    assert len(old_server.backup_manifests()) == 2
    assert not os.path.exists(os.path.join(old_server.root, "venv.pre-upgrade"))


def test_4_rerun_changes_nothing_and_takes_no_backup(old_server, baseline, mariadb):
    backups = old_server.backup_manifests()
    again = play(old_server)
    assert again.rc == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout
    assert "nothing to do" in again.role_task("Pre-flight | plan")["result"]["msg"]
    assert old_server.backup_manifests() == backups
    assert old_server.version() == NEW_VERSION
    assert state(mariadb, old_server.database)[0] == baseline["counts"]
