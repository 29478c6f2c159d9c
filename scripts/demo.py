# -*- coding: utf-8 -*-
"""The main job on an embedded default: a throwaway local MLflow on SQLite with sample runs,
maintained by the collection's site playbook, and a summary of what was done.

    make demo            (or: .venv/bin/python scripts/demo.py [--keep])

It starts ``mlflow server`` on a free loopback port with a SQLite store and local artifacts in a
temporary directory, creates sample experiments and runs (old finished runs, stale RUNNING runs, a
run protected by a registered model, soft-deleted runs with artifacts), MLflow 3 traces over 60 days (two
old ones carrying the keep tag) and logged models (old, recent, registered, already soft-deleted), runs
``playbooks/site.yml`` against it, prints each role's summary and what changed in the store, and
stops the server. ``--keep`` leaves the directory (store, backups, logs) for inspection.
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

# pylint: disable=wrong-import-position
from harness import datagen  # noqa: E402
from harness import datagen_mlflow3 as gen3  # noqa: E402
from harness.datagen import DAY_MS, RunSpec  # noqa: E402
from harness.runner import run_playbook  # noqa: E402
from harness.services import MlflowServer  # noqa: E402


def store_counts(path):
    connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = connection.execute(
            "SELECT lifecycle_stage, status, COUNT(*) FROM runs GROUP BY lifecycle_stage, status ORDER BY 1, 2"
        ).fetchall()
        metrics = connection.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        traces = connection.execute("SELECT COUNT(*) FROM trace_info").fetchone()[0]
        models = connection.execute(
            "SELECT lifecycle_stage, COUNT(*) FROM logged_models GROUP BY lifecycle_stage ORDER BY 1").fetchall()
    finally:
        connection.close()
    return rows, metrics, os.path.getsize(path), traces, models


def seed(server):
    """Sample data: 3 experiments, 600 runs over 120 days, stale RUNNING runs, a protected run."""
    now = datagen.now_ms()
    run_ids = {}
    for index, name in enumerate(["churn-model", "forecasting", "nlp-sandbox"]):
        experiment_id = datagen.create_experiment(server.url, name)
        specs = [RunSpec(start_time=start, metrics=5, steps=20, params=4)
                 for start in datagen.spread_start_times(180, 120, now=now)]
        specs += [RunSpec(start_time=now - (3 + index) * DAY_MS, status="RUNNING", end_time=None)]
        specs += [RunSpec(start_time=now - 100 * DAY_MS, status="FAILED", lifecycle_stage="deleted",
                          deleted_time=now - 40 * DAY_MS) for _index in range(20)]
        ids = datagen.add_runs(server.url, server.backend_store_uri, experiment_id, specs)
        datagen.write_artifacts(server.artifacts_destination, experiment_id, ids,
                                {"model/model.pkl": os.urandom(2048), "metrics.json": b'{"auc": 0.91}'})
        run_ids[name] = (experiment_id, ids)
    # The oldest run of churn-model backs a registered model version: cleanup must keep it.
    experiment_id, ids = run_ids["churn-model"]
    datagen.register_model(server.url, "churn-classifier", ids[179])
    seed_mlflow3(server, run_ids["nlp-sandbox"][0], now)
    return run_ids


def seed_mlflow3(server, experiment_id, now):
    """MLflow 3 data in one experiment: 300 traces over 60 days (two old ones kept by the keep tag), and logged
    models: 4 old, 2 recent, 1 old one registered (kept), 2 soft-deleted long ago (gc purges them), with artifacts."""
    uri = server.backend_store_uri
    gen3.add_traces(uri, experiment_id, [now - (index % 60) * DAY_MS - index for index in range(300)])
    gen3.add_traces(uri, experiment_id, [now - 50 * DAY_MS] * 2, tags={"mlflowops.keep": "true"})
    models = [gen3.create_logged_model(server.url, experiment_id, "agent-%d" % index) for index in range(9)]
    for info in models:
        gen3.write_model_artifacts(server.artifacts_destination, info, {"MLmodel": b"flavors: {}\n", "model.pkl": os.urandom(4096)})
    ids = [info["model_id"] for info in models]
    gen3.set_logged_models(uri, ids[:5] + ids[7:], created=now - 45 * DAY_MS, last_updated=now - 45 * DAY_MS)
    gen3.set_logged_models(uri, ids[7:], deleted=True)
    gen3.register_logged_model(server.url, "support-agent", ids[4])


def print_summary(run, before, after):
    print("\n=== What the site playbook did ===")
    for record in run.records:
        result = record["result"]
        if record["action"].endswith("debug") and "msg" in result:
            message = result["msg"] if isinstance(result["msg"], str) else json.dumps(result["msg"])
            print("  * %s" % message)
        elif record["status"] == "failed":
            print("  ! %s: %s" % (record["task"], result.get("msg")))
    changed = [r["task"] for r in run.records if r["result"].get("changed")]
    print("\n  tasks run: %d, changed: %d%s" % (len(run.records), len(changed),
                                                ("  (" + "; ".join(changed) + ")") if changed else ""))
    print("\n=== The store, before and after ===")
    for label, (rows, metrics, size, traces, models) in (("before", before), ("after", after)):
        runs = ", ".join("%s/%s: %d" % row for row in rows)
        print("  %-6s runs by stage/status: %s; metric rows: %d; traces: %d; logged models by stage: %s; file: %.1f MiB"
              % (label, runs, metrics, traces, ", ".join("%s: %d" % row for row in models) or "none",
                 size / 1048576.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the demo directory (store, backups, logs)")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="mlflowops-demo-")
    server = MlflowServer(root=os.path.join(root, "server"))
    os.makedirs(server.root, exist_ok=True)
    print("Starting a throwaway MLflow server (SQLite, local artifacts) in %s ..." % root)
    server.start()
    try:
        seed(server)
        before = store_counts(server.sqlite_path)
        print("MLflow %s at %s with %d runs. Running playbooks/site.yml ..." % (
            "server", server.url, sum(row[2] for row in before[0])))
        # The fleet report outlives the demo directory.
        report_dest = tempfile.mkdtemp(prefix="mlflowops-demo-report-")
        inventory = {"all": {"hosts": {"mlflow-demo": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "mlflow_tracking_uri": server.url,
            "mlflow_backend_store_uri": server.backend_store_uri,
            "mlflow_artifacts_destination": server.artifacts_destination,
            "backup_dest": os.path.join(root, "backups"),
            "backup_artifacts_src": server.artifacts_destination,
            "cleanup_older_than": "30d",
            "cleanup_reap_running_after": "2d",
            "cleanup_traces_older_than": "30d",
            "cleanup_logged_models_older_than": "30d",
            "cleanup_optimize": True,
            "health_thresholds": {"cpu_percent": 100, "memory_percent": 100},
            "health_disk_paths": ["/", root],
            "cleanup_state_file": os.path.join(root, "state", "cleanup-state.json"),
            "report_dest": report_dest,
        }}}}
        inventory_path = os.path.join(root, "inventory.json")
        with open(inventory_path, "w") as handle:
            json.dump(inventory, handle, indent=2)
        run = run_playbook(os.path.join(REPO, "playbooks", "site.yml"), inventory=inventory_path)
        after = store_counts(server.sqlite_path)
        print_summary(run, before, after)
        if run.rc != 0:
            print("\nThe site playbook failed (rc=%s):\n%s" % (run.rc, run.stdout[-4000:]))
            sys.exit(run.rc)
        report = run_playbook(os.path.join(REPO, "playbooks", "report.yml"), inventory=inventory_path)
        if report.rc != 0:
            print("\nThe report playbook failed (rc=%s):\n%s" % (report.rc, report.stdout[-4000:]))
            sys.exit(report.rc)
        print("\n=== The fleet report ===")
        print(report.task(action="fleet_report")["result"]["markdown"])
        print("Fleet report: %s" % os.path.join(report_dest, "report.html"))
    finally:
        server.stop()
        if args.keep:
            print("\nKept %s (inventory.json, server/mlflow.db, backups/)" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("\nDone.")


if __name__ == "__main__":
    main()
