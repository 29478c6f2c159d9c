# -*- coding: utf-8 -*-
"""pg_dump's argv and environment: every format, and never a secret on the command line."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.postgres_tools import child_env, dump_argv
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

SECRET = "Pw#Sec%ret/1"
URI = "postgresql://mlflow:Pw%23Sec%25ret%2F1@db.example:6543/tracking?sslmode=require"


@pytest.mark.parametrize("fmt,compression,major,expected,external", [
    ("custom", "zstd", 15, ["--format=custom", "--compress=0"], "zstd"),
    ("custom", "gzip", 15, ["--format=custom", "--compress=6"], "none"),
    ("custom", "none", 15, ["--format=custom", "--compress=0"], "none"),
    ("directory", "zstd", 16, ["--format=directory", "--jobs=3", "--compress=zstd"], "none"),
    ("directory", "zstd", 15, ["--format=directory", "--jobs=3", "--compress=6"], "none"),
    ("directory", "none", 15, ["--format=directory", "--jobs=3", "--compress=0"], "none"),
    ("plain", "zstd", 15, ["--format=plain", "--clean", "--if-exists"], "zstd"),
])
def test_dump_argv_per_format(fmt, compression, major, expected, external):
    argv, applied = dump_argv("/usr/bin/pg_dump", fmt, 3, compression, "00000003-1", 60, out_path="/b/x", major=major)
    assert argv[0] == "/usr/bin/pg_dump"
    assert "--lock-wait-timeout=60000" in argv and "--no-password" in argv and "--snapshot=00000003-1" in argv
    assert [a for a in argv if a in expected] == expected
    assert argv[-2:] == ["--file", "/b/x"]
    assert applied == external


def test_dump_argv_refuses_unknown_format():
    with pytest.raises(MaintenanceError):
        dump_argv("pg_dump", "tar", 1, "none", None, 60)


def test_no_secret_in_argv_and_only_a_passfile_in_the_environment():
    store = parse_backend_store_uri(URI)
    assert store.password == SECRET
    argv, _external = dump_argv("pg_dump", "custom", 1, "zstd", None, 60, out_path="/b/x")
    env = child_env(store, "/tmp/private/pgpass")
    assert not any(SECRET in part or "Pw%23" in part for part in argv)
    assert not any(SECRET in value or "Pw%23" in value for value in env.values())
    assert env["PGPASSFILE"] == "/tmp/private/pgpass"
    assert env["PGHOST"] == "db.example" and env["PGPORT"] == "6543" and env["PGUSER"] == "mlflow"
    assert env["PGDATABASE"] == "tracking" and env["PGSSLMODE"] == "require"
