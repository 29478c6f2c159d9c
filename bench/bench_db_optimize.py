#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Benchmarks for issue 6: db_optimize against the sqlite3 CLI's VACUUM, and the upgrade role's downtime.

    .venv/bin/python bench/bench_db_optimize.py [--size-gb 1.0] [--free 0.6] [--repeat 3] [--skip-upgrade]

1. Builds (once, cached in --work) a SQLite store with MLflow 2.12.2's schema (created by the old
   MLflow in its cached venv) filled with bulk-inserted runs and metric rows to about --size-gb,
   then deletes --free of the runs with all their rows (as gc does), leaving that share of pages free.
2. For --repeat rounds, on fresh copies of that store: ``sqlite3 DB 'VACUUM'`` (the limit), the
   db_optimize work in-process (module_utils, what the module runs), and the db_optimize module
   through ansible-playbook (including Ansible's start-up). Prints medians and ratios. After every
   trial the file itself is checked (by SQLite, not by the module's report): VACUUM must have run,
   the free pages must be gone and the file must have shrunk like the CLI's VACUUM shrinks it, so a
   db_optimize that skips the work fails the benchmark instead of looking fast.
3. Upgrade downtime: a fresh copy served by MLflow 2.12.2, upgraded to the installed MLflow by the
   upgrade role (command service step); downtime = stop to healthy, split into stop, migration and
   start-to-healthy, from the role's own timestamps.

The last line of the output is one JSON object with every figure.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

# conftest puts the collection on sys.path.
import conftest  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from _common import timed  # noqa: E402  pylint: disable=wrong-import-position
from harness.old_mlflow import OLD_VERSION, copy_venv, ensure_venv  # noqa: E402  pylint: disable=wrong-import-position
from harness.runner import run_module, run_playbook  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import free_port, http_get, wait_until  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_sqlite import (  # noqa: E402  pylint: disable=wrong-import-position
    optimize_sqlite,
)

MAKE_SCHEMA = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
store = SqlAlchemyStore(sys.argv[1], sys.argv[2])
print(store.create_experiment("bench"))
"""

METRIC_KEYS = 5


def build_store(path, size_gb, free, artifacts):
    """A store of about ``size_gb`` with ``free`` of its pages free; returns its run count."""
    python = ensure_venv()
    experiment = subprocess.run([python, "-c", MAKE_SCHEMA, "sqlite:///%s" % path, artifacts], check=True,
                                capture_output=True, text=True, cwd=os.path.dirname(path)).stdout.strip().splitlines()[-1]
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    steps = 70
    run_ids = []
    target = size_gb * 1024 ** 3
    batch = 500
    now = int(time.time() * 1000)
    while os.path.getsize(path) < target:
        connection.execute("BEGIN")
        rows_runs, rows_metrics, rows_latest, rows_params, rows_tags = [], [], [], [], []
        for _i in range(batch):
            run_id = uuid.uuid4().hex
            run_ids.append(run_id)
            rows_runs.append((run_id, "bench-%s" % run_id[:8], "LOCAL", "bench", "", "bench", "FINISHED", now, now + 1,
                              "", "active", "%s/%s/artifacts" % (artifacts, run_id), int(experiment)))
            for index in range(METRIC_KEYS):
                key = "metric_%d" % index
                for step in range(steps):
                    rows_metrics.append((key, step * 0.5, now + step, run_id, step, 0))
                rows_latest.append((key, steps * 0.5, now + steps, steps - 1, 0, run_id))
            rows_params.extend(("param_%d" % i, str(i), run_id) for i in range(3))
            rows_tags.extend([("mlflow.runName", "bench", run_id), ("mlflow.user", "bench", run_id)])
        connection.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,"
            " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows_runs)
        connection.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                               rows_metrics)
        connection.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                               " VALUES (?,?,?,?,?,?)", rows_latest)
        connection.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", rows_params)
        connection.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", rows_tags)
        connection.execute("COMMIT")
    doomed = run_ids[: int(len(run_ids) * free)]
    connection.execute("BEGIN")
    connection.execute("CREATE TEMP TABLE doomed (run_uuid TEXT PRIMARY KEY)")
    connection.executemany("INSERT INTO doomed VALUES (?)", ((r,) for r in doomed))
    for table in ("metrics", "latest_metrics", "params", "tags", "runs"):
        connection.execute("DELETE FROM %s WHERE run_uuid IN (SELECT run_uuid FROM doomed)" % table)
    connection.execute("COMMIT")
    connection.execute("PRAGMA journal_mode = DELETE")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    freelist = connection.execute("PRAGMA freelist_count").fetchone()[0]
    connection.close()
    return dict(runs=len(run_ids), deleted=len(doomed), pages=pages, free_pages=freelist,
                free_ratio=round(freelist / float(pages), 3), size=os.path.getsize(path))


def fresh_copy(master, path):
    if os.path.exists(path):
        os.remove(path)
    shutil.copyfile(master, path)
    subprocess.run(["sync"], check=False)


def pages(path):
    """(page_count, freelist_count, page_size) as SQLite itself reads the file."""
    connection = sqlite3.connect(path)
    try:
        return tuple(connection.execute("PRAGMA %s" % name).fetchone()[0]
                     for name in ("page_count", "freelist_count", "page_size"))
    finally:
        connection.close()


def assert_vacuumed(path, master_bytes, master_free_pages, cli_bytes, who):
    """The file really was vacuumed: no free pages left and the size the CLI's VACUUM reaches (within 2%)."""
    page_count, freelist, page_size = pages(path)
    size = os.path.getsize(path)
    assert master_free_pages > 0, "the master store has no free pages: nothing to measure"
    assert freelist == 0, "%s: %d free pages left, VACUUM did not run" % (who, freelist)
    assert size == page_count * page_size, (who, size, page_count, page_size)
    assert size <= master_bytes - (master_free_pages * page_size) * 0.9, (
        "%s: the file did not shrink (%d bytes, master %d)" % (who, size, master_bytes))
    if cli_bytes is not None:
        assert abs(size - cli_bytes) <= 0.02 * cli_bytes, "%s: %d bytes, the CLI's VACUUM %d" % (who, size, cli_bytes)
    return size


def bench_optimize(master, work, repeat):
    copy = os.path.join(work, "trial.db")
    cli, direct, module = [], [], []
    sizes = {"before": os.path.getsize(master)}
    _pages, master_free, _size = pages(master)
    sizes["free_pages_before"] = master_free
    for _i in range(repeat):
        fresh_copy(master, copy)
        seconds, _done = timed(lambda: subprocess.run(["sqlite3", copy, "VACUUM"], check=True))
        cli.append(seconds)
        sizes["cli_after"] = assert_vacuumed(copy, sizes["before"], master_free, None, "sqlite3 CLI")
        fresh_copy(master, copy)
        seconds, result = timed(lambda: optimize_sqlite(copy, min_free_bytes=1024 * 1024))
        direct.append(seconds)
        assert "vacuum" in result["actions"], result["actions"]
        sizes["direct_after"] = assert_vacuumed(copy, sizes["before"], master_free, sizes["cli_after"], "in-process")
        assert sizes["direct_after"] == result["size_after_bytes"], (sizes["direct_after"], result["size_after_bytes"])
        sizes["actions"] = result["actions"]
        fresh_copy(master, copy)
        seconds, (result, _run) = timed(lambda: run_module("db_optimize", {"backend_store_uri": "sqlite:///%s" % copy}))
        assert result["_status"] == "ok", result
        assert result["changed"] is True and "vacuum" in result["actions"], result
        sizes["ansible_after"] = assert_vacuumed(copy, sizes["before"], master_free, sizes["cli_after"], "ansible")
        module.append(seconds)
    os.remove(copy)
    cli_median = statistics.median(cli)
    return dict(
        sqlite3_cli_vacuum_s=[round(x, 2) for x in cli], db_optimize_inprocess_s=[round(x, 2) for x in direct],
        db_optimize_ansible_s=[round(x, 2) for x in module], median_cli_s=round(cli_median, 2),
        median_inprocess_s=round(statistics.median(direct), 2), median_ansible_s=round(statistics.median(module), 2),
        ratio_inprocess=round(statistics.median(direct) / cli_median, 3),
        ratio_ansible=round(statistics.median(module) / cli_median, 3), sizes=sizes, vacuum_verified=True)


def bench_upgrade(master, work):
    root = os.path.join(work, "upgrade")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    python = copy_venv(OLD_VERSION, os.path.join(root, "venv"))
    db = os.path.join(root, "mlflow.db")
    fresh_copy(master, db)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    service = os.path.join(REPO, "tests", "harness", "old_mlflow.py")
    common = "%s %s service %%s --dir %s --python %s --backend-store-uri sqlite:///%s --artifacts-destination %s --port %d" % (
        sys.executable, service, root, python, db, os.path.join(root, "artifacts"), port)
    subprocess.run(common % "start", shell=True, check=True, capture_output=True)  # nosec - local bench
    wait_until(lambda: http_get(url + "/health")[1].strip() == "OK", 300, "old server")
    try:
        from harness.services import api  # pylint: disable=import-outside-toplevel
        assert api(url, "experiments/search", {"max_results": 5})
        import mlflow  # pylint: disable=import-outside-toplevel
        started = time.monotonic()
        run = run_playbook(os.path.join(REPO, "playbooks", "upgrade.yml"), timeout=7200, extra_vars=dict(
            upgrade_mlflow_version=mlflow.__version__, upgrade_venv=os.path.join(root, "venv"),
            upgrade_backup_dir=os.path.join(root, "backups"), upgrade_backup_verify="checksum",
            upgrade_health_delay=1, upgrade_health_retries=600, mlflow_tracking_uri=url,
            mlflow_backend_store_uri="sqlite:///%s" % db, mlflow_service_manager="command",
            mlflow_service_stop_command=common % "stop", mlflow_service_start_command=common % "start"))
        total = time.monotonic() - started
        if run.rc != 0:
            raise RuntimeError(run.stdout[-4000:])
        timings = None
        for record in run.records:
            if record["task"].endswith("Record the result"):
                timings = record["result"]["ansible_facts"]["upgrade_timings"]
        stop_at, stopped, backed_up, migrated, healthy = (float(timings[k]) for k in (
            "stop_at", "stopped_at", "backed_up_at", "migrated_at", "healthy_at"))
        return dict(role_total_s=round(total, 1), downtime_s=round(healthy - stop_at, 1),
                    stop_s=round(stopped - stop_at, 1), backup_s=round(backed_up - stopped, 1),
                    migration_s=round(migrated - backed_up, 1),
                    start_to_healthy_s=round(healthy - migrated, 1), db_bytes=os.path.getsize(db))
    finally:
        subprocess.run(common % "stop", shell=True, check=False, capture_output=True)  # nosec - local bench


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--free", type=float, default=0.6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/mlflowops/bench-db-optimize"))
    parser.add_argument("--skip-optimize", action="store_true")
    parser.add_argument("--skip-upgrade", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    master = os.path.join(args.work, "master-%sgb-%s.db" % (args.size_gb, args.free))
    report = dict(size_gb=args.size_gb, free=args.free, repeat=args.repeat, old_mlflow=OLD_VERSION)
    if not os.path.exists(master):
        seconds, built = timed(lambda: build_store(master + ".tmp", args.size_gb, args.free,
                                                   os.path.join(args.work, "artifacts")))
        os.rename(master + ".tmp", master)
        report["build"] = dict(built, seconds=round(seconds, 1))
        print(json.dumps(report["build"]), flush=True)
    report["store_bytes"] = os.path.getsize(master)
    if not args.skip_optimize:
        report["optimize"] = bench_optimize(master, args.work, args.repeat)
        print(json.dumps(report["optimize"]), flush=True)
    if not args.skip_upgrade:
        report["upgrade"] = bench_upgrade(master, args.work)
        print(json.dumps(report["upgrade"]), flush=True)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
