#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""gc of MLflow 3 logged models vs ``mlflow gc --logged-model-ids`` on the same data (time and peak memory).

One MLflow server (SQLite + local artifacts). Each repetition:
  A) bulk-inserts N soft-deleted logged models (deleted 10 days ago; 5 params and 3 tags each, 2 artifact
     files each under the server's artifacts destination) in a fresh experiment, then purges them with
     mlflowops.maintenance.gc through ansible-playbook (older_than: 1d, logged_model_ids: those N);
  B) the same again in another fresh experiment, purged with
     ``mlflow gc --backend-store-uri ... --older-than 1d --tracking-uri <server> --logged-model-ids <ids>``
     (with more ids than fit in one argument, without ``--logged-model-ids``: every deleted logged model older than
     1d, which on this server is exactly those N; the JSON says which).
Both are checked in the store (no rows left in logged_models, logged_model_params, logged_model_tags) and on disk
(no model directories left). Time is wall time; peak memory is the highest summed RSS of the process tree
(ansible-playbook + module, or the mlflow gc process), polled every 50 ms. The last line of the output is one JSON
object with every figure.

    cd /work/main && .venv/bin/python bench/bench_gc_logged_models.py --models 5000 --reps 3
    cd /work/main && .venv/bin/python bench/bench_gc_logged_models.py --models 50 --reps 1   # smoke run
"""

import argparse
import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _common import medians, play_measured, run_measured  # noqa: E402  pylint: disable=wrong-import-position
from harness import datagen  # noqa: E402  pylint: disable=wrong-import-position
from harness.datagen import _engine  # noqa: E402  pylint: disable=wrong-import-position
from harness.lifecycle import StoreReader, in_list  # noqa: E402  pylint: disable=wrong-import-position
from harness.runner import BIN_DIR  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer, api  # noqa: E402  pylint: disable=wrong-import-position

FILES = {"MLmodel": b"flavors: {}\n" * 20, "model.pkl": b"m" * 4096}
READY = 2  # LoggedModelStatus.READY in the store's integer column
MAX_ARGUMENT = 120000  # one argv string may not exceed 128 KiB on Linux


def make_deleted_models(server, count):
    """A fresh experiment with ``count`` soft-deleted logged models and their artifacts: (experiment, ids, dirs)."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    name = "gc-lm-bench-%s" % uuid.uuid4().hex[:8]
    exp = datagen.create_experiment(server.url, name)
    location = api(server.url, "experiments/get?experiment_id=%s" % exp)["experiment"]["artifact_location"].rstrip("/")
    now = datagen.now_ms()
    ids = ["m-" + uuid.uuid4().hex for _unused in range(count)]
    models, params, tags = [], [], []
    for model_id in ids:
        models.append(dict(model_id=model_id, experiment_id=int(exp), name="bench", status=READY,
                           artifact_location="%s/models/%s/artifacts" % (location, model_id),
                           creation_timestamp_ms=now - 40 * datagen.DAY_MS,
                           last_updated_timestamp_ms=now - 10 * datagen.DAY_MS, lifecycle_stage="deleted",
                           model_type="", source_run_id=None, status_message=None))
        params.extend(dict(model_id=model_id, experiment_id=int(exp), param_key="p%d" % index, param_value=str(index))
                      for index in range(5))
        tags.extend(dict(model_id=model_id, experiment_id=int(exp), tag_key="t%d" % index, tag_value="v")
                    for index in range(3))
    engine = _engine(server.backend_store_uri)
    meta = sqlalchemy.MetaData()
    meta.reflect(engine, only=["logged_models", "logged_model_params", "logged_model_tags"])
    try:
        with engine.begin() as connection:
            for table, rows in (("logged_models", models), ("logged_model_params", params), ("logged_model_tags", tags)):
                for offset in range(0, len(rows), 2000):
                    connection.execute(meta.tables[table].insert(), rows[offset:offset + 2000])
    finally:
        engine.dispose()
    dirs = []
    for model_id in ids:
        directory = os.path.join(server.artifacts_destination, str(exp), "models", model_id, "artifacts")
        os.makedirs(directory, exist_ok=True)
        for relative, data in FILES.items():
            with open(os.path.join(directory, relative), "wb") as handle:
                handle.write(data)
        dirs.append(directory)
    return exp, ids, dirs


def check_purged(reader, ids, dirs):
    sample = ids[:: max(1, len(ids) // 500)]
    for table in ("logged_models", "logged_model_params", "logged_model_tags"):
        left = reader.scalar("SELECT count(*) FROM %s WHERE model_id IN %s" % (table, in_list(sample)))
        assert left == 0, "%s rows left in %s" % (left, table)
    leftover = [directory for directory in dirs if os.path.exists(directory)]
    assert not leftover, "%d of %d model directories left, e.g. %s" % (len(leftover), len(dirs), leftover[:1])


def bench_module(server, reader, count, concurrency):
    _exp, ids, dirs = make_deleted_models(server, count)
    wall, memory = play_measured("gc", {
        "backend_store_uri": server.backend_store_uri, "artifacts_destination": server.artifacts_destination,
        "older_than": "1d", "logged_model_ids": ids, "concurrency": concurrency, "run_ids_limit": 0},
        prefix="mlflowops-bench-gc-lm")
    check_purged(reader, ids, dirs)
    return wall, memory


def bench_mlflow_gc(server, reader, count):
    _exp, ids, dirs = make_deleted_models(server, count)
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.url)
    argv = [os.path.join(BIN_DIR, "mlflow"), "gc", "--backend-store-uri", server.backend_store_uri,
            "--older-than", "1d", "--tracking-uri", server.url]
    listed = ",".join(ids)
    mode = "ids"
    if len(listed) <= MAX_ARGUMENT:
        argv += ["--logged-model-ids", listed]
    else:
        mode = "all deleted (ids too long for one argument)"
    wall, memory, _out = run_measured(argv, env)
    check_purged(reader, ids, dirs)
    return wall, memory, mode


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    mib = 1024.0 * 1024.0
    server = MlflowServer().start()
    reader = StoreReader(server)
    rows = []
    mode = None
    try:
        for rep in range(args.reps):
            module_wall, module_mem = bench_module(server, reader, args.models, args.concurrency)
            gc_wall, gc_mem, mode = bench_mlflow_gc(server, reader, args.models)
            rows.append(dict(module_wall=module_wall, module_tree_mib=module_mem.peak_tree / mib,
                             module_single_mib=module_mem.peak_single / mib, mlflow_gc_wall=gc_wall,
                             mlflow_gc_tree_mib=gc_mem.peak_tree / mib))
            print("rep %d: gc module %.1fs, peak %.0f MiB tree (%.0f MiB largest process) | mlflow gc (%s) %.1fs, "
                  "peak %.0f MiB" % (rep + 1, module_wall, rows[-1]["module_tree_mib"], rows[-1]["module_single_mib"],
                                     mode, gc_wall, rows[-1]["mlflow_gc_tree_mib"]), file=sys.stderr, flush=True)
    finally:
        server.stop()
    median = medians(rows)
    figures = dict(bench="gc_logged_models", models=args.models, reps=args.reps, concurrency=args.concurrency,
                   mlflow_gc_mode=mode, speedup=round(median["mlflow_gc_wall"] / median["module_wall"], 2),
                   **dict((key, round(value, 2)) for key, value in median.items()))
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
