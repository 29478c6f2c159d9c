# -*- coding: utf-8 -*-
"""MySQL/MariaDB stores: URI parsing, the option file (the only place the password goes), dump argv, decisions."""

import os
import stat

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt
from ansible_collections.mlflowops.maintenance.plugins.module_utils.backups import store_identity
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_plans import MYSQL_MIN_FREE_FLOOR, mysql_plan
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import (
    parse_backend_store_uri,
    redact_uri,
    secret_forms,
)

SECRET = "Pw#Sec%ret/1'\"\\ x"
URI = "mysql+pymysql://mlflow:Pw%23Sec%25ret%2F1%27%22%5C%20x@db.example:3307/tracking?ssl_ca=/etc/ca.pem&charset=utf8mb4"
MB = 1024 * 1024


@pytest.mark.parametrize("scheme", ["mysql", "mysql+pymysql", "mysql+mysqldb"])
def test_parse_every_mysql_spelling(scheme):
    store = parse_backend_store_uri(URI.replace("mysql+pymysql", scheme))
    assert store.engine == "mysql" and store.is_mysql and not store.is_postgresql
    assert (store.host, store.port, store.user, store.password, store.database) == (
        "db.example", 3307, "mlflow", SECRET, "tracking")
    assert store.query == {"ssl_ca": "/etc/ca.pem", "charset": "utf8mb4"}
    assert SECRET not in store.redacted() and ":***@" in store.redacted()
    assert store.sqlalchemy_url().startswith("mysql+pymysql://mlflow:")
    assert parse_backend_store_uri(store.sqlalchemy_url()).password == SECRET
    assert store_identity(store, "p") == {"engine": "mysql", "location": "mysql://db.example:3307/tracking",
                                          "prefix": "p"}


def test_unix_socket_password_option_and_query_password():
    store = parse_backend_store_uri("mysql://root@/mlflow?unix_socket=/run/mysqld/mysqld.sock", password="pw")
    assert store.socket_host == "/run/mysqld/mysqld.sock" and store.password == "pw"
    kwargs = myt.pymysql_kwargs(store, connect_timeout=3)
    assert kwargs["unix_socket"] == "/run/mysqld/mysqld.sock" and "host" not in kwargs
    assert kwargs["connect_timeout"] == 3 and kwargs["read_timeout"] == myt.DEFAULT_READ_TIMEOUT
    assert "socket=\"/run/mysqld/mysqld.sock\"" in myt.option_file_text(store)
    store = parse_backend_store_uri("mysql://u@h/db?password=s3cret")
    assert store.password == "s3cret" and "password" not in store.query and "s3cret" not in store.redacted()
    assert "s3cret" in secret_forms("mysql://u@h/db?password=s3cret")
    assert "s3cret" not in redact_uri("failed: mysql://u:s3cret@h/db")


def test_option_file_is_private_escaped_and_removed():
    store = parse_backend_store_uri(URI)
    with myt.option_file(store, connect_timeout=5) as path:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        dir_mode = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        with open(path) as handle:
            text = handle.read()
    assert (mode, dir_mode) == (0o600, 0o700)
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    assert text.startswith("[client]\n")
    assert 'password="Pw#Sec%ret/1\\\'\\"\\\\ x"' in text
    assert 'host="db.example"' in text and "port=3307" in text and 'ssl-ca="/etc/ca.pem"' in text
    assert "connect-timeout" not in text  # mariadb-dump refuses it in [client]


def test_dump_and_client_argv_hold_no_secret_and_defaults_file_first():
    argv = myt.dump_argv("/usr/bin/mariadb-dump", "/tmp/x/client.cnf", "tracking")
    assert argv[:2] == ["/usr/bin/mariadb-dump", "--defaults-extra-file=/tmp/x/client.cnf"]
    for flag in ("--single-transaction", "--quick", "--routines", "--triggers", "--hex-blob", "--no-tablespaces"):
        assert flag in argv
    assert "--set-gtid-purged=OFF" not in argv and argv[-1] == "tracking"
    oracle = myt.dump_argv("/usr/bin/mysqldump", "/tmp/x/client.cnf", "tracking", oracle=True)
    assert "--set-gtid-purged=OFF" in oracle
    client = myt.client_argv("/usr/bin/mariadb", "/tmp/x/client.cnf", "copy", connect_timeout=4)
    assert client[1] == "--defaults-extra-file=/tmp/x/client.cnf" and "--database=copy" in client
    assert "--connect-timeout=4" in client
    assert not [a for a in argv + oracle + client if "password" in a.lower() or SECRET in a]
    with pytest.raises(MaintenanceError):
        myt.dump_argv("/usr/bin/mariadb-dump", "/tmp/x/client.cnf", "--all-databases")
    assert "MYSQL_PWD" not in myt.child_env()


def test_oracle_mysqldump_detection():
    assert myt.is_oracle_mysqldump("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)")
    assert not myt.is_oracle_mysqldump("mariadb-dump from 11.4.2-MariaDB, client 10.19 for debian-linux-gnu")
    assert not myt.is_oracle_mysqldump("mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB, for debian-linux-gnu")
    assert not myt.is_oracle_mysqldump(None)


def test_stderr_problems():
    assert myt.stderr_problems("mariadb-dump: Got error: 1045: Access denied for user")
    assert myt.stderr_problems("ERROR 1064 (42000) at line 3: You have an error")
    assert not myt.stderr_problems("-- Warning: column statistics not supported\n")


def test_fingerprint_ignores_auto_increment_but_sees_every_change():
    base = (["runs"], {"runs": "CREATE TABLE `runs` (...) ENGINE=InnoDB AUTO_INCREMENT=5"}, {"runs": 3},
            {"runs": "111"}, "rev1")
    same = myt.fingerprint_parts(["runs"], {"runs": "CREATE TABLE `runs` (...) ENGINE=InnoDB AUTO_INCREMENT=9"},
                                 {"runs": 3}, {"runs": "111"}, "rev1")
    assert myt.fingerprint_parts(*base) == same
    for changed in ((["runs"], base[1], {"runs": 4}, base[3], "rev1"),
                    (["runs"], base[1], base[2], {"runs": "112"}, "rev1"),
                    (["runs"], base[1], base[2], base[3], "rev2"),
                    (["runs"], {"runs": "CREATE TABLE `runs` (x INT)"}, base[2], base[3], "rev1")):
        assert myt.fingerprint_parts(*changed) != same


def test_ssl_settings():
    assert myt.ssl_settings({}) is None
    assert myt.ssl_settings({"ssl_ca": "/ca", "ssl_verify_identity": "true"}) == {"ca": "/ca", "check_hostname": True}
    assert myt.ssl_settings({"ssl_mode": "REQUIRED"}) == {"check_hostname": False}
    assert myt.ssl_settings({"ssl_ca": "/ca", "ssl_disabled": "1"}) is None


def _table(name, free_mb, data_mb, modified=None, rows=1000):
    return dict(name=name, data_free_bytes=int(free_mb * MB), data_bytes=int(data_mb * MB), index_bytes=0,
                modified_rows=modified, rows_in_stats=rows)


def test_mysql_plan_thresholds_floor_and_stale_statistics():
    tables = [_table("metrics", 40, 60), _table("params", 4, 1), _table("tags", 0, 10, modified=500),
              _table("runs", 0, 10, modified=20), _table("latest_metrics", 0, 1)]
    plan = mysql_plan(tables, min_free_ratio=0.1, min_free_bytes=MB)
    # params: 80% free but below InnoDB's floor; tags: stale statistics; runs: 2% modified, fresh enough
    assert plan == {"optimize": ["metrics"], "analyze": ["tags"]}
    assert mysql_plan(tables, 0.5, MB)["optimize"] == []
    assert mysql_plan(tables, 0.1, 64 * MB)["optimize"] == []
    assert mysql_plan(tables, 0.1, MB, analyze=False)["analyze"] == []
    forced = mysql_plan(tables, 0.1, MB, force=True)
    assert forced["optimize"] == [t["name"] for t in tables] and forced["analyze"] == []
    assert MYSQL_MIN_FREE_FLOOR == 8 * MB
