#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""gc vs ``mlflow gc`` on the same kind of deleted runs, each with metrics and artifacts.

One MLflow server (SQLite + local artifacts, or PostgreSQL + local artifacts). Each repetition:
  A) bulk-inserts N deleted runs (deleted 10 days ago; 5 metrics x 20 steps, 3 params, tags) with 2
     artifact files each in a fresh experiment, then purges them with mlflowops.maintenance.gc
     through ansible-playbook (older_than: 1d, experiment_ids: [that experiment]);
  B) the same again in another fresh experiment, purged with
     ``mlflow gc --backend-store-uri ... --older-than 1d --tracking-uri <server>`` (which, unlike
     the module, cannot be scoped to an experiment: nothing else is deleted on this server).
     The runs' artifact URIs are the server's proxied ``mlflow-artifacts:/`` ones, so mlflow gc
     deletes their artifacts OVER HTTP through the tracking server, while the module deletes the
     same files LOCALLY under --artifacts-destination. That is not the same path, so:
  C) the same again with an experiment whose artifact location is a local ``file://`` directory:
     mlflow gc then deletes the artifacts locally too, like the module (the like-for-like figure).
All are checked in the store (no rows left in runs/metrics/params/tags/latest_metrics) and on disk
(no run directories left). Time is wall time; peak memory is the highest summed RSS of the process
tree (ansible-playbook + module, or the mlflow gc process), polled every 50 ms with psutil, and the
module process alone. The last line of the output is one JSON object with every figure.

    cd /work/main && .venv/bin/python bench/bench_gc.py --runs 10000 --reps 3
"""

import argparse
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _common import medians, play_measured, run_measured, write_figures  # noqa: E402  pylint: disable=wrong-import-position
from harness import datagen  # noqa: E402  pylint: disable=wrong-import-position
from harness.lifecycle import StoreReader, in_list  # noqa: E402  pylint: disable=wrong-import-position
from harness.runner import BIN_DIR  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer, PostgresCluster, api  # noqa: E402  pylint: disable=wrong-import-position

FILES = {"model/model.pkl": b"m" * 4096, "metrics.json": b"{}" * 100}


def make_deleted_runs(server, runs, local_root=None):
    """A fresh experiment with ``runs`` deleted runs and their artifacts; returns (experiment id, run ids, dirs).

    With ``local_root`` the experiment's artifact location is a ``file://`` directory under it (artifacts
    deleted locally by mlflow gc); otherwise the server's proxied default (deleted over HTTP by mlflow gc).
    """
    name = "gc-bench-%s" % uuid.uuid4().hex[:8]
    if local_root:
        location = os.path.join(local_root, name)
        exp = api(server.url, "experiments/create", {"name": name, "artifact_location": "file://" + location})[
            "experiment_id"]
    else:
        exp = datagen.create_experiment(server.url, name)
    now = datagen.now_ms()
    ids = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec(
        start_time=now - 40 * datagen.DAY_MS, lifecycle_stage="deleted", deleted_time=now - 10 * datagen.DAY_MS,
        metrics=5, steps=20, params=3) for _unused in range(runs)])
    if local_root:
        dirs = [os.path.join(location, run_id, "artifacts") for run_id in ids]
        for directory in dirs:
            for relative, data in FILES.items():
                target = os.path.join(directory, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as handle:
                    handle.write(data)
    else:
        datagen.write_artifacts(server.artifacts_destination, exp, ids, FILES)
        dirs = [os.path.join(server.artifacts_destination, str(exp), run_id, "artifacts") for run_id in ids]
    assert all(os.path.isdir(directory) for directory in dirs[:: max(1, len(dirs) // 50)])
    return exp, ids, dirs


def check_purged(reader, exp, ids, dirs):
    sample = ids[:: max(1, len(ids) // 500)]
    for table in ("runs", "metrics", "latest_metrics", "params", "tags"):
        left = reader.scalar("SELECT count(*) FROM %s WHERE run_uuid IN %s" % (table, in_list(sample)))
        assert left == 0, "%s rows left in %s" % (left, table)
    assert reader.scalar("SELECT count(*) FROM runs WHERE experiment_id = %s" % exp) == 0
    leftover = [directory for directory in dirs if os.path.exists(directory)]
    assert not leftover, "%d of %d artifact directories left, e.g. %s" % (len(leftover), len(dirs), leftover[:1])


def bench_module(server, reader, runs, concurrency):
    exp, ids, dirs = make_deleted_runs(server, runs)
    wall, memory = play_measured("gc", {
        "backend_store_uri": server.backend_store_uri, "artifacts_destination": server.artifacts_destination,
        "older_than": "1d", "experiment_ids": [exp], "concurrency": concurrency, "run_ids_limit": 0},
        prefix="mlflowops-bench-gc")
    check_purged(reader, exp, ids, dirs)
    return wall, memory


def bench_mlflow_gc(server, reader, runs, local_root=None):
    exp, ids, dirs = make_deleted_runs(server, runs, local_root)
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.url)
    argv = [os.path.join(BIN_DIR, "mlflow"), "gc", "--backend-store-uri", server.backend_store_uri,
            "--older-than", "1d", "--tracking-uri", server.url]
    wall, memory, _out = run_measured(argv, env)
    check_purged(reader, exp, ids, dirs)
    return wall, memory


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    figures = {}
    mib = 1024.0 * 1024.0
    for backend in args.backends.split(","):
        cluster = None
        if backend == "postgresql":
            cluster = PostgresCluster().start()
            server = MlflowServer(backend_store_uri=cluster.create_database("mlflow_bench")).start()
        else:
            server = MlflowServer().start()
        reader = StoreReader(server, cluster, "mlflow_bench")
        rows = []
        try:
            local_root = os.path.join(server.root, "local-artifacts")
            for rep in range(args.reps):
                module_wall, module_mem = bench_module(server, reader, args.runs, args.concurrency)
                gc_wall, gc_mem = bench_mlflow_gc(server, reader, args.runs)
                local_wall, local_mem = bench_mlflow_gc(server, reader, args.runs, local_root)
                rows.append(dict(module_wall=module_wall, module_tree_mib=module_mem.peak_tree / mib,
                                 module_single_mib=module_mem.peak_single / mib, mlflow_gc_wall=gc_wall,
                                 mlflow_gc_tree_mib=gc_mem.peak_tree / mib, mlflow_gc_local_wall=local_wall,
                                 mlflow_gc_local_tree_mib=local_mem.peak_tree / mib))
                print("%s rep %d: gc module (local deletes) %.1fs, peak %.0f MiB tree (%.0f MiB largest process) | "
                      "mlflow gc (proxied artifacts, deletes over HTTP) %.1fs, peak %.0f MiB | "
                      "mlflow gc (file:// artifacts, local deletes) %.1fs, peak %.0f MiB"
                      % (backend, rep + 1, module_wall, rows[-1]["module_tree_mib"], rows[-1]["module_single_mib"],
                         gc_wall, rows[-1]["mlflow_gc_tree_mib"], local_wall, rows[-1]["mlflow_gc_local_tree_mib"]),
                      flush=True)
        finally:
            server.stop()
            if cluster:
                cluster.stop()
        med = medians(rows)
        med["speedup"] = med["mlflow_gc_wall"] / med["module_wall"]
        med["speedup_same_path"] = med["mlflow_gc_local_wall"] / med["module_wall"]
        figures[backend] = dict(median=med, reps=rows, runs=args.runs,
                                note="speedup: vs mlflow gc deleting proxied artifacts over HTTP; speedup_same_path: "
                                     "vs mlflow gc deleting local file:// artifacts, like the module")
        print("%s median of %d (%d runs): gc module %.1fs / %.0f MiB; mlflow gc over HTTP %.1fs / %.0f MiB (%.1fx); "
              "mlflow gc on local files (same path as the module) %.1fs / %.0f MiB (%.1fx)"
              % (backend, len(rows), args.runs, med["module_wall"], med["module_tree_mib"], med["mlflow_gc_wall"],
                 med["mlflow_gc_tree_mib"], med["speedup"], med["mlflow_gc_local_wall"],
                 med["mlflow_gc_local_tree_mib"], med["speedup_same_path"]), flush=True)
    write_figures(figures, args.json)


if __name__ == "__main__":
    main()
