# -*- coding: utf-8 -*-
"""Helpers for the run-lifecycle tests and benchmarks (runs_cleanup, gc): read the store directly."""

import sqlite3


class StoreReader:
    """Runs SQL on an MlflowServer's backend store: sqlite3 for SQLite, psql for PostgreSQL."""

    def __init__(self, server, postgres=None, database="mlflow_tracking"):
        self.server = server
        self.postgres = postgres
        self.database = database

    def rows(self, sql):
        if self.server.sqlite_path:
            connection = sqlite3.connect(self.server.sqlite_path, timeout=60)
            try:
                return [tuple(row) for row in connection.execute(sql).fetchall()]
            finally:
                connection.close()
        out = self.postgres.psql(sql, self.database)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def scalar(self, sql):
        rows = self.rows(sql)
        return int(rows[0][0]) if rows else None

    def ids(self, sql):
        return set(row[0] for row in self.rows(sql))


def in_list(ids):
    return "(%s)" % ", ".join("'%s'" % i for i in ids)
