# -*- coding: utf-8 -*-
"""db_backup and db_restore with store_kind=auth: the basic-auth app's database (users and permissions), made by
MLflow's own auth store, on SQLite and PostgreSQL. Judged by the database itself: its users, revision and tables."""

import json
import os
import secrets
import sqlite3
import sys

from harness.auth_db import init_auth, sqlite_users
from harness.old_mlflow import ensure_venv
from harness.plays import play


def manifest_of(result):
    with open(result["backup"]["manifest"]) as handle:
        return json.load(handle)


def test_sqlite_auth_database_backup_restore_and_kept_apart_from_the_tracking_stores(mlflow_sqlite, tmp_path):
    auth_path = str(tmp_path / "basic_auth.db")
    uri = "sqlite:///%s" % auth_path
    init_auth(sys.executable, uri, ["alice", "bob"])
    connection = sqlite3.connect(auth_path)
    revision = connection.execute("SELECT version_num FROM alembic_version_auth").fetchone()[0]
    connection.close()
    dest = str(tmp_path / "backups")
    auth = {"backend_store_uri": uri, "store_kind": "auth", "dest": dest, "verify": "restore"}
    tracking = {"backend_store_uri": mlflow_sqlite.backend_store_uri, "dest": dest, "retention": {"keep_last": 1},
                "force": True}
    results, run = play(("planned", "db_backup", auth, {"check_mode": True}), ("backup", "db_backup", auth),
                        ("again", "db_backup", auth), ("as tracking", "db_backup", dict(auth, store_kind="tracking")),
                        ("tracking", "db_backup", tracking), ("tracking again", "db_backup", tracking))
    assert results["planned"]["_status"] == "ok" and results["planned"]["changed"] is True, run.stdout[-3000:]
    backup = results["backup"]
    assert backup["_status"] == "ok" and backup["created"] is True and backup["verified"] == "restore", backup
    manifest = manifest_of(backup)
    assert manifest["store_kind"] == "auth" and manifest["store"]["kind"] == "auth"
    assert manifest["schema_revision"] == backup["backup"]["schema_revision"] == revision
    assert oct(os.stat(backup["backup"]["path"]).st_mode & 0o777) == "0o600"
    assert results["again"]["changed"] is False and results["again"]["unchanged"] is True
    refused = results["as tracking"]
    assert refused["_status"] == "failed" and "is not an MLflow store" in refused["msg"], refused
    assert "no runs table" in refused["msg"] or "no MLflow schema revision" in refused["msg"], refused["msg"]
    # Two tracking backups with keep_last=1 in the same directory: the auth database's backup is another store's.
    pruned = results["tracking again"]
    assert pruned["_status"] == "ok" and [item["name"] for item in pruned["pruned"]] == [
        os.path.basename(results["tracking"]["backup"]["path"])]
    assert [item["name"] for item in pruned["ignored"]] == [os.path.basename(backup["backup"]["path"])]
    assert "auth database" in pruned["ignored"][0]["reason"]
    assert os.path.exists(backup["backup"]["path"])

    # A lost user comes back; the tracking store's backup is never restored as the auth database, nor the other way.
    connection = sqlite3.connect(auth_path)
    connection.execute("DELETE FROM users WHERE username = 'bob'")
    connection.commit()
    connection.close()
    restore = {"backend_store_uri": uri, "store_kind": "auth", "src": backup["backup"]["manifest"], "force": True}
    results, run = play(("planned", "db_restore", restore, {"check_mode": True}),
                        ("as tracking", "db_restore", dict(restore, store_kind="tracking", allow_other_store=True)),
                        ("tracking into auth", "db_restore", dict(restore, src=pruned["backup"]["manifest"],
                                                                  allow_other_store=True)))
    assert results["planned"]["_status"] == "ok" and results["planned"]["changed"] is True, run.stdout[-3000:]
    assert sqlite_users(auth_path) == ["alice"]
    for name in ("as tracking", "tracking into auth"):
        assert results[name]["_status"] == "failed" and "refusing to restore it" in results[name]["msg"], results[name]
    assert "is a backup of an MLflow auth database" in results["as tracking"]["msg"]
    assert "is a backup of an MLflow store" in results["tracking into auth"]["msg"]
    assert sqlite_users(auth_path) == ["alice"]
    results, run = play(("restore", "db_restore", restore), ("from the directory", "db_restore", dict(restore, src=dest)))
    assert results["restore"]["_status"] == "ok" and results["restore"]["changed"] is True, run.stdout[-3000:]
    assert sqlite_users(auth_path) == ["alice", "bob"]
    # The directory holds backups of two stores: the auth restore picks the auth database's, by identity and kind.
    assert results["from the directory"]["restored"]["path"] == backup["backup"]["path"], results["from the directory"]


def test_postgresql_legacy_auth_database_restored_after_a_newer_mlflow_migrated_it(postgres, tmp_path):
    # An auth database of MLflow 2.12.2 (revision in alembic_version), backed up; then MLflow 3.17 migrates it
    # (alembic_version_auth, role tables) and adds a user. A forced restore makes it the 2.12.2 database again.
    name = "auth_%s" % secrets.token_hex(4)
    user = "mlflow_%s" % name
    uri = postgres.create_database(name, user=user)
    postgres.psql('ALTER ROLE "%s" CREATEDB' % user)
    init_auth(ensure_venv(), uri, ["alice"])
    legacy_revision = postgres.psql("SELECT version_num FROM alembic_version", name)
    tables_before = postgres.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                                  "WHERE schemaname = 'public'", name)
    assert "alembic_version_auth" not in tables_before.split(",")
    dest = str(tmp_path / "backups")
    args = {"backend_store_uri": uri, "store_kind": "auth", "dest": dest, "verify": "restore"}
    results, run = play(("backup", "db_backup", args), ("as tracking", "db_backup", dict(args, store_kind="tracking")))
    backup = results["backup"]
    assert backup["_status"] == "ok" and backup["verified"] == "restore", run.stdout[-3000:]
    manifest = manifest_of(backup)
    assert manifest["schema_revision"] == legacy_revision and manifest["store_kind"] == "auth"
    assert manifest["row_counts"]["users"] == 1
    assert results["as tracking"]["_status"] == "failed" and "is not an MLflow store" in results["as tracking"]["msg"]
    password = uri.split(":")[2].split("@")[0]
    assert password not in json.dumps(results) and password not in run.stdout

    init_auth(sys.executable, uri, ["carol"])
    assert postgres.psql("SELECT count(*) FROM alembic_version_auth", name) == "1"
    restore = {"backend_store_uri": uri, "store_kind": "auth", "src": dest, "force": True}
    results, run = play(("restore", "db_restore", restore))
    restored = results["restore"]
    assert restored["_status"] == "ok", run.stdout[-3000:]
    assert "alembic_version_auth" in restored["dropped_tables"] and "roles" in restored["dropped_tables"]
    assert postgres.psql("SELECT string_agg(username, ',' ORDER BY username) FROM users", name) == "alice"
    assert postgres.psql("SELECT version_num FROM alembic_version", name) == legacy_revision
    assert postgres.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                         "WHERE schemaname = 'public'", name) == tables_before
