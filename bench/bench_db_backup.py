#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Benchmark db_backup / db_restore against the physical limit (cp) and the seed's approach.

SQLite: a store of about --sqlite-mb MB built through MLflow's own schema (a real ``mlflow server``
creates it), then millions of metric rows bulk-inserted with sqlite3 executemany. Compared:
``cp`` of the file, the seed's ``backup_sqlite`` (``sqlite3`` backup API, as the seed calls it), and
db_backup with compression none and zstd (module_utils called directly, force=True), plus restores.

PostgreSQL: a store of about --pg-mb MB (schema by MLflow, metric rows by INSERT ... SELECT),
compared: the seed's plain ``pg_dump > file``, db_backup with format directory + jobs 2, and the
custom format; restore times for each (the seed has no restore: ``psql -f`` of its plain dump).

Page cache is warm for every candidate (the store is read once before timing). Medians of --reps runs.
The last line of the output is one JSON object with every figure (seconds, medians).

    .venv/bin/python bench/bench_db_backup.py --sqlite-mb 1024 --pg-mb 1024 --reps 3
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import conftest  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from _common import interleaved_medians, median_of, timed  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer, PostgresCluster  # noqa: E402  pylint: disable=wrong-import-position

# pylint: disable=wrong-import-position
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil  # noqa: E402
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


def record(section, rows, baseline=None):
    """Keep a table's medians (and ratios to the baseline) for the JSON line printed at the end."""
    base = dict(rows)[baseline] if baseline else None
    FIGURES[section] = dict((name, dict(median_s=round(seconds, 3), **(
        {"ratio_to_baseline": round(seconds / base, 3), "baseline": baseline} if base else {}))) for name, seconds in rows)


def report(rows, baseline, section=None):
    base = dict(rows)[baseline]
    if section:
        record(section, rows, baseline)
    for name, seconds in rows:
        print("  %-44s median %8.2f s   %5.2fx %s" % (name, seconds, seconds / base, baseline))


# ---------------------------------------------------------------- SQLite

def build_sqlite(root, megabytes):
    os.makedirs(os.path.join(root, "server"))
    server = MlflowServer(root=os.path.join(root, "server")).start()
    path = server.sqlite_path
    server.stop()
    conn = sqlite3.connect(path)
    run_ids = [uuid.uuid4().hex for _run in range(200)]
    conn.execute("INSERT INTO experiments (name, artifact_location, lifecycle_stage) VALUES ('bench', '/tmp', 'active')")
    exp_id = conn.execute("SELECT max(experiment_id) FROM experiments").fetchone()[0]
    conn.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                     "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                     "VALUES (?, 'r', 'LOCAL', 'bench', '', 'bench', 'FINISHED', 0, 1, '', 'active', '/tmp', ?)",
                     [(run_id, exp_id) for run_id in run_ids])
    conn.commit()
    target = megabytes * 1024 * 1024
    step = 0
    while os.path.getsize(path) < target:
        rows = [("metric_%d" % (i % 10), float(i) / 7.0, 1700000000000 + step, run_ids[i % 200], step, 0)
                for i in range(200000)]
        conn.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)",
                         rows)
        conn.commit()
        step += 1
    rows = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
    conn.close()
    return path, rows


def seed_backup_sqlite(db_path, backup_dir):
    """The seed's MLflowBackup.backup_sqlite, verbatim in substance."""
    backup_path = os.path.join(backup_dir, "mlflow_backup_%s.db" % uuid.uuid4().hex[:8])
    connection = sqlite3.connect(db_path)
    backup = sqlite3.connect(backup_path)
    connection.backup(backup)
    connection.close()
    backup.close()
    return backup_path


def bench_sqlite(root, megabytes, reps, backup_only=False):
    print("building a %d MB SQLite store through MLflow's schema..." % megabytes)
    elapsed, (path, rows) = timed(lambda: build_sqlite(root, megabytes))
    size = os.path.getsize(path)
    print("  %s: %.0f MB, %d metric rows (built in %.0f s)" % (path, size / 1048576.0, rows, elapsed))
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass
    store = parse_backend_store_uri("sqlite:///" + path)
    out = os.path.join(root, "out")
    os.makedirs(out)

    def remove(value):
        if isinstance(value, dict):
            os.unlink(value["backup"]["path"])
            os.unlink(value["backup"]["manifest"])
        elif value and os.path.exists(value):
            os.unlink(value)
        settle()

    def settle():
        # no candidate inherits another's dirty pages (the seed and cp leave 1 GB unsynced): its writeback would
        # slow the next candidate's writes and fsync
        subprocess.run(["sync"], check=True)

    def db_backup(compression, verify):
        return lambda: run_backup(store, BackupOptions(out, compression=compression, verify=verify, force=True))

    cp_target = os.path.join(out, "copy.db")

    def cp_plain():
        subprocess.run(["cp", path, cp_target], check=True)
        return cp_target

    def cp_sync():
        subprocess.run(["cp", path, cp_target], check=True)
        subprocess.run(["sync", cp_target], check=True)  # fsync of that file (GNU sync FILE)
        return cp_target

    # Round-robin: each rep runs every candidate once, so outside load hits them alike.
    rows_out = interleaved_medians(reps, [
        ("cp (physical limit)", cp_plain, remove),
        ("cp + sync (target: db_backup none <= 1.3x)", cp_sync, remove),
        ("seed backup_sqlite (backup API, no fsync)", lambda: seed_backup_sqlite(path, out), remove),
        ("db_backup compression=none verify=none", db_backup("none", "none"), remove),
        ("db_backup compression=none verify=checksum", db_backup("none", "checksum"), remove),
    ])
    probe = run_backup(store, BackupOptions(out, compression="none", verify="none", force=True))
    with open(probe["backup"]["manifest"]) as handle:
        FIGURES["sqlite_snapshot_method"] = json.load(handle).get("snapshot_method")
    remove(probe)
    print("  snapshot method: %s" % FIGURES["sqlite_snapshot_method"])
    med, _times, kept = median_of(reps, db_backup("zstd", "none"), None)
    rows_out.append(("db_backup compression=zstd verify=none", med))
    zstd_size = kept["backup"]["size_bytes"]
    print("SQLite backup, %.0f MB store, %d reps:" % (size / 1048576.0, reps))
    report(rows_out, "cp + sync (target: db_backup none <= 1.3x)", "sqlite_backup")
    FIGURES["sqlite_store_bytes"] = size
    FIGURES["sqlite_zstd_backup_bytes"] = zstd_size
    print("  zstd backup size: %.0f MB (%.1f%% of the store)" % (zstd_size / 1048576.0, 100.0 * zstd_size / size))
    if backup_only:
        return
    plain = run_backup(store, BackupOptions(os.path.join(root, "plain"), compression="none", verify="none",
                                            force=True))["backup"]["path"]
    restore_rows = []
    for label, src in (("db_restore of the compression=none backup", plain),
                       ("db_restore of the zstd backup", kept["backup"]["path"])):
        target = os.path.join(root, "restored.db")

        def restore(src=src, target=target):
            if os.path.exists(target):
                os.unlink(target)
            return run_restore(parse_backend_store_uri("sqlite:///" + target), src, force=True, keep_previous=False,
                               allow_other_store=True)

        med, _times, _v = median_of(reps, restore)
        restore_rows.append((label, med))
    print("SQLite restore (temp file + integrity_check + rename):")
    record("sqlite_restore", restore_rows)
    for name, seconds in restore_rows:
        print("  %-44s median %8.2f s" % (name, seconds))


# ---------------------------------------------------------------- PostgreSQL

def build_postgres(cluster, megabytes):
    uri = cluster.create_database("bench")
    server = MlflowServer(backend_store_uri=uri).start()
    server.stop()
    run_ids = [uuid.uuid4().hex for _run in range(200)]
    cluster.psql("INSERT INTO experiments (name, artifact_location, lifecycle_stage) VALUES ('bench', '/tmp', 'active')",
                 "bench")
    cluster.psql("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                 "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) SELECT r, 'r', "
                 "'LOCAL', 'bench', '', 'bench', 'FINISHED', 0, 1, '', 'active', '/tmp', "
                 "(SELECT max(experiment_id) FROM experiments) FROM unnest(ARRAY[%s]) r"
                 % ",".join("'%s'" % r for r in run_ids), "bench")
    batch = min(2000000, max(200000, megabytes * 3000))  # about 1/3 kB a row with its indexes
    step = 0
    while int(cluster.psql("SELECT pg_database_size('bench')")) < megabytes * 1024 * 1024:
        cluster.psql("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) SELECT 'metric_' || (i %% 10), "
                     "i / 7.0, 1700000000000 + %d, (ARRAY[%s])[1 + i %% 200], %d, false "
                     "FROM generate_series(1, %d) i" % (step, ",".join("'%s'" % r for r in run_ids), step, batch),
                     "bench")
        step += 1
    cluster.psql("VACUUM ANALYZE", "bench")
    return uri


def bench_postgres(root, megabytes, reps, backup_only=False):
    cluster = PostgresCluster().start()
    try:
        print("building a %d MB PostgreSQL store through MLflow's schema..." % megabytes)
        elapsed, uri = timed(lambda: build_postgres(cluster, megabytes))
        size = int(cluster.psql("SELECT pg_database_size('bench')"))
        rows = int(cluster.psql("SELECT count(*) FROM metrics", "bench"))
        print("  %.0f MB, %d metric rows (built in %.0f s)" % (size / 1048576.0, rows, elapsed))
        store = parse_backend_store_uri(uri)
        env = dict(os.environ, PGPASSWORD=store.password)
        out = os.path.join(root, "pg")
        os.makedirs(out, exist_ok=True)
        seed_file = os.path.join(out, "mlflow_backup_seed.sql")

        def seed_dump():
            # the seed: os.system("pg_dump -U user -h host -p port db > file"), its exit status ignored
            subprocess.run("pg_dump -U %s -h %s -p %s %s > %s" % (store.user, store.host, store.port, store.database,
                                                                  seed_file), shell=True, env=env, check=False)
            return seed_file

        def db_backup(fmt, jobs, compression):
            return lambda: run_backup(store, BackupOptions(out, fmt=fmt, jobs=jobs, compression=compression,
                                                           verify="none", force=True))

        def remove(value):
            fsutil.remove_path(value["backup"]["path"])
            fsutil.remove_path(value["backup"]["manifest"])

        results = []
        med, _t, _v = median_of(reps, seed_dump)
        results.append(("seed plain pg_dump > file", med))
        fc_file = os.path.join(out, "plain-fc.dump")

        def pg_dump_fc():
            subprocess.run(["pg_dump", "-Fc", "-U", store.user, "-h", store.host, "-p", str(store.port), "-f", fc_file,
                            store.database], env=env, check=True)
            return fc_file

        med, _t, _v = median_of(reps, pg_dump_fc)
        results.append(("pg_dump -Fc (target: db_backup custom <= 1.1x)", med))
        fc_size = os.path.getsize(fc_file)
        os.unlink(fc_file)
        seed_size = os.path.getsize(seed_file)
        if backup_only:
            dir_gzip = dir_none = dict(backup=dict(size_bytes=0))
        else:
            med, _t, dir_gzip = median_of(reps, db_backup("directory", 2, "gzip"), None)
            results.append(("db_backup directory jobs=2 (gzip)", med))
            med, _t, dir_none = median_of(reps, db_backup("directory", 2, "none"), None)
            results.append(("db_backup directory jobs=2 compression=none", med))
        med, _t, custom = median_of(reps, db_backup("custom", 1, "zstd"), None)
        results.append(("db_backup custom (zstd, streamed)", med))
        changed_dest = os.path.join(root, "pg-changed")
        counter = [0]

        def changed_backup():  # the store changed since the newest backup: no force, the fingerprint decides
            counter[0] += 1
            cluster.psql("UPDATE runs SET name = 'r%d' WHERE run_uuid = (SELECT min(run_uuid) FROM runs)" % counter[0],
                         "bench")
            return run_backup(store, BackupOptions(changed_dest, compression="zstd", verify="none"))

        run_backup(store, BackupOptions(changed_dest, compression="zstd", verify="none"))
        med, _t, changed = median_of(reps, changed_backup, remove)
        assert changed["created"], changed
        results.append(("db_backup custom (zstd), store changed", med))
        print("PostgreSQL backup, %.0f MB database, %d reps:" % (size / 1048576.0, reps))
        report(results, "seed plain pg_dump > file", "postgres_backup")
        print("  sizes: seed plain %.0f MB; pg_dump -Fc %.0f MB; directory gzip %.0f MB; directory none %.0f MB; "
              "custom zstd %.0f MB" % (seed_size / 1048576.0, fc_size / 1048576.0,
                                       dir_gzip["backup"]["size_bytes"] / 1048576.0,
                                       dir_none["backup"]["size_bytes"] / 1048576.0,
                                       custom["backup"]["size_bytes"] / 1048576.0))
        FIGURES["postgres_sizes"] = dict(pg_dump_fc=fc_size, custom_zstd=custom["backup"]["size_bytes"])
        # skip-unchanged: the decision on an unchanged store (no dump), timed
        unchanged_dest = os.path.join(root, "pg-unchanged")
        run_backup(store, BackupOptions(unchanged_dest, verify="none"))
        med, _t, skipped = median_of(reps, lambda: run_backup(store, BackupOptions(unchanged_dest, verify="none")))
        FIGURES["postgres_unchanged_check_s"] = round(med, 3)
        print("  unchanged-store check: %.2f s (unchanged=%s)" % (med, skipped.get("unchanged")))
        if backup_only:
            remove(custom)
            return

        restore_rows = []

        def fresh():
            counter[0] += 1
            name = "restore_%d" % counter[0]
            return name

        def seed_restore():
            name = fresh()
            cluster.psql('CREATE DATABASE "%s" OWNER "%s"' % (name, store.user))
            subprocess.run(["psql", "-q", "-h", store.host, "-p", str(store.port), "-U", store.user, "-d", name,
                            "-v", "ON_ERROR_STOP=1", "-f", seed_file], env=env, check=True, capture_output=True)
            return name

        def db_restore(value, jobs):
            return lambda: run_restore(store, value["backup"]["path"], target_database=fresh(), jobs=jobs,
                                       allow_other_store=True)

        cluster.psql('ALTER ROLE "%s" CREATEDB' % store.user)
        for label, func in (("psql -f seed plain dump", seed_restore),
                            ("db_restore directory gzip jobs=2", db_restore(dir_gzip, 2)),
                            ("db_restore directory none jobs=2", db_restore(dir_none, 2)),
                            ("db_restore custom zstd jobs=2", db_restore(custom, 2))):
            med, _t, _v = median_of(reps, func)
            restore_rows.append((label, med))
        print("PostgreSQL restore (into a new database, row counts checked for db_restore):")
        report(restore_rows, "psql -f seed plain dump", "postgres_restore")
        for value in (dir_gzip, dir_none, custom):
            remove(value)
    finally:
        cluster.stop()


def main():
    parser = argparse.ArgumentParser(description="Benchmark db_backup and db_restore against cp and the seed.")
    parser.add_argument("--sqlite-mb", type=int, default=1024)
    parser.add_argument("--pg-mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--sqlite-backup-only", action="store_true", help="SQLite: the backup rows only (no restores)")
    parser.add_argument("--pg-backup-only", action="store_true",
                        help="PostgreSQL: only the seed, pg_dump -Fc and db_backup custom rows (no directory format, no restores)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mlflowops-bench-backup-")
    try:
        if not args.skip_sqlite:
            bench_sqlite(os.path.join(root, "sqlite"), args.sqlite_mb, args.reps, backup_only=args.sqlite_backup_only)
        if not args.skip_postgres:
            bench_postgres(os.path.join(root, "postgres"), args.pg_mb, args.reps, backup_only=args.pg_backup_only)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    FIGURES.update(reps=args.reps, sqlite_mb=None if args.skip_sqlite else args.sqlite_mb,
                   pg_mb=None if args.skip_postgres else args.pg_mb)
    print(json.dumps(FIGURES, sort_keys=True))


if __name__ == "__main__":
    main()
