# -*- coding: utf-8 -*-
"""A rolling upgrade of a fleet over real SSH (tests/harness/fleet.py: one sshd per host on its own port).

Three hosts, each with its own MLflow 2.12.2 server (private venv copy, own SQLite store with a few runs) that
the role stops and starts by command. ``playbooks/upgrade.yml`` as a user runs it (serial 1,
max_fail_percentage 0), with a real migration failure planted in host 2's database: host 1 is upgraded,
host 2 fails and is rolled back, and the rollout stops there, before host 3. Every claim is checked in the
stores, venvs and servers themselves, and in the job's events.
"""

import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import sqlite3

import pytest

from harness import datagen
from harness.fleet import Fleet
from harness.old_mlflow import OLD_VERSION
from harness.runner import REPO_ROOT, run_playbook
from harness.standin import server_version, sqlite_counts, sqlite_revision
from harness.services import api, http_get

PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "upgrade.yml")
# The controller's MLflow: its wheels are in the local pip cache, so each host installs it without a download.
NEW_VERSION = importlib.metadata.version("mlflow")
RUNS = 4
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def head_revision():
    """The head of NEW_VERSION's migrations, read from its own alembic scripts (not from the role)."""
    from alembic.script import ScriptDirectory  # pylint: disable=import-outside-toplevel
    package = os.path.dirname(importlib.util.find_spec("mlflow").origin)
    return ScriptDirectory(os.path.join(package, "store", "db_migrations")).get_current_head()


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def distributions(venv):
    """The installed distributions of a venv, from its site-packages (name-version.dist-info)."""
    return sorted(os.path.basename(path) for path in glob.glob(os.path.join(venv, "lib", "python*", "site-packages",
                                                                            "*.dist-info")))


def tree(path):
    """Every entry under ``path`` with its inode, size and mtime: any write, replacement or removal shows."""
    entries = {}
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(directory, name)
            stat = os.lstat(full)
            entries[os.path.relpath(full, path)] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return entries


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the fleet harness needs root")
    started = Fleet(3, root=str(tmp_path_factory.mktemp("fleet-upgrade")), mlflow=False).start()
    try:
        started.start_old_mlflow()
        for host in started.hosts:
            server = host.old_mlflow
            experiment = datagen.create_experiment(server.url, "fleet-upgrade")
            datagen.add_runs(server.url, server.backend_store_uri, experiment,
                             [datagen.RunSpec(metrics=2, steps=2, params=2) for _index in range(RUNS)])
            server.experiment = experiment
            host.backups = os.path.join(host.root, "upgrade-backups")
        yield started
    finally:
        started.stop()


def test_rolling_upgrade_stops_at_the_failed_host_rolls_it_back_and_leaves_the_rest_untouched(fleet):
    first, second, third = fleet.hosts
    before = {}
    for host in fleet.hosts:
        server = host.old_mlflow
        assert server_version(server.url) == OLD_VERSION
        before[host.name] = dict(counts=sqlite_counts(server.db_path), revision=sqlite_revision(server.db_path),
                                 distributions=distributions(server.venv))
        assert before[host.name]["counts"]["runs"] == RUNS
    # A real failure of the real migration on host 2: a table that a later migration creates is already there.
    connection = sqlite3.connect(second.old_mlflow.db_path)
    connection.execute("CREATE TABLE logged_models (planted INTEGER)")
    connection.commit()
    connection.close()
    untouched = dict(db=sha256(third.old_mlflow.db_path), venv=tree(third.old_mlflow.venv), root=sorted(os.listdir(third.root)))

    inventory = fleet.write_inventory(host_vars={
        host.name: dict(upgrade_backup_dir=host.backups, upgrade_health_delay=1, upgrade_health_retries=240)
        for host in fleet.hosts})
    run = run_playbook(PLAYBOOK, inventory=inventory, extra_vars=dict(upgrade_mlflow_version=NEW_VERSION), timeout=900)
    print("rolling upgrade run: %.1fs" % run.duration)
    assert run.rc != 0, run.stdout[-4000:]

    # The job's events: hosts 1 and 2 ran (over SSH), host 2 failed in the migration, host 3 ran nothing.
    hosts = run.recap()
    assert hosts[first.name]["failed"] == 0 and hosts[first.name]["changed"] > 0, run.stdout[-4000:]
    assert hosts[second.name]["failed"] == 1, run.stdout[-4000:]
    assert third.name not in hosts, run.stdout[-4000:]
    assert {record["host"] for record in run.records} == {first.name, second.name}
    summary = [record for record in run.records
               if record["host"] == second.name and record["task"].endswith("Rollback | fail with a summary")]
    assert summary and "logged_models" in summary[0]["result"]["msg"], run.stdout[-4000:]

    # Host 1: upgraded, its schema at the new release's head, its data intact.
    server = first.old_mlflow
    assert server_version(server.url) == NEW_VERSION
    assert sqlite_revision(server.db_path) == head_revision() != before[first.name]["revision"]
    assert sqlite_counts(server.db_path) == before[first.name]["counts"]
    found = api(server.url, "runs/search", {"experiment_ids": [server.experiment], "max_results": 100})["runs"]
    assert len(found) == RUNS and all(len(item["data"]["params"]) == 2 for item in found)
    assert "mlflow-%s.dist-info" % NEW_VERSION in distributions(server.venv)
    assert glob.glob(os.path.join(first.backups, "*.manifest.json"))
    print([record["result"]["msg"] for record in run.records
           if record["host"] == first.name and record["task"].endswith("Summary")])
    assert not os.path.exists(server.venv + ".pre-upgrade")

    # Host 2: rolled back to the database it backed up (planted table included), the old packages, the old server.
    server = second.old_mlflow
    assert server_version(server.url) == OLD_VERSION
    assert sqlite_revision(server.db_path) == before[second.name]["revision"]
    assert sqlite_counts(server.db_path) == before[second.name]["counts"]
    connection = sqlite3.connect(server.db_path)
    try:
        assert connection.execute("SELECT count(*) FROM logged_models").fetchone() == (0,)
    finally:
        connection.close()
    assert distributions(server.venv) == before[second.name]["distributions"]
    assert not glob.glob(server.venv + ".*")
    found = api(server.url, "runs/search", {"experiment_ids": [server.experiment], "max_results": 100})["runs"]
    assert len(found) == RUNS

    # Host 3: untouched and healthy on the old release: same database bytes, same venv inodes, no backup.
    server = third.old_mlflow
    assert http_get(server.url + "/health")[1].strip() == "OK"
    assert server_version(server.url) == OLD_VERSION
    assert sha256(server.db_path) == untouched["db"]
    assert sqlite_revision(server.db_path) == before[third.name]["revision"]
    assert sqlite_counts(server.db_path) == before[third.name]["counts"]
    assert tree(server.venv) == untouched["venv"]
    assert not os.path.exists(third.backups)
    assert sorted(os.listdir(third.root)) == untouched["root"]
