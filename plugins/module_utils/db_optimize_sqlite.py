# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite optimisation: VACUUM (when ``db_optimize_plans.sqlite_plan`` says so and there is room) and ANALYZE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3
import tempfile

from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_plans import check_vacuum_space, sqlite_plan


def _file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _sqlite_open(path, busy_timeout, require_mlflow=True):
    """Open an existing database read-write without ever creating a file; autocommit mode.

    A missing, 0-byte (SQLite would make it a database) or, with ``require_mlflow``, non-MLflow file is refused.
    """
    if not os.path.exists(path):
        raise MaintenanceError("SQLite database %s does not exist; check backend_store_uri "
                               "(db_optimize never creates a database)" % path)
    if not os.path.isfile(path):
        raise MaintenanceError("SQLite database %s is not a regular file" % path)
    if os.path.getsize(path) == 0:
        raise MaintenanceError("SQLite database %s is empty (0 bytes); db_optimize never turns a file into a "
                               "database: check backend_store_uri" % path)
    directory = os.path.dirname(path) or "."
    mode = os.stat(path).st_mode
    try:
        read_only_fs = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only_fs = False
    if read_only_fs or not mode & 0o222 or not os.access(path, os.W_OK):
        raise MaintenanceError("SQLite database %s is read-only (%s); db_optimize needs to write it" % (
            path, "read-only filesystem" if read_only_fs else "file mode %s" % oct(mode & 0o777)))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise MaintenanceError("the directory of SQLite database %s is not writable; VACUUM needs to write "
                               "its journal there" % path)
    connection = sqlite_store.connect(path, "rw", timeout=busy_timeout, isolation_level=None, what="SQLite database")
    try:
        connection.execute("PRAGMA schema_version").fetchone()
        problem = sqlite_store.mlflow_problem(connection) if require_mlflow else None
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise MaintenanceError("cannot open %s as a SQLite database: %s" % (path, exc))
    if problem:
        connection.close()
        raise MaintenanceError("SQLite database %s is not an MLflow store: %s; not optimising it "
                               "(check backend_store_uri, or set allow_non_mlflow=true)" % (path, problem))
    return connection


def _sqlite_pages(connection):
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    page_count = connection.execute("PRAGMA page_count").fetchone()[0]
    freelist = connection.execute("PRAGMA freelist_count").fetchone()[0]
    return page_size, page_count, freelist


def _sqlite_tables(connection):
    rows = {}
    try:
        for table, idx, stat in connection.execute("SELECT tbl, idx, stat FROM sqlite_stat1"):
            if table not in rows or idx is None:
                rows[table] = int(str(stat).split()[0]) if stat else 0
    except sqlite3.OperationalError:
        pass  # never analyzed
    names = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return [dict(name=name, rows_estimate=rows.get(name)) for name in names]


def _has_statistics(connection):
    return connection.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'").fetchone()[0] > 0


def _integrity(connection, kind):
    pragma = "quick_check" if kind == "quick" else "integrity_check"
    problems = [row[0] for row in connection.execute("PRAGMA %s(20)" % pragma)]
    return problems == ["ok"], problems


def _free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def optimize_sqlite(path, check_mode=False, min_free_ratio=0.1, min_free_bytes=0, force=False, analyze=True,
                    analysis_limit=1000, integrity_check="none", margin_bytes=64 * 1024 * 1024, busy_timeout=30,
                    free_bytes_fn=_free_bytes, require_mlflow=True):
    """Optimise a SQLite store; returns the result dict (``changed``, sizes, actions, plan, tables).

    ``require_mlflow``: refuse a file without MLflow's ``alembic_version`` and ``runs`` tables.
    """
    connection = _sqlite_open(path, busy_timeout, require_mlflow=require_mlflow)
    wal_path = path + "-wal"
    try:
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        size_before = _file_size(path) + _file_size(wal_path)
        actions = []
        integrity = None
        if integrity_check != "none":
            ok, problems = _integrity(connection, integrity_check)
            integrity = dict(kind=integrity_check, ok=ok, messages=problems)
            actions.append("%s_check" % ("quick" if integrity_check == "quick" else "integrity"))
            if not ok:
                raise MaintenanceError("SQLite %s_check of %s found problems; not optimising: %s" % (
                    "quick" if integrity_check == "quick" else "integrity", path, "; ".join(problems[:5])),
                    integrity=integrity)
        page_size, page_count, freelist = _sqlite_pages(connection)
        plan = sqlite_plan(page_count, freelist, page_size, min_free_ratio, min_free_bytes, force)
        run_analyze = bool(analyze) and (plan["vacuum"] or force or not _has_statistics(connection))
        plan["analyze"] = run_analyze
        changed = plan["vacuum"] or run_analyze
        if plan["vacuum"]:
            # Room for the copy VACUUM writes, on the database's filesystem and on SQLite's temp directory.
            db_bytes = _file_size(path)
            wal_bytes = _file_size(wal_path)
            directory = os.path.dirname(path) or "."
            check_vacuum_space(db_bytes, wal_bytes, margin_bytes, free_bytes_fn(directory), directory)
            temp_dir = os.environ.get("SQLITE_TMPDIR") or tempfile.gettempdir()
            if os.path.isdir(temp_dir) and os.stat(temp_dir).st_dev != os.stat(directory).st_dev:
                check_vacuum_space(db_bytes, 0, margin_bytes, free_bytes_fn(temp_dir), temp_dir)
        if not check_mode:
            if plan["vacuum"]:
                if journal_mode.lower() == "wal":
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    actions.append("wal_checkpoint")
                connection.execute("VACUUM")
                actions.append("vacuum")
                if journal_mode.lower() == "wal":
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            if run_analyze:
                if analysis_limit:
                    connection.execute("PRAGMA analysis_limit = %d" % int(analysis_limit))
                connection.execute("ANALYZE")
                actions.append("analyze")
        page_size, page_count, freelist = _sqlite_pages(connection)
        tables = _sqlite_tables(connection)
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            raise MaintenanceError("SQLite database %s is read-only: %s" % (path, text))
        if "locked" in text or "busy" in text:
            raise MaintenanceError("SQLite database %s stayed locked for %ss (is the server writing?): %s" % (
                path, busy_timeout, text))
        if "disk" in text or "full" in text:
            raise MaintenanceError("SQLite VACUUM of %s ran out of disk space: %s" % (path, text))
        raise MaintenanceError("SQLite optimisation of %s failed: %s" % (path, text))
    except sqlite3.DatabaseError as exc:
        raise MaintenanceError("SQLite optimisation of %s failed: %s" % (path, exc))
    finally:
        connection.close()
    size_after = _file_size(path) + _file_size(wal_path)
    if check_mode:
        size_after = size_before - (plan["reclaimable_bytes"] if plan["vacuum"] else 0)
    return dict(
        changed=changed,
        engine="sqlite",
        journal_mode=journal_mode,
        size_before_bytes=size_before,
        size_after_bytes=size_after,
        reclaimed_bytes=max(0, size_before - size_after),
        page_size=page_size,
        page_count=page_count,
        freelist_count=freelist,
        plan=plan,
        actions=actions,
        tables=tables,
        integrity=integrity,
    )
