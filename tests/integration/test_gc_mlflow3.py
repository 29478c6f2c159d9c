# -*- coding: utf-8 -*-
"""gc on MLflow 3 entities: logged models (rows in every referencing table, artifacts) and job records.

Its own server (SQLite, artifacts on disk), so that ``mlflow gc`` can then be run over the whole store to show it
finds nothing left to do.
"""

import os
import subprocess
import sys
import uuid

import pytest

from harness import datagen, datagen_mlflow3 as gen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_module
from harness.services import MlflowServer, api

DAY = datagen.DAY_MS
FILES = {"MLmodel": b"flavors: {}\n", "model.pkl": b"m" * 4096}
MODEL_TABLES = ("logged_model_params", "logged_model_tags")


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def server():
    own = MlflowServer().start()
    yield own
    own.stop()


def add_params(uri, info, count=3):
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = datagen._engine(uri)  # pylint: disable=protected-access
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(
                "INSERT INTO logged_model_params (model_id, experiment_id, param_key, param_value) "
                "VALUES (:m, :e, :k, :v)"),
                [dict(m=info["model_id"], e=int(info["experiment_id"]), k="p%d" % i, v=str(i)) for i in range(count)])
    finally:
        engine.dispose()


def add_jobs(uri, specs):
    """Job records: (status int, creation_time ms)."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = datagen._engine(uri)  # pylint: disable=protected-access
    ids = []
    try:
        with engine.begin() as connection:
            for status, created in specs:
                job_id = str(uuid.uuid4())
                ids.append(job_id)
                connection.execute(sqlalchemy.text(
                    "INSERT INTO jobs (id, creation_time, job_name, params, status, retry_count, last_update_time) "
                    "VALUES (:id, :c, 'test-job', '{}', :s, 0, :c)"), dict(id=job_id, c=int(created), s=int(status)))
    finally:
        engine.dispose()
    return ids


def model_rows(reader, ids):
    counts = dict((table, reader.scalar("SELECT count(*) FROM %s WHERE model_id IN %s" % (table, in_list(ids))))
                  for table in MODEL_TABLES + ("logged_models",))
    counts["inputs"] = reader.scalar("SELECT count(*) FROM inputs WHERE destination_id IN %s" % in_list(ids))
    return counts


def test_gc_purges_logged_models_rows_artifacts_jobs_then_mlflow_gc_finds_nothing(server):
    reader = StoreReader(server)
    uri, dest = server.backend_store_uri, server.artifacts_destination
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("gc-lm"))
    run_id = api(server.url, "runs/create", {"experiment_id": exp})["run"]["info"]["run_id"]
    infos = [gen.create_logged_model(server.url, exp, "m%d" % i, tags={"team": "gc"}, source_run_id=run_id)
             for i in range(5)]
    for info in infos:
        gen.write_model_artifacts(dest, info, FILES)
        add_params(uri, info)
    api(server.url, "runs/outputs", {"run_id": run_id, "models": [{"model_id": infos[0]["model_id"], "step": 0}]})
    for info in infos[:4]:
        api(server.url, "logged-models/%s" % info["model_id"], method="DELETE")
    old = [info["model_id"] for info in infos[:3]]
    young, active = infos[3]["model_id"], infos[4]["model_id"]
    gen.set_logged_models(uri, old, last_updated=now - 10 * DAY)
    # A deleted experiment takes its (active) logged model with it.
    exp_gone = datagen.create_experiment(server.url, unique("gc-lm-exp"))
    gone_info = gen.create_logged_model(server.url, exp_gone, "in-deleted-exp")
    gen.write_model_artifacts(dest, gone_info, FILES)
    api(server.url, "experiments/delete", {"experiment_id": exp_gone})
    import sqlite3  # pylint: disable=import-outside-toplevel
    with sqlite3.connect(server.sqlite_path, timeout=60) as connection:
        connection.execute("UPDATE experiments SET last_update_time = %d WHERE experiment_id = %s" % (now - 10 * DAY, exp_gone))
    jobs_old = add_jobs(uri, [(2, now - 10 * DAY), (3, now - 9 * DAY), (5, now - 8 * DAY)])
    jobs_kept = add_jobs(uri, [(1, now - 10 * DAY), (2, now - DAY)])

    before = model_rows(reader, old)
    assert before == {"logged_model_params": 9, "logged_model_tags": before["logged_model_tags"], "logged_models": 3,
                      "inputs": 1}
    assert before["logged_model_tags"] >= 3
    args = {"backend_store_uri": uri, "artifacts_destination": dest, "older_than": "7d", "jobs": True}

    checked, _run = run_module("gc", args, check=True)
    assert checked["_status"] == "ok", checked.get("msg")
    assert checked["purged_logged_models"] == 4 and checked["purged_jobs"] == 3 and checked["purged_experiments"] == 1
    assert set(checked["logged_model_ids"]) == set(old) | {gone_info["model_id"]}
    assert model_rows(reader, old) == before
    assert all(os.path.isdir(gen.model_artifact_dir(dest, info)) for info in infos)

    result, _run = run_module("gc", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["purged_logged_models"] == 4 and result["purged_jobs"] == 3 and result["failure_count"] == 0
    assert result["freed_bytes"] == 4 * sum(len(data) for data in FILES.values())
    assert model_rows(reader, old + [gone_info["model_id"]]) == dict((t, 0) for t in before)
    for info in infos[:3] + [gone_info]:
        artifact_dir = gen.model_artifact_dir(dest, info)
        assert not os.path.exists(artifact_dir) and not os.path.exists(os.path.dirname(artifact_dir))
    for model_id in (young, active):
        assert reader.scalar("SELECT count(*) FROM logged_models WHERE model_id = '%s'" % model_id) == 1
    assert all(os.path.isdir(gen.model_artifact_dir(dest, info)) for info in infos[3:])
    assert reader.ids("SELECT id FROM jobs WHERE id IN %s" % in_list(jobs_old + jobs_kept)) == set(jobs_kept)
    assert reader.scalar("SELECT count(*) FROM experiments WHERE experiment_id = %s" % exp_gone) == 0

    again, _run = run_module("gc", args)
    assert again["_status"] == "ok" and again["changed"] is False

    env = dict(os.environ, MLFLOW_TRACKING_URI=server.url)
    out = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--older-than", "7d",
                          "--jobs"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "permanently deleted" not in out.stdout, out.stdout
    assert "Deleted job" not in out.stdout, out.stdout
    assert reader.ids("SELECT id FROM jobs WHERE id IN %s" % in_list(jobs_kept)) == set(jobs_kept)


def test_gc_logged_model_ids_must_be_deleted_and_workspace_needs_workspaces(server):
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("gc-lm-ids"))
    active = gen.create_logged_model(server.url, exp, "active")["model_id"]
    args = {"backend_store_uri": server.backend_store_uri, "artifacts_destination": server.artifacts_destination}
    result, _run = run_module("gc", dict(args, logged_model_ids=[active, "m-nope"]))
    assert result["_status"] == "failed"
    assert "Unknown logged models: m-nope" in result["msg"] and "Active logged models: %s" % active in result["msg"]
    assert reader.scalar("SELECT count(*) FROM logged_models WHERE model_id = '%s'" % active) == 1

    api(server.url, "logged-models/%s" % active, method="DELETE")
    named, _run = run_module("gc", dict(args, logged_model_ids=[active]))
    assert named["_status"] == "ok", named.get("msg")
    assert named["purged_logged_models"] == 1 and named["purged_runs"] == 0
    assert reader.scalar("SELECT count(*) FROM logged_models WHERE model_id = '%s'" % active) == 0

    unknown_ws, _run = run_module("gc", dict(args, workspace=["team-x"], older_than="7d"))
    assert unknown_ws["_status"] == "failed" and "unknown workspace(s): team-x" in unknown_ws["msg"]
    default_ws, _run = run_module("gc", dict(args, workspace="default", older_than="7d"), check=True)
    assert default_ws["_status"] == "ok", default_ws.get("msg")
