# -*- coding: utf-8 -*-
"""db_optimize decisions, and the SQLite path on real files."""

import os
import sqlite3

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_plans import (
    check_vacuum_space,
    postgres_plan,
    postgres_statements,
    sqlite_plan,
    vacuum_space_needed,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_sqlite import optimize_sqlite


def test_sqlite_plan_vacuums_at_or_above_threshold():
    plan = sqlite_plan(page_count=1000, freelist_count=100, page_size=4096, min_free_ratio=0.1)
    assert plan["vacuum"] is True
    assert plan["reclaimable_bytes"] == 100 * 4096
    assert plan["free_ratio"] == 0.1


def test_sqlite_plan_skips_below_ratio_or_bytes():
    assert sqlite_plan(1000, 99, 4096, 0.1)["vacuum"] is False
    below_bytes = sqlite_plan(1000, 500, 4096, 0.1, min_free_bytes=10 * 1024 * 1024)
    assert below_bytes["vacuum"] is False
    assert "bytes" in below_bytes["reason"]


def test_sqlite_plan_empty_and_no_free_pages_and_force():
    assert sqlite_plan(0, 0, 4096, 0.0)["vacuum"] is False
    assert sqlite_plan(10, 0, 4096, 0.0)["vacuum"] is False
    assert sqlite_plan(10, 0, 4096, 0.5, force=True)["vacuum"] is True


def test_space_needed_and_refusal():
    assert vacuum_space_needed(100, 20, 5) == 125
    assert check_vacuum_space(100, 20, 5, 125, "/x") == 125
    with pytest.raises(MaintenanceError) as info:
        check_vacuum_space(100, 20, 5, 124, "/x")
    assert "not enough free disk space for VACUUM on /x" in info.value.msg


def test_postgres_plan_thresholds():
    tables = [
        dict(name="metrics", n_live_tup=1000, n_dead_tup=5000),
        dict(name="params", n_live_tup=100000, n_dead_tup=5000),   # 4.8% dead
        dict(name="tags", n_live_tup=10, n_dead_tup=10),            # too few
        dict(name="runs", n_live_tup=0, n_dead_tup=0),
    ]
    assert postgres_plan(tables, 1000, 0.1) == ["metrics"]
    assert postgres_plan(tables, 1, 0.01) == ["metrics", "params", "tags"]
    assert postgres_plan(tables, 10 ** 9, 1.0, force=True) == ["metrics", "params", "tags", "runs"]


def test_postgres_statements():
    assert postgres_statements("t") == [("vacuum", "VACUUM (ANALYZE) {}")]
    assert postgres_statements("t", analyze=False) == [("vacuum", "VACUUM {}")]
    assert postgres_statements("t", vacuum_full=True, reindex=True) == [
        ("vacuum_full", "VACUUM (FULL, ANALYZE) {}"), ("reindex", "REINDEX TABLE {}")]


def _make_db(path, rows=20000, delete_fraction=0.6, wal=False):
    connection = sqlite3.connect(path)
    if wal:
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, key TEXT, value REAL, pad TEXT)")
    # what makes it an MLflow store for db_optimize (it refuses other files)
    connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
    connection.execute("INSERT INTO alembic_version VALUES ('test')")
    connection.execute("CREATE TABLE runs (run_uuid TEXT)")
    connection.executemany("INSERT INTO metrics (key, value, pad) VALUES (?, ?, ?)",
                           (("m%d" % i, float(i), "x" * 200) for i in range(rows)))
    connection.commit()
    connection.execute("DELETE FROM metrics WHERE id <= ?", (int(rows * delete_fraction),))
    connection.commit()
    connection.close()


@pytest.mark.parametrize("wal", [False, True])
def test_optimize_sqlite_shrinks_then_is_idempotent(tmp_path, wal):
    path = str(tmp_path / "mlflow.db")
    _make_db(path, wal=wal)
    predicted = optimize_sqlite(path, check_mode=True, min_free_bytes=0)
    size_unchanged = os.path.getsize(path)
    first = optimize_sqlite(path, min_free_bytes=0)
    second = optimize_sqlite(path, min_free_bytes=0)
    assert predicted["changed"] is True and predicted["actions"] == []
    assert predicted["plan"]["vacuum"] is True
    assert first["changed"] is True
    assert "vacuum" in first["actions"] and "analyze" in first["actions"]
    assert first["size_after_bytes"] < first["size_before_bytes"] * 0.6
    assert first["size_before_bytes"] >= size_unchanged
    assert first["freelist_count"] == 0
    assert first["journal_mode"] == ("wal" if wal else "delete")
    assert [t["name"] for t in first["tables"]] == ["alembic_version", "metrics", "runs"]
    assert first["tables"][1]["rows_estimate"] == 8000
    assert second["changed"] is False and second["actions"] == []


def test_optimize_sqlite_refuses_without_space(tmp_path):
    path = str(tmp_path / "mlflow.db")
    _make_db(path)
    before = os.path.getsize(path)
    with pytest.raises(MaintenanceError) as info:
        optimize_sqlite(path, min_free_bytes=0, free_bytes_fn=lambda _path: 1024)
    assert "not enough free disk space" in info.value.msg
    assert os.path.getsize(path) == before


def test_optimize_sqlite_missing_file_is_not_created(tmp_path):
    path = str(tmp_path / "absent.db")
    with pytest.raises(MaintenanceError) as info:
        optimize_sqlite(path)
    assert "does not exist" in info.value.msg
    assert not os.path.exists(path)


def test_optimize_sqlite_read_only_file(tmp_path):
    path = str(tmp_path / "mlflow.db")
    _make_db(path, rows=100)
    os.chmod(path, 0o444)
    with pytest.raises(MaintenanceError) as info:
        optimize_sqlite(path)
    assert "read-only" in info.value.msg


def test_optimize_sqlite_not_a_database(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MaintenanceError) as info:
        optimize_sqlite(str(path))
    assert "cannot open" in info.value.msg or "not a database" in info.value.msg


def test_integrity_check_runs_first(tmp_path):
    path = str(tmp_path / "mlflow.db")
    _make_db(path, rows=100, delete_fraction=0.0)
    result = optimize_sqlite(path, integrity_check="quick")
    assert result["actions"][0] == "quick_check"
    assert result["integrity"]["ok"] is True
