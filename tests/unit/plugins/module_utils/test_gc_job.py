# -*- coding: utf-8 -*-
import itertools
import os

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_delete import ArtifactDeleter  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_locations import (  # noqa: E402
    mlflow_artifacts_path,
    resolve_artifact_location,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, DeadlineExceeded  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_job import run_gc  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_store import GcStore, batched  # noqa: E402


@pytest.mark.parametrize("uri,path", [
    ("mlflow-artifacts:/1/abc/artifacts", "1/abc/artifacts"),
    ("mlflow-artifacts://host:5000/1/abc/artifacts", "1/abc/artifacts"),
    ("mlflow-artifacts:/", ""),
])
def test_mlflow_artifacts_path(uri, path):
    assert mlflow_artifacts_path(uri) == path


def test_resolve_artifact_location():
    assert resolve_artifact_location("mlflow-artifacts:/1/r/artifacts", "/srv/art/") == ("local", "/srv/art/1/r/artifacts")
    assert resolve_artifact_location("mlflow-artifacts:/1/r/artifacts", "s3://b/pre") == ("s3", ("b", "pre/1/r/artifacts/"))
    assert resolve_artifact_location("mlflow-artifacts:/1/r/artifacts", None) == ("mlflow", "mlflow-artifacts:/1/r/artifacts")
    assert resolve_artifact_location("s3://b/x/1/r/artifacts", None) == ("s3", ("b", "x/1/r/artifacts/"))
    assert resolve_artifact_location("file:///srv/a%20b/1", None) == ("local", "/srv/a b/1")
    assert resolve_artifact_location("/srv/a", None) == ("local", "/srv/a")
    assert resolve_artifact_location("gs://b/x", None) == ("mlflow", "gs://b/x")
    assert resolve_artifact_location("", None) == ("none", None)


def test_batched():
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_local_artifacts_deleted_with_size(tmp_path):
    target = tmp_path / "1" / "r" / "artifacts"
    (target / "m").mkdir(parents=True)
    (target / "m" / "a").write_bytes(b"x" * 100)
    (target / "b").write_bytes(b"y" * 10)
    deleter = ArtifactDeleter(str(tmp_path))
    assert deleter.delete("mlflow-artifacts:/1/r/artifacts", "r") == 110
    assert not target.exists() and not target.parent.exists() and (tmp_path / "1").exists()
    assert deleter.delete("mlflow-artifacts:/1/r/artifacts") == 0


def test_unresolvable_proxied_uri_is_an_error(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(MaintenanceError):
        ArtifactDeleter().delete("mlflow-artifacts:/1/r/artifacts")


def make_store(path):
    """A miniature MLflow schema: the run tables, dataset inputs, and a SET NULL reference."""
    engine = sqlalchemy.create_engine("sqlite:///%s" % path)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT, "
                          "lifecycle_stage TEXT, last_update_time BIGINT)")
        c.exec_driver_sql("CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, experiment_id INTEGER "
                          "REFERENCES experiments(experiment_id), lifecycle_stage TEXT, deleted_time BIGINT, "
                          "artifact_uri TEXT)")
        for table in ("metrics", "params", "tags", "latest_metrics"):
            c.exec_driver_sql("CREATE TABLE %s (key TEXT, run_uuid VARCHAR(32) REFERENCES runs(run_uuid))" % table)
        c.exec_driver_sql("CREATE TABLE issues (id INTEGER PRIMARY KEY, source_run_id VARCHAR(32) "
                          "REFERENCES runs(run_uuid) ON DELETE SET NULL)")
        c.exec_driver_sql("CREATE TABLE inputs (input_uuid TEXT, source_type TEXT, source_id TEXT, "
                          "destination_type TEXT, destination_id TEXT)")
        c.exec_driver_sql("CREATE TABLE input_tags (input_uuid TEXT, name TEXT, value TEXT)")
        c.exec_driver_sql("INSERT INTO experiments VALUES (1, 'a', 'active', 0)")
        rows = [("r%02d" % i, 1, "deleted" if i < 8 else "active", None if i == 7 else 1000 * i,
                 "mlflow-artifacts:/1/r%02d/artifacts" % i) for i in range(10)]
        c.exec_driver_sql("INSERT INTO runs VALUES (?, ?, ?, ?, ?)", rows)
        for table in ("metrics", "params", "tags", "latest_metrics"):
            c.exec_driver_sql("INSERT INTO %s VALUES ('k', ?)" % table, [(r[0],) for r in rows])
        c.exec_driver_sql("INSERT INTO issues VALUES (1, 'r01')")
        c.exec_driver_sql("INSERT INTO inputs VALUES ('i1', 'DATASET', 'd1', 'RUN', 'r02')")
        c.exec_driver_sql("INSERT INTO input_tags VALUES ('i1', 'mlflow.data.context', 'train')")
    engine.dispose()
    return GcStore("sqlite:///%s" % path)


def count(store, sql):
    with store.engine.connect() as c:
        return c.exec_driver_sql(sql).scalar()


def test_gc_purges_every_run_table_in_batches(tmp_path):
    store = make_store(str(tmp_path / "m.db"))
    art = tmp_path / "art"
    for i in range(10):
        (art / "1" / ("r%02d" % i) / "artifacts").mkdir(parents=True)
        (art / "1" / ("r%02d" % i) / "artifacts" / "f").write_bytes(b"z" * 7)
    deleter = ArtifactDeleter(str(art))
    planned = run_gc(store, deleter, cutoff=5000, batch_size=2, check_mode=True)
    assert planned["purged_runs"] == 6 and planned["undated_runs"] == 1 and planned["changed"]
    assert count(store, "SELECT count(*) FROM runs") == 10
    result = run_gc(store, deleter, cutoff=5000, batch_size=2)
    assert sorted(result["run_ids"]) == ["r00", "r01", "r02", "r03", "r04", "r05"]
    assert result["freed_bytes"] == 6 * 7 and result["failures"] == []
    assert result["undated_run_ids"] == ["r07"]
    for table in ("metrics", "params", "tags", "latest_metrics", "runs"):
        assert count(store, "SELECT count(*) FROM %s WHERE run_uuid <= 'r05'" % table) == 0
        assert count(store, "SELECT count(*) FROM %s WHERE run_uuid > 'r05'" % table) == 4
    assert count(store, "SELECT source_run_id FROM issues") is None
    assert count(store, "SELECT count(*) FROM inputs") == 0 and count(store, "SELECT count(*) FROM input_tags") == 0
    assert not (art / "1" / "r00").exists() and (art / "1" / "r06").exists()
    again = run_gc(store, deleter, cutoff=5000)
    assert again["changed"] is False and again["purged_runs"] == 0
    undated = run_gc(store, deleter, include_undated=True)
    assert sorted(undated["run_ids"]) == ["r06", "r07"]
    store.close()


def test_gc_carries_on_past_a_failing_run(tmp_path):
    store = make_store(str(tmp_path / "m.db"))

    class Flaky(ArtifactDeleter):
        def delete(self, artifact_uri, run_id=None):
            if "/r03/" in artifact_uri:
                raise OSError("disk on fire")
            return 1

    result = run_gc(store, Flaky(), batch_size=3)
    assert result["purged_runs"] == 6 and result["failure_count"] == 1 and not result["failures_truncated"]
    assert result["failures"][0]["id"] == "r03" and "disk on fire" in result["failures"][0]["msg"]
    assert count(store, "SELECT count(*) FROM runs WHERE run_uuid = 'r03'") == 1
    store.close()


def test_run_ids_must_be_deleted_runs(tmp_path):
    store = make_store(str(tmp_path / "m.db"))
    with pytest.raises(MaintenanceError) as info:
        run_gc(store, ArtifactDeleter(str(tmp_path)), run_ids=["r01", "r09", "nope"])
    assert "nope" in info.value.msg and "r09" in info.value.msg
    assert count(store, "SELECT count(*) FROM runs") == 10
    result = run_gc(store, ArtifactDeleter(str(tmp_path)), run_ids=["r01"])
    assert result["run_ids"] == ["r01"]
    store.close()


def test_not_an_mlflow_database(tmp_path):
    path = str(tmp_path / "x.db")
    engine = sqlalchemy.create_engine("sqlite:///%s" % path)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    with pytest.raises(MaintenanceError):
        GcStore("sqlite:///%s" % path)
    assert os.path.exists(path)


def test_gc_stops_at_its_deadline_with_what_it_did(tmp_path):
    store = make_store(str(tmp_path / "m.db"))
    ticks = itertools.chain([0.0, 0.0], itertools.repeat(100.0))  # start, first batch check, then past it
    deadline = Deadline(10, clock=lambda: next(ticks))
    with pytest.raises(DeadlineExceeded) as info:
        run_gc(store, ArtifactDeleter(str(tmp_path)), cutoff=5000, batch_size=2, deadline=deadline)
    # One batch of two went before the clock passed the deadline; the rows of the rest are untouched.
    assert info.value.details["purged_runs"] == 2
    assert count(store, "SELECT count(*) FROM runs") == 8
    rerun = run_gc(store, ArtifactDeleter(str(tmp_path)), cutoff=5000, batch_size=2)
    assert rerun["purged_runs"] == 4
    store.close()


def test_s3_client_comes_from_the_shared_factory(monkeypatch):
    from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_delete
    seen = {}

    def fake_build_client(params, pool_size=16):
        seen.update(params=params, pool_size=pool_size)
        return "client"

    monkeypatch.setattr(artifact_delete, "build_client", fake_build_client)
    deleter = ArtifactDeleter("s3://b/p", s3_params={"endpoint_url": "http://127.0.0.1:9", "s3_retries": 1}, pool_size=4)
    assert deleter.s3() == "client" and deleter.s3() == "client"
    assert seen == {"params": {"endpoint_url": "http://127.0.0.1:9", "s3_retries": 1}, "pool_size": 4}
