# -*- coding: utf-8 -*-
"""A stand-in service manager for the upgrade role's command-based service step.

``StandIn`` drives old_mlflow.py's pidfile service (``python old_mlflow.py service start|stop ...``):
the role gets ``start_command``/``stop_command`` (mlflow_service_manager=command), the tests start and
stop the same server directly. Any backend store URI MLflow takes (SQLite, PostgreSQL, MySQL).
"""

import glob
import os
import sqlite3
import sys

from harness.runner import REPO_ROOT
from harness.services import free_port, http_get, wait_until

SERVICE = os.path.join(REPO_ROOT, "tests", "harness", "old_mlflow.py")
COUNTED = ("runs", "metrics", "latest_metrics", "params", "tags", "experiments")


def server_version(url):
    """The MLflow version a tracking server reports."""
    return http_get(url + "/version", timeout=5)[1].strip()


def sqlite_counts(db_path):
    """Rows per tracking table in a SQLite store, read from the file itself."""
    connection = sqlite3.connect(db_path)
    try:
        return dict((table, connection.execute("SELECT count(*) FROM %s" % table).fetchone()[0]) for table in COUNTED)
    finally:
        connection.close()


def sqlite_column(db_path, query):
    """The first column of ``query``'s rows in a SQLite file, sorted."""
    connection = sqlite3.connect(db_path)
    try:
        return sorted(row[0] for row in connection.execute(query))
    finally:
        connection.close()


def sqlite_tables(db_path):
    return sqlite_column(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")


def sqlite_revision(db_path):
    """The schema revision (alembic_version) of a SQLite store."""
    return sqlite_column(db_path, "SELECT version_num FROM alembic_version")[0]


class StandIn:
    """The command-based service step, driving old_mlflow.py's pidfile service manager."""

    def __init__(self, root, python, backend_store_uri):
        self.root = root
        self.python = python
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.backend_store_uri = backend_store_uri
        common = "%s %s service %%s --dir %s --python %s --backend-store-uri '%s' --artifacts-destination %s --port %d" % (
            sys.executable, SERVICE, root, python, backend_store_uri, os.path.join(root, "artifacts"), self.port)
        self.start_command = common % "start"
        self.stop_command = common % "stop"

    def start(self, timeout=240):
        assert os.system(self.start_command + " >/dev/null") == 0
        wait_until(lambda: http_get(self.url + "/health")[1].strip() == "OK", timeout, "old mlflow server",
                   log_path=os.path.join(self.root, "server.log"))

    def stop(self):
        os.system(self.stop_command + " >/dev/null")

    def version(self):
        return server_version(self.url)

    def backup_manifests(self):
        """The manifests in the upgrade role's backup directory (upgrade_vars), sorted."""
        return sorted(glob.glob(os.path.join(self.root, "backups", "*.manifest.json")))

    def upgrade_vars(self, version, **extra):
        """The upgrade role's variables for this server: MLflow ``version`` into its own venv, the command-based
        service step, backups under its root; ``extra`` adds or overrides."""
        variables = dict(
            upgrade_mlflow_version=version,
            upgrade_venv=os.path.dirname(os.path.dirname(self.python)),
            upgrade_backup_dir=os.path.join(self.root, "backups"),
            upgrade_health_delay=1,
            upgrade_health_retries=240,
            mlflow_tracking_uri=self.url,
            mlflow_backend_store_uri=self.backend_store_uri,
            mlflow_service_manager="command",
            mlflow_service_stop_command=self.stop_command,
            mlflow_service_start_command=self.start_command,
        )
        variables.update(extra)
        return variables
