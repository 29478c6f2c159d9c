# -*- coding: utf-8 -*-
"""MySQL/MariaDB backend stores: db_backup, db_restore, db_optimize, db_schema and gc against a real MariaDB.

A throwaway MariaDB 10.11 server (Debian's packages) runs for the session; an MLflow server uses it through
PyMySQL. Every assertion reads the database or the filesystem, not only the module's report.
"""

import json
import os
import secrets
import subprocess
import time

import pytest

from harness import datagen, datagen_mlflow3 as gen
from harness.backup_tools import backup_and_restore_under_writes, kill_group, run_tasks, start_play
from harness.datagen import RunSpec, add_runs, create_experiment
from harness.old_mlflow import OLD_VERSION, copy_venv
from harness.runner import run_module
from harness.services import api, closed_port_url

from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

COUNTED = ("runs", "metrics", "latest_metrics", "params", "tags", "experiments", "alembic_version")
DUMP_TOOLS = ("mariadb-dump", "mysqldump", "mariadb", "mysql")


def counts(mariadb, database, tables=COUNTED):
    return dict((t, mariadb.sql("SELECT COUNT(*) FROM `%s`.`%s`" % (database, t))[0][0]) for t in tables)


def _own_store(mariadb, rows=2000, steps=25):
    """A small MLflow-shaped database (alembic_version, experiments, runs, metrics) with its own user."""
    name = "bk_%s" % secrets.token_hex(4)
    uri = mariadb.create_database(name, password="pw'\"#\\ %s" % secrets.token_hex(4))
    for statement in (
            "CREATE TABLE experiments (experiment_id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) UNIQUE)",
            "CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, experiment_id INT, data VARBINARY(64),"
            " FOREIGN KEY (experiment_id) REFERENCES experiments (experiment_id))",
            "CREATE TABLE metrics (run_uuid VARCHAR(32), `key` VARCHAR(250), step BIGINT, value DOUBLE,"
            " PRIMARY KEY (run_uuid, `key`, step), FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid))",
            "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('rev-test')",
            "INSERT INTO experiments (name) SELECT CONCAT('e', seq) FROM seq_1_to_20",
            "INSERT INTO runs SELECT MD5(seq), 1 + seq %% 20, UNHEX(MD5(seq)) FROM seq_1_to_%d" % rows,
            "INSERT INTO metrics SELECT MD5(r.seq), 'loss', s.seq, RAND() FROM seq_1_to_%d r, seq_1_to_%d s"
            % (rows, steps)):
        mariadb.sql(statement, database=name)
    return name, uri


def test_backup_under_writes_restores_every_committed_run_secret_never_visible(mlflow_mariadb, mariadb, tmp_path):
    """Acceptance: 1,000 runs, backup (verify=restore) under continuous writes, restore into a new database."""
    server = mlflow_mariadb
    store = parse_backend_store_uri(server.backend_store_uri)
    exp_id = create_experiment(server.url, "my-backup-%s" % secrets.token_hex(4))
    run_ids = add_runs(server.url, server.backend_store_uri, exp_id,
                       [RunSpec(metrics=3, steps=4, params=3, tags={"team": "db"}) for _run in range(1000)])
    target = "restored_%s" % secrets.token_hex(4)
    seen = backup_and_restore_under_writes(server, exp_id, store.password, DUMP_TOOLS, str(tmp_path / "my"),
                                           {"target_database": target})
    results, run, writer, writer_run, sampler = seen.results, seen.run, seen.writer, seen.writer_run, seen.sampler
    started = seen.started
    backup, restored = results["backup"], results["restore"]
    assert backup["_status"] == "ok", backup.get("msg")
    assert backup["verified"] == "restore" and backup["backup"]["engine"] == "mysql"
    assert backup["backup"]["format"] == "plain" and backup["backup"]["schema_revision"]
    assert backup["backup"]["path"].endswith(".sql.zst")
    assert oct(os.stat(backup["backup"]["path"]).st_mode & 0o777) == "0o600"
    assert restored["_status"] == "ok", restored.get("msg")
    assert restored["created_database"] is True

    # the password: in no argv or environment of the dump/restore children, results, -vvv output, manifest
    assert {"mariadb-dump", "mariadb"} <= sampler.seen_env, (sampler.seen_env, sampler.samples)
    assert sampler.leaks == []
    text = json.dumps(results) + run.stdout + run.stderr
    assert store.password not in text
    with open(backup["backup"]["manifest"]) as handle:
        manifest_text = handle.read()
    assert store.password not in manifest_text
    manifest = json.loads(manifest_text)
    assert manifest["source"].endswith(":***@127.0.0.1:%d/%s" % (mariadb.port, store.database))
    assert manifest["row_counts"]["runs"] >= 1001

    # identical counts (the writer's metrics aside) and every write committed before the backup started
    src, dst = counts(mariadb, store.database), counts(mariadb, target)
    for table in ("runs", "params", "tags", "experiments", "alembic_version"):
        assert src[table] == dst[table], (table, src, dst)
    in_runs = ",".join("'%s'" % r for r in run_ids)
    for table, expected in (("metrics", 1000 * 3 * 4), ("params", 3000), ("latest_metrics", 3000)):
        assert mariadb.sql("SELECT COUNT(*) FROM `%s`.%s WHERE run_uuid IN (%s)" % (target, table, in_runs))[0][0] \
            == expected, table
    before = writer.committed_before(started)
    assert len(before) > 3, writer.errors[:3]
    steps = set((k, s) for k, s in mariadb.sql(
        "SELECT `key`, step FROM `%s`.metrics WHERE run_uuid = %%s" % target, args=(writer_run,)))
    assert before <= steps
    mariadb.sql("DROP DATABASE `%s`" % target)


def test_unchanged_kill_corruption_restore_safety_and_bad_inputs(mariadb, tmp_path):
    name, uri = _own_store(mariadb)
    store = parse_backend_store_uri(uri)
    dest = str(tmp_path / "b")
    args = {"backend_store_uri": uri, "dest": dest}
    copy = "%s_copy" % name
    wrong = uri.replace(":%s@" % uri.split("://", 1)[1].split("@")[0].split(":", 1)[1], ":not-the-password@")
    unreachable = "mysql://u:p@127.0.0.1:%s/%s" % (closed_port_url().rsplit(":", 1)[1], name)
    results, run = run_tasks([
        ("first", "db_backup", args),
        ("second", "db_backup", args),
        ("checked", "db_backup", args, {"check_mode": True}),
        ("refused", "db_restore", {"backend_store_uri": uri, "src": dest}),
        ("restore_new", "db_restore", {"backend_store_uri": uri, "src": dest, "target_database": copy}),
        ("restore_again", "db_restore", {"backend_store_uri": uri, "src": dest, "target_database": copy}),
        ("restore_forced", "db_restore", {"backend_store_uri": uri, "src": dest, "target_database": copy,
                                          "force": True}),
        ("wrong_password", "db_backup", {"backend_store_uri": wrong, "dest": str(tmp_path / "wrong")}),
        ("unknown_db", "db_backup", {"backend_store_uri": uri.rsplit("/", 1)[0] + "/no_such_db",
                                     "dest": str(tmp_path / "unknown")}),
        ("unreachable", "db_backup", {"backend_store_uri": unreachable, "dest": str(tmp_path / "unreach"),
                                      "db_connect_timeout": 3}),
        ("mssql_backup", "db_backup", {"backend_store_uri": "mssql+pyodbc://sa:s3cret@db/mlflow",
                                       "dest": str(tmp_path / "mssql")}),
        ("mssql_gc", "gc", {"backend_store_uri": "mssql://sa:s3cret@db/mlflow"}),
        ("mssql_schema", "db_schema", {"backend_store_uri": "mssql://sa:s3cret@db/mlflow"}),
        ("mssql_optimize", "db_optimize", {"backend_store_uri": "mssql://sa:s3cret@db/mlflow"}),
        ("mssql_restore", "db_restore", {"backend_store_uri": "mssql://sa:s3cret@db/mlflow", "src": dest}),
    ], verbosity=3)
    first, second = results["first"], results["second"]
    assert first["_status"] == "ok", first.get("msg")
    assert first["changed"] is True and os.path.exists(first["backup"]["manifest"])
    assert second["_status"] == "ok" and second["changed"] is False and second["unchanged"] is True, second
    assert results["checked"]["changed"] is False
    # a write in another database moves InnoDB's transaction counter, so the constant-time check cannot tell; the
    # exact hash (read alongside the dump, or first in check mode) finds this store unchanged: no new file
    listing = sorted(os.listdir(dest))
    for statement in ("CREATE DATABASE `%s_elsewhere`", "CREATE TABLE `%s_elsewhere`.t (i INT)",
                      "INSERT INTO `%s_elsewhere`.t VALUES (1)"):
        mariadb.sql(statement % name)
    elsewhere, _run = run_tasks([("check", "db_backup", args, {"check_mode": True}), ("run", "db_backup", args)])
    for task in ("check", "run"):
        assert elsewhere[task]["_status"] == "ok", elsewhere[task].get("msg")
        assert elsewhere[task]["changed"] is False and elsewhere[task]["unchanged"] is True, elsewhere[task]
    assert sorted(os.listdir(dest)) == listing
    mariadb.sql("DROP DATABASE `%s_elsewhere`" % name)
    assert results["refused"]["_status"] == "failed" and "not empty" in results["refused"]["msg"]
    assert results["restore_new"]["_status"] == "ok", results["restore_new"].get("msg")
    assert results["restore_again"]["_status"] == "failed" and "not empty" in results["restore_again"]["msg"]
    assert results["restore_forced"]["_status"] == "ok", results["restore_forced"].get("msg")
    tables = ("experiments", "runs", "metrics", "alembic_version")
    assert counts(mariadb, copy, tables) == counts(mariadb, name, tables)
    assert mariadb.sql("SELECT COUNT(*) FROM `%s`.runs a JOIN `%s`.runs b USING (run_uuid) WHERE a.data = b.data"
                       % (name, copy))[0][0] == 2000  # binary column byte-exact

    assert results["wrong_password"]["_status"] == "failed"
    assert "Access denied" in results["wrong_password"]["msg"], results["wrong_password"]["msg"]
    assert results["unknown_db"]["_status"] == "failed" and "Unknown database" in results["unknown_db"]["msg"]
    assert results["unreachable"]["_status"] == "failed"
    assert "cannot connect to MySQL 127.0.0.1" in results["unreachable"]["msg"], results["unreachable"]["msg"]
    for task in ("mssql_backup", "mssql_gc", "mssql_schema", "mssql_optimize", "mssql_restore"):
        assert results[task]["_status"] == "failed", task
        assert "(MSSQL) backend stores are not supported" in results[task]["msg"], (task, results[task]["msg"])
    for directory in ("wrong", "unknown", "unreach", "mssql"):
        path = tmp_path / directory
        assert not path.exists() or [p for p in os.listdir(str(path)) if not p.startswith(".")] == []
    text = run.stdout + run.stderr + json.dumps(results)
    assert store.password not in text and "not-the-password" not in text and "s3cret" not in text

    # a committed change makes the next run back up again; retention prunes the first backup
    mariadb.sql("UPDATE metrics SET value = value + 1 WHERE step = 3 AND run_uuid = MD5(7)", database=name)
    results, _run = run_tasks([("after_check", "db_backup", args, {"check_mode": True}),
                               ("after", "db_backup", dict(args, retention={"keep_last": 1}))])
    assert results["after_check"]["changed"] is True and results["after_check"]["created"] is True
    after = results["after"]
    assert after["changed"] is True and after["created"] is True, after
    assert [p["path"] for p in after["pruned"]] == [first["backup"]["path"]]

    # a forced restore makes the backup's tables the backup's again; a table created after the backup that is not
    # MLflow's is somebody else's and stays (MLflow's newer tables are dropped: see the migration rollback below)
    mariadb.sql("CREATE TABLE `%s`.created_later (id INT PRIMARY KEY)" % copy)
    mariadb.sql("INSERT INTO `%s`.created_later VALUES (7)" % copy)
    forced, _run = run_module("db_restore", {"backend_store_uri": uri, "src": dest, "target_database": copy,
                                             "force": True})
    assert forced["_status"] == "ok" and forced["dropped_tables"] == [], forced
    assert forced["kept_tables"] == ["created_later"]
    assert counts(mariadb, copy, tables) == counts(mariadb, name, tables)
    assert mariadb.sql("SELECT id FROM `%s`.created_later" % copy)

    # a flipped byte is refused before the target is touched
    with open(after["backup"]["path"], "r+b") as handle:
        handle.seek(os.path.getsize(after["backup"]["path"]) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    mariadb.sql("INSERT INTO `%s`.experiments (name) VALUES ('marker')" % copy)
    corrupt, _run = run_module("db_restore", {"backend_store_uri": uri, "src": dest, "target_database": copy,
                                              "force": True})
    assert corrupt["_status"] == "failed" and "is corrupt: sha256" in corrupt["msg"], corrupt["msg"]
    assert mariadb.sql("SELECT COUNT(*) FROM `%s`.experiments WHERE name = 'marker'" % copy)[0][0] == 1

    # SIGKILL in the middle of a backup leaves nothing that looks complete
    killed_dest = str(tmp_path / "killed")
    proc = start_play("db_backup", {"backend_store_uri": uri, "dest": killed_dest, "compression": "gzip",
                                    "verify": "restore"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.isdir(killed_dest) and any(n.endswith(".partial") for n in os.listdir(killed_dest)):
            break
        time.sleep(0.05)
    kill_group(proc)
    names = os.listdir(killed_dest) if os.path.isdir(killed_dest) else []
    assert not [n for n in names if n.endswith(".manifest.json")], names
    listing, _run = run_module("backup_info", {"path": killed_dest})
    if listing["_status"] == "ok":
        assert not [b for b in listing.get("backups", []) if b.get("status") == "complete"], listing
    refused, _run = run_module("db_restore", {"backend_store_uri": uri, "src": killed_dest, "target_database": copy,
                                              "force": True})
    assert refused["_status"] == "failed", refused
    mariadb.sql("DROP DATABASE `%s`" % copy)
    mariadb.sql("DROP DATABASE `%s`" % name)


def test_optimize_then_unchanged_and_schema_at_head(mlflow_mariadb, mariadb, tmp_path):
    server = mlflow_mariadb
    store = parse_backend_store_uri(server.backend_store_uri)
    # make reclaimable space in metrics: a big table, then most of it deleted
    name, uri = _own_store(mariadb, rows=3000, steps=40)
    mariadb.sql("DELETE FROM metrics WHERE step > 3", database=name)
    # MLflow's own auth migration cannot create its tables on MySQL/MariaDB (two foreign keys named fk_user_id,
    # mlflow/mlflow#9642, #10964): db_schema must report that cleanly.
    auth = mariadb.create_database("mlflow_auth_%s" % secrets.token_hex(3))
    from mlflow.server.auth.db.utils import migrate  # pylint: disable=import-outside-toplevel
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = sqlalchemy.create_engine(auth)
    try:
        migrate(engine, "head")
        auth_broken = False
    except sqlalchemy.exc.OperationalError:
        auth_broken = True
    engine.dispose()
    opt = {"backend_store_uri": uri, "min_free_mb": 1, "min_free_ratio": 0.1}
    results, run = run_tasks([
        ("planned", "db_optimize", opt, {"check_mode": True}),
        ("optimized", "db_optimize", opt),
        ("again", "db_optimize", opt),
        ("schema", "db_schema", {"backend_store_uri": server.backend_store_uri}),
        ("schema_upgraded", "db_schema", {"backend_store_uri": server.backend_store_uri, "state": "upgraded"}),
        ("auth", "db_schema", {"backend_store_uri": server.backend_store_uri, "auth_database_uri": auth,
                               "state": "upgraded"}),
    ], verbosity=3)
    planned, optimized, again = results["planned"], results["optimized"], results["again"]
    assert planned["_status"] == "ok", planned.get("msg")
    assert planned["changed"] is True and "metrics" in planned["plan"]["tables"], planned
    assert optimized["_status"] == "ok" and optimized["changed"] is True, optimized
    assert "OPTIMIZE metrics" in optimized["actions"], optimized["actions"]
    assert again["_status"] == "ok" and again["changed"] is False, again
    free = mariadb.sql("SELECT data_free FROM information_schema.tables WHERE table_schema = %s "
                       "AND table_name = 'metrics'", args=(name,))[0][0]
    assert free < 1024 * 1024, free
    assert counts(mariadb, name, ("metrics",)) == {"metrics": 3000 * 3}
    schema = results["schema"]
    assert schema["_status"] == "ok", schema.get("msg")
    assert schema["changed"] is False, schema
    text = json.dumps(schema)
    assert '"at_head": true' in text and '"at_head": false' not in text, text
    assert results["schema_upgraded"]["_status"] == "ok" and results["schema_upgraded"]["changed"] is False
    if auth_broken:
        assert results["auth"]["_status"] == "failed"
        assert "auth schema migration" in results["auth"]["msg"] and "Traceback" not in results["auth"]["msg"], \
            results["auth"]["msg"]
    else:  # a fixed MLflow: the auth database migrates and is at head
        assert results["auth"]["_status"] == "ok", results["auth"].get("msg")
    assert store.password not in run.stdout + run.stderr + json.dumps(results)
    assert parse_backend_store_uri(auth).password not in run.stdout + run.stderr
    mariadb.sql("DROP DATABASE `%s`" % name)


def test_gc_runs_with_children_and_logged_models_no_fk_error(mlflow_mariadb, tmp_path):
    server = mlflow_mariadb
    uri = server.backend_store_uri
    exp = create_experiment(server.url, "my-gc-%s" % secrets.token_hex(4))
    run_ids = add_runs(server.url, uri, exp, [RunSpec(metrics=2, steps=3, params=2) for _run in range(20)])
    for run_id in run_ids[:10]:
        api(server.url, "runs/log-inputs", {"run_id": run_id, "datasets": [{
            "dataset": {"name": "ds", "digest": "d%s" % run_id[:6], "source_type": "local", "source": "{}"},
            "tags": [{"key": "mlflow.data.context", "value": "train"}]}]})
    models = [gen.create_logged_model(server.url, exp, "m%d" % i, source_run_id=run_ids[i]) for i in range(3)]
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = datagen._engine(uri)  # pylint: disable=protected-access
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO logged_model_params (model_id, experiment_id, param_key, param_value) VALUES (:m, :e, :k, :v)"),
            [dict(m=m["model_id"], e=int(exp), k="p%d" % i, v=str(i)) for m in models for i in range(3)])
    api(server.url, "runs/outputs", {"run_id": run_ids[0], "models": [{"model_id": models[0]["model_id"], "step": 0}]})
    for run_id in run_ids[:15]:
        api(server.url, "runs/delete", {"run_id": run_id})
    for model in models:
        api(server.url, "logged-models/%s" % model["model_id"], method="DELETE")
    args = {"backend_store_uri": uri, "artifacts_destination": server.artifacts_destination}
    result, _run = run_module("gc", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["purged_runs"] == 15 and result["purged_logged_models"] == 3, result
    ids = ",".join("'%s'" % r for r in run_ids)
    mids = ",".join("'%s'" % m["model_id"] for m in models)
    with engine.connect() as connection:
        def scalar(sql):
            return connection.execute(sqlalchemy.text(sql)).scalar()
        assert scalar("SELECT COUNT(*) FROM runs WHERE run_uuid IN (%s)" % ids) == 5
        for table in ("metrics", "params", "tags", "latest_metrics"):
            assert scalar("SELECT COUNT(DISTINCT run_uuid) FROM %s WHERE run_uuid IN (%s)" % (table, ids)) == 5, table
        assert scalar("SELECT COUNT(*) FROM inputs WHERE destination_id IN (%s)" % ids) == 0
        assert scalar("SELECT COUNT(*) FROM logged_models WHERE model_id IN (%s)" % mids) == 0
        assert scalar("SELECT COUNT(*) FROM logged_model_params WHERE model_id IN (%s)" % mids) == 0
    engine.dispose()
    again, _run = run_module("gc", args)
    assert again["_status"] == "ok" and again["changed"] is False, again


@pytest.mark.slow
def test_real_upgrade_from_mlflow_2_on_mariadb_then_rollback_by_restore(mariadb, tmp_path):
    """A store created by MLflow 2.x (its own migrations, on MariaDB), backed up, migrated to this MLflow by
    db_schema with counts kept; then the pre-upgrade backup restored with force: the revision, the table set and
    the counts are those of 2.x again (MySQL DDL is not transactional: the tables 3.x added are dropped)."""
    old = str(tmp_path / "venv")
    copy_venv(OLD_VERSION, old)
    old_python = os.path.join(old, "bin", "python")
    subprocess.run([old_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "PyMySQL"],
                   check=True, capture_output=True, timeout=600)
    name = "old_%s" % secrets.token_hex(4)
    uri = mariadb.create_database(name)
    # the old MLflow creates its schema as its server would on first start (initial tables, then its migrations)
    out = subprocess.run([old_python, "-c", "import sys; from mlflow.store.tracking.sqlalchemy_store import "
                          "SqlAlchemyStore; SqlAlchemyStore(sys.argv[1], sys.argv[2])", uri, str(tmp_path)],
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    old_revision = mariadb.sql("SELECT version_num FROM `%s`.alembic_version" % name)[0][0]
    old_tables = set(row[0] for row in mariadb.sql("SHOW TABLES FROM `%s`" % name))
    mariadb.sql("INSERT INTO experiments (name, artifact_location, lifecycle_stage) VALUES ('up', '/tmp', 'active')",
                database=name)
    exp = mariadb.sql("SELECT MAX(experiment_id) FROM experiments", database=name)[0][0]
    mariadb.sql("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                "SELECT MD5(seq), 'r', 'LOCAL', 'up', '', 'u', 'FINISHED', seq, seq + 1, '', 'active', '/tmp', %d "
                "FROM seq_1_to_300" % exp, database=name)
    for table, columns, value in (("metrics", "`key`, value, timestamp, run_uuid, step, is_nan",
                                   "CONCAT('m', s.seq), s.seq, 1, MD5(r.seq), 0, 0"),
                                  ("params", "`key`, value, run_uuid", "CONCAT('p', s.seq), 'v', MD5(r.seq)"),
                                  ("tags", "`key`, value, run_uuid", "CONCAT('t', s.seq), 'v', MD5(r.seq)")):
        mariadb.sql("INSERT INTO %s (%s) SELECT %s FROM seq_1_to_300 r, seq_1_to_3 s" % (table, columns, value),
                    database=name)
    before = counts(mariadb, name, ("runs", "metrics", "params", "tags", "experiments"))
    dest = str(tmp_path / "upgrade")
    results, run = run_tasks([
        ("backup", "db_backup", {"backend_store_uri": uri, "dest": dest, "verify": "restore"}),
        ("pending", "db_schema", {"backend_store_uri": uri}, {"check_mode": True}),
        ("upgrade", "db_schema", {"backend_store_uri": uri, "state": "upgraded"}),
        ("again", "db_schema", {"backend_store_uri": uri, "state": "upgraded"}),
    ])
    assert results["backup"]["_status"] == "ok", results["backup"].get("msg")
    assert results["backup"]["backup"]["schema_revision"] == old_revision
    assert results["upgrade"]["_status"] == "ok", results["upgrade"].get("msg")
    assert results["upgrade"]["changed"] is True and results["again"]["changed"] is False, results["again"]
    new_revision = mariadb.sql("SELECT version_num FROM `%s`.alembic_version" % name)[0][0]
    new_tables = set(row[0] for row in mariadb.sql("SHOW TABLES FROM `%s`" % name))
    assert new_revision != old_revision and new_tables > old_tables
    assert counts(mariadb, name, before) == before

    restored, _run = run_module("db_restore", {"backend_store_uri": uri, "src": results["backup"]["backup"]["manifest"],
                                               "force": True})
    assert restored["_status"] == "ok", restored.get("msg")
    assert set(restored["dropped_tables"]) == new_tables - old_tables
    assert mariadb.sql("SELECT version_num FROM `%s`.alembic_version" % name)[0][0] == old_revision
    assert set(row[0] for row in mariadb.sql("SHOW TABLES FROM `%s`" % name)) == old_tables
    assert counts(mariadb, name, before) == before
    assert parse_backend_store_uri(uri).password not in run.stdout + run.stderr
    mariadb.sql("DROP DATABASE `%s`" % name)
