# -*- coding: utf-8 -*-
"""artifacts_audit on MLflow 3 data: logged-model folders and trace folders (live, deleted, orphaned, archived)."""

import os
import uuid

from harness import datagen, datagen_mlflow3 as gen
from harness.plays import play, write_file as write
from harness.services import api


def test_audit_judges_logged_model_and_trace_folders(mlflow_sqlite):
    server = mlflow_sqlite
    root = server.artifacts_destination
    experiment_id = datagen.create_experiment(server.url, "audit3-%s" % uuid.uuid4().hex[:8])
    run_id = datagen.add_runs(server.url, server.backend_store_uri, experiment_id, [datagen.RunSpec()])[0]
    datagen.write_artifacts(root, experiment_id, [run_id], {"f.txt": b"r" * 5})
    live = gen.create_logged_model(server.url, experiment_id, "live")
    doomed = gen.create_logged_model(server.url, experiment_id, "doomed")
    live_dir = gen.write_model_artifacts(root, live, {"MLmodel": b"m" * 11})
    doomed_dir = gen.write_model_artifacts(root, doomed, {"MLmodel": b"d" * 13, "model.pkl": b"d" * 17})
    api(server.url, "logged-models/%s" % doomed["model_id"], method="DELETE")
    stray_model = "m-" + uuid.uuid4().hex
    stray_model_dir = os.path.join(root, experiment_id, "models", stray_model)
    write(os.path.join(stray_model_dir, "artifacts", "MLmodel"), b"s" * 7)
    # Traces logged by the MLflow client with their spans in a traces.json folder; deleting one leaves its folder.
    kept, dropped = gen.log_traces_with_client(server.url, experiment_id, 2, with_folders=True)
    gen._rest3(server.url, "traces/delete-traces", {"experiment_id": experiment_id, "request_ids": [dropped]})
    # Two archived traces: one with its payload, one whose payload is gone.
    archived, lost = gen.add_traces(server.backend_store_uri, experiment_id, [datagen.now_ms()] * 2)
    gen.add_trace_tags(server.backend_store_uri, dict(
        (trace_id, {"mlflow.trace.spansLocation": "ARCHIVE_REPO",
                    "mlflow.trace.archiveLocation": gen.archive_location(server.url, experiment_id, trace_id)})
        for trace_id in (archived, lost)))
    write(os.path.join(root, experiment_id, "traces", archived, "artifacts", "traces.pb"), b"p" * 19)

    def folder(*parts):
        return "/".join((experiment_id,) + parts)

    args = {"tracking_uri": server.url, "artifacts_destination": root, "experiment_ids": [experiment_id]}
    removing = dict(args, remove_orphans=True)
    results, run = play(("audit", "artifacts_audit", args), ("predict", "artifacts_audit", removing, {"check_mode": True}),
                        ("remove", "artifacts_audit", removing), ("again", "artifacts_audit", removing))
    audit = results["audit"]
    assert audit["_status"] == "ok", run.stdout
    assert audit["runs"] == 1 and audit["logged_models"] == 2 and audit["traces"] == 3
    assert audit["unjudged_kinds"] == []
    assert sorted((item["kind"], item["folder"]) for item in audit["orphans"]) == sorted(
        [("logged_model", folder("models", stray_model)), ("trace", folder("traces", dropped))])
    assert [(item["kind"], item["model_id"], item["bytes"]) for item in audit["awaiting_gc"]] == [
        ("logged_model", doomed["model_id"], 30)]
    assert [(item["kind"], item["trace_id"]) for item in audit["missing"]] == [("trace", lost)]
    assert audit["by_kind"]["logged_model"]["orphan_bytes"] == 7
    assert audit["by_kind"]["trace"]["folders"] == 3 and audit["by_kind"]["trace"]["orphans"] == 1
    row = audit["experiments"][experiment_id]
    assert row["logged_models"] == 2 and row["deleted_logged_models"] == 1 and row["traces"] == 3

    expected = sorted([folder("models", stray_model), folder("traces", dropped)])
    assert results["predict"]["changed"] is True and sorted(results["predict"]["removed_folders"]) == expected
    removed = results["remove"]
    assert removed["changed"] is True and sorted(removed["removed_folders"]) == expected and removed["removed"] == 2
    assert not os.path.exists(stray_model_dir) and not os.path.exists(os.path.join(root, experiment_id, "traces", dropped))
    # Everything live, soft-deleted (gc's job) or archived stays.
    for path in (live_dir, doomed_dir, os.path.join(root, experiment_id, "traces", kept),
                 os.path.join(root, experiment_id, "traces", archived, "artifacts", "traces.pb"),
                 os.path.join(root, experiment_id, run_id)):
        assert os.path.exists(path), path
    assert results["again"]["changed"] is False and results["again"]["orphan_count"] == 0

    # A live logged model whose artifact location cannot be mapped: nothing is provably orphaned any more.
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = sqlalchemy.create_engine(server.backend_store_uri)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE logged_models SET artifact_location = 'hdfs://nn/models/x' "
                                           "WHERE model_id = :id"), dict(id=live["model_id"]))
    engine.dispose()
    stray_again = os.path.join(root, experiment_id, "models", "m-" + uuid.uuid4().hex, "artifacts", "MLmodel")
    write(stray_again, b"x")
    results, run = play(("refused", "artifacts_audit", removing))
    refused = results["refused"]
    assert refused["_status"] == "failed", run.stdout
    assert "logged model %s (hdfs://nn/models/x)" % live["model_id"] in refused["msg"]
    assert "nothing was removed" in refused["msg"] and os.path.exists(stray_again)
