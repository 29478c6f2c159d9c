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

import errno
import hashlib
import json
import os
import sqlite3
import stat as _stat

from ansible.module_utils.six.moves.urllib.parse import quote

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
    if not header:
        raise MaintenanceError("SQLite backend store %s is empty (0 bytes), not an MLflow store; check "
                               "backend_store_uri" % path)
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


def sqlite_uri(path, mode="ro"):
    """A ``file:`` URI for ``path`` that SQLite reads back as exactly that path.

    The absolute path is percent-encoded (``?``, ``#``, ``%``, spaces and non-ASCII included), so no part of
    it can be taken for a query string, a fragment or an escape. ``mode`` is ``ro`` (read only) or ``rw``
    (read-write; SQLite fails instead of creating a missing file). ``rwc`` is never used: a new file is
    created by the caller (0600, no symlink) and then opened ``rw``.
    """
    if mode not in ("ro", "rw"):
        raise ValueError("SQLite open mode must be ro or rw, not %r" % (mode,))
    return "file:%s?mode=%s" % (quote(os.path.abspath(path), safe="/"), mode)


def connect(path, mode="ro", timeout=5.0, isolation_level="", allow_empty=False, what="SQLite database"):
    """Open an existing SQLite file; never creates one.

    A missing path, a directory, or (unless ``allow_empty``) a 0-byte file is refused with a MaintenanceError
    naming the path: SQLite would treat a 0-byte file as a new empty database and a write would turn it into one.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise MaintenanceError("%s %s does not exist" % (what, path))
        raise MaintenanceError("cannot open %s %s: %s" % (what, path, exc.strerror or exc))
    if not _stat.S_ISREG(stat.st_mode):
        raise MaintenanceError("%s %s is not a regular file%s" % (
            what, path, " (it is a directory)" if _stat.S_ISDIR(stat.st_mode) else ""))
    if stat.st_size == 0 and not allow_empty:
        raise MaintenanceError("%s %s is empty (0 bytes), not a database" % (what, path))
    kwargs = dict(uri=True, timeout=timeout)
    if isolation_level != "":
        kwargs["isolation_level"] = isolation_level
    try:
        return sqlite3.connect(sqlite_uri(path, mode), **kwargs)
    except sqlite3.Error as exc:
        raise MaintenanceError("cannot open %s %s: %s" % (what, path, exc))


def _connect_source(path, busy_timeout):
    return connect(path, "ro", timeout=busy_timeout, what="SQLite backend store")


def schema_revision(conn):
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def table_names(conn):
    return set(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def mlflow_problem(conn):
    """None for an MLflow store (``alembic_version`` with a revision, and a ``runs`` table), else why not."""
    try:
        names = table_names(conn)
    except sqlite3.DatabaseError as exc:
        return "not a readable SQLite database (%s)" % exc
    if not names:
        return "it holds no tables (an empty database)"
    missing = [name for name in ("alembic_version", "runs") if name not in names]
    if missing:
        return "it has no %s table, so it is not an MLflow store" % " and no ".join(missing)
    if schema_revision(conn) is None:
        return "its alembic_version table is empty, so it is not an MLflow store"
    return None


def check_mlflow_file(path, what="SQLite file"):
    """None when ``path`` is an MLflow SQLite store, else the reason (a 0-byte file is not one)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "it is empty (0 bytes)"
    conn = connect(path, "ro", what=what)
    try:
        return mlflow_problem(conn)
    finally:
        conn.close()


def snapshot(source_path, target_path, busy_timeout=60):
    """Copy a consistent snapshot of ``source_path`` into ``target_path``.

    ``target_path`` must exist and be empty (the caller creates it 0600 without following symlinks); it is
    opened ``rw`` through :func:`connect`, so SQLite never creates a file. Returns the MLflow schema revision
    read from the snapshot.
    """
    check_source(source_path)
    source = _connect_source(source_path, busy_timeout)
    try:
        target = connect(target_path, "rw", allow_empty=True, what="backup file")
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
    conn = connect(path, "ro")
    try:
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise MaintenanceError("SQLite integrity check of %s failed: %s" % (path, exc))
    if rows != ["ok"]:
        raise MaintenanceError("SQLite integrity check of %s failed: %s" % (path, "; ".join(rows[:5])))


def row_counts(path):
    conn = connect(path, "ro")
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
        conn = connect(path, "ro")
    except MaintenanceError:
        return True  # not openable as a database, but not empty either
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
    except sqlite3.Error:
        return True  # not a readable database, but not empty either
    finally:
        conn.close()
