# -*- coding: utf-8 -*-
"""artifacts_audit through Ansible against real MLflow servers: artifacts on disk and in S3."""

import os
import shutil
import uuid

from harness import datagen
from harness.plays import module_play

FILES = {"model/weights.bin": b"w" * 300, "metrics.json": b"{}"}


def populate(server, s3_client=None):
    """An experiment with 4 active runs and 1 deleted one, all with artifacts."""
    experiment_id = datagen.create_experiment(server.url, "audit-%s" % uuid.uuid4().hex[:8])
    specs = [datagen.RunSpec() for _index in range(4)]
    specs.append(datagen.RunSpec(lifecycle_stage="deleted", deleted_time=datagen.now_ms()))
    run_ids = datagen.add_runs(server.url, server.backend_store_uri, experiment_id, specs)
    datagen.write_artifacts(server.artifacts_destination, experiment_id, run_ids, FILES, s3_client=s3_client)
    return experiment_id, run_ids


play = module_play("artifacts_audit")


def test_audit_local_store_finds_orphan_missing_and_deleted_runs(mlflow_sqlite, tmp_path):
    experiment_id, run_ids = populate(mlflow_sqlite)
    root = mlflow_sqlite.artifacts_destination
    orphan = uuid.uuid4().hex
    datagen.write_artifacts(root, experiment_id, [orphan], {"stray.txt": b"s" * 10})
    # Artifacts deleted behind MLflow's back.
    shutil.rmtree(os.path.join(root, experiment_id, run_ids[1]))
    args = {"tracking_uri": mlflow_sqlite.url, "artifacts_destination": root, "experiment_ids": [experiment_id]}
    removing = dict(args, remove_orphans=True)

    results, run = play(("audit", args), ("predict", removing, {"check_mode": True}), ("remove", removing),
                        ("again", removing), ("whole store", {"tracking_uri": mlflow_sqlite.url,
                                                              "artifacts_destination": root}),
                        ("bad destination", {"tracking_uri": mlflow_sqlite.url,
                                             "artifacts_destination": str(tmp_path / "nope")}))
    audit = results["audit"]
    assert audit["_status"] == "ok", run.stdout
    assert audit["changed"] is False
    assert audit["runs"] == 5
    assert [item["run_id"] for item in audit["missing"]] == [run_ids[1]]
    assert [item["folder"] for item in audit["orphans"]] == ["%s/%s" % (experiment_id, orphan)]
    assert audit["orphan_bytes"] == 10
    assert [item["run_id"] for item in audit["awaiting_gc"]] == [run_ids[4]]
    assert audit["awaiting_gc_bytes"] == 302
    row = audit["experiments"][experiment_id]
    assert row["objects"] == 4 * 2 + 1 and row["bytes"] == 4 * 302 + 10
    assert row["runs"] == 5 and row["deleted_runs"] == 1 and row["runs_without_artifacts"] == 1

    # Check mode only predicts: the real removal afterwards still finds the orphan.
    assert results["predict"]["changed"] is True and results["predict"]["removed"] == 1
    assert results["remove"]["changed"] is True and results["remove"]["removed"] == 1
    assert not os.path.exists(os.path.join(root, experiment_id, orphan))
    assert os.path.isdir(os.path.join(root, experiment_id, run_ids[0]))
    assert results["again"]["changed"] is False and results["again"]["orphan_count"] == 0

    whole = results["whole store"]
    assert whole["_status"] == "ok"
    assert whole["runs"] >= 5 and experiment_id in whole["experiments"]
    assert run_ids[4] in [item["run_id"] for item in whole["awaiting_gc"]]

    bad = results["bad destination"]
    assert bad["_status"] == "failed"
    assert "is not a directory" in bad["msg"]


def test_audit_s3_store(mlflow_pg_s3, moto_s3):
    client = moto_s3.client()
    experiment_id, run_ids = populate(mlflow_pg_s3, s3_client=client)
    bucket = mlflow_pg_s3.bucket
    orphan = uuid.uuid4().hex
    client.put_object(Bucket=bucket, Key="mlflow/%s/%s/artifacts/stray.txt" % (experiment_id, orphan), Body=b"abc")
    for key in ("model/weights.bin", "metrics.json"):
        client.delete_object(Bucket=bucket, Key="mlflow/" + datagen.artifact_key(experiment_id, run_ids[2], key))
    args = {"tracking_uri": mlflow_pg_s3.url, "artifacts_destination": "s3://%s/mlflow" % bucket,
            "experiment_ids": [experiment_id], "endpoint_url": moto_s3.endpoint_url,
            "aws_access_key": moto_s3.access_key, "aws_secret_key": moto_s3.secret_key, "region": moto_s3.region,
            "remove_orphans": True}
    results, run = play(("predict", args, {"check_mode": True}), ("remove", args))
    audit = results["predict"]
    assert audit["_status"] == "ok", run.stdout
    assert [item["run_id"] for item in audit["missing"]] == [run_ids[2]]
    assert [item["folder"] for item in audit["orphans"]] == ["%s/%s" % (experiment_id, orphan)]
    assert [item["run_id"] for item in audit["awaiting_gc"]] == [run_ids[4]]
    assert audit["removed"] == 1
    removed = results["remove"]
    assert removed["changed"] is True and removed["removed"] == 1
    prefix = "mlflow/%s/%s/" % (experiment_id, orphan)
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount") == 0
