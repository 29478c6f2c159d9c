# -*- coding: utf-8 -*-
"""db_backup / db_restore on PostgreSQL, through Ansible, against the session cluster and MLflow server."""

import json
import os
import secrets

from harness.backup_tools import backup_and_restore_under_writes, run_tasks
from harness.datagen import RunSpec, add_runs, create_experiment
from harness.proc_sampler import ProcSampler
from harness.services import closed_port_url

from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

PG_TOOLS = ("pg_dump", "pg_restore", "psql")


def test_backup_while_server_writes_secret_never_visible_restore_new_database(mlflow_pg_s3, postgres, tmp_path):
    store = parse_backend_store_uri(mlflow_pg_s3.backend_store_uri)
    postgres.psql('ALTER ROLE "%s" CREATEDB' % store.user)
    exp_id = create_experiment(mlflow_pg_s3.url, "pg-backup-%s" % secrets.token_hex(4))
    run_ids = add_runs(mlflow_pg_s3.url, mlflow_pg_s3.backend_store_uri, exp_id,
                       [RunSpec(metrics=5, steps=20) for _run in range(200)])
    target = "restored_%s" % secrets.token_hex(4)
    seen = backup_and_restore_under_writes(mlflow_pg_s3, exp_id, store.password, PG_TOOLS, str(tmp_path / "pg"),
                                           {"target_database": target, "jobs": 2})
    results, run, writer, writer_run, sampler = seen.results, seen.run, seen.writer, seen.writer_run, seen.sampler
    started = seen.started
    backup, restored = results["backup"], results["restore"]
    assert backup["_status"] == "ok", backup
    assert backup["verified"] == "restore"
    assert backup["backup"]["format"] == "custom" and backup["backup"]["schema_revision"]
    assert restored["_status"] == "ok", restored
    assert restored["created_database"] is True

    # the password: never in any process's argv or environment, the results, the -vvv output, the manifest
    assert {"pg_dump", "pg_restore"} <= sampler.seen, "the sampler never saw the dump run (%d samples)" % sampler.samples
    assert {"pg_dump", "pg_restore"} <= sampler.seen_env, sampler.seen_env
    assert sampler.leaks == []
    assert store.password not in json.dumps(results)
    assert store.password not in run.stdout + run.stderr
    with open(backup["backup"]["manifest"]) as handle:
        manifest_text = handle.read()
    assert store.password not in manifest_text
    assert json.loads(manifest_text)["source"].endswith(":***@127.0.0.1:%d/%s" % (postgres.port, store.database))

    # everything committed before the backup started is in the restored database
    before = writer.committed_before(started)
    assert len(before) > 3, writer.errors[:3]
    runs = set(postgres.psql("SELECT run_uuid FROM runs WHERE experiment_id = %s" % int(exp_id), target).split())
    assert set(run_ids) | {writer_run} <= runs
    steps = set(tuple(line.split("|")) for line in postgres.psql(
        "SELECT key, step FROM metrics WHERE run_uuid = '%s'" % writer_run, target).splitlines())
    assert set((k, str(s)) for k, s in before) <= steps
    assert int(postgres.psql("SELECT count(*) FROM metrics WHERE run_uuid IN (%s)" % ",".join(
        "'%s'" % r for r in run_ids), target)) == 200 * 5 * 20
    postgres.psql('DROP DATABASE "%s" WITH (FORCE)' % target)


def _own_store(postgres):
    name = "bk_%s" % secrets.token_hex(4)
    uri = postgres.create_database(name)
    user = parse_backend_store_uri(uri).user
    postgres.psql('ALTER ROLE "%s" CREATEDB' % user)
    postgres.psql(
        "SET ROLE \"%s\"; CREATE TABLE experiments (experiment_id serial PRIMARY KEY, name text UNIQUE);"
        " CREATE TABLE runs (run_uuid text PRIMARY KEY, experiment_id int REFERENCES experiments);"
        " CREATE TABLE metrics (run_uuid text REFERENCES runs, key text, step bigint, value float,"
        "  PRIMARY KEY (run_uuid, key, step));"
        " CREATE TABLE alembic_version (version_num text PRIMARY KEY);"
        " INSERT INTO alembic_version VALUES ('rev-test');"
        " INSERT INTO experiments (name) SELECT 'e' || i FROM generate_series(1, 20) i;"
        " INSERT INTO runs SELECT md5(i::text), 1 + i %% 20 FROM generate_series(1, 2000) i;"
        " INSERT INTO metrics SELECT md5(i::text), 'loss', s, random() FROM generate_series(1, 2000) i,"
        "  generate_series(1, 25) s;" % user, name)
    return name, uri


def test_directory_format_idempotence_restore_safety_and_bad_inputs(postgres, tmp_path):
    name, uri = _own_store(postgres)
    store = parse_backend_store_uri(uri)
    wrong = uri.replace(":%s@" % store.password, ":not-the-password@")
    unreachable = "postgresql://%s:%s@127.0.0.1:%s/%s" % (store.user, store.password,
                                                          closed_port_url().rsplit(":", 1)[1], name)
    d = str(tmp_path / "dir")
    args = {"backend_store_uri": uri, "dest": d, "format": "directory", "jobs": 2}
    copy = "%s_copy" % name
    results, run = run_tasks([
        ("dir1", "db_backup", args),
        ("dir2", "db_backup", args),
        ("dir_check", "db_backup", args, {"check_mode": True}),
        ("plain", "db_backup", {"backend_store_uri": uri, "dest": str(tmp_path / "plain"), "format": "plain",
                                "compression": "gzip", "verify": "restore"}),
        ("refused", "db_restore", {"backend_store_uri": uri, "src": d}),
        ("restore_check", "db_restore", {"backend_store_uri": uri, "src": d, "target_database": copy},
         {"check_mode": True}),
        ("restore_new", "db_restore", {"backend_store_uri": uri, "src": d, "target_database": copy, "jobs": 2}),
        ("restore_again", "db_restore", {"backend_store_uri": uri, "src": d, "target_database": copy}),
        ("restore_forced", "db_restore", {"backend_store_uri": uri, "src": d, "target_database": copy,
                                          "force": True}),
        ("wrong_password", "db_backup", {"backend_store_uri": wrong, "dest": str(tmp_path / "wrong")}),
        ("unreachable", "db_backup", {"backend_store_uri": unreachable, "dest": str(tmp_path / "unreach"),
                                      "db_connect_timeout": 3}),
    ])
    dir1, dir2, dir_check = results["dir1"], results["dir2"], results["dir_check"]
    assert dir1["_status"] == "ok", dir1
    assert dir1["changed"] is True and dir1["backup"]["format"] == "directory"
    assert os.path.isdir(dir1["backup"]["path"]) and os.path.exists(os.path.join(dir1["backup"]["path"], "toc.dat"))
    assert dir2["changed"] is False and dir2["unchanged"] is True, dir2
    assert dir_check["changed"] is False
    assert results["plain"]["_status"] == "ok" and results["plain"]["verified"] == "restore", results["plain"]

    assert results["refused"]["_status"] == "failed" and "not empty" in results["refused"]["msg"]
    assert results["restore_check"]["_status"] == "ok" and results["restore_check"]["created_database"] is True
    assert results["restore_new"]["_status"] == "ok", results["restore_new"]
    assert results["restore_new"]["created_database"] is True
    assert results["restore_again"]["_status"] == "failed" and "not empty" in results["restore_again"]["msg"]
    assert results["restore_forced"]["_status"] == "ok", results["restore_forced"]
    for table in ("experiments", "runs", "metrics", "alembic_version"):
        assert postgres.psql("SELECT count(*) FROM %s" % table, copy) == postgres.psql(
            "SELECT count(*) FROM %s" % table, name)

    wrong_result, unreachable_result = results["wrong_password"], results["unreachable"]
    assert wrong_result["_status"] == "failed"
    assert "password authentication failed" in wrong_result["msg"], wrong_result["msg"]
    assert unreachable_result["_status"] == "failed"
    assert "cannot connect to PostgreSQL 127.0.0.1" in unreachable_result["msg"], unreachable_result["msg"]
    for directory in ("wrong", "unreach"):
        path = tmp_path / directory
        assert not path.exists() or [p for p in os.listdir(str(path)) if not p.startswith(".")] == []
    assert store.password not in run.stdout + run.stderr + json.dumps(results)
    assert "not-the-password" not in run.stdout + run.stderr + json.dumps(results)

    # a committed change makes the next run back up again (in check mode too)
    postgres.psql("UPDATE metrics SET value = value + 1 WHERE step = 3 AND run_uuid = md5('7')", name)
    results, _run = run_tasks([("after_check", "db_backup", args, {"check_mode": True}),
                               ("after", "db_backup", dict(args, retention={"keep_last": 1}))])
    assert results["after_check"]["changed"] is True and results["after_check"]["created"] is True
    after = results["after"]
    assert after["changed"] is True and after["created"] is True
    assert [p["path"] for p in after["pruned"]] == [dir1["backup"]["path"]]
    assert not os.path.exists(dir1["backup"]["path"])
    postgres.psql('DROP DATABASE "%s" WITH (FORCE)' % copy)


def test_secret_in_no_argv_or_environment_on_every_restore_path(postgres, tmp_path):
    """custom (pg_restore), directory (pg_restore -j) and plain (psql) dumps, each restored into a new database.

    The password is given inside the URI for two paths and as db_password for the third; every process is
    sampled (argv and environment) while the tools run.
    """
    name, uri = _own_store(postgres)
    store = parse_backend_store_uri(uri)
    bare = uri.replace(":%s@" % store.password, "@")
    targets = dict((fmt, "%s_%s" % (name, fmt)) for fmt in ("custom", "directory", "plain"))
    tasks = []
    for fmt in ("custom", "directory", "plain"):
        dest = str(tmp_path / fmt)
        source = {"backend_store_uri": bare, "db_password": store.password} if fmt == "plain" else {
            "backend_store_uri": uri}
        tasks += [
            ("backup " + fmt, "db_backup", dict(source, dest=dest, format=fmt, verify="none",
                                                compression="gzip" if fmt == "plain" else "auto")),
            ("restore " + fmt, "db_restore", dict(source, src=dest, target_database=targets[fmt],
                                                  jobs=2 if fmt == "directory" else 1)),
        ]
    sampler = ProcSampler(store.password, PG_TOOLS)
    sampler.start()
    try:
        results, run = run_tasks(tasks, verbosity=3)
    finally:
        sampler.stop()
    for task_name, result in results.items():
        assert result["_status"] == "ok", (task_name, result.get("msg"))
    assert results["backup plain"]["backup"]["format"] == "plain"
    assert {"pg_dump", "pg_restore", "psql"} <= sampler.seen_env, (
        "the sampler did not read the environment of every tool (%s, %d samples)" % (sampler.seen_env, sampler.samples))
    assert sampler.leaks == []
    assert store.password not in run.stdout + run.stderr + json.dumps(results)
    # every path really restored the data
    for fmt, target in targets.items():
        for table in ("experiments", "runs", "metrics", "alembic_version"):
            assert postgres.psql("SELECT count(*) FROM %s" % table, target) == postgres.psql(
                "SELECT count(*) FROM %s" % table, name), (fmt, table)
        postgres.psql('DROP DATABASE "%s" WITH (FORCE)' % target)
