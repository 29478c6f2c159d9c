# -*- coding: utf-8 -*-
"""db_optimize through Ansible on real MLflow stores: SQLite after mass deletion, PostgreSQL VACUUM, bad inputs."""

import os
import shutil
import sqlite3

import pytest

from harness import datagen
from harness.runner import run_module
from harness.services import MlflowServer

RUNS = 1000


def _purge_runs(connection_execute, run_ids):
    """Delete runs and their rows, as ``mlflow gc`` does (faster than gc for test setup)."""
    for table in ("metrics", "latest_metrics", "params", "tags", "runs"):
        for offset in range(0, len(run_ids), 500):
            chunk = run_ids[offset:offset + 500]
            connection_execute("DELETE FROM %s WHERE run_uuid IN (%s)" % (table, ",".join("'%s'" % r for r in chunk)))


@pytest.fixture(scope="module")
def sqlite_store():
    server = MlflowServer().start()
    try:
        experiment = datagen.create_experiment(server.url, "optimize-sqlite")
        run_ids = datagen.add_runs(server.url, server.backend_store_uri, experiment,
                                   [datagen.RunSpec(metrics=10, steps=5, params=5) for _i in range(RUNS)])
        yield server, run_ids
    finally:
        server.stop()


def test_sqlite_vacuum_shrinks_after_mass_deletion_and_is_idempotent(sqlite_store):
    server, run_ids = sqlite_store
    path = server.sqlite_path
    connection = sqlite3.connect(path)
    _purge_runs(connection.execute, run_ids[: int(RUNS * 0.7)])
    connection.commit()
    connection.close()
    size_deleted = os.path.getsize(path)
    args = {"backend_store_uri": server.backend_store_uri, "integrity_check": "quick"}

    predicted, _run = run_module("db_optimize", args, check=True)
    assert predicted["_status"] == "ok", predicted
    assert predicted["changed"] is True and predicted["plan"]["vacuum"] is True
    assert "vacuum" not in predicted["actions"]
    assert os.path.getsize(path) == size_deleted

    first, _run = run_module("db_optimize", args)
    assert first["_status"] == "ok", first
    assert first["changed"] is True
    assert first["actions"] == ["quick_check", "vacuum", "analyze"]
    assert first["size_after"] < first["size_before"] * 0.5
    assert first["reclaimed_bytes"] == first["size_before"] - first["size_after"]
    assert os.path.getsize(path) == first["size_after"]
    assert first["journal_mode"] in ("delete", "wal")
    tables = dict((t["name"], t) for t in first["tables"])
    assert tables["runs"]["rows_estimate"] == RUNS - int(RUNS * 0.7)

    second, _run = run_module("db_optimize", args)
    assert second["changed"] is False, second["plan"]
    assert second["actions"] == ["quick_check"]
    # The server still works on the vacuumed store.
    from harness.services import api  # pylint: disable=import-outside-toplevel
    assert api(server.url, "experiments/search", {"max_results": 10})["experiments"]


def test_sqlite_bad_inputs_change_nothing(tmp_path, sqlite_store):
    server, _run_ids = sqlite_store
    wrong, _run = run_module("db_optimize", {"backend_store_uri": "mysql://u@h/db"})
    assert wrong["_status"] == "failed" and "not supported" in wrong["msg"]

    missing = tmp_path / "nowhere" / "mlflow.db"
    (tmp_path / "nowhere").mkdir()
    result, _run = run_module("db_optimize", {"backend_store_uri": "sqlite:///%s" % missing})
    assert result["_status"] == "failed" and "does not exist" in result["msg"]
    assert not missing.exists()

    copy = tmp_path / "copy.db"
    shutil.copy(server.sqlite_path, str(copy))
    os.chmod(str(copy), 0o444)
    before = copy.read_bytes()
    result, _run = run_module("db_optimize", {"backend_store_uri": "sqlite:///%s" % copy, "force": True})
    assert result["_status"] == "failed" and "read-only" in result["msg"]
    assert copy.read_bytes() == before

    # Too little free space: a margin larger than any disk stands in for a full filesystem.
    os.chmod(str(copy), 0o644)
    result, _run = run_module("db_optimize", {"backend_store_uri": "sqlite:///%s" % copy, "force": True,
                                              "vacuum_margin_mb": 10 ** 9})
    assert result["_status"] == "failed" and "not enough free disk space for VACUUM" in result["msg"]
    assert copy.read_bytes() == before
    assert "Traceback" not in result.get("module_stderr", "")


def test_sqlite_too_little_space_on_a_small_filesystem(tmp_path):
    """A real full-ish filesystem: a 24 MB tmpfs holding a ~13 MB database."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or os.system("mount -t tmpfs -o size=24m tmpfs %s 2>/dev/null" % mount) != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = str(mount / "mlflow.db")
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, pad TEXT)")
            connection.executemany("INSERT INTO metrics (pad) VALUES (?)", (("x" * 1000,) for _i in range(13000)))
            connection.commit()
            connection.execute("DELETE FROM metrics WHERE id > 6500")
            connection.commit()
        finally:
            connection.close()
        before = os.path.getsize(path)
        result, _run = run_module("db_optimize", {"backend_store_uri": "sqlite:///%s" % path,
                                                  "vacuum_margin_mb": 1})
        assert result["_status"] == "failed", result
        assert "not enough free disk space for VACUUM" in result["msg"]
        assert os.path.getsize(path) == before
    finally:
        os.system("umount %s" % mount)


@pytest.fixture(scope="module")
def pg_store(postgres):
    uri = postgres.create_database("optimize_pg")
    server = MlflowServer(backend_store_uri=uri).start()
    try:
        experiment = datagen.create_experiment(server.url, "optimize-pg")
        run_ids = datagen.add_runs(server.url, uri, experiment,
                                   [datagen.RunSpec(metrics=10, steps=5, params=3) for _i in range(300)])
        yield server, uri, run_ids
    finally:
        server.stop()


def test_postgres_vacuum_analyze_on_dead_tuples_then_idempotent(postgres, pg_store):
    _server, uri, run_ids = pg_store
    postgres.psql("ALTER TABLE metrics SET (autovacuum_enabled = false); "
                  "ALTER TABLE params SET (autovacuum_enabled = false)", "optimize_pg")
    postgres.psql("DELETE FROM metrics WHERE run_uuid IN (%s)" % ",".join("'%s'" % r for r in run_ids[:200]),
                  "optimize_pg")
    postgres.psql("SELECT pg_stat_force_next_flush()", "optimize_pg")
    dead_before = int(postgres.psql("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'metrics'",
                                    "optimize_pg"))
    assert dead_before >= 200 * 50 * 0.9

    args = {"backend_store_uri": uri, "lock_timeout_ms": 3000}
    predicted, _run = run_module("db_optimize", args, check=True)
    assert predicted["_status"] == "ok", predicted
    assert predicted["changed"] is True and "metrics" in predicted["plan"]["tables"]
    assert predicted["actions"] == []

    first, _run = run_module("db_optimize", args)
    assert first["_status"] == "ok", first
    assert first["changed"] is True
    assert "vacuum metrics" in first["actions"]
    assert "params" not in first["plan"]["tables"]
    metrics = [t for t in first["tables"] if t["name"] == "metrics"][0]
    assert metrics["vacuumed"] is True and metrics["n_dead_tup_after"] == 0
    assert first["store"]["uri"].count("***") == 1
    last_vacuum = postgres.psql("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'metrics'",
                                "optimize_pg")
    assert last_vacuum == "t"

    # A password written inside the URI is masked too, even at -vvv.
    second, run = run_module("db_optimize", args, verbosity=3)
    assert second["changed"] is False, second["plan"]
    assert uri.split(":")[2].split("@")[0] not in run.stdout + run.stderr

    # VACUUM FULL and REINDEX on a chosen table, forced, with the psycopg (3) spelling of the URI.
    # The password given as db_password (the documented way) stays out of the output, even at -vvv.
    password = uri.split(":")[2].split("@")[0]
    bare = uri.replace("+psycopg2", "+psycopg").replace(":%s@" % password, "@")
    full, run = run_module("db_optimize", {"backend_store_uri": bare, "db_password": password,
                                           "tables": ["params"], "force": True, "vacuum_full": True,
                                           "reindex": True}, verbosity=3)
    assert full["_status"] == "ok", full
    assert full["actions"] == ["vacuum_full params", "reindex params"]
    assert password not in run.stdout + run.stderr


def test_postgres_bad_inputs(postgres, pg_store):
    _server, uri, _run_ids = pg_store
    wrong_password, run = run_module("db_optimize", {"backend_store_uri": uri, "db_password": "not-it"},
                                     verbosity=3)
    assert wrong_password["_status"] == "failed"
    assert "cannot connect to PostgreSQL" in wrong_password["msg"]
    assert "not-it" not in run.stdout
    missing_db, _run = run_module("db_optimize", {"backend_store_uri": uri.rsplit("/", 1)[0] + "/no_such_db"})
    assert missing_db["_status"] == "failed" and "cannot connect" in missing_db["msg"]
    assert "no_such_db" not in postgres.psql("SELECT string_agg(datname, ',') FROM pg_database")
    missing_table, _run = run_module("db_optimize", {"backend_store_uri": uri, "tables": ["nope"]})
    assert missing_table["_status"] == "failed" and "tables not found" in missing_table["msg"]


def test_cleanup_role_optimize_step(tmp_path):
    """The cleanup role's optional step (cleanup_optimize) runs db_optimize; a rerun changes nothing."""
    import json  # pylint: disable=import-outside-toplevel
    from harness.runner import run_playbook  # pylint: disable=import-outside-toplevel
    path = str(tmp_path / "mlflow.db")
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, pad TEXT)")
    connection.executemany("INSERT INTO metrics (pad) VALUES (?)", (("x" * 500,) for _i in range(20000)))
    connection.commit()
    connection.execute("DELETE FROM metrics WHERE id > 5000")
    connection.commit()
    connection.close()
    playbook = tmp_path / "play.json"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "mlflowops.maintenance.cleanup", "cleanup_runs": False, "cleanup_gc": False,
                   "cleanup_optimize": True, "mlflow_tracking_uri": "http://127.0.0.1:1",
                   "mlflow_backend_store_uri": "sqlite:///%s" % path}]}]))
    first = run_playbook(str(playbook))
    assert first.rc == 0, first.stdout[-3000:]
    optimized = [r for r in first.records if r["task"].endswith("Optimise the backend store")][-1]["result"]
    assert optimized["changed"] is True and "vacuum" in optimized["actions"]
    second = run_playbook(str(playbook))
    assert second.rc == 0, second.stdout[-3000:]
    again = [r for r in second.records if r["task"].endswith("Optimise the backend store")][-1]["result"]
    assert again["changed"] is False
