# -*- coding: utf-8 -*-
"""gc of MLflow 3 logged models and job records on a miniature schema (no cascades, as on MySQL)."""

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_job import run_gc  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_store import GcStore  # noqa: E402


class FakeDeleter:
    def __init__(self, fail=()):
        self.deleted = []
        self.fail = set(fail)

    def delete(self, uri, ident=None):
        if ident in self.fail:
            raise OSError("permission denied")
        self.deleted.append(uri)
        return 10


def make_store(path):
    engine = sqlalchemy.create_engine("sqlite:///%s" % path)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT, lifecycle_stage TEXT, "
                          "last_update_time BIGINT, workspace TEXT DEFAULT 'default')")
        c.exec_driver_sql("CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, experiment_id INTEGER, "
                          "lifecycle_stage TEXT, deleted_time BIGINT, artifact_uri TEXT)")
        c.exec_driver_sql("CREATE TABLE logged_models (model_id VARCHAR(36) PRIMARY KEY, experiment_id INTEGER "
                          "REFERENCES experiments(experiment_id), artifact_location TEXT, lifecycle_stage TEXT, "
                          "last_updated_timestamp_ms BIGINT)")
        for table in ("logged_model_params", "logged_model_tags", "logged_model_metrics"):
            c.exec_driver_sql("CREATE TABLE %s (k TEXT, model_id VARCHAR(36) REFERENCES logged_models(model_id))" % table)
        c.exec_driver_sql("CREATE TABLE inputs (input_uuid TEXT, source_type TEXT, source_id TEXT, "
                          "destination_type TEXT, destination_id TEXT)")
        c.exec_driver_sql("CREATE TABLE input_tags (input_uuid TEXT, name TEXT, value TEXT)")
        c.exec_driver_sql("CREATE TABLE entity_associations (association_id TEXT, source_type TEXT, source_id TEXT, "
                          "destination_type TEXT, destination_id TEXT)")
        c.exec_driver_sql("CREATE TABLE jobs (id TEXT PRIMARY KEY, creation_time BIGINT, status INTEGER, "
                          "workspace TEXT DEFAULT 'default')")
        c.exec_driver_sql("INSERT INTO experiments VALUES (1, 'a', 'active', 0, 'default'), (2, 'b', 'active', 0, 'team')")
        models = [("m%d" % i, 1 if i < 6 else 2, "mlflow-artifacts:/1/models/m%d/artifacts" % i,
                   "deleted" if i != 5 else "active", 1000 * i) for i in range(8)]
        c.exec_driver_sql("INSERT INTO logged_models VALUES (?, ?, ?, ?, ?)", models)
        for table in ("logged_model_params", "logged_model_tags", "logged_model_metrics"):
            c.exec_driver_sql("INSERT INTO %s VALUES (?, ?)" % table, [("k", m[0]) for m in models])
        c.exec_driver_sql("INSERT INTO inputs VALUES ('i1', 'RUN_OUTPUT', 'r1', 'MODEL_OUTPUT', 'm0')")
        c.exec_driver_sql("INSERT INTO input_tags VALUES ('i1', 'n', 'v')")
        c.exec_driver_sql("INSERT INTO entity_associations VALUES ('a1', 'model', 'm1', 'trace', 't1')")
        c.exec_driver_sql("INSERT INTO jobs VALUES ('j1', 100, 2, 'default'), ('j2', 100, 1, 'default'), "
                          "('j3', 9000, 3, 'default'), ('j4', 100, 5, 'team')")
    engine.dispose()
    return "sqlite:///%s" % path


def count(store, sql):
    with store.engine.connect() as c:
        return c.exec_driver_sql(sql).scalar()


def test_models_purged_from_every_table_with_cutoff_check_mode_and_failures(tmp_path):
    store = GcStore(make_store(tmp_path / "s.db"))
    children = {t.name for t, _c, _o in store.model_children}
    assert children == {"logged_model_params", "logged_model_tags", "logged_model_metrics"}
    checked = run_gc(store, FakeDeleter(), cutoff=3000, check_mode=True, jobs=True)
    assert checked["purged_logged_models"] == 4 and checked["purged_jobs"] == 2  # m0..m3; j1, j4 (not j2 running, j3 new)
    assert count(store, "SELECT count(*) FROM logged_models") == 8

    deleter = FakeDeleter(fail={"m2"})
    result = run_gc(store, deleter, cutoff=3000, jobs=True, batch_size=2)
    assert result["purged_logged_models"] == 3 and result["failure_count"] == 1
    assert result["failures"][0]["id"] == "m2" and result["failures"][0]["kind"] == "logged_model"
    assert sorted(result["logged_model_ids"]) == ["m0", "m1", "m3"]
    assert count(store, "SELECT count(*) FROM logged_models WHERE model_id IN ('m0','m1','m3')") == 0
    for table in ("logged_model_params", "logged_model_tags", "logged_model_metrics"):
        assert count(store, "SELECT count(*) FROM %s WHERE model_id IN ('m0','m1','m3')" % table) == 0
        assert count(store, "SELECT count(*) FROM %s" % table) == 5
    assert count(store, "SELECT count(*) FROM inputs") == 0 and count(store, "SELECT count(*) FROM input_tags") == 0
    assert count(store, "SELECT count(*) FROM entity_associations") == 0
    assert count(store, "SELECT group_concat(id) FROM jobs") == "j2,j3"
    store.close()


def test_named_models_must_be_deleted_and_workspaces_scope(tmp_path):
    store = GcStore(make_store(tmp_path / "s.db"))
    with pytest.raises(MaintenanceError, match="Active logged models: m5"):
        run_gc(store, FakeDeleter(), logged_model_ids=["m5", "m1"])
    with pytest.raises(MaintenanceError, match="Unknown logged models: zz"):
        run_gc(store, FakeDeleter(), logged_model_ids=["zz"])
    assert store.workspace_names() == ["default", "team"]
    store.set_workspaces(["team"])
    result = run_gc(store, FakeDeleter(), jobs=True)
    assert sorted(result["logged_model_ids"]) == ["m6", "m7"] and result["purged_jobs"] == 1
    assert count(store, "SELECT count(*) FROM logged_models") == 6
    store.set_workspaces(None)
    named = run_gc(store, FakeDeleter(), logged_model_ids=["m1"])
    assert named["logged_model_ids"] == ["m1"] and named["purged_runs"] == 0
    store.close()
