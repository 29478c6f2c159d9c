# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL optimisation: VACUUM (ANALYZE), optionally FULL and REINDEX, of the tables ``postgres_plan`` picks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_plans import postgres_plan, postgres_statements

PSYCOPG2_IMPORT_ERROR = None
try:
    import psycopg2
    import psycopg2.errors
    from psycopg2 import sql as pg_sql
except ImportError:
    psycopg2 = None
    pg_sql = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()


_TABLES_SQL = """
SELECT t.table_name,
       COALESCE(s.n_live_tup, 0), COALESCE(s.n_dead_tup, 0),
       pg_total_relation_size(format('%%I.%%I', t.table_schema, t.table_name)::regclass)
  FROM information_schema.tables t
  LEFT JOIN pg_stat_user_tables s ON s.schemaname = t.table_schema AND s.relname = t.table_name
 WHERE t.table_schema = %s AND t.table_type = 'BASE TABLE'
 ORDER BY t.table_name
"""


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
    # VACUUM cannot run inside a transaction block: every statement commits on its own.
    connection = pgt.connect(store, connect_timeout, autocommit=True)
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
                              n_dead_tup_after=later["n_dead_tup"], size_before_bytes=table["size_bytes"],
                              size_after_bytes=later["size_bytes"]))
    if check_mode:
        size_after = size_before
    return dict(
        changed=bool(chosen),
        engine="postgresql",
        size_before_bytes=size_before,
        size_after_bytes=size_after,
        reclaimed_bytes=max(0, size_before - size_after),
        plan=dict(tables=chosen, vacuum_full=vacuum_full, reindex=reindex, analyze=analyze,
                  reason="%d of %d tables have at least %d dead tuples and %.1f%% dead" % (
                      len(chosen), len(before), min_dead_tuples, min_dead_ratio * 100) if not force else "forced"),
        actions=actions,
        tables=per_table,
    )
