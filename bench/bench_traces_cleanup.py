#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""traces_cleanup vs a loop of MlflowClient.delete_traces(trace_ids=[one]) per trace, on the same server.

Each repetition bulk-inserts N traces 40 days old (plus a few keep-tagged ones, so the module deletes by ids,
its slower path) into a fresh experiment of an MLflow server on SQLite, and deletes them with
  A) mlflowops.maintenance.traces_cleanup through ansible-playbook (older_than: 30d), and
  B) a Python process with the MLflow client: search every page, then delete_traces(trace_ids=[id]) per trace.
Both results are checked in the store (exactly the N unprotected traces gone). Prints per-repetition times,
medians and the ratio B / A (the issue's target: at least 20x).

    cd /work/main && .venv/bin/python bench/bench_traces_cleanup.py --traces 50000 --reps 3
    cd /work/main && .venv/bin/python bench/bench_traces_cleanup.py --traces 300 --reps 1   # smoke run
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from harness import datagen, datagen_mlflow3 as gen  # noqa: E402  pylint: disable=wrong-import-position
from harness.lifecycle import StoreReader  # noqa: E402  pylint: disable=wrong-import-position
from harness.runner import run_module  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer  # noqa: E402  pylint: disable=wrong-import-position

CLIENT_LOOP = r'''
import sys, time
from mlflow import MlflowClient

experiment_id, cutoff = sys.argv[1], int(sys.argv[2])
started = time.monotonic()
client = MlflowClient()
ids, token = [], None
while True:
    page = client.search_traces(locations=[experiment_id], filter_string="trace.timestamp_ms < %d" % cutoff,
                                max_results=500, page_token=token, include_spans=False)
    ids.extend(t.info.trace_id for t in page if t.info.tags.get("mlflowops.keep") is None)
    token = page.token
    if not token:
        break
for trace_id in ids:
    client.delete_traces(experiment_id=experiment_id, trace_ids=[trace_id])
print("%d %.3f" % (len(ids), time.monotonic() - started))
'''

DAY = datagen.DAY_MS


def seed(server, count):
    exp = datagen.create_experiment(server.url, "bench-traces-%s" % uuid.uuid4().hex[:8])
    now = datagen.now_ms()
    gen.add_traces(server.backend_store_uri, exp, [now - 40 * DAY - i for i in range(count)])
    gen.add_traces(server.backend_store_uri, exp, [now - 40 * DAY - i for i in range(5)], tags={"mlflowops.keep": "1"})
    return exp


def remaining(reader, exp):
    return reader.scalar("SELECT count(*) FROM trace_info WHERE experiment_id = %s" % exp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=50000)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args()
    server = MlflowServer().start()
    reader = StoreReader(server)
    module_times, module_own, loop_times = [], [], []
    try:
        for rep in range(options.reps):
            exp = seed(server, options.traces)
            started = time.monotonic()
            result, _run = run_module("traces_cleanup", {"tracking_uri": server.url, "experiments": [exp],
                                                         "older_than": "30d", "max_delete": -1})
            wall = time.monotonic() - started
            assert result["_status"] == "ok", result.get("msg")
            assert result["deleted"] == options.traces and remaining(reader, exp) == 5, result
            module_times.append(wall)
            module_own.append(result["duration_s"])

            exp = seed(server, options.traces)
            env = dict(os.environ, MLFLOW_TRACKING_URI=server.url)
            cutoff = datagen.now_ms() - 30 * DAY
            out = subprocess.run([sys.executable, "-c", CLIENT_LOOP, exp, str(cutoff)], capture_output=True, text=True,
                                 env=env, check=True, timeout=24 * 3600)
            deleted, seconds = out.stdout.strip().splitlines()[-1].split()
            left = remaining(reader, exp)
            assert int(deleted) == options.traces and left == 5, (deleted, left)
            loop_times.append(float(seconds))
            print("rep %d: traces_cleanup %.2fs wall (%.2fs in module), client loop %.2fs"
                  % (rep + 1, wall, module_own[-1], loop_times[-1]))
    finally:
        server.stop()
    a, a_own, b = statistics.median(module_times), statistics.median(module_own), statistics.median(loop_times)
    print("median over %d reps, %d traces: traces_cleanup %.2fs wall / %.2fs in module; client loop %.2fs"
          % (options.reps, options.traces, a, a_own, b))
    print("ratio (loop / module): %.1fx on wall time, %.1fx on the module's own time" % (b / a, b / a_own))


if __name__ == "__main__":
    main()
