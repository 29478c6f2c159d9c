# -*- coding: utf-8 -*-
"""db_schema through Ansible: databases created by an older MLflow, migrated by the installed one."""

import hashlib
import shutil
import sqlite3
import subprocess

import pytest

from harness.old_mlflow import OLD_VERSION, ensure_venv
from harness.runner import run_module

MAKE_OLD_STORES = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
for uri in sys.argv[2:]:
    SqlAlchemyStore(uri, sys.argv[1])
AuthStore().init_db(sys.argv[2].rsplit("/", 1)[0] + "/auth.db") if sys.argv[2].startswith("sqlite") else None
"""


def make_old_stores(root, *uris):
    """Tracking stores (and, beside the first SQLite one, an auth.db) at the old MLflow's head revision."""
    python = ensure_venv()
    subprocess.run([python, "-c", MAKE_OLD_STORES, str(root / "artifacts")] + list(uris), check=True,
                   capture_output=True, text=True, timeout=600, cwd=str(root))


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def revision(path, table="alembic_version"):
    connection = sqlite3.connect(str(path))
    try:
        return connection.execute("SELECT version_num FROM %s" % table).fetchone()[0]
    finally:
        connection.close()


@pytest.fixture(scope="module")
def old_sqlite(tmp_path_factory):
    root = tmp_path_factory.mktemp("old-schema")
    make_old_stores(root, "sqlite:///%s" % (root / "mlflow.db"))
    return root


@pytest.fixture
def old_copy(old_sqlite, tmp_path):
    for name in ("mlflow.db", "auth.db"):
        shutil.copy(str(old_sqlite / name), str(tmp_path / name))
    return tmp_path


def test_current_reports_pending_and_changes_nothing(old_copy):
    db = old_copy / "mlflow.db"
    before = digest(db)
    result, _run = run_module("db_schema", {"backend_store_uri": "sqlite:///%s" % db})
    assert result["_status"] == "ok", result
    assert result["changed"] is False
    tracking = result["tracking"]
    assert tracking["current_revision"] == revision(db)
    assert tracking["at_head"] is False and tracking["pending_count"] > 5
    assert tracking["pending"][-1] == tracking["head_revision"]
    assert result["mlflow_version"] == "3.17.2"
    assert result["auth"] is None and result["at_head"] is False
    # The same database through the old MLflow's interpreter: at its head, nothing pending.
    old, _run = run_module("db_schema", {"backend_store_uri": "sqlite:///%s" % db, "python": ensure_venv()})
    assert old["_status"] == "ok", old
    assert old["mlflow_version"] == OLD_VERSION
    assert old["tracking"]["at_head"] is True and old["tracking"]["pending"] == []
    assert digest(db) == before


def test_upgraded_in_check_mode_then_for_real_then_idempotent(old_copy):
    db = old_copy / "mlflow.db"
    auth = old_copy / "auth.db"
    args = {"backend_store_uri": "sqlite:///%s" % db, "auth_database_uri": "sqlite:///%s" % auth,
            "state": "upgraded"}
    before = digest(db), digest(auth)
    old_revision = revision(db)

    planned, _run = run_module("db_schema", args, check=True)
    assert planned["_status"] == "ok", planned
    assert planned["changed"] is True and planned["migrated"] == ["tracking", "auth"]
    assert planned["tracking"]["pending_count"] > 5
    assert planned["auth"]["legacy_unversioned"] is True and planned["auth"]["pending"]
    assert (digest(db), digest(auth)) == before

    migrated, _run = run_module("db_schema", args)
    assert migrated["_status"] == "ok", migrated
    assert migrated["changed"] is True and migrated["migrated"] == ["tracking", "auth"]
    assert migrated["at_head"] is True
    assert migrated["before"]["tracking"]["current_revision"] == old_revision
    assert revision(db) == migrated["tracking"]["head_revision"] == planned["tracking"]["head_revision"]
    assert revision(auth, "alembic_version_auth") == migrated["auth"]["head_revision"]
    assert migrated["migration_duration_s"]["tracking"] > 0

    again, _run = run_module("db_schema", args)
    assert again["changed"] is False and again["migrated"] == [] and again["at_head"] is True


def test_unknown_revision_is_refused(old_copy):
    db = old_copy / "mlflow.db"
    connection = sqlite3.connect(str(db))
    connection.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    connection.commit()
    connection.close()
    before = digest(db)
    for state in ("current", "upgraded"):
        result, _run = run_module("db_schema", {"backend_store_uri": "sqlite:///%s" % db, "state": state})
        assert result["_status"] == "failed"
        assert "f00dfeedbeef" in result["msg"] and "newer MLflow" in result["msg"]
    assert digest(db) == before


def test_bad_inputs(tmp_path):
    missing = tmp_path / "missing.db"
    result, _run = run_module("db_schema", {"backend_store_uri": "sqlite:///%s" % missing, "state": "upgraded"})
    assert result["_status"] == "failed" and "does not exist" in result["msg"]
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(str(empty)).close()
    result, _run = run_module("db_schema", {"backend_store_uri": "sqlite:///%s" % empty, "state": "upgraded"})
    assert result["_status"] == "failed" and "no MLflow tracking tables" in result["msg"]
    result, _run = run_module("db_schema", {"backend_store_uri": "mssql://x@y/z"})
    assert result["_status"] == "failed" and "not supported" in result["msg"]


def test_postgres_old_schema_upgraded_with_plain_postgresql_uri(postgres, tmp_path):
    uri = postgres.create_database("schema_pg")
    make_old_stores(tmp_path, uri)
    old_revision = postgres.psql("SELECT version_num FROM alembic_version", "schema_pg")
    password = uri.split(":")[2].split("@")[0]
    plain = uri.replace("postgresql+psycopg2://", "postgresql://").replace(":%s@" % password, "@")
    result, run = run_module("db_schema", {"backend_store_uri": plain, "db_password": password,
                                           "state": "upgraded"}, verbosity=3)
    assert result["_status"] == "ok", result
    assert result["changed"] is True
    assert result["before"]["tracking"]["current_revision"] == old_revision
    assert postgres.psql("SELECT version_num FROM alembic_version", "schema_pg") == result["tracking"]["head_revision"]
    assert password not in run.stdout + run.stderr
    assert OLD_VERSION.startswith("2.")
