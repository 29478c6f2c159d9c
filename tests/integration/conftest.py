# -*- coding: utf-8 -*-
"""Session services for the integration tests: started once, stopped at the end, also on failure."""

import os

import pytest

from harness.services import MariaDBServer, MlflowServer, MotoS3, PostgresCluster


@pytest.fixture(scope="session")
def postgres():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mariadb():
    """A throwaway MariaDB server (Debian's mariadb-server) on a free loopback port, password auth."""
    server = MariaDBServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_mariadb(mariadb, tmp_path_factory):
    """MLflow on MariaDB through PyMySQL (a password with URI-special characters), local artifacts."""
    uri = mariadb.create_database("mlflow_tracking", password="pw:/@#%s" % os.urandom(4).hex())
    server = MlflowServer(backend_store_uri=uri,
                          artifacts_destination=str(tmp_path_factory.mktemp("mariadb-artifacts"))).start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_sqlite():
    """MLflow on SQLite with a local artifact directory."""
    server = MlflowServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_pg_s3(postgres, moto_s3):
    """MLflow on PostgreSQL (psycopg2 URI with a password) with artifacts in S3."""
    bucket = moto_s3.create_bucket("mlflow-artifacts")
    uri = postgres.create_database("mlflow_tracking")
    server = MlflowServer(backend_store_uri=uri, artifacts_destination="s3://%s/mlflow" % bucket,
                          extra_env=moto_s3.env).start()
    server.bucket = bucket
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_basic_auth():
    server = MlflowServer(basic_auth=True).start()
    yield server
    server.stop()


@pytest.fixture
def scratch_dir(tmp_path):
    path = tmp_path / "scratch"
    path.mkdir()
    return str(path)


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
