# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite backend stores: consistent online snapshots, change fingerprints, integrity checks.

Snapshot: ``sqlite3`` backup API in one step (``pages=-1``) from a read-only connection. One step
means one read transaction, so the copy is a consistent snapshot even while the tracking server
writes (in WAL mode writers go on; in rollback-journal mode they wait for the copy, through their
busy timeout). The copy is then switched to ``journal_mode=DELETE`` so it is one self-contained file.

Change fingerprint (unchanged-store detection): a sha256 over the main file's size, mtime and
header fields (file change counter, schema cookie) and the WAL file's size, mtime and 32-byte header
(its salts change on every WAL restart). Every commit changes one of these: in rollback-journal
mode the change counter and the file; in WAL mode the WAL grows, or it restarted with new salts.
A checkpoint without new commits can change it too: that costs one extra backup, never a missed
change. The fingerprint is taken before the snapshot, so a write during the backup makes the next
run back up again. Reading never changes it: the source is opened read-only, so closing the
connection does not checkpoint.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import sqlite3

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

SQLITE_MAGIC = b"SQLite format 3\x00"


def check_source(path):
    if not os.path.exists(path):
        raise MaintenanceError("SQLite backend store %s does not exist" % path)
    if not os.path.isfile(path):
        raise MaintenanceError("SQLite backend store %s is not a file" % path)
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise MaintenanceError("cannot read SQLite backend store %s: %s" % (path, exc))
    if not header.startswith(SQLITE_MAGIC):
        raise MaintenanceError("%s is not a SQLite database (bad header)" % path)
    return header


def fingerprint(path):
    """``{"method": ..., "value": sha256 hex}``; see the module docstring."""
    header = check_source(path)
    stat = os.stat(path)
    parts = dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns, change_counter=header[24:28].hex(),
                 schema_cookie=header[40:44].hex(), version_valid_for=header[92:96].hex())
    wal = path + "-wal"
    try:
        wal_stat = os.stat(wal)
    except OSError:
        wal_stat = None
    if wal_stat is not None and wal_stat.st_size > 0:
        with open(wal, "rb") as handle:
            parts.update(wal_size=wal_stat.st_size, wal_mtime_ns=wal_stat.st_mtime_ns,
                         wal_header=handle.read(32).hex())
    value = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return dict(method="sqlite-file-state", value=value)


def _connect_source(path, busy_timeout):
    try:
        return sqlite3.connect("file:%s?mode=ro" % path.replace("?", "%3f").replace("#", "%23"), uri=True,
                               timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise MaintenanceError("cannot open SQLite backend store %s: %s" % (path, exc))


def schema_revision(conn):
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def snapshot(source_path, target_path, busy_timeout=60):
    """Copy a consistent snapshot of ``source_path`` into the new file ``target_path``.

    Returns the MLflow schema revision read from the snapshot.
    """
    check_source(source_path)
    source = _connect_source(source_path, busy_timeout)
    try:
        target = sqlite3.connect(target_path)
        try:
            # no journal and no syncs while copying into the new file: a crash leaves a .partial that is
            # discarded anyway, and the caller fsyncs the finished file once
            target.execute("PRAGMA journal_mode=OFF").fetchall()
            target.execute("PRAGMA synchronous=OFF")
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode=DELETE").fetchall()
            revision = schema_revision(target)
            target.commit()
        finally:
            target.close()
    except sqlite3.Error as exc:
        if "disk is full" in str(exc):
            raise MaintenanceError("SQLite snapshot of %s into %s failed: no space left on device (%s)" % (
                source_path, os.path.dirname(target_path), exc))
        raise MaintenanceError("SQLite snapshot of %s failed: %s" % (source_path, exc))
    finally:
        source.close()
    for suffix in ("-journal", "-wal", "-shm"):
        if os.path.exists(target_path + suffix):
            os.unlink(target_path + suffix)
    return revision


def integrity_check(path):
    """Raise MaintenanceError unless ``PRAGMA integrity_check`` says ok."""
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise MaintenanceError("SQLite integrity check of %s failed: %s" % (path, exc))
    if rows != ["ok"]:
        raise MaintenanceError("SQLite integrity check of %s failed: %s" % (path, "; ".join(rows[:5])))


def row_counts(path):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return dict((table, conn.execute('SELECT count(*) FROM "%s"' % table.replace('"', '""')).fetchone()[0])
                    for table in tables)
    finally:
        conn.close()


def has_user_tables(path):
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return False
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return True  # not a readable database, but not empty either
