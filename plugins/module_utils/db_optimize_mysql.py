# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL/MariaDB optimisation: OPTIMIZE TABLE and ANALYZE TABLE on the tables ``mysql_plan`` picks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_plans import MYSQL_MIN_FREE_FLOOR, mysql_plan

_MYSQL_TABLES_SQL = ("SELECT table_name, COALESCE(data_length, 0), COALESCE(index_length, 0), COALESCE(data_free, 0), "
                     "COALESCE(table_rows, 0), engine FROM information_schema.tables WHERE table_schema = %s "
                     "AND table_type = 'BASE TABLE' ORDER BY table_name")


def _mysql_tables(cursor, database, only=None):
    cursor.execute(_MYSQL_TABLES_SQL, (database,))
    tables = [dict(name=name, data_bytes=int(data), index_bytes=int(index), data_free_bytes=int(free),
                   rows_estimate=int(rows), engine=engine, modified_rows=None, rows_in_stats=None)
              for name, data, index, free, rows, engine in cursor.fetchall()]
    if only:
        wanted = set(only)
        tables = [table for table in tables if table["name"] in wanted]
    stats = _innodb_modified(cursor, database)
    for table in tables:
        if table["name"] in stats:
            table["rows_in_stats"], table["modified_rows"] = stats[table["name"]]
    return tables


def _innodb_modified(cursor, database):
    """{table: (rows in statistics, rows modified since)} from InnoDB (MariaDB, MySQL 8); {} when unreadable."""
    import pymysql  # pylint: disable=import-outside-toplevel
    for view in ("INNODB_SYS_TABLESTATS", "INNODB_TABLESTATS"):
        try:
            cursor.execute("SELECT name, num_rows, modified_counter FROM information_schema.%s WHERE name LIKE %%s"
                           % view, (database.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%",))
        except pymysql.Error:
            continue
        return dict((name.split("/", 1)[1], (int(rows or 0), int(modified or 0))) for name, rows, modified in
                    cursor.fetchall())
    return {}


def optimize_mysql(store, check_mode=False, tables=None, min_free_ratio=0.1, min_free_bytes=1024 * 1024,
                   force=False, analyze=True, lock_timeout_ms=5000, connect_timeout=10):
    """ANALYZE TABLE / OPTIMIZE TABLE on the store's tables that need it; returns the result dict."""
    from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt  # pylint: disable=import-outside-toplevel
    connection = myt.connect(store, connect_timeout)  # fails first, naming the library, when PyMySQL is missing
    import pymysql  # pylint: disable=import-outside-toplevel
    database = store.database
    actions = []
    try:
        cursor = connection.cursor()
        cursor.execute("SET SESSION lock_wait_timeout = %s", (max(1, (int(lock_timeout_ms) + 999) // 1000),))
        try:  # MySQL 8 caches information_schema sizes for a day by default
            cursor.execute("SET SESSION information_schema_stats_expiry = 0")
        except pymysql.Error:
            pass
        before = _mysql_tables(cursor, database, tables)
        if tables:
            missing = sorted(set(tables) - set(table["name"] for table in before))
            if missing:
                raise MaintenanceError("tables not found in %s: %s" % (store.redacted(), ", ".join(missing)))
        if not before:
            raise MaintenanceError("%s has no tables; is this MLflow's database?" % store.redacted())
        plan = mysql_plan(before, min_free_ratio, min_free_bytes, force=force, analyze=analyze)
        if not check_mode:
            for kind, names in (("OPTIMIZE", plan["optimize"]), ("ANALYZE", plan["analyze"])):
                for name in names:
                    cursor.execute("%s TABLE %s.%s" % (kind, myt.quote_ident(database), myt.quote_ident(name)))
                    errors = [row[3] for row in cursor.fetchall() if str(row[2]).lower() == "error"]
                    if errors:
                        raise MaintenanceError("%s TABLE %s failed: %s" % (kind, name, "; ".join(errors[:3])),
                                               actions=actions)
                    actions.append("%s %s" % (kind, name))
        after = dict((table["name"], table) for table in _mysql_tables(cursor, database, tables))
    except pymysql.Error as exc:
        raise MaintenanceError("MySQL optimisation of %s failed: %s" % (store.redacted(), db_tools.scrub(exc, store)),
                               actions=actions)
    finally:
        connection.close()
    size_before = sum(t["data_bytes"] + t["index_bytes"] + t["data_free_bytes"] for t in before)
    size_after = size_before if check_mode else sum(
        t["data_bytes"] + t["index_bytes"] + t["data_free_bytes"] for t in after.values())
    per_table = []
    for table in before:
        later = after.get(table["name"], table)
        per_table.append(dict(name=table["name"], optimized=table["name"] in plan["optimize"],
                              analyzed=table["name"] in plan["analyze"], rows_estimate=later["rows_estimate"],
                              data_free_before_bytes=table["data_free_bytes"],
                              data_free_after_bytes=later["data_free_bytes"],
                              size_before_bytes=table["data_bytes"] + table["index_bytes"],
                              size_after_bytes=later["data_bytes"] + later["index_bytes"]))
    return dict(
        changed=bool(plan["optimize"] or plan["analyze"]),
        engine="mysql",
        size_before_bytes=size_before,
        size_after_bytes=size_after,
        reclaimed_bytes=max(0, size_before - size_after),
        plan=dict(tables=plan["optimize"], analyze=plan["analyze"], reason="forced" if force else (
            "%d of %d tables have at least %d bytes and %.1f%% of their space free" % (
                len(plan["optimize"]), len(before), max(int(min_free_bytes), MYSQL_MIN_FREE_FLOOR),
                min_free_ratio * 100))),
        actions=actions,
        tables=per_table,
    )
