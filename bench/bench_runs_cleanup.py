#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""runs_cleanup vs the seed's loop with paging fixed (sequential MlflowClient.delete_run).

For each backend (an MLflow server on SQLite, one on PostgreSQL), each repetition bulk-inserts
N eligible runs (FINISHED, 40 days old) into a fresh experiment and deletes them with
  A) mlflowops.maintenance.runs_cleanup through ansible-playbook (older_than: 30d), and
  B) the seed's RunCleanup.delete_old_runs with paging fixed: every search page, then one
     MlflowClient.delete_run at a time, in a separate Python process with MLFLOW_TRACKING_URI.
Both results are checked in the store (all N runs deleted). Prints per-repetition times, medians
and ratios (B / A), on the module's wall time (ansible start-up included) and its own duration_s.

    cd /work/main && .venv/bin/python bench/bench_runs_cleanup.py --runs 10000 --reps 3

With ``--bulk-runs 100000`` it also times ``method: database`` on that many runs and ``method: rest`` on a
``--bulk-sample`` (2,000) sample on the same server, and prints the rate ratio (target: under 30 s, at least 30x):

    cd /work/main && .venv/bin/python bench/bench_runs_cleanup.py --bulk-runs 100000 --skip-seed --reps 0
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _common import medians, write_figures  # noqa: E402  pylint: disable=wrong-import-position
from harness import datagen  # noqa: E402  pylint: disable=wrong-import-position
from harness.lifecycle import StoreReader  # noqa: E402  pylint: disable=wrong-import-position
from harness.runner import run_module  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer, PostgresCluster  # noqa: E402  pylint: disable=wrong-import-position

SEED_LOOP = r'''
import sys, time
from datetime import datetime, timedelta
from mlflow.tracking import MlflowClient

experiment_id, days = sys.argv[1], int(sys.argv[2])
started = time.monotonic()
cutoff = (datetime.now() - timedelta(days=days)).timestamp() * 1000
client = MlflowClient()
runs, token = [], None
while True:  # the fix: follow next_page_token to the end
    page = client.search_runs(experiment_ids=[experiment_id], max_results=1000, page_token=token)
    runs.extend(page)
    token = page.token
    if not token:
        break
deleted = 0
for run in runs:
    if run.info.start_time < cutoff:
        client.delete_run(run.info.run_id)
        deleted += 1
print("%d %.3f" % (deleted, time.monotonic() - started))
'''


def deleted_count(reader, exp):
    return reader.scalar("SELECT count(*) FROM runs WHERE experiment_id = %s AND lifecycle_stage = 'deleted'" % exp)


def fresh_experiment(server, runs):
    exp = datagen.create_experiment(server.url, "bench-%s" % uuid.uuid4().hex[:8])
    now = datagen.now_ms()
    datagen.add_runs(server.url, server.backend_store_uri, exp,
                     [datagen.RunSpec(start_time=now - 40 * datagen.DAY_MS - i, metrics=3, params=2)
                      for i in range(runs)])
    return exp


def bench_module(server, reader, runs, concurrency):
    exp = fresh_experiment(server, runs)
    started = time.monotonic()
    result, _run = run_module("runs_cleanup", {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d",
                                               "concurrency": concurrency, "max_delete": runs, "run_ids_limit": 0})
    wall = time.monotonic() - started
    assert result["_status"] == "ok", result.get("msg")
    assert result["deleted"] == runs and deleted_count(reader, exp) == runs, (result["deleted"], deleted_count(reader, exp))
    return wall, result["duration_s"]


def bench_bulk(server, reader, runs, sample_runs, concurrency):
    """method=database on ``runs`` eligible runs, against method=rest on a ``sample_runs`` sample, same server.

    Returns rates in runs/s (module duration_s) and the ratio; every run is checked deleted in the store.
    """
    exp = fresh_experiment(server, runs)
    started = time.monotonic()
    result, _run = run_module("runs_cleanup", {"method": "database", "backend_store_uri": server.backend_store_uri,
                                               "experiments": [exp], "older_than": "30d", "max_delete": runs,
                                               "run_ids_limit": 0})
    wall = time.monotonic() - started
    assert result["_status"] == "ok", result.get("msg")
    assert result["deleted"] == runs and deleted_count(reader, exp) == runs, (result["deleted"], deleted_count(reader, exp))
    sample_wall, sample_own = bench_module(server, reader, sample_runs, concurrency)
    bulk_rate, rest_rate = runs / result["duration_s"], sample_runs / sample_own
    return dict(bulk_runs=runs, bulk_wall=wall, bulk_own=result["duration_s"], bulk_transactions=result["transactions"],
                rest_sample_runs=sample_runs, rest_sample_wall=sample_wall, rest_sample_own=sample_own,
                bulk_runs_per_s=bulk_rate, rest_runs_per_s=rest_rate, ratio=bulk_rate / rest_rate)


def bench_seed(server, reader, runs):
    exp = fresh_experiment(server, runs)
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.url)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", SEED_LOOP, exp, "30"], env=env, check=True, capture_output=True,
                         text=True, timeout=7200).stdout.split()
    wall = time.monotonic() - started
    assert int(out[0]) == runs and deleted_count(reader, exp) == runs
    return wall, float(out[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the benchmarked servers")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--bulk-runs", type=int, default=0,
                        help="also time method=database on this many runs (target: 100000 in < 30 s), against "
                             "method=rest on --bulk-sample runs")
    parser.add_argument("--bulk-sample", type=int, default=2000)
    parser.add_argument("--skip-seed", action="store_true", help="only the bulk comparison")
    args = parser.parse_args()
    figures = {}
    for backend in args.backends.split(","):
        cluster = None
        if backend == "postgresql":
            cluster = PostgresCluster().start()
            server = MlflowServer(backend_store_uri=cluster.create_database("mlflow_bench"), workers=args.workers).start()
        else:
            server = MlflowServer(workers=args.workers).start()
        reader = StoreReader(server, cluster, "mlflow_bench")
        rows = []
        bulk = None
        try:
            if args.bulk_runs:
                bulk = bench_bulk(server, reader, args.bulk_runs, args.bulk_sample, args.concurrency)
                print("%s bulk: method=database %d runs in %.1fs wall (%.1fs in module, %.0f runs/s, %d transactions) "
                      "| method=rest sample %d runs in %.1fs (%.0f runs/s) | ratio %.1fx"
                      % (backend, bulk["bulk_runs"], bulk["bulk_wall"], bulk["bulk_own"], bulk["bulk_runs_per_s"],
                         bulk["bulk_transactions"], bulk["rest_sample_runs"], bulk["rest_sample_own"],
                         bulk["rest_runs_per_s"], bulk["ratio"]), flush=True)
            for rep in range(0 if args.skip_seed else args.reps):
                module_wall, module_own = bench_module(server, reader, args.runs, args.concurrency)
                seed_wall, seed_loop = bench_seed(server, reader, args.runs)
                rows.append(dict(module_wall=module_wall, module_own=module_own, seed_wall=seed_wall, seed_loop=seed_loop))
                print("%s rep %d: runs_cleanup %.1fs wall (%.1fs in module, %.0f runs/s) | seed loop %.1fs wall "
                      "(%.1fs loop, %.0f runs/s)"
                      % (backend, rep + 1, module_wall, module_own, args.runs / module_own, seed_wall, seed_loop,
                         args.runs / seed_loop), flush=True)
        finally:
            server.stop()
            if cluster:
                cluster.stop()
        if not rows:
            figures[backend] = dict(bulk=bulk)
            continue
        med = medians(rows)
        med["ratio_wall"] = med["seed_wall"] / med["module_wall"]
        med["ratio_own"] = med["seed_loop"] / med["module_own"]
        figures[backend] = dict(median=med, reps=rows, runs=args.runs, concurrency=args.concurrency, bulk=bulk)
        print("%s median of %d: runs_cleanup %.1fs wall / %.1fs module; seed %.1fs wall / %.1fs loop; "
              "speed-up %.1fx (wall) %.1fx (module vs loop)"
              % (backend, len(rows), med["module_wall"], med["module_own"], med["seed_wall"], med["seed_loop"],
                 med["ratio_wall"], med["ratio_own"]), flush=True)
    write_figures(figures, args.json)


if __name__ == "__main__":
    main()
