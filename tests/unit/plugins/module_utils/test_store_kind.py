# -*- coding: utf-8 -*-
"""The two kinds of MLflow database a backup can hold (mlflow_tables.StoreKind): how each is recognised, and how
the kind keeps their backups apart (backups.store_identity / same_store)."""

import sqlite3

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups, sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_restore import postgres_content_problem
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_tables import (
    AUTH,
    TRACKING,
    extra_tables_plan,
    store_kind,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


def database(*statements):
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    return conn


def test_kinds_by_name_and_the_default():
    assert store_kind(None) is TRACKING and store_kind("") is TRACKING and store_kind("auth") is AUTH
    with pytest.raises(KeyError):
        store_kind("registry")


@pytest.mark.parametrize("version_table", ["alembic_version_auth", "alembic_version"])
def test_an_auth_database_of_either_release_is_recognised_by_its_revision_and_users(version_table):
    # MLflow 3.6+ keeps the auth revision in alembic_version_auth; older releases in alembic_version.
    conn = database("CREATE TABLE users (id INTEGER)", "CREATE TABLE %s (version_num TEXT)" % version_table,
                    "INSERT INTO %s VALUES ('8606fa83a998')" % version_table)
    assert sqlite_store.mlflow_problem(conn, AUTH) is None
    assert sqlite_store.schema_revision(conn, AUTH.version_tables) == "8606fa83a998"
    problem = sqlite_store.mlflow_problem(conn, TRACKING)
    assert problem == ("it has no runs table, so it is not an MLflow store" if version_table == "alembic_version"
                       else "it has no alembic_version and no runs table, so it is not an MLflow store")


def test_the_newer_auth_version_table_wins_over_a_legacy_one_left_beside_it():
    conn = database("CREATE TABLE users (id INTEGER)", "CREATE TABLE alembic_version (version_num TEXT)",
                    "INSERT INTO alembic_version VALUES ('old')", "CREATE TABLE alembic_version_auth (version_num TEXT)",
                    "INSERT INTO alembic_version_auth VALUES ('new')")
    assert sqlite_store.schema_revision(conn, AUTH.version_tables) == "new"


def test_a_tracking_store_is_not_an_auth_database_and_an_empty_version_table_is_no_revision():
    tracking = database("CREATE TABLE runs (id INTEGER)", "CREATE TABLE alembic_version (version_num TEXT)",
                        "INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1')")
    assert sqlite_store.mlflow_problem(tracking, TRACKING) is None
    assert sqlite_store.mlflow_problem(tracking, AUTH) == "it has no users table, so it is not an MLflow auth database"
    empty = database("CREATE TABLE users (id INTEGER)", "CREATE TABLE alembic_version_auth (version_num TEXT)")
    assert sqlite_store.mlflow_problem(empty, AUTH) == (
        "its alembic_version_auth or alembic_version table is empty, so it is not an MLflow auth database")


def test_a_server_backups_manifest_is_judged_by_the_kind():
    auth = dict(size_bytes=10, schema_revision="f1a2b3c4d5e6",
                row_counts={"alembic_version_auth": 1, "users": 2, "roles": 0})
    assert postgres_content_problem(auth, AUTH) is None
    assert postgres_content_problem(auth, TRACKING) == "it has no alembic_version and no runs table"
    legacy = dict(auth, row_counts={"alembic_version": 1, "users": 2})
    assert postgres_content_problem(legacy, AUTH) is None
    assert postgres_content_problem(dict(auth, row_counts={"users": 1}), AUTH) == (
        "it has no alembic_version_auth or alembic_version table")


def test_the_kind_is_part_of_the_identity_so_backups_of_one_database_as_two_kinds_never_mix(tmp_path):
    store = parse_backend_store_uri("sqlite:///%s" % tmp_path.joinpath("mlflow.db"))
    tracking = backups.store_identity(store, "mlflow")
    auth = backups.store_identity(store, "mlflow", "auth")
    assert "kind" not in tracking and auth["kind"] == "auth"
    # A tracking identity is as it always was: manifests written before kinds existed stay the same store.
    assert tracking == backups.store_identity(store, "mlflow", "tracking")
    assert backups.same_store(dict(store=tracking), tracking) and backups.same_store(dict(store=auth), auth)
    assert not backups.same_store(dict(store=auth), tracking) and not backups.same_store(dict(store=tracking), auth)
    assert backups.describe_identity(auth).startswith("sqlite auth database sqlite:///")


def test_a_forced_auth_restore_drops_the_tables_a_later_auth_migration_created():
    # A 2.x auth database backed up, then migrated by 3.17: its new version table and role tables go.
    drop, keep = extra_tables_plan(["alembic_version", "alembic_version_auth", "users", "roles", "role_permissions",
                                    "team_notes"], ["alembic_version", "users", "experiment_permissions"])
    assert drop == ["alembic_version_auth", "role_permissions", "roles"] and keep == ["team_notes"]
