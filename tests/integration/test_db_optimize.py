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


def sqlite_pages(path):
    """Page counts of a SQLite file, read by SQLite itself (not by the module under test)."""
    connection = sqlite3.connect(path)
    try:
        found = dict((name, connection.execute("PRAGMA %s" % name).fetchone()[0])
                     for name in ("page_count", "freelist_count", "page_size", "auto_vacuum"))
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if "runs" in tables:
            found["runs"] = connection.execute("SELECT count(*) FROM runs").fetchone()[0]
        return found
    finally:
        connection.close()


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
    pages_deleted = sqlite_pages(path)
    assert pages_deleted["freelist_count"] > pages_deleted["page_count"] * 0.5, pages_deleted
    args = {"backend_store_uri": server.backend_store_uri, "integrity_check": "quick"}

    predicted, _run = run_module("db_optimize", args, check=True)
    assert predicted["_status"] == "ok", predicted
    assert predicted["changed"] is True and predicted["plan"]["vacuum"] is True
    assert "vacuum" not in predicted["actions"]
    assert os.path.getsize(path) == size_deleted
    assert sqlite_pages(path) == pages_deleted

    first, _run = run_module("db_optimize", args)
    assert first["_status"] == "ok", first
    assert first["changed"] is True
    assert first["actions"] == ["quick_check", "vacuum", "analyze"]
    assert first["size_after_bytes"] < first["size_before_bytes"] * 0.5
    assert first["reclaimed_bytes"] == first["size_before_bytes"] - first["size_after_bytes"]
    assert os.path.getsize(path) == first["size_after_bytes"]
    # The file itself shrank and holds no free pages any more: VACUUM really ran.
    assert os.path.getsize(path) < size_deleted * 0.5
    after = sqlite_pages(path)
    assert after["freelist_count"] == 0 and after["page_count"] < pages_deleted["page_count"] * 0.5, after
    assert after["runs"] == RUNS - int(RUNS * 0.7)
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
    wrong, _run = run_module("db_optimize", {"backend_store_uri": "mssql://u@h/db"})
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
        pytest.skip("ENVIRONMENT: cannot mount a tmpfs here (needs root and mount rights), so this test did NOT run")
    try:
        path = str(mount / "mlflow.db")
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, pad TEXT)")
            connection.execute("CREATE TABLE runs (run_uuid TEXT)")
            connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
            connection.execute("INSERT INTO alembic_version VALUES ('test')")
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


def pg_table_stats(postgres, table, database="optimize_pg"):
    """PostgreSQL's own statistics of one table (flushed first, so they are current)."""
    postgres.psql("SELECT pg_stat_force_next_flush()", database)
    line = postgres.psql("SELECT n_dead_tup, vacuum_count, analyze_count, coalesce(last_vacuum::text, ''), "
                         "coalesce(last_analyze::text, '') FROM pg_stat_user_tables WHERE relname = '%s'" % table,
                         database)
    dead, vacuums, analyzes, last_vacuum, last_analyze = line.split("|")
    return dict(n_dead_tup=int(dead), vacuum_count=int(vacuums), analyze_count=int(analyzes),
                last_vacuum=last_vacuum, last_analyze=last_analyze)


def pg_relfilenodes(postgres, table, database="optimize_pg"):
    """{relation name: relfilenode} of a table and its indexes: a rewrite (VACUUM FULL, REINDEX) changes them."""
    out = postgres.psql("SELECT c.relname, c.relfilenode FROM pg_class c WHERE c.oid = '%s'::regclass "
                        "UNION ALL SELECT i.relname, i.relfilenode FROM pg_index x JOIN pg_class i "
                        "ON i.oid = x.indexrelid WHERE x.indrelid = '%s'::regclass" % (table, table), database)
    return dict(line.split("|") for line in out.splitlines() if line)


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
    stats_before = pg_table_stats(postgres, "metrics")
    files_before = pg_relfilenodes(postgres, "metrics")
    predicted, _run = run_module("db_optimize", args, check=True)
    assert predicted["_status"] == "ok", predicted
    assert predicted["changed"] is True and "metrics" in predicted["plan"]["tables"]
    assert predicted["actions"] == []
    # Check mode touched nothing: PostgreSQL's own statistics and files are as they were.
    assert pg_table_stats(postgres, "metrics") == stats_before
    assert pg_relfilenodes(postgres, "metrics") == files_before

    first, _run = run_module("db_optimize", args)
    assert first["_status"] == "ok", first
    assert first["changed"] is True
    assert "vacuum metrics" in first["actions"]
    assert "params" not in first["plan"]["tables"]
    metrics = [t for t in first["tables"] if t["name"] == "metrics"][0]
    assert metrics["vacuumed"] is True and metrics["n_dead_tup_after"] == 0
    assert first["store"]["uri"].count("***") == 1
    # PostgreSQL's own view: one more manual VACUUM and ANALYZE of metrics, and its dead tuples are gone.
    stats_after = pg_table_stats(postgres, "metrics")
    assert stats_after["vacuum_count"] == stats_before["vacuum_count"] + 1, (stats_before, stats_after)
    assert stats_after["analyze_count"] == stats_before["analyze_count"] + 1, (stats_before, stats_after)
    assert stats_after["last_vacuum"] and stats_after["last_vacuum"] != stats_before["last_vacuum"]
    assert stats_after["n_dead_tup"] == 0, stats_after
    assert pg_relfilenodes(postgres, "metrics") == files_before, "a plain VACUUM must not rewrite the table"
    params_stats = pg_table_stats(postgres, "params")

    # A password written inside the URI is masked too, even at -vvv.
    second, run = run_module("db_optimize", args, verbosity=3)
    assert second["changed"] is False, second["plan"]
    assert uri.split(":")[2].split("@")[0] not in run.stdout + run.stderr
    assert pg_table_stats(postgres, "metrics")["vacuum_count"] == stats_after["vacuum_count"]
    assert pg_table_stats(postgres, "params")["vacuum_count"] == params_stats["vacuum_count"]

    # VACUUM FULL and REINDEX on a chosen table, forced, with the psycopg (3) spelling of the URI.
    # The password given as db_password (the documented way) stays out of the output, even at -vvv.
    password = uri.split(":")[2].split("@")[0]
    bare = uri.replace("+psycopg2", "+psycopg").replace(":%s@" % password, "@")
    params_files = pg_relfilenodes(postgres, "params")
    full, run = run_module("db_optimize", {"backend_store_uri": bare, "db_password": password,
                                           "tables": ["params"], "force": True, "vacuum_full": True,
                                           "reindex": True}, verbosity=3)
    assert full["_status"] == "ok", full
    assert full["actions"] == ["vacuum_full params", "reindex params"]
    assert password not in run.stdout + run.stderr
    # VACUUM FULL rewrote the table: PostgreSQL gave it (and its indexes) new files.
    params_after = pg_relfilenodes(postgres, "params")
    assert set(params_after) == set(params_files)
    assert all(params_after[name] != params_files[name] for name in params_files), (params_files, params_after)

    # REINDEX alone on another table: its indexes get new files, the table keeps its own (plain VACUUM).
    tags_files = pg_relfilenodes(postgres, "tags")
    assert len(tags_files) > 1, tags_files
    reindexed, _run = run_module("db_optimize", {"backend_store_uri": uri, "tables": ["tags"], "force": True,
                                                 "reindex": True})
    assert reindexed["_status"] == "ok", reindexed
    assert reindexed["actions"] == ["vacuum tags", "reindex tags"]
    tags_after = pg_relfilenodes(postgres, "tags")
    assert tags_after["tags"] == tags_files["tags"]
    assert all(tags_after[name] != tags_files[name] for name in tags_files if name != "tags"), (tags_files, tags_after)


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


def test_cleanup_role_on_a_real_mlflow_store_shrinks_the_file(tmp_path):
    """The cleanup role on a live MLflow store: soft delete, gc, then db_optimize; the file really shrinks."""
    import json  # pylint: disable=import-outside-toplevel
    from harness.lifecycle import StoreReader, in_list  # pylint: disable=import-outside-toplevel
    from harness.runner import run_playbook  # pylint: disable=import-outside-toplevel
    from harness.services import api  # pylint: disable=import-outside-toplevel
    server = MlflowServer().start()
    try:
        reader = StoreReader(server)
        experiment = datagen.create_experiment(server.url, "cleanup-optimize")
        now = datagen.now_ms()
        old = datagen.add_runs(server.url, server.backend_store_uri, experiment, [
            datagen.RunSpec(start_time=now - 60 * datagen.DAY_MS, metrics=10, steps=20, params=5)
            for _i in range(400)])
        recent = datagen.add_runs(server.url, server.backend_store_uri, experiment, [
            datagen.RunSpec(metrics=10, steps=20, params=5) for _i in range(50)])
        datagen.write_artifacts(server.artifacts_destination, experiment, old + recent, {"model.bin": b"m" * 512})
        path = server.sqlite_path
        initial = sqlite_pages(path)
        size_initial = os.path.getsize(path)
        # Without auto_vacuum, deleting rows never shrinks a SQLite file: only VACUUM can.
        assert initial["auto_vacuum"] == 0 and initial["runs"] == 450
        playbook = tmp_path / "play.json"
        playbook.write_text(json.dumps([{
            "hosts": "localhost", "gather_facts": False,
            # The connection is inventory-style (play vars), as the shared mlflow role expects it.
            "vars": {"mlflow_tracking_uri": server.url, "mlflow_backend_store_uri": server.backend_store_uri,
                     "mlflow_artifacts_destination": server.artifacts_destination},
            "roles": [{"role": "mlflowops.maintenance.cleanup", "cleanup_older_than": "30d",
                       "cleanup_experiments": [experiment], "cleanup_gc_older_than": "0s",
                       "cleanup_optimize": True}]}]))
        first = run_playbook(str(playbook))
        assert first.rc == 0, first.stdout[-3000:]
        optimized = [r for r in first.records if r["task"].endswith("Optimise the backend store")][-1]["result"]
        assert optimized["changed"] is True and "vacuum" in optimized["actions"], optimized

        # The world: the old runs and their artifacts are gone, the recent ones are served, the file shrank.
        assert reader.scalar("SELECT count(*) FROM runs WHERE run_uuid IN %s" % in_list(old)) == 0
        assert reader.scalar("SELECT count(*) FROM metrics WHERE run_uuid IN %s" % in_list(old)) == 0
        assert not any(os.path.exists(os.path.join(server.artifacts_destination, experiment, run_id))
                       for run_id in old)
        after = sqlite_pages(path)
        assert after["freelist_count"] == 0, after
        assert after["runs"] == 50
        assert os.path.getsize(path) < size_initial * 0.5, (size_initial, os.path.getsize(path))
        assert os.path.getsize(path) == after["page_count"] * after["page_size"]
        served = api(server.url, "runs/search", {"experiment_ids": [experiment], "max_results": 1000})["runs"]
        assert sorted(run["info"]["run_id"] for run in served) == sorted(recent)

        size_optimized = os.path.getsize(path)
        second = run_playbook(str(playbook))
        assert second.rc == 0, second.stdout[-3000:]
        again = [r for r in second.records if r["task"].endswith("Optimise the backend store")][-1]["result"]
        assert again["changed"] is False
        assert os.path.getsize(path) == size_optimized
    finally:
        server.stop()
