# -*- coding: utf-8 -*-
"""A forced PostgreSQL restore over a database that a later migration extended: a new table with a foreign key on
one of the backup's tables made pg_restore --clean fail ("cannot drop constraint ... other objects depend on it"),
so the upgrade role's rollback could not restore. MLflow's new tables are dropped first and reported; a table that
is not MLflow's is left alone."""
import uuid

from harness.runner import run_module


def test_forced_restore_drops_the_tables_a_later_migration_added(postgres, tmp_path):
    name = "newer_%s" % uuid.uuid4().hex[:6]
    uri = postgres.create_database(name)
    owner = "mlflow_%s" % name
    postgres.psql("SET ROLE \"%s\"; CREATE TABLE alembic_version (version_num text PRIMARY KEY);"
                  "INSERT INTO alembic_version VALUES ('old1');"
                  "CREATE TABLE runs (run_uuid text CONSTRAINT run_pk PRIMARY KEY, n int);"
                  "INSERT INTO runs SELECT 'r' || i, i FROM generate_series(1, 50) i" % owner, name)
    dest = str(tmp_path / "backups")
    backup, _run = run_module("db_backup", {"backend_store_uri": uri, "dest": dest, "verify": "checksum"})
    assert backup["_status"] == "ok" and backup["created"] is True, backup
    # What a migration does afterwards: a new table referencing runs, new rows, a new revision.
    postgres.psql("SET ROLE \"%s\"; CREATE TABLE logged_models (id int PRIMARY KEY, "
                  "source_run_id text REFERENCES runs (run_uuid)); INSERT INTO logged_models VALUES (1, 'r1');"
                  "INSERT INTO runs VALUES ('late', 0); UPDATE alembic_version SET version_num = 'new2';"
                  # Somebody else's table in the same database, created after the backup: not the restore's to drop.
                  "CREATE TABLE team_notes (note text); INSERT INTO team_notes VALUES ('keep me')" % owner, name)

    args = {"backend_store_uri": uri, "src": backup["backup"]["manifest"], "force": True}
    planned, _run = run_module("db_restore", args, check=True)
    assert planned["_status"] == "ok" and planned["dropped_tables"] == ["logged_models"], planned
    assert planned["kept_tables"] == ["team_notes"]
    assert postgres.psql("SELECT count(*) FROM logged_models", name) == "1"  # check mode changed nothing

    restored, run = run_module("db_restore", args)
    assert restored["_status"] == "ok", run.stdout[-3000:]
    assert restored["dropped_tables"] == ["logged_models"] and restored["kept_tables"] == ["team_notes"]
    assert postgres.psql("SELECT note FROM team_notes", name) == "keep me"
    assert postgres.psql("SELECT to_regclass('logged_models') IS NULL", name) == "t"
    assert postgres.psql("SELECT version_num FROM alembic_version", name) == "old1"
    assert postgres.psql("SELECT count(*) FROM runs", name) == "50"
    assert postgres.psql("SELECT count(*) FROM pg_constraint WHERE conname = 'run_pk'", name) == "1"
