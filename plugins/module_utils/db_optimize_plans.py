# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store optimisation decisions (pure, unit-tested): is the heavy step worth running, is there room
for it, which tables. The engines (``db_optimize_sqlite``, ``db_optimize_postgres``, ``db_optimize_mysql``) do the
I/O around them; check mode runs the same measurements and decisions and stops before the first write.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

INTEGRITY_CHECKS = ("none", "quick", "full")


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


# InnoDB keeps a few extents of a rebuilt tablespace free (it reports several MiB of DATA_FREE right after
# OPTIMIZE TABLE), so less than this is never worth a rebuild, whatever min_free_mb says.
MYSQL_MIN_FREE_FLOOR = 8 * 1024 * 1024
# InnoDB recomputes persistent statistics itself once 10% of a table's rows changed (innodb_stats_auto_recalc);
# a table with more unrecalculated changes than that (auto-recalc off or lagging) gets ANALYZE TABLE.
MYSQL_STALE_STATS_RATIO = 0.1


def mysql_plan(tables, min_free_ratio, min_free_bytes, force=False, analyze=True):
    """Which tables get OPTIMIZE TABLE and which ANALYZE TABLE (pure; unit-tested).

    ``tables``: dicts with name, data_bytes, index_bytes, data_free_bytes and (when InnoDB's statistics could be
    read) modified_rows and rows_in_stats. OPTIMIZE when the reclaimable DATA_FREE is at least ``min_free_bytes``
    (and the InnoDB floor) and at least ``min_free_ratio`` of the table's space, or ``force``; ANALYZE (when
    ``analyze``) for tables not optimized (OPTIMIZE already recomputes statistics) whose statistics are stale.
    """
    optimize, analyze_only = [], []
    floor = max(int(min_free_bytes), MYSQL_MIN_FREE_FLOOR)
    for table in tables:
        free = int(table.get("data_free_bytes") or 0)
        total = free + int(table.get("data_bytes") or 0) + int(table.get("index_bytes") or 0)
        ratio = float(free) / total if total else 0.0
        if force or (free >= floor and ratio >= min_free_ratio):
            optimize.append(table["name"])
            continue
        modified = table.get("modified_rows")
        if analyze and (force or (modified is not None and modified > 0 and modified >= max(
                1, MYSQL_STALE_STATS_RATIO * int(table.get("rows_in_stats") or 0)))):
            analyze_only.append(table["name"])
    return dict(optimize=optimize, analyze=analyze_only)
