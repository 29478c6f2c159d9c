# -*- coding: utf-8 -*-
"""runs_cleanup method=database against method=rest on copies of the same seeded store.

Each store is seeded once (runs bulk-inserted by harness.datagen, models registered through the server),
copied, and each path runs on its own copy: the REST path through an MLflow server, the bulk path straight
in the database. The tests then compare the stores row by row: which runs are deleted, reaped, restored,
with ``deleted_time`` set (and cleared) the way MLflow sets it; then MLflow's own client and ``mlflow gc``
read the bulk path's result.
"""

import os
import sqlite3
import subprocess
import sys
import uuid

from harness import datagen
from harness.runner import run_module
from harness.services import MlflowServer

DAY = datagen.DAY_MS
HOUR = 3600 * 1000
FILTER = "tags.team != 'vision' AND params.param_1 = '1' AND metrics.metric_0 >= 0"


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def seed(server, total):
    """Three experiments of old and new runs, protected runs, stale RUNNING runs, runs deleted long ago."""
    now = datagen.now_ms()
    names = [unique("bulk-a"), unique("bulk-b"), unique("bulk-c")]
    exps = [datagen.create_experiment(server.url, name) for name in names]
    statuses = ["FINISHED", "FAILED", "KILLED"]
    # Start times over 90 days, 20 minutes off the 30-day and 2-day boundaries while the test runs.
    times = [t - 20 * 60 * 1000 for t in datagen.spread_start_times(total, 90, now)]
    specs = [datagen.RunSpec(start_time=t, status=statuses[(i // 3) % 3], tags={"team": "vision" if i % 5 == 0 else "nlp"})
             for i, t in enumerate(times)]
    for index, exp in enumerate(exps):
        datagen.add_runs(server.url, server.backend_store_uri, exp, specs[index::3])
    old = [now - 60 * DAY - i * HOUR for i in range(4)]
    registered = datagen.add_runs(server.url, server.backend_store_uri, exps[0],
                                  [datagen.RunSpec(start_time=t, tags={"team": "nlp"}) for t in old])
    datagen.add_runs(server.url, server.backend_store_uri, exps[0],
                     [datagen.RunSpec(start_time=t, tags={"team": "nlp", "mlflowops.keep": value})
                      for t, value in zip(old, ["true", "yes", "false", "0"])])
    datagen.add_runs(server.url, server.backend_store_uri, exps[1],
                     [datagen.RunSpec(start_time=t, status="RUNNING", tags={"team": "nlp"}) for t in old]
                     + [datagen.RunSpec(start_time=now - HOUR, status="RUNNING", tags={"team": "nlp"})])
    datagen.add_runs(server.url, server.backend_store_uri, exps[1],
                     [datagen.RunSpec(start_time=t, lifecycle_stage="deleted", deleted_time=now - 40 * DAY,
                                      tags={"team": "nlp"}) for t in old])
    model = unique("bulk-model")
    for run_id in registered:
        datagen.register_model(server.url, model, run_id)
    # The runs of the third experiment are never selected (not named).
    return [names[0], exps[1]], exps


def args_for(experiments):
    return {"experiments": experiments, "older_than": "30d", "statuses": ["FINISHED", "KILLED"], "filter": FILTER,
            "reap_running_after": "2d", "run_ids_limit": 100000, "max_delete": 100000, "concurrency": 16}


def sqlite_rows(path):
    connection = sqlite3.connect(path, timeout=60)
    try:
        return [tuple(row) for row in connection.execute(
            "SELECT run_uuid, lifecycle_stage, status, deleted_time, end_time FROM runs")]
    finally:
        connection.close()


def pg_rows(postgres, database):
    out = postgres.psql("SELECT run_uuid, lifecycle_stage, status, deleted_time, end_time FROM runs", database)
    return [tuple(None if value == "" else value for value in line.split("|")) for line in out.splitlines() if line]


def comparable(rows):
    """{run: (stage, status, deleted_time set, end_time set)}: what both paths must agree on exactly."""
    return dict((row[0], (row[1], row[2], row[3] is not None, row[4] is not None)) for row in rows)


def check_same_outcome(rest, bulk, rest_rows, bulk_rows, started_ms, before_rows):
    assert rest["_status"] == "ok", rest.get("msg")
    assert bulk["_status"] == "ok", bulk.get("msg")
    for key in ("changed", "deleted", "restored", "reaped", "protected", "protected_reasons", "experiment_ids"):
        assert rest[key] == bulk[key], key
    for key in ("run_ids", "reaped_run_ids", "protected_run_ids"):
        assert set(rest[key]) == set(bulk[key]), key
    assert comparable(rest_rows) == comparable(bulk_rows)
    before = dict((row[0], row) for row in before_rows)
    for row in bulk_rows:
        if row[1] == "deleted" and before[row[0]][1] == "active":
            # deleted_time is the time of the change, as MLflow's SqlAlchemyStore sets it.
            assert int(row[3]) >= started_ms
    return set(bulk["run_ids"])


def mlflow_python(code, *argv):
    completed = subprocess.run([sys.executable, "-c", code] + list(argv), capture_output=True, text=True, timeout=300, check=False,
                               env=dict(os.environ, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_bulk_and_rest_change_identical_sets_on_sqlite(tmp_path):
    (tmp_path / "rest").mkdir()
    server = MlflowServer(root=str(tmp_path / "rest")).start()
    try:
        experiments, exps = seed(server, 1200)
        copy = str(tmp_path / "bulk.db")
        source = sqlite3.connect(server.sqlite_path)
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
        bulk_uri = "sqlite:///" + copy
        args = args_for(experiments)
        rest_args = dict(args, tracking_uri=server.url)
        bulk_args = dict(args, method="database", backend_store_uri=bulk_uri, batch_size=200)
        before_rows = sqlite_rows(copy)

        planned, _run = run_module("runs_cleanup", bulk_args, check=True)
        assert planned["_status"] == "ok", planned.get("msg")
        assert sqlite_rows(copy) == before_rows
        assert planned["deleted"] > 250 and planned["reaped"] == 4
        assert planned["protected_reasons"] == {"registered_model": 4, "keep_tag": 2}

        started = datagen.now_ms()
        rest, _run = run_module("runs_cleanup", rest_args)
        bulk, _run = run_module("runs_cleanup", bulk_args)
        assert bulk["transactions"] >= 3
        deleted = check_same_outcome(rest, bulk, sqlite_rows(server.sqlite_path), sqlite_rows(copy), started, before_rows)
        assert deleted == set(planned["run_ids"])

        again, _run = run_module("runs_cleanup", bulk_args)
        assert again["_status"] == "ok" and again["changed"] is False and again["deleted"] == 0

        # MLflow's own client sees exactly those runs deleted (plus the ones deleted long ago).
        out = mlflow_python(
            "import sys, mlflow\n"
            "from mlflow.entities import ViewType\n"
            "c = mlflow.MlflowClient(tracking_uri=sys.argv[1])\n"
            "runs = c.search_runs(sys.argv[2].split(','), run_view_type=ViewType.DELETED_ONLY, max_results=50000)\n"
            "print(' '.join(r.info.run_id for r in runs))\n", bulk_uri, ",".join(exps))
        seen = set(out.split())
        assert deleted <= seen and len(seen - deleted) == 4

        # Undo on both copies: the same runs come back, deleted_time cleared.
        started = datagen.now_ms()
        rest_undo, _run = run_module("runs_cleanup", dict(rest_args, state="active"))
        bulk_undo, _run = run_module("runs_cleanup", dict(bulk_args, state="active"))
        restored = check_same_outcome(rest_undo, bulk_undo, sqlite_rows(server.sqlite_path), sqlite_rows(copy), started,
                                      before_rows)
        assert deleted < restored
        assert all(row[3] is None for row in sqlite_rows(copy) if row[0] in restored)

        # Delete again, then mlflow gc purges some of them; its --older-than reads deleted_time (just now).
        bulk, _run = run_module("runs_cleanup", bulk_args)
        assert bulk["_status"] == "ok" and bulk["deleted"] == len(restored)
        some = sorted(restored)[:15]
        gc = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", bulk_uri, "--older-than", "1d"],
                            capture_output=True, text=True, timeout=300, check=False,
                            env=dict(os.environ, MLFLOW_TRACKING_URI=server.url))
        assert gc.returncode == 0, gc.stderr[-2000:]
        remaining = set(row[0] for row in sqlite_rows(copy))
        assert restored <= remaining
        gc = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", bulk_uri, "--run-ids",
                             ",".join(some)], capture_output=True, text=True, timeout=300, check=False,
                            env=dict(os.environ, MLFLOW_TRACKING_URI=server.url))
        assert gc.returncode == 0, gc.stderr[-2000:]
        remaining = set(row[0] for row in sqlite_rows(copy))
        assert not set(some) & remaining and (restored - set(some)) <= remaining
    finally:
        server.stop()


def test_bulk_and_rest_change_identical_sets_on_postgresql(postgres, tmp_path):
    name = "bulk_%s" % uuid.uuid4().hex[:6]
    uri = postgres.create_database(name)
    (tmp_path / "rest").mkdir()
    server = MlflowServer(backend_store_uri=uri, root=str(tmp_path / "rest")).start()
    try:
        experiments, _exps = seed(server, 450)
        server.stop()
        copy_name = name + "_copy"
        user = uri.split("://", 1)[1].split(":", 1)[0]
        postgres.psql("CREATE DATABASE \"%s\" TEMPLATE \"%s\" OWNER \"%s\"" % (copy_name, name, user))
        server.start()
        bulk_uri = uri.rsplit("/", 1)[0] + "/" + copy_name
        args = args_for(experiments)
        bulk_args = dict(args, method="database", backend_store_uri=bulk_uri)
        before_rows = pg_rows(postgres, copy_name)

        planned, _run = run_module("runs_cleanup", bulk_args, check=True)
        assert planned["_status"] == "ok", planned.get("msg")
        assert pg_rows(postgres, copy_name) == before_rows

        started = datagen.now_ms()
        rest, _run = run_module("runs_cleanup", dict(args, tracking_uri=server.url))
        bulk, _run = run_module("runs_cleanup", bulk_args)
        deleted = check_same_outcome(rest, bulk, pg_rows(postgres, name), pg_rows(postgres, copy_name), started,
                                     before_rows)
        assert deleted == set(planned["run_ids"]) and len(deleted) > 100
        assert bulk_uri.split("@")[0].split(":")[-1] not in str(bulk)

        again, _run = run_module("runs_cleanup", bulk_args)
        assert again["_status"] == "ok" and again["changed"] is False
    finally:
        server.stop()


def test_bulk_refuses_untranslatable_filter_before_any_change(tmp_path):
    path = str(tmp_path / "empty.db")
    sqlite3.connect(path).close()
    result, _run = run_module("runs_cleanup", {"method": "database", "backend_store_uri": "sqlite:///" + path,
                                               "filter": "tags.a IS NULL"})
    assert result["_status"] == "failed"
    assert "method=rest" in result["msg"] and "tags.a IS NULL" in result["msg"]
    result, _run = run_module("runs_cleanup", {"method": "database", "older_than": "1d"})
    assert result["_status"] == "failed" and "backend_store_uri" in result["msg"]
    missing = str(tmp_path / "missing.db")
    result, _run = run_module("runs_cleanup", {"method": "database", "backend_store_uri": "sqlite:///" + missing})
    assert result["_status"] == "failed" and "does not exist" in result["msg"] and not os.path.exists(missing)
