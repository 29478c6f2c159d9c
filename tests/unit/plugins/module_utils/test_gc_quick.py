# -*- coding: utf-8 -*-
"""gc's cheap first look (gc_quick): the counts, the decision, and that its empty result is run_gc's."""
import sqlite3

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import gc_quick

sqlalchemy = pytest.importorskip("sqlalchemy")

from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_job import run_gc  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_store import GcStore  # noqa: E402


def make_store(path, run_stage="active", experiment_stage="active", model_stage=None):
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT, "
                           "lifecycle_stage TEXT, last_update_time BIGINT, artifact_location TEXT)")
        connection.execute("CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, experiment_id INTEGER "
                           "REFERENCES experiments(experiment_id), lifecycle_stage TEXT, deleted_time BIGINT, "
                           "artifact_uri TEXT)")
        connection.execute("INSERT INTO experiments VALUES (1, 'a', ?, 0, '/nonexistent')", (experiment_stage,))
        connection.execute("INSERT INTO runs VALUES ('r1', 1, ?, NULL, '/nonexistent/r1')", (run_stage,))
        if model_stage:
            connection.execute("CREATE TABLE logged_models (model_id TEXT PRIMARY KEY, experiment_id INTEGER, "
                               "lifecycle_stage TEXT, last_updated_timestamp_ms BIGINT, artifact_location TEXT)")
            connection.execute("INSERT INTO logged_models VALUES ('m1', 1, ?, 0, '/nonexistent/m1')", (model_stage,))
    connection.close()
    return path


def test_counts_of_a_store_with_nothing_deleted(tmp_path):
    path = make_store(str(tmp_path / "a b?c.db"))
    assert gc_quick.sqlite_deleted_counts(path) == dict(runs=0, experiments=0, logged_models=None)


@pytest.mark.parametrize("stages,key", [
    (dict(run_stage="deleted"), "runs"),
    (dict(experiment_stage="deleted"), "experiments"),
    (dict(model_stage="deleted"), "logged_models"),
])
def test_counts_see_every_deleted_kind(tmp_path, stages, key):
    counts = gc_quick.sqlite_deleted_counts(make_store(str(tmp_path / "m.db"), **stages))
    assert counts[key] == 1
    assert not gc_quick.nothing_to_purge(counts)


def test_unreadable_or_foreign_stores_give_no_answer(tmp_path):
    assert gc_quick.sqlite_deleted_counts(str(tmp_path / "missing.db")) is None
    other = str(tmp_path / "other.db")
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert gc_quick.sqlite_deleted_counts(other) is None


def test_nothing_to_purge_follows_the_purge_options():
    assert gc_quick.nothing_to_purge(dict(runs=0, experiments=0, logged_models=None))
    assert not gc_quick.nothing_to_purge(dict(runs=0, experiments=2, logged_models=0))
    assert gc_quick.nothing_to_purge(dict(runs=0, experiments=2, logged_models=0), purge_experiments=False)
    assert gc_quick.nothing_to_purge(dict(runs=0, experiments=0, logged_models=3), purge_logged_models=False)
    assert not gc_quick.nothing_to_purge(dict(runs=1, experiments=0, logged_models=0), False, False)


@pytest.mark.parametrize("params,is_sqlite,applies", [
    (dict(), True, True),
    (dict(), False, False),
    (dict(jobs=True), True, False),
    (dict(run_ids=["r1"]), True, False),
    (dict(experiment_ids=["1"]), True, False),
    (dict(logged_model_ids=["m"]), True, False),
    (dict(job_ids=["j"]), True, False),
    (dict(workspace=["all"]), True, False),
    (dict(run_ids=[], workspace=None, jobs=False), True, True),
])
def test_quick_check_applies_only_to_whole_sqlite_stores(params, is_sqlite, applies):
    assert gc_quick.quick_check_applies(params, is_sqlite) is applies


class NoDeleter:
    def delete(self, *args):
        raise AssertionError("nothing should be deleted")


@pytest.mark.parametrize("check_mode", [True, False])
def test_empty_result_is_what_run_gc_returns_for_nothing(tmp_path, check_mode):
    path = make_store(str(tmp_path / "m.db"), model_stage="active")
    assert gc_quick.nothing_to_purge(gc_quick.sqlite_deleted_counts(path))
    store = GcStore("sqlite:///%s" % path)
    try:
        full = run_gc(store, NoDeleter(), check_mode=check_mode)
    finally:
        store.close()
    assert gc_quick.empty_result(check_mode) == full
