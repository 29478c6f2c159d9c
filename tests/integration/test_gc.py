# -*- coding: utf-8 -*-
"""gc through Ansible against real stores: SQLite with artifacts on disk, PostgreSQL with artifacts in S3.

Every call names the test's own experiments (experiment_ids), because the session servers are shared.
"""

import os
import uuid

from harness import datagen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_module
from harness.services import api

DAY = datagen.DAY_MS
RUN_TABLES = ("metrics", "latest_metrics", "params", "tags")
FILES = {"model/model.pkl": b"m" * 2048, "metrics.json": b"{}" * 50}
FILE_BYTES = sum(len(data) for data in FILES.values())


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def rest_run_with_dataset_input(server, experiment_id):
    """A run made through the REST API with metrics, params, tags and a dataset input, then soft-deleted."""
    run_id = api(server.url, "runs/create", {"experiment_id": experiment_id,
                                             "start_time": datagen.now_ms() - 20 * DAY})["run"]["info"]["run_id"]
    api(server.url, "runs/log-batch", {"run_id": run_id, "metrics": [
        {"key": "loss", "value": 0.5, "timestamp": 1, "step": 0}], "params": [{"key": "lr", "value": "0.1"}],
        "tags": [{"key": "team", "value": "gc"}]})
    api(server.url, "runs/log-inputs", {"run_id": run_id, "datasets": [{
        "dataset": {"name": "train", "digest": uuid.uuid4().hex[:8], "source_type": "local",
                    "source": '{"uri": "/data/train.csv"}'},
        "tags": [{"key": "mlflow.data.context", "value": "training"}]}]})
    api(server.url, "runs/delete", {"run_id": run_id})
    return run_id


def count_rows(reader, run_ids):
    counts = dict((table, reader.scalar("SELECT count(*) FROM %s WHERE run_uuid IN %s" % (table, in_list(run_ids))))
                  for table in RUN_TABLES + ("runs",))
    counts["inputs"] = reader.scalar("SELECT count(*) FROM inputs WHERE destination_id IN %s" % in_list(run_ids))
    return counts


def test_gc_sqlite_disk_rows_artifacts_undated_check_mode_and_idempotence(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("gc"))
    now = datagen.now_ms()
    uri = server.backend_store_uri
    old = datagen.add_runs(server.url, uri, exp, [datagen.RunSpec(
        start_time=now - 40 * DAY, lifecycle_stage="deleted", deleted_time=now - 10 * DAY - i, metrics=5, steps=20)
        for i in range(150)])
    rest_run = rest_run_with_dataset_input(server, exp)
    reader_sql = "UPDATE runs SET deleted_time = %d WHERE run_uuid = '%s'" % (now - 10 * DAY, rest_run)
    import sqlite3  # pylint: disable=import-outside-toplevel
    with sqlite3.connect(server.sqlite_path, timeout=60) as connection:
        connection.execute(reader_sql)
    young = datagen.add_runs(server.url, uri, exp, [datagen.RunSpec(lifecycle_stage="deleted", deleted_time=now - 3600)
                                                    for _unused in range(10)])
    undated = datagen.add_runs(server.url, uri, exp, [datagen.RunSpec(lifecycle_stage="deleted") for _unused in range(4)])
    active = datagen.add_runs(server.url, uri, exp, [datagen.RunSpec(start_time=now - 90 * DAY) for _unused in range(10)])
    purged = old + [rest_run]
    datagen.write_artifacts(server.artifacts_destination, exp, purged + young + undated + active, FILES)
    before = count_rows(reader, purged)
    assert before["inputs"] == 1 and before["metrics"] == 150 * 5 * 20 + 1
    args = {"backend_store_uri": uri, "artifacts_destination": server.artifacts_destination, "older_than": "2d",
            "experiment_ids": [exp], "batch_size": 40}

    def run_dir(run_id):
        return os.path.join(server.artifacts_destination, datagen.artifact_key(exp, run_id, ""))

    planned, _run = run_module("gc", args, check=True)
    assert planned["_status"] == "ok", planned.get("msg")
    assert planned["changed"] is True and planned["purged_runs"] == 151
    assert set(planned["run_ids"]) == set(purged)
    assert planned["undated_runs"] == 4 and set(planned["undated_run_ids"]) == set(undated)
    assert count_rows(reader, purged) == before
    assert all(os.path.isdir(run_dir(run_id)) for run_id in purged)

    files_on_disk = [os.path.join(run_dir(run_id), name) for run_id in purged for name in FILES]
    assert sum(os.path.getsize(path) for path in files_on_disk) == 151 * FILE_BYTES

    result, _run = run_module("gc", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["purged_runs"] == 151 and result["failures"] == [] and result["changed"] is True
    assert result["freed_bytes"] == 151 * FILE_BYTES
    assert not any(os.path.exists(path) for path in files_on_disk)
    assert count_rows(reader, purged) == dict((table, 0) for table in RUN_TABLES + ("runs", "inputs"))
    assert not any(os.path.exists(os.path.dirname(run_dir(run_id).rstrip("/"))) for run_id in purged)
    kept = young + undated + active
    assert reader.scalar("SELECT count(*) FROM runs WHERE run_uuid IN %s" % in_list(kept)) == len(kept)
    assert all(os.path.isdir(run_dir(run_id)) for run_id in kept)

    again, _run = run_module("gc", args)
    assert again["changed"] is False and again["purged_runs"] == 0 and again["undated_runs"] == 4

    legacy, _run = run_module("gc", dict(args, include_undated=True))
    assert legacy["purged_runs"] == 4 and set(legacy["run_ids"]) == set(undated)
    assert reader.scalar("SELECT count(*) FROM runs WHERE run_uuid IN %s" % in_list(undated)) == 0


def test_gc_purges_deleted_experiment_with_its_runs(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("gc-exp"))
    runs = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec() for _unused in range(12)])
    datagen.write_artifacts(server.artifacts_destination, exp, runs, FILES)
    other = datagen.create_experiment(server.url, unique("gc-exp-kept"))
    kept = datagen.add_runs(server.url, server.backend_store_uri, other, [datagen.RunSpec() for _unused in range(2)])
    datagen.write_artifacts(server.artifacts_destination, other, kept, FILES)

    def run_files(experiment_id, run_ids):
        return [os.path.join(server.artifacts_destination, datagen.artifact_key(experiment_id, run_id, name))
                for run_id in run_ids for name in FILES]

    assert all(os.path.isfile(path) for path in run_files(exp, runs))
    api(server.url, "experiments/delete", {"experiment_id": exp})
    args = {"backend_store_uri": server.backend_store_uri, "artifacts_destination": server.artifacts_destination,
            "experiment_ids": [exp]}
    result, _run = run_module("gc", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["purged_experiments"] == 1 and result["purged_runs"] == 12
    assert reader.scalar("SELECT count(*) FROM experiments WHERE experiment_id = %s" % exp) == 0
    assert reader.scalar("SELECT count(*) FROM runs WHERE experiment_id = %s" % exp) == 0
    # The artifacts of every purged run are gone from disk, with their run folders; others are untouched.
    assert not any(os.path.exists(path) for path in run_files(exp, runs))
    assert not any(os.path.exists(os.path.join(server.artifacts_destination, str(exp), run_id)) for run_id in runs)
    assert all(os.path.isfile(path) for path in run_files(other, kept))
    again, _run = run_module("gc", args)
    assert again["_status"] == "failed" and "unknown experiment" in again["msg"]


def test_gc_postgres_s3(mlflow_pg_s3, postgres, moto_s3):
    server = mlflow_pg_s3
    reader = StoreReader(server, postgres)
    s3 = moto_s3.client()
    exp = datagen.create_experiment(server.url, unique("gc-pg"))
    now = datagen.now_ms()
    old = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec(
        lifecycle_stage="deleted", deleted_time=now - 5 * DAY, metrics=4, steps=10) for _unused in range(100)])
    active = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec() for _unused in range(5)])
    datagen.write_artifacts(server.artifacts_destination, exp, old + active, FILES, s3_client=s3)

    def objects(run_ids):
        total = 0
        for run_id in run_ids:
            total += s3.list_objects_v2(Bucket=server.bucket, Prefix="mlflow/%s/%s/" % (exp, run_id)).get("KeyCount", 0)
        return total

    assert objects(old) == 200 and objects(active) == 10
    # The plain postgresql:// spelling: the module picks the installed driver.
    plain_uri = "postgresql://" + server.backend_store_uri.split("://", 1)[1]
    args = {"backend_store_uri": plain_uri, "artifacts_destination": server.artifacts_destination,
            "older_than": "1d", "experiment_ids": [exp], "concurrency": 16}
    result, run = run_module("gc", args, module_env=moto_s3.env, verbosity=3)
    assert result["_status"] == "ok", result.get("msg")
    assert result["purged_runs"] == 100 and result["failures"] == []
    assert result["freed_bytes"] == 100 * FILE_BYTES
    password = server.backend_store_uri.split(":", 2)[2].split("@", 1)[0]
    assert password not in run.stdout + run.stderr
    assert reader.scalar("SELECT count(*) FROM runs WHERE experiment_id = %s" % exp) == 5
    for table in RUN_TABLES:
        assert reader.scalar("SELECT count(*) FROM %s WHERE run_uuid IN %s" % (table, in_list(old))) == 0
    assert objects(old) == 0
    assert objects(active) == 10
    again, _run = run_module("gc", args, module_env=moto_s3.env)
    assert again["changed"] is False and again["purged_runs"] == 0
