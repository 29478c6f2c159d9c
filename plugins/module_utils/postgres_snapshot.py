# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL dump snapshot: the transaction pg_dump dumps, its row counts and the change fingerprint.

Snapshot and row counts: one REPEATABLE READ, READ ONLY transaction exports its snapshot
(``pg_export_snapshot()``), counts the rows of every table of the store inside it, and stays open
while ``pg_dump --snapshot`` dumps exactly that snapshot (also with ``--jobs``). The counts in the
manifest are therefore the source's counts as of the dump, and ``verify: restore`` compares a
scratch database's counts against them.

Change fingerprint (unchanged-store detection), first O(1): the text of the dump snapshot
(``txid_current_snapshot()``: which transactions it sees), the server's start time, the database oid,
the table list and the revision (``quick_fingerprint``). When it equals the newest backup's, no
transaction wrote anything since that backup's snapshot: unchanged, without reading a row. Otherwise
(some write happened somewhere in the cluster) the exact scan decides: a sha256 over, for every table,
``count(*)`` and ``sum(xmin)`` in that same snapshot, plus the table list and the alembic revision.
Every insert and update writes a row version with a new transaction id (xmin), and every delete lowers
a count or removes an xmin from the sum, so any committed change alters it; reads (including pg_dump's)
never do. Both are recorded in the manifest's fingerprint (``snapshot`` and ``value``).

When there is nothing to compare the exact fingerprint with (a first backup, ``force``, or a newest backup whose
manifest has no exact value), or this database's write counters moved since that backup (``pg_stat_user_tables``
inserts, updates and deletes: :func:`activity_digest`), the decision is already "back up" (:func:`scan_plan`), so
the exact scan is not on the critical path: it runs on the snapshot's own connection, in the same snapshot, while
pg_dump dumps (:meth:`DumpSnapshot.start_scan` / :meth:`DumpSnapshot.finish_scan`), and both are recorded as
before. The counters never prove "unchanged" (only the exact scan or the snapshot text do); counters that arrive
late (a session flushes them up to about 10 s after its write) can only cost one extra backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError


def quick_fingerprint(snapshot_text, postmaster_start, database_oid, tables, revision):
    """The O(1) fingerprint: which transactions the dump's snapshot sees, on which server run and database (pure).

    ``snapshot_text`` is ``txid_current_snapshot()`` (``xmin:xmax:xip``, epoch-extended: no wraparound) of the
    dump's REPEATABLE READ transaction. Every write assigns a transaction id, so two snapshots with the same text
    on the same running server see exactly the same committed rows (sequence values, which change without a
    transaction id, are the one exception: harmless for a backup). A server restart (and so a restore or
    point-in-time recovery) changes ``postmaster_start``: when in doubt, the next run backs up.
    """
    parts = dict(snapshot=snapshot_text, postmaster_start=postmaster_start, database_oid=database_oid,
                 tables=sorted(tables), revision=revision)
    return db_tools.json_digest(parts)


EXACT_METHOD = "postgresql-count-xmin"


ACTIVITY_SQL = ("SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "ORDER BY 1, 2")
STATS_RESET_SQL = "SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()"


def activity_digest(rows, stats_reset):
    """O(1) digest of this database's write counters (pure): rows inserted, updated and deleted per table.

    The statistics only ever say "something was written" (or reset, or aborted, or flushed late): a different
    digest never proves the store unchanged; :func:`scan_plan` only lets it skip a scan whose answer is "back up".
    """
    return db_tools.json_digest(dict(tables=[[str(v) for v in row] for row in sorted(rows)], reset=stats_reset))


def scan_plan(previous, quick, activity=None):
    """When the exact scan runs (pure): ``snapshot``, ``scan-first`` or ``scan-during-dump``.

    ``snapshot``: the newest backup's fingerprint has this very ``quick`` value: unchanged, no row is read.
    ``scan-first``: it holds an exact value that the scan may match (the store may be unchanged although something
    else in the cluster wrote, and its write counters are as they were): the scan decides before any dump.
    ``scan-during-dump``: the store is backed up whatever the scan says, so its value is only recorded for the next
    run, and it runs alongside the dump: there is nothing to compare with (no previous backup, ``force``, a manifest
    without an exact value), or this database's write counters (:func:`activity_digest`) moved since that backup
    (in doubt: back up).
    """
    if not isinstance(previous, dict):
        return "scan-during-dump"
    if quick is not None and previous.get("snapshot") == quick:
        return "snapshot"
    if previous.get("method") != EXACT_METHOD or not previous.get("value"):
        return "scan-during-dump"
    if activity is not None and previous.get("activity") is not None and previous.get("activity") != activity:
        return "scan-during-dump"
    return "scan-first"


class DumpSnapshot(db_tools.BackgroundScan):
    """An open REPEATABLE READ, READ ONLY transaction with an exported snapshot, counts and fingerprint.

    Unchanged-store detection, O(1) first (:func:`scan_plan`): when ``previous`` (the newest backup's fingerprint)
    holds the same ``snapshot`` value (:func:`quick_fingerprint`: no transaction wrote anything in the cluster since
    that backup's snapshot), the store is unchanged without reading a row, and ``fingerprint`` is ``previous``.
    Otherwise, when ``previous`` has an exact value (any write in the cluster: this database, another one,
    autovacuum's analyze, a ``verify: restore`` scratch database), the exact scan (module doc) decides, as before.
    With nothing to compare with, ``fingerprint`` stays None (never "unchanged") until :meth:`finish_scan`; the
    caller runs the scan alongside the dump with :meth:`start_scan`. ``row_counts`` are counted when first read.
    """

    scan_thread_name = "mlflowops-pg-fingerprint"

    def __init__(self, store, connect_timeout, lock_wait_timeout, previous=None, version_tables=("alembic_version",)):
        self.store = store
        self.conn = pgt.connect(store, connect_timeout)
        self.snapshot_id = None
        self._row_counts = None
        self.fingerprint = None
        self.schema_revision = None
        self.server_version = None
        self.table_names = []
        self.fingerprint_source = None
        self._quick = None
        self._activity = None
        try:
            self.conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            cur = self.conn.cursor()
            cur.execute("SET LOCAL lock_timeout = %s", ("%ds" % int(lock_wait_timeout),))
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            self.snapshot_id, self.server_version = cur.fetchone()
            cur.execute("SELECT txid_current_snapshot()::text, pg_postmaster_start_time()::text, "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())::text")
            snapshot_text, postmaster_start, database_oid = cur.fetchone()
            self.table_names = [table if schema == "public" else "%s.%s" % (schema, table)
                                for schema, table in pgt.list_tables(cur)]
            self.schema_revision = pgt.schema_revision(cur, version_tables)
            self._quick = quick_fingerprint(snapshot_text, postmaster_start, database_oid, self.table_names,
                                            self.schema_revision)
            cur.execute(ACTIVITY_SQL)
            rows = cur.fetchall()
            cur.execute(STATS_RESET_SQL)
            reset = cur.fetchone()
            self._activity = activity_digest(rows, reset[0] if reset else None)
            plan = scan_plan(previous, self._quick, self._activity)
            if plan == "snapshot":
                self.fingerprint = previous
                self.fingerprint_source = "snapshot"
                return
            if plan == "scan-during-dump":
                self.fingerprint_source = "pending"
                return
            self._apply_scan(self._exact_scan(cur), "scan")
            if previous.get("value") == self.fingerprint["value"]:
                self.fingerprint = previous  # same rows: unchanged (the equality db_backup checks)
        except pgt.psycopg2.Error as exc:
            self.close()
            raise MaintenanceError("reading PostgreSQL %s failed: %s" % (pgt.target(store), db_tools.scrub(exc, store)))

    def _exact_scan(self, cur):
        counts, sums = pgt.table_counts(cur, with_xmin=True)
        parts = dict(tables=sorted(counts), counts=counts, xmin_sums=sums, revision=self.schema_revision)
        return counts, db_tools.json_digest(parts)

    def _apply_scan(self, outcome, source):
        counts, value = outcome
        self._row_counts = counts
        self.fingerprint = dict(method=EXACT_METHOD, value=value, snapshot=self._quick, activity=self._activity)
        self.fingerprint_source = source

    def _driver_error(self, error):
        if isinstance(error, pgt.psycopg2.Error):
            return MaintenanceError("reading PostgreSQL %s failed: %s" % (
                pgt.target(self.store), db_tools.scrub(error, self.store)))
        return None

    def _describe(self):
        return pgt.target(self.store)

    def _cancel_scan(self):
        try:
            self.conn.cancel()
        except pgt.psycopg2.Error:
            pass

    @property
    def row_counts(self):
        """Rows per table in the dump's snapshot (counted on first use when the O(1) check skipped the scan)."""
        if self._row_counts is None and self.fingerprint is None:
            self.finish_scan()  # a pending scan counts them (and owns the connection until it ends)
        if self._row_counts is None:
            try:
                self._row_counts = pgt.table_counts(self.conn.cursor())[0]
            except pgt.psycopg2.Error as exc:
                raise MaintenanceError("counting rows in %s failed: %s" % (
                    pgt.target(self.store), db_tools.scrub(exc, self.store)))
        return self._row_counts

    def close(self):
        self._stop_scan()
        try:
            self.conn.rollback()
        except pgt.psycopg2.Error:
            pass
        self.conn.close()
