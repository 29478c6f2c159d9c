# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store optimisation: SQLite VACUUM/ANALYZE and PostgreSQL VACUUM (ANALYZE).

The decisions (is the heavy step worth running, is there room for it, which tables) are pure
functions; ``optimize_sqlite`` and ``optimize_postgres`` do the I/O around them. Check mode runs
the same measurements and decisions and stops before the first write.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3
import tempfile
import traceback

from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch

PSYCOPG2_IMPORT_ERROR = None
try:
    import psycopg2
    import psycopg2.errors
    from psycopg2 import sql as pg_sql
except ImportError:
    psycopg2 = None
    pg_sql = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

INTEGRITY_CHECKS = ("none", "quick", "full")


# ---------------------------------------------------------------------------------------------
# Pure decisions


def sqlite_plan(page_count, freelist_count, page_size, min_free_ratio, min_free_bytes=0, force=False):
    """Whether VACUUM is worth running on a SQLite database, from its page counts.

    VACUUM runs when the free pages are at least ``min_free_ratio`` of all pages *and* at least
    ``min_free_bytes``, or when ``force``. Returns a dict with ``vacuum``, ``reclaimable_bytes``,
    ``free_ratio`` and a one-line ``reason``.
    """
    page_count = max(0, int(page_count))
    freelist_count = max(0, min(int(freelist_count), page_count))
    reclaimable = freelist_count * int(page_size)
    ratio = (float(freelist_count) / page_count) if page_count else 0.0
    if force:
        vacuum, reason = True, "forced"
    elif page_count == 0:
        vacuum, reason = False, "the database is empty"
    elif ratio >= min_free_ratio and reclaimable >= min_free_bytes and freelist_count > 0:
        vacuum, reason = True, "%.1f%% of pages are free (%d bytes), at or above the threshold of %.1f%%" % (
            ratio * 100, reclaimable, min_free_ratio * 100)
    else:
        vacuum, reason = False, "%.1f%% of pages are free (%d bytes), below the threshold of %.1f%%%s" % (
            ratio * 100, reclaimable, min_free_ratio * 100,
            "" if reclaimable >= min_free_bytes else " or %d bytes" % min_free_bytes)
    return dict(vacuum=vacuum, reclaimable_bytes=reclaimable, free_ratio=round(ratio, 4), reason=reason)


def vacuum_space_needed(db_bytes, wal_bytes, margin_bytes):
    """Free bytes VACUUM needs on the database's filesystem.

    VACUUM writes a complete new copy of the database (a temporary file, then the journal or
    WAL holding the rewritten pages), so it needs about the database's size free, plus the WAL
    it will checkpoint, plus a safety margin.
    """
    return int(db_bytes) + int(wal_bytes) + int(margin_bytes)


def check_vacuum_space(db_bytes, wal_bytes, margin_bytes, free_bytes, where):
    """Raise MaintenanceError when ``free_bytes`` cannot hold VACUUM's copy of the database."""
    needed = vacuum_space_needed(db_bytes, wal_bytes, margin_bytes)
    if free_bytes < needed:
        raise MaintenanceError(
            "not enough free disk space for VACUUM on %s: %d bytes free, %d needed (database %d + WAL %d + "
            "margin %d); free some space or lower vacuum_margin_mb" % (
                where, free_bytes, needed, db_bytes, wal_bytes, margin_bytes),
            free_bytes=free_bytes, needed_bytes=needed)
    return needed


def postgres_plan(tables, min_dead_tuples, min_dead_ratio, force=False):
    """The tables whose dead tuples make VACUUM worth running.

    ``tables``: dicts with ``name``, ``n_live_tup``, ``n_dead_tup``. A table qualifies when its dead
    tuples are at least ``min_dead_tuples`` and at least ``min_dead_ratio`` of its tuples, or
    when ``force``. Returns the names in input order.
    """
    chosen = []
    for table in tables:
        dead = int(table.get("n_dead_tup") or 0)
        live = int(table.get("n_live_tup") or 0)
        ratio = float(dead) / (dead + live) if dead + live else 0.0
        if force or (dead >= min_dead_tuples and dead > 0 and ratio >= min_dead_ratio):
            chosen.append(table["name"])
    return chosen


def postgres_statements(table, vacuum_full=False, reindex=False, analyze=True):
    """The statements to run on one table, as (kind, template) pairs; templates take the table identifier."""
    options = ["FULL"] if vacuum_full else []
    if analyze:
        options.append("ANALYZE")
    statements = [("vacuum_full" if vacuum_full else "vacuum",
                   "VACUUM (%s) {}" % ", ".join(options) if options else "VACUUM {}")]
    if reindex:
        statements.append(("reindex", "REINDEX TABLE {}"))
    return statements


# ---------------------------------------------------------------------------------------------
# SQLite


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
    watch = Stopwatch()
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
        size_before=size_before,
        size_after=size_after,
        reclaimed_bytes=max(0, size_before - size_after),
        page_size=page_size,
        page_count=page_count,
        freelist_count=freelist,
        plan=plan,
        actions=actions,
        tables=tables,
        integrity=integrity,
        elapsed_seconds=watch.elapsed(),
    )


# ---------------------------------------------------------------------------------------------
# PostgreSQL

_TABLES_SQL = """
SELECT t.table_name,
       COALESCE(s.n_live_tup, 0), COALESCE(s.n_dead_tup, 0),
       pg_total_relation_size(format('%%I.%%I', t.table_schema, t.table_name)::regclass)
  FROM information_schema.tables t
  LEFT JOIN pg_stat_user_tables s ON s.schemaname = t.table_schema AND s.relname = t.table_name
 WHERE t.table_schema = %s AND t.table_type = 'BASE TABLE'
 ORDER BY t.table_name
"""


def _pg_connect(store, connect_timeout):
    if psycopg2 is None:
        raise MaintenanceError("psycopg2 is required for PostgreSQL (pip install psycopg2-binary)")
    try:
        connection = psycopg2.connect(**store.psycopg2_kwargs(connect_timeout=connect_timeout))
    except psycopg2.Error as exc:
        raise MaintenanceError("cannot connect to PostgreSQL %s: %s" % (store.redacted(), _pg_message(exc)))
    # VACUUM cannot run inside a transaction block: every statement commits on its own.
    connection.autocommit = True
    return connection


def _pg_message(exc):
    text = str(getattr(exc, "pgerror", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _pg_tables(cursor, schema, only=None):
    cursor.execute(_TABLES_SQL, (schema,))
    tables = [dict(name=name, n_live_tup=int(live), n_dead_tup=int(dead), size_bytes=int(size))
              for name, live, dead, size in cursor.fetchall()]
    if only:
        wanted = set(only)
        tables = [table for table in tables if table["name"] in wanted]
    return tables


def optimize_postgres(store, check_mode=False, schema="public", tables=None, min_dead_tuples=1000,
                      min_dead_ratio=0.1, force=False, vacuum_full=False, reindex=False, analyze=True,
                      lock_timeout_ms=5000, statement_timeout_ms=0, connect_timeout=10):
    """VACUUM (ANALYZE) the store's tables that have enough dead tuples; returns the result dict."""
    watch = Stopwatch()
    connection = _pg_connect(store, connect_timeout)
    actions = []
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                       ("%dms" % int(lock_timeout_ms), "%dms" % int(statement_timeout_ms)))
        cursor.execute("SELECT pg_database_size(current_database())")
        size_before = int(cursor.fetchone()[0])
        before = _pg_tables(cursor, schema, tables)
        if tables:
            missing = sorted(set(tables) - set(table["name"] for table in before))
            if missing:
                raise MaintenanceError("tables not found in schema %s of %s: %s" % (
                    schema, store.redacted(), ", ".join(missing)))
        if not before:
            raise MaintenanceError("schema %s of %s has no tables; is this MLflow's database?" % (
                schema, store.redacted()))
        chosen = postgres_plan(before, min_dead_tuples, min_dead_ratio, force)
        if not check_mode:
            for name in chosen:
                identifier = pg_sql.Identifier(schema, name)
                for kind, template in postgres_statements(name, vacuum_full, reindex, analyze):
                    try:
                        cursor.execute(pg_sql.SQL(template).format(identifier))
                    except psycopg2.errors.LockNotAvailable as exc:
                        raise MaintenanceError(
                            "%s of %s.%s could not get its lock within lock_timeout (%d ms); the server or "
                            "another job holds it: %s" % (kind, schema, name, lock_timeout_ms, _pg_message(exc)),
                            actions=actions)
                    except psycopg2.errors.QueryCanceled as exc:
                        raise MaintenanceError("%s of %s.%s exceeded statement_timeout (%d ms): %s" % (
                            kind, schema, name, statement_timeout_ms, _pg_message(exc)), actions=actions)
                    actions.append("%s %s" % (kind, name))
        cursor.execute("SELECT pg_database_size(current_database())")
        size_after = int(cursor.fetchone()[0])
        after = dict((table["name"], table) for table in _pg_tables(cursor, schema, tables))
    except psycopg2.Error as exc:
        raise MaintenanceError("PostgreSQL optimisation of %s failed: %s" % (store.redacted(), _pg_message(exc)),
                               actions=actions)
    finally:
        connection.close()
    per_table = []
    for table in before:
        later = after.get(table["name"], table)
        per_table.append(dict(name=table["name"], vacuumed=table["name"] in chosen,
                              n_live_tup=later["n_live_tup"], n_dead_tup_before=table["n_dead_tup"],
                              n_dead_tup_after=later["n_dead_tup"], size_before=table["size_bytes"],
                              size_after=later["size_bytes"]))
    if check_mode:
        size_after = size_before
    return dict(
        changed=bool(chosen),
        engine="postgresql",
        size_before=size_before,
        size_after=size_after,
        reclaimed_bytes=max(0, size_before - size_after),
        plan=dict(tables=chosen, vacuum_full=vacuum_full, reindex=reindex, analyze=analyze,
                  reason="%d of %d tables have at least %d dead tuples and %.1f%% dead" % (
                      len(chosen), len(before), min_dead_tuples, min_dead_ratio * 100) if not force else "forced"),
        actions=actions,
        tables=per_table,
        elapsed_seconds=watch.elapsed(),
    )
