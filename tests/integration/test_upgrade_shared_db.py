# -*- coding: utf-8 -*-
"""The upgrade role's shared-database path over real SSH: two MLflow 2.12.2 servers (tests/harness/fleet.py, one
sshd each) on ONE PostgreSQL tracking database, with the basic-auth app's database on PostgreSQL too.

In sequence, each test starting where the previous one left off: the plan in check mode; a migration that fails
on a conflicting table planted in the shared database, which must restore the database once and put both servers
back on 2.12.2; the real upgrade (both servers stopped before the one migration, one backup,
both servers healthy on the new release, counts intact, both databases at head); a rerun that changes nothing.

The order of events is read from outside the role: the stand-in service manager logs each stop and start, and
the PostgreSQL server logs every DDL statement and keeps commit timestamps.
"""

import datetime
import glob
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import datagen
from harness.fleet import Fleet
from harness.old_mlflow import OLD_VERSION, copy_venv, ensure_venv
from harness.runner import REPO_ROOT, run_playbook
from harness.services import PostgresCluster, api
from harness.standin import StandIn

NEW_VERSION = "3.17.2"
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "upgrade.yml")
RUNS = 20
COUNTED = ("runs", "metrics", "latest_metrics", "params", "tags", "experiments")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The 2.12.2 schemas, created the way MLflow does: the tracking store initialises an empty database and the
# basic-auth app's store runs its own migrations (init_db), then adds a user.
INIT_SCHEMAS = """
import os
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
SqlAlchemyStore(os.environ["TRACKING_URI"], os.environ["ARTIFACTS"])
auth = AuthStore()
auth.init_db(os.environ["AUTH_URI"])
auth.create_user("alice", "alice-password-1")
"""


def task_records(run, name):
    """The record of the role's task ``name`` (records carry the role prefix) by host: the one that ran, else
    the skipped one (the single-server path has tasks of the same names, all skipped here)."""
    found = {}
    for record in run.records:
        if record["task"] == name or record["task"].endswith(" : " + name):
            if record["status"] != "skipped" or record["host"] not in found:
                found[record["host"]] = record
    return found


class SharedGroup:
    """Two simulated hosts over SSH, each with its own 2.12.2 server on one PostgreSQL database."""

    def __init__(self, root):
        self.root = root
        self.events = os.path.join(root, "service-events.jsonl")
        self.backup_dir = os.path.join(root, "backups")
        self.cluster = None
        self.fleet = None

    def start(self):
        self.cluster = PostgresCluster().start()
        # Commit timestamps and a log of every DDL statement with its database: the migration's window, seen
        # by the database itself.
        for setting in ("track_commit_timestamp = on", "log_statement = 'ddl'", "log_timezone = 'UTC'",
                        "log_line_prefix = '%m|%d|'"):
            self.cluster.psql("ALTER SYSTEM SET " + setting)
        self.cluster._run_as_owner([os.path.join(self.cluster.bindir, "pg_ctl"), "-D", self.cluster.datadir,  # pylint: disable=protected-access
                                    "-l", os.path.join(self.cluster.root, "server.log"), "-m", "fast", "-w", "-t", "60",
                                    "restart"])
        self.tracking_uri = self.cluster.create_database("shared_tracking")
        self.auth_uri = self.cluster.create_database("shared_auth")
        for role in ("mlflow_shared_tracking", "mlflow_shared_auth"):
            # verify=restore restores each backup into a scratch database.
            self.cluster.psql("ALTER ROLE \"%s\" CREATEDB" % role)
        python = ensure_venv(OLD_VERSION)
        env = dict(os.environ, TRACKING_URI=self.tracking_uri, AUTH_URI=self.auth_uri,
                   ARTIFACTS=os.path.join(self.root, "artifacts"))
        env.pop("PYTHONPATH", None)
        subprocess.run([python, "-c", INIT_SCHEMAS], check=True, capture_output=True, text=True, env=env, timeout=300)
        os.makedirs(os.path.join(self.root, "fleet"))
        self.fleet = Fleet(2, root=os.path.join(self.root, "fleet"), mlflow=False).start()

        def start(host):
            base = os.path.join(host.root, "old-mlflow")
            os.makedirs(base, mode=0o755)
            venv = os.path.join(base, "venv")
            service = StandIn(base, copy_venv(OLD_VERSION, venv), self.tracking_uri)
            service.venv = venv
            service.start_command += " --events %s" % self.events
            service.stop_command += " --events %s" % self.events
            host.old_mlflow = service
            service.start()

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(start, self.fleet.hosts))
        self.hosts = self.fleet.hosts
        self.servers = [host.old_mlflow for host in self.hosts]
        self.experiment = datagen.create_experiment(self.servers[0].url, "shared-db-data")
        datagen.add_runs(self.servers[0].url, self.tracking_uri, self.experiment,
                         [datagen.RunSpec(metrics=2, steps=2, params=2, tags={"team": "a"}) for _i in range(RUNS)])
        return self

    def stop(self):
        if self.fleet:
            self.fleet.stop()
        if self.cluster:
            self.cluster.stop()

    def sql(self, statement, database="shared_tracking"):
        return self.cluster.psql(statement, database)

    def state(self):
        """What the databases hold: row counts, revisions, users."""
        counts = dict((table, int(self.sql("SELECT count(*) FROM %s" % table))) for table in COUNTED)
        auth_table = "alembic_version_auth" if self.sql(
            "SELECT to_regclass('alembic_version_auth') IS NOT NULL", "shared_auth") == "t" else "alembic_version"
        return dict(counts=counts, revision=self.sql("SELECT version_num FROM alembic_version"),
                    auth_revision=self.sql("SELECT version_num FROM %s" % auth_table, "shared_auth"),
                    users=self.sql("SELECT string_agg(username, ',' ORDER BY username) FROM users", "shared_auth"))

    def versions(self):
        return [server.version() for server in self.servers]

    def manifests(self):
        return sorted(glob.glob(os.path.join(self.backup_dir, "*.manifest.json")))

    def service_events(self, since):
        if not os.path.exists(self.events):
            return []
        with open(self.events) as handle:
            return [event for event in (json.loads(line) for line in handle if line.strip()) if event["at"] >= since]

    def ddl_times(self, since, database="shared_tracking"):
        """Epoch times of the DDL statements the PostgreSQL server logged in ``database`` since ``since``."""
        times = []
        with open(os.path.join(self.cluster.root, "server.log")) as handle:
            for line in handle:
                parts = line.split("|", 2)
                if len(parts) == 3 and parts[1] == database and "statement:" in parts[2]:
                    stamp = datetime.datetime.strptime(parts[0], "%Y-%m-%d %H:%M:%S.%f UTC")
                    at = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                    if at >= since:
                        times.append(at)
        return times

    def play(self, check=False, **extra):
        inventory = self.fleet.write_inventory(group_vars=dict(
            mlflow_auth_database_uri=self.auth_uri,
            upgrade_backup_dir=self.backup_dir,
            upgrade_health_delay=1,
            upgrade_health_retries=240,
        ))
        extra_vars = dict(upgrade_mlflow_version=NEW_VERSION, upgrade_shared_database=True)
        extra_vars.update(extra)
        return run_playbook(PLAYBOOK, inventory=inventory, extra_vars=extra_vars, check=check, forks=2, timeout=1500)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the fleet harness needs root")
    started = SharedGroup(str(tmp_path_factory.mktemp("shared-db")))
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def baseline(group):
    state = group.state()
    assert state["counts"]["runs"] == RUNS and state["counts"]["metrics"] == RUNS * 2 * 2
    assert state["users"] == "alice"
    assert group.versions() == [OLD_VERSION, OLD_VERSION]
    return state


# The tests below run in this order on one group; each starts where the previous left off.


def test_1_check_mode_plans_one_migration_and_touches_nothing(group, baseline):
    since = time.time()
    planned = group.play(check=True)
    assert planned.rc == 0, planned.stdout[-3000:]
    plans = task_records(planned, "Pre-flight | plan")
    first, second = (host.name for host in group.hosts)
    assert "migrate its schema from %s (once, here, with the auth database)" % baseline["revision"] \
        in plans[first]["result"]["msg"]
    assert "wait for %s to back up and migrate" % first in plans[second]["result"]["msg"]
    assert not group.service_events(since) and not group.manifests()
    assert group.versions() == [OLD_VERSION, OLD_VERSION]
    assert group.state() == baseline


def test_2_failed_migration_restores_the_database_once_and_both_servers(group, baseline):
    # A real failure of the real migration: a table that a later migration creates is already in the shared
    # database (as a manual change or a half-finished attempt leaves it), owned by the database's owner.
    group.sql("SET ROLE mlflow_shared_tracking; CREATE TABLE logged_models (planted integer); "
              "INSERT INTO logged_models VALUES (42)")
    try:
        since = time.time()
        failed = group.play()
        assert failed.rc != 0, failed.stdout[-3000:]
        summaries = task_records(failed, "Rollback | fail with a summary")
        assert sorted(summaries) == [host.name for host in group.hosts], failed.stdout[-3000:]
        first, second = (host.name for host in group.hosts)
        # The migrating host failed in the migration; the other at the gate after it, quoting the same error.
        assert "Migrate the shared schema once" in summaries[first]["result"]["msg"], summaries[first]
        assert "gate, the database backed up and migrated" in summaries[second]["result"]["msg"], summaries[second]
        for record in summaries.values():
            summary = record["result"]["msg"]
            assert "logged_models" in summary, summary
            assert "restored once from" in summary, summary
            assert "healthy on MLflow %s" % OLD_VERSION in summary, summary
        # One backup and one restore of each database, on the migrating host only.
        assert sorted(os.path.basename(path).split("-postgresql-")[0] for path in group.manifests()) == sorted([
            "upgrade-shared-%s" % first, "upgrade-shared-auth-%s" % first]), group.manifests()
        for task in ("Rollback | restore the shared database once", "Rollback | restore the auth database once"):
            restores = task_records(failed, task)
            assert [restores[host.name]["status"] for host in group.hosts] == ["ok", "skipped"], task
        assert "auth database restored once from" in summaries[second]["result"]["msg"]
        assert group.versions() == [OLD_VERSION, OLD_VERSION]
        # Counts and revisions as before; the auth database, migrated after the tracking one, was never touched.
        assert group.state() == baseline
        # The backed-up database, planted table included.
        assert group.sql("SELECT planted FROM logged_models") == "42"
        # Both servers were stopped, and started again only after the restore.
        events = group.service_events(since)
        assert sorted(event["action"] for event in events) == ["started", "started", "stopped", "stopped"], events
        runs = api(group.servers[1].url, "runs/search", {"experiment_ids": [group.experiment], "max_results": 100})
        assert len(runs["runs"]) == RUNS
    finally:
        group.sql("DROP TABLE IF EXISTS logged_models")


def test_3_upgrade_stops_both_migrates_once_and_restarts_both(group, baseline):
    since = time.time()
    before = group.manifests()
    upgraded = group.play()
    assert upgraded.rc == 0, upgraded.stdout[-4000:]
    first, second = (host.name for host in group.hosts)
    # The migration ran once, on the migrating host, for both databases.
    migrations = task_records(upgraded, "Migrate the shared schema once with MLflow %s" % NEW_VERSION)
    assert migrations[first]["status"] == "ok" and migrations[second]["status"] == "skipped"
    migration = migrations[first]["result"]
    assert migration["changed"] is True and migration["migrated"] == ["tracking", "auth"]
    state = group.state()
    assert state["revision"] == migration["tracking"]["head_revision"] != baseline["revision"]
    assert state["auth_revision"] == migration["auth"]["head_revision"]
    assert state["counts"] == baseline["counts"] and state["users"] == "alice"
    # One new backup, by the migrating host.
    new = sorted(set(group.manifests()) - set(before))
    assert sorted(os.path.basename(path).split("-postgresql-")[0] for path in new) == sorted([
        "upgrade-shared-%s" % first, "upgrade-shared-auth-%s" % first]), new
    # Both servers stopped before the first DDL statement of the migration, both started after its commit.
    events = group.service_events(since)
    stops = [event["at"] for event in events if event["action"] == "stopped"]
    starts = [event["at"] for event in events if event["action"] == "started"]
    assert len(stops) == 2 and len(starts) == 2, events
    # (DDL that the new servers may issue once started is not the migration's.)
    ddl = [at for at in group.ddl_times(since) if at < min(starts)]
    assert ddl, "no DDL logged in the shared database"
    committed = float(group.sql("SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM alembic_version"))
    assert max(stops) < min(ddl) <= max(ddl) <= committed < min(starts), (stops, ddl, committed, starts)
    auth_committed = float(group.sql("SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM alembic_version_auth",
                                     "shared_auth"))
    assert max(stops) < auth_committed < min(starts)
    # Both servers healthy on the new release, serving the same data.
    assert group.versions() == [NEW_VERSION, NEW_VERSION]
    for server in group.servers:
        runs = api(server.url, "runs/search", {"experiment_ids": [group.experiment], "max_results": 100})
        assert len(runs["runs"]) == RUNS and len(runs["runs"][0]["data"]["params"]) == 2
        assert not os.path.exists(server.venv + ".pre-upgrade")
    print("shared upgrade %.1fs: %s" % (upgraded.duration, task_records(upgraded, "Summary")[first]["result"]["msg"]))


def test_4_rerun_changes_nothing(group):
    since = time.time()
    before = group.manifests()
    state = group.state()
    again = group.play()
    assert again.rc == 0, again.stdout[-3000:]
    counts = again.recap()
    assert sorted(counts) == [host.name for host in group.hosts]
    assert all(host_counts["changed"] == 0 for host_counts in counts.values()), again.stdout[-3000:]
    assert all("nothing to do" in record["result"]["msg"] for record in task_records(again, "Pre-flight | plan").values())
    assert group.manifests() == before and not group.service_events(since)
    assert group.state() == state and group.versions() == [NEW_VERSION, NEW_VERSION]
