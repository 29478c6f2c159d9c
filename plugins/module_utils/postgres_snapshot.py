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


class DumpSnapshot:
    """An open REPEATABLE READ, READ ONLY transaction with an exported snapshot, counts and fingerprint.

    Unchanged-store detection, O(1) first: when ``previous`` (the newest backup's fingerprint) holds the same
    ``snapshot`` value (:func:`quick_fingerprint`: no transaction wrote anything in the cluster since that backup's
    snapshot), the store is unchanged without reading a row, and ``fingerprint`` is ``previous``. Otherwise (any
    write in the cluster: this database, another one, autovacuum's analyze, a ``verify: restore`` scratch database)
    the exact scan fingerprint (module doc) decides, as before. ``row_counts`` are counted when first read.
    """

    def __init__(self, store, connect_timeout, lock_wait_timeout, previous=None):
        self.store = store
        self.conn = pgt.connect(store, connect_timeout)
        self.snapshot_id = None
        self._row_counts = None
        self.fingerprint = None
        self.schema_revision = None
        self.server_version = None
        self.table_names = []
        self.fingerprint_source = None
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
            self.schema_revision = pgt.schema_revision(cur)
            quick = quick_fingerprint(snapshot_text, postmaster_start, database_oid, self.table_names,
                                      self.schema_revision)
            if isinstance(previous, dict) and previous.get("snapshot") == quick:
                self.fingerprint = previous
                self.fingerprint_source = "snapshot"
                return
            self._row_counts, sums = pgt.table_counts(cur, with_xmin=True)
            parts = dict(tables=sorted(self._row_counts), counts=self._row_counts, xmin_sums=sums,
                         revision=self.schema_revision)
            value = db_tools.json_digest(parts)
            self.fingerprint = dict(method="postgresql-count-xmin", value=value, snapshot=quick)
            self.fingerprint_source = "scan"
            if isinstance(previous, dict) and previous.get("method") == "postgresql-count-xmin" \
                    and previous.get("value") == value:
                self.fingerprint = previous  # same rows: unchanged (the equality db_backup checks)
        except pgt.psycopg2.Error as exc:
            self.close()
            raise MaintenanceError("reading PostgreSQL %s failed: %s" % (pgt.target(store), db_tools.scrub(exc, store)))

    @property
    def row_counts(self):
        """Rows per table in the dump's snapshot (counted on first use when the O(1) check skipped the scan)."""
        if self._row_counts is None:
            try:
                self._row_counts = pgt.table_counts(self.conn.cursor())[0]
            except pgt.psycopg2.Error as exc:
                raise MaintenanceError("counting rows in %s failed: %s" % (
                    pgt.target(self.store), db_tools.scrub(exc, self.store)))
        return self._row_counts

    def close(self):
        try:
            self.conn.rollback()
        except pgt.psycopg2.Error:
            pass
        self.conn.close()
