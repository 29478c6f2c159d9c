#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Benchmark db_backup / db_restore on a MariaDB store against ``mysqldump --single-transaction | gzip``.

A throwaway MariaDB server (Debian's packages, tests/harness/services.py); MLflow's own schema (a real
``mlflow server`` creates it through PyMySQL), then metric rows by ``INSERT ... SELECT`` until the tables hold
about --mb MB. Compared, medians of --reps runs, page cache warm (the store is dumped once before timing):

- the baseline: ``mariadb-dump --single-transaction <db> | gzip > file`` (issue 13's target: db_backup at most
  1.1x its time, with a smaller file);
- db_backup with zstd and with gzip (module_utils called directly, force=True, verify none), which include the
  exact change-fingerprint scan (COUNT(*) and CHECKSUM TABLE of every table) that skip-unchanged records for the
  next run (it runs alongside the dump);
- db_backup zstd of a changed store (the scheduled case: a previous backup, one metric updated since; the O(1)
  fingerprint differs, the exact scan compares alongside the dump);
- the unchanged-store check alone (O(1): nothing was written on the server since the last backup);
- restores into a new database: ``gunzip | mariadb`` of the baseline's file, and db_restore of each backup.

The last line of the output is one JSON object with every figure (seconds, medians; sizes in bytes).

    .venv/bin/python bench/bench_db_backup_mysql.py --mb 1024 --reps 3 [--restore-reps 1]
    .venv/bin/python bench/bench_db_backup_mysql.py --mb 5 --reps 1     # smoke run
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import uuid

from _common import median_of, timed, write_figures  # puts tests/ on sys.path

import conftest  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from harness.services import MariaDBServer, MlflowServer  # noqa: E402  pylint: disable=wrong-import-position

# pylint: disable=wrong-import-position
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import (  # noqa: E402
    BackupOptions,
    run_backup,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_restore import run_restore  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import (  # noqa: E402
    parse_backend_store_uri,
)
# pylint: enable=wrong-import-position

FIGURES = {}


def report(section, rows, baseline):
    base = dict(rows)[baseline]
    FIGURES[section] = dict((name, dict(median_s=round(seconds, 3), ratio_to_baseline=round(seconds / base, 3),
                                        baseline=baseline)) for name, seconds in rows)
    for name, seconds in rows:
        print("  %-48s median %8.2f s   %5.2fx %s" % (name, seconds, seconds / base, baseline))


def table_bytes(server, database):
    return int(server.sql("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                          "WHERE table_schema = %s", args=(database,))[0][0])


def build(server, megabytes):
    uri = server.create_database("bench")
    mlflow = MlflowServer(backend_store_uri=uri).start(timeout=300)
    mlflow.stop()
    run_ids = [uuid.uuid4().hex for _run in range(200)]
    server.sql("INSERT INTO experiments (name, artifact_location, lifecycle_stage) VALUES ('bench', '/tmp', 'active')",
               database="bench")
    experiment = server.sql("SELECT MAX(experiment_id) FROM experiments", database="bench")[0][0]
    conn = server.connect("bench")
    try:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                            "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                            "experiment_id) VALUES (%s, 'r', 'LOCAL', 'bench', '', 'bench', 'FINISHED', 0, 1, '', "
                            "'active', '/tmp', %s)", [(r, experiment) for r in run_ids])
            cur.execute("CREATE TEMPORARY TABLE bench_runs (i INT PRIMARY KEY, run_uuid VARCHAR(32))")
            cur.executemany("INSERT INTO bench_runs VALUES (%s, %s)", list(enumerate(run_ids)))
            batch = min(2000000, max(20000, megabytes * 3000))
            step = 0
            while table_bytes(server, "bench") < megabytes * 1024 * 1024:
                cur.execute("INSERT INTO metrics (`key`, value, timestamp, run_uuid, step, is_nan) "
                            "SELECT CONCAT('metric_', s.seq %% 10), s.seq / 7.0, 1700000000000 + %d, b.run_uuid, %d, 0 "
                            "FROM seq_1_to_%d s JOIN bench_runs b ON b.i = s.seq %% 200" % (step, step, batch))
                server.sql("ANALYZE TABLE bench.metrics")
                step += 1
    finally:
        conn.close()
    return uri


def main():
    parser = argparse.ArgumentParser(description="Benchmark db_backup/db_restore on MariaDB against mysqldump | gzip.")
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--restore-reps", type=int, default=None, help="restore repetitions (default: --reps)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mlflowops-bench-mysql-")
    server = MariaDBServer().start()
    try:
        print("building a %d MB MariaDB store through MLflow's schema..." % args.mb)
        elapsed, uri = timed(lambda: build(server, args.mb))
        store = parse_backend_store_uri(uri)
        rows = server.sql("SELECT COUNT(*) FROM metrics", database="bench")[0][0]
        size = table_bytes(server, "bench")
        print("  %.0f MB in tables, %d metric rows (built in %.0f s)" % (size / 1048576.0, rows, elapsed))
        out = os.path.join(root, "out")
        os.makedirs(out)
        dump = myt.find_tool(myt.DUMP_TOOLS, "dump")
        client = myt.find_tool(myt.CLIENT_TOOLS, "client")
        baseline_file = os.path.join(out, "baseline.sql.gz")

        def baseline():
            with myt.option_file(store) as cnf:
                subprocess.run("%s --defaults-extra-file=%s --single-transaction %s | gzip > %s" % (
                    dump, cnf, store.database, baseline_file), shell=True, check=True)
            return baseline_file

        def db_backup(compression):
            return lambda: run_backup(store, BackupOptions(os.path.join(out, compression), compression=compression,
                                                           verify="none", force=True))

        def remove(value):
            fsutil.remove_path(value["backup"]["path"])
            fsutil.remove_path(value["backup"]["manifest"])

        baseline()  # warm the page cache and the buffer pool
        label = "mysqldump --single-transaction | gzip"
        results = []
        med, _t, _v = median_of(args.reps, baseline)
        results.append((label, med))
        med, _t, zstd = median_of(args.reps, db_backup("zstd"))
        results.append(("db_backup zstd (target <= 1.1x)", med))
        med, _t, gzip = median_of(args.reps, db_backup("gzip"))
        results.append(("db_backup gzip", med))
        changed_dest = os.path.join(root, "changed")
        run_backup(store, BackupOptions(changed_dest, verify="none"))

        def changed_backup():
            server.sql("UPDATE metrics SET value = value + 1 ORDER BY run_uuid LIMIT 1", database="bench")
            value = run_backup(store, BackupOptions(changed_dest, verify="none", retention={"keep_last": 1}))
            assert value["created"], value
            return value
        med, _t, _v = median_of(args.reps, changed_backup)
        results.append(("db_backup zstd, changed store (scheduled)", med))
        print("MariaDB backup, %.0f MB of tables, %d reps:" % (size / 1048576.0, args.reps))
        report("mysql_backup", results, label)
        sizes = dict(baseline_gzip=os.path.getsize(baseline_file), db_backup_zstd=zstd["backup"]["size_bytes"],
                     db_backup_gzip=gzip["backup"]["size_bytes"])
        FIGURES["mysql_sizes"] = sizes
        print("  sizes: %s" % ", ".join("%s %.1f MB" % (k, v / 1048576.0) for k, v in sorted(sizes.items())))
        unchanged_dest = os.path.join(root, "unchanged")
        run_backup(store, BackupOptions(unchanged_dest, verify="none"))
        med, _t, skipped = median_of(args.reps, lambda: run_backup(store, BackupOptions(unchanged_dest, verify="none")))
        FIGURES["mysql_unchanged_check_s"] = round(med, 3)
        print("  unchanged-store check: %.2f s (unchanged=%s)" % (med, skipped.get("unchanged")))

        counter = [0]

        def fresh():
            counter[0] += 1
            return "restore_%d" % counter[0]

        def baseline_restore():
            name = fresh()
            server.sql("CREATE DATABASE `%s`" % name)
            with myt.option_file(store) as cnf:
                subprocess.run("gunzip -c %s | %s --defaults-extra-file=%s %s" % (baseline_file, client, cnf, name),
                               shell=True, check=True)
            return name

        def db_restore(value):
            return lambda: run_restore(store, value["backup"]["path"], target_database=fresh(), allow_other_store=True)

        restore_rows = []
        for name, func in (("gunzip | mariadb (baseline dump)", baseline_restore), ("db_restore zstd", db_restore(zstd)),
                           ("db_restore gzip", db_restore(gzip))):
            med, _t, _v = median_of(args.restore_reps or args.reps, func)
            restore_rows.append((name, med))
        print("MariaDB restore (into a new database; db_restore checks every table is there):")
        report("mysql_restore", restore_rows, "gunzip | mariadb (baseline dump)")
        for value in (zstd, gzip):
            remove(value)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    FIGURES.update(reps=args.reps, restore_reps=args.restore_reps or args.reps, mb=args.mb)
    write_figures(FIGURES)


if __name__ == "__main__":
    main()
