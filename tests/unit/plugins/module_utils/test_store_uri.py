# -*- coding: utf-8 -*-
import os
import stat

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import (
    parse_backend_store_uri,
    pgpass_file,
)


def test_sqlite_absolute_and_relative():
    assert parse_backend_store_uri("sqlite:////srv/mlflow/mlflow.db").path == "/srv/mlflow/mlflow.db"
    relative = parse_backend_store_uri("sqlite:///mlflow.db")
    assert relative.path == os.path.abspath("mlflow.db")
    assert relative.is_sqlite and relative.redacted() == "sqlite:///" + relative.path


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgres"])
def test_postgres_spellings_and_redaction(scheme):
    store = parse_backend_store_uri("%s://mlflow:p%%40ss:w0rd@db.example:6543/tracking?sslmode=require" % scheme)
    assert store.is_postgresql
    assert (store.host, store.port, store.user, store.database) == ("db.example", 6543, "mlflow", "tracking")
    assert store.password == "p@ss:w0rd"
    assert "p@ss" not in store.redacted() and "w0rd" not in store.redacted()
    assert store.redacted() == "%s://mlflow:***@db.example:6543/tracking?sslmode=require" % scheme
    assert "w0rd" not in repr(store.to_result())
    env = store.libpq_env(pgpass_file="/tmp/x")
    assert env["PGSSLMODE"] == "require" and env["PGDATABASE"] == "tracking"
    assert not any("w0rd" in value for value in env.values())
    assert store.sqlalchemy_url(driver="psycopg2").startswith("postgresql+psycopg2://mlflow:p%40ss%3Aw0rd@")


def test_socket_host_from_query_and_password_override():
    store = parse_backend_store_uri("postgresql:///mlflow?host=/var/run/postgresql", password="override")
    assert store.socket_host == "/var/run/postgresql"
    assert store.password == "override"
    assert store.libpq_env()["PGHOST"] == "/var/run/postgresql"


@pytest.mark.parametrize("uri,fragment", [
    ("mssql://u:secret@h/db", "not supported"),
    ("mssql+pyodbc://sa:secret@db/mlflow", "(MSSQL) backend stores are not supported"),
    ("oracle://u:secret@db/x", "is not supported"),
    ("mysql://u:secret@db", "names no database"),
    ("mysql://u:secret@/db", "names no host"),
    ("mysql://u:secret@db/x?sslmode=require", "unsupported MySQL query parameter(s) sslmode"),
    ("sqlite://", "must name a file"),
    ("postgresql://u:secret@h:5432/", "names no database"),
    ("postgresql://u:secret@h:notaport/db", "malformed"),
    ("just-a-path.db", "is not a URI"),
])
def test_bad_uris_fail_clearly_without_leaking(uri, fragment):
    with pytest.raises(MaintenanceError) as caught:
        parse_backend_store_uri(uri)
    assert fragment in caught.value.msg
    assert "secret" not in caught.value.msg


def test_pgpass_file_is_private_and_removed():
    store = parse_backend_store_uri("postgresql://mlflow:pa:ss@h/db")
    with pgpass_file(store) as path:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as handle:
            assert handle.read() == "*:*:*:mlflow:pa\\:ss\n"
    assert not os.path.exists(path)
