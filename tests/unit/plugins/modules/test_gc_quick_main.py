# -*- coding: utf-8 -*-
"""gc's main(): a SQLite store with nothing deleted is answered by gc_quick, without the full path."""
import importlib
import sqlite3
from unittest import mock

from harness.module_args import run_main

gc = importlib.import_module("ansible_collections.mlflowops.maintenance.plugins.modules.gc")


def store(tmp_path, run_stage):
    path = str(tmp_path / "mlflow.db")
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, lifecycle_stage TEXT)")
        connection.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, lifecycle_stage TEXT)")
        connection.execute("INSERT INTO experiments VALUES (1, 'active')")
        connection.execute("INSERT INTO runs VALUES ('r1', ?)", (run_stage,))
    connection.close()
    return "sqlite:///" + path


def run_gc_main(uri, check_mode=False, **args):
    full = mock.MagicMock(return_value=dict(changed=True, purged_runs=1))
    with mock.patch.multiple(gc, run_gc=full, GcStore=mock.MagicMock(), ArtifactDeleter=mock.MagicMock()):
        result = run_main(gc.main, dict(args, backend_store_uri=uri), check_mode=check_mode, name="gc")
    return result, full


def test_nothing_deleted_skips_the_full_path(tmp_path):
    uri = store(tmp_path, "active")
    for check_mode in (False, True):
        result, full = run_gc_main(uri, check_mode=check_mode)
        assert not full.called
        assert result["changed"] is False and result["purged_runs"] == 0 and result["failure_count"] == 0
        assert result["freed_bytes"] == (None if check_mode else 0)


def test_a_deleted_run_takes_the_full_path(tmp_path):
    result, full = run_gc_main(store(tmp_path, "deleted"))
    assert full.called and result["purged_runs"] == 1


def test_scoped_options_take_the_full_path(tmp_path):
    result, full = run_gc_main(store(tmp_path, "active"), run_ids=["r1"])
    assert full.called and result["changed"] is True
