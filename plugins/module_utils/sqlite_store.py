# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite backend stores: consistent online snapshots, change fingerprints, integrity checks.

Snapshot, first choice (:func:`copy_snapshot`, "file-copy"): the database file is copied at copy speed while
a read transaction pins a consistent snapshot, and hashed in the same pass (each chunk is read into a reused
buffer, written, and hashed from that same buffer on a second thread, so the sha256 costs no extra read and runs
beside the copy):

- rollback-journal modes (delete, truncate, persist): the read transaction holds SQLite's SHARED lock, so no
  writer can change the file until the copy ends (writers wait through their busy timeout, as with the
  backup API); the first ``page_count`` pages of the file are the snapshot.
- WAL mode: for a moment the copy takes the WAL write lock (``BEGIN IMMEDIATE`` on a second connection, which
  writes nothing), starts its read transaction, and reads the WAL index header (``-shm``: ``mxFrame``,
  ``nPage``, salts, ``nBackfill``), which cannot change while it holds that lock; then it lets writers go on.
  The snapshot is the main file with, for each page, the newest WAL frame at or before ``mxFrame`` (frames
  checked against the index's salts). While the read transaction lasts, SQLite itself guarantees both parts:
  a checkpoint never writes a page into the main file beyond the reader's mark, and the WAL is never
  restarted over the reader's frames. When every frame is already checkpointed (``nBackfill == mxFrame``,
  the reader may then sit on read slot 0, which does not stop a WAL restart but does stop checkpoints), only
  the main file is read. The copy's header says rollback journal (bytes 18-19 = 1), so it is one file.
- the copy's own file descriptors stay open until the read transaction has ended: closing a descriptor of
  the database drops every POSIX lock this process holds on it, SQLite's included.

Fallback, the ``sqlite3`` backup API in one step (``pages=-1``, :func:`snapshot`, "backup-api"): used when
the file copy does not apply: another journal mode (memory, off) or exclusive locking mode, no ``-shm`` file
(heap-memory WAL index), no write permission on the store (the WAL write lock needs a read-write open), an
index header that is not consistent, or WAL frames that do not match it. One step means one read
transaction, so that copy is a consistent snapshot too; it is switched to ``journal_mode=DELETE``.

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

import bisect
import errno
import hashlib
import json
import os
import queue
import sqlite3
import stat as _stat
import struct
import threading

from ansible.module_utils.six.moves.urllib.parse import quote

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_tables import TRACKING

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


def schema_revision(conn, version_tables=TRACKING.version_tables):
    """The alembic revision in the first of ``version_tables`` that exists (None: none does, or it is empty)."""
    for table in version_tables:
        try:
            row = conn.execute("SELECT version_num FROM %s" % table).fetchone()
        except sqlite3.Error:
            continue
        return row[0] if row else None
    return None


def table_names(conn):
    return set(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def mlflow_problem(conn, kind=TRACKING):
    """None for an MLflow database of ``kind`` (mlflow_tables.StoreKind; the tracking store: ``alembic_version``
    with a revision, and a ``runs`` table), else why not."""
    try:
        names = table_names(conn)
    except sqlite3.DatabaseError as exc:
        return "not a readable SQLite database (%s)" % exc
    if not names:
        return "it holds no tables (an empty database)"
    missing = kind.missing_tables(names)
    if missing:
        return "it has no %s table, so it is not %s" % (" and no ".join(missing), kind.title)
    if schema_revision(conn, kind.version_tables) is None:
        return "its %s table is empty, so it is not %s" % (kind.version_table, kind.title)
    return None


def check_mlflow_file(path, what="SQLite file", kind=TRACKING):
    """None when ``path`` is an MLflow SQLite database of ``kind``, else the reason (a 0-byte file is not one)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "it is empty (0 bytes)"
    conn = connect(path, "ro", what=what)
    try:
        return mlflow_problem(conn, kind)
    finally:
        conn.close()


def snapshot(source_path, target_path, busy_timeout=60, version_tables=TRACKING.version_tables):
    """Copy a consistent snapshot of ``source_path`` into ``target_path``.

    ``target_path`` must exist and be empty (the caller creates it 0600 without following symlinks); it is
    opened ``rw`` through :func:`connect`, so SQLite never creates a file. Returns the MLflow schema revision
    read from the snapshot (from the first of ``version_tables`` it has).
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
            revision = schema_revision(target, version_tables)
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


COPY_CHUNK = 1 << 20  # small enough that the hash thread reads a chunk while it is still in the CPU cache
COPY_BUFFERS = 4
_preadv = getattr(os, "preadv", None)
WAL_HEADER_SIZE = 32
WAL_FRAME_HEADER_SIZE = 24
WAL_INDEX_VERSION = 3007000
ROLLBACK_JOURNAL_MODES = ("delete", "truncate", "persist")


class _NotCopyable(Exception):
    """The file copy does not apply to this store (the reason is the message): use the backup API."""


def _pread_exact(fd, size, offset, what):
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise _NotCopyable("%s is shorter than its index says (%d of %d bytes at %d)" % (what, len(data), size, offset))
    return data


def parse_wal_index_header(data):
    """The WAL index header (first 136 bytes of ``-shm``) as a dict; _NotCopyable unless both copies agree."""
    if len(data) < 136:
        raise _NotCopyable("the WAL index is too short")
    if data[0:48] != data[48:96]:
        raise _NotCopyable("the WAL index header copies differ (a writer is mid-update)")
    version, _unused, _change, is_init, _big_end, page_size, mx_frame, n_page = struct.unpack("=IIIBBHII", data[0:24])
    if version != WAL_INDEX_VERSION or not is_init:
        raise _NotCopyable("the WAL index is not initialised (version %d)" % version)
    page_size = 65536 if page_size == 1 else page_size
    n_backfill = struct.unpack("=I", data[96:100])[0]
    return dict(page_size=page_size, mx_frame=mx_frame, n_page=n_page, salts=data[32:40], n_backfill=n_backfill)


def wal_page_map(wal_fd, index, page_size):
    """{page number: offset of its newest frame's data} over WAL frames 1..mxFrame, checked against the index."""
    header = _pread_exact(wal_fd, WAL_HEADER_SIZE, 0, "the WAL file")
    magic, _version, wal_page_size = struct.unpack(">III", header[0:12])
    if magic not in (0x377f0682, 0x377f0683) or wal_page_size != page_size:
        raise _NotCopyable("the WAL header does not match the database (magic %x, page size %d)" % (magic, wal_page_size))
    if header[16:24] != index["salts"]:
        raise _NotCopyable("the WAL salts differ from its index")
    pages = {}
    frame_size = WAL_FRAME_HEADER_SIZE + page_size
    for frame in range(index["mx_frame"]):
        offset = WAL_HEADER_SIZE + frame * frame_size
        frame_header = _pread_exact(wal_fd, WAL_FRAME_HEADER_SIZE, offset, "the WAL file")
        if frame_header[8:16] != index["salts"]:
            raise _NotCopyable("WAL frame %d does not belong to the indexed log" % (frame + 1))
        pages[struct.unpack(">I", frame_header[0:4])[0]] = offset + WAL_FRAME_HEADER_SIZE
    return pages


class _Hasher(object):
    """sha256 of the copied chunks on a second thread, from the very buffers that were written.

    ``hashlib`` releases the GIL on large buffers, so the hash runs beside the copy (on another core) instead of
    after it. A buffer goes back to the free list only once it is hashed; the copy waits for a free one, so at
    most ``COPY_BUFFERS`` chunks are in flight.
    """

    def __init__(self, chunk_size):
        self.digest = hashlib.sha256()
        self.free = queue.Queue()
        self.full = queue.Queue()
        self.error = None
        for _index in range(COPY_BUFFERS):
            self.free.put(bytearray(chunk_size))
        self.thread = threading.Thread(target=self._run, name="mlflowops-sqlite-hash")
        self.thread.daemon = True
        self.thread.start()

    def _run(self):
        while True:
            item = self.full.get()
            if item is None:
                return
            buf, size = item
            try:
                if self.error is None:
                    self.digest.update(memoryview(buf)[:size])
            except Exception as exc:  # pylint: disable=broad-except
                self.error = exc
            self.free.put(buf)

    def take(self):
        if self.error is not None:
            raise self.error
        return self.free.get()

    def hash(self, buf, size):
        self.full.put((buf, size))

    def finish(self):
        """The hex digest, once every chunk handed over is hashed."""
        self.full.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()

    def abandon(self):
        if self.thread.is_alive():
            self.full.put(None)
            self.thread.join()


def _read_into(fd, view, offset, what):
    """Fill ``view`` (a memoryview) from ``fd`` at ``offset``; _NotCopyable when the file ends before."""
    done = 0
    while done < len(view):
        if _preadv is not None:
            count = _preadv(fd, [view[done:]], offset + done)
        else:  # no preadv (not Linux or BSD): a read into a new bytes object
            data = os.pread(fd, len(view) - done, offset + done)
            count = len(data)
            view[done:done + count] = data
        if count <= 0:
            raise _NotCopyable("%s is shorter than its index says (%d of %d bytes at %d)" % (
                what, done, len(view), offset))
        done += count


def _copy_pages(main_fd, wal_fd, wal_pages, page_size, page_count, out, is_wal):
    """Write pages 1..page_count (main file, or the WAL frame in ``wal_pages``) to ``out``.

    Returns ``(sha256 hex, size)``. Each chunk is read into a reused buffer (``preadv``: no allocation per
    chunk), written with ``out.write`` and hashed from that same buffer on the hash thread, so the checksum is
    that of the bytes written, in the same pass.
    """
    per_chunk = max(1, COPY_CHUNK // page_size)
    in_wal = sorted(wal_pages)
    hasher = _Hasher(per_chunk * page_size)
    written = 0
    page = 1
    try:
        while page <= page_count:
            count = min(per_chunk, page_count - page + 1)
            buf = hasher.take()
            view = memoryview(buf)
            # the chunk's pages from the WAL one by one, the runs between them from the main file in one read each
            start = page
            for number in in_wal[bisect.bisect_left(in_wal, page):bisect.bisect_left(in_wal, page + count)] + [page + count]:
                if number > start:
                    _read_into(main_fd, view[(start - page) * page_size:(number - page) * page_size],
                               (start - 1) * page_size, "the database file")
                if number < page + count:
                    _read_into(wal_fd, view[(number - page) * page_size:(number - page + 1) * page_size],
                               wal_pages[number], "the WAL file")
                start = number + 1
            if page == 1 and is_wal:
                # file format versions 1/1: a rollback-journal database, one self-contained file
                buf[18:20] = b"\x01\x01"
            size = count * page_size
            out.write(view[:size])
            hasher.hash(buf, size)
            written += size
            page += count
        return hasher.finish(), written
    finally:
        hasher.abandon()


def copy_snapshot(source_path, out, busy_timeout=60, version_tables=TRACKING.version_tables):
    """Write a consistent snapshot of ``source_path`` into the binary file ``out`` at copy speed (see the module doc).

    Returns ``dict(method="file-copy", schema_revision, sha256, size_bytes, journal_mode)``, or
    ``dict(method="backup-api", reason)`` when the file copy does not apply (nothing was written to ``out``; the
    caller then uses :func:`snapshot`). Never writes the source.
    """
    check_source(source_path)
    fds = []
    reader = writer = None
    try:
        try:
            reader = connect(source_path, "ro", timeout=busy_timeout, isolation_level=None, what="SQLite backend store")
            journal_mode = str(reader.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            locking_mode = str(reader.execute("PRAGMA locking_mode").fetchone()[0]).lower()
            if locking_mode != "normal":
                raise _NotCopyable("locking_mode is %s" % locking_mode)
            if journal_mode not in ROLLBACK_JOURNAL_MODES + ("wal",):
                raise _NotCopyable("journal_mode is %s" % journal_mode)
            is_wal = journal_mode == "wal"
            fds.append(os.open(source_path, os.O_RDONLY))
            wal_pages = {}
            if is_wal:
                if not os.path.exists(source_path + "-shm") or not os.access(source_path, os.W_OK):
                    raise _NotCopyable("no shared WAL index, or no write permission for the WAL write lock")
                fds.append(os.open(source_path + "-shm", os.O_RDONLY))
                fds.append(os.open(source_path + "-wal", os.O_RDONLY))
                writer = connect(source_path, "rw", timeout=busy_timeout, isolation_level=None, what="SQLite backend store")
                writer.execute("BEGIN IMMEDIATE")
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            page_size = reader.execute("PRAGMA page_size").fetchone()[0]
            page_count = reader.execute("PRAGMA page_count").fetchone()[0]
            revision = schema_revision(reader, version_tables)
            if is_wal:
                index = parse_wal_index_header(os.pread(fds[1], 136, 0))
                if index["page_size"] != page_size:
                    raise _NotCopyable("the WAL index page size differs from the database's")
                if index["n_backfill"] < index["mx_frame"]:
                    wal_pages = wal_page_map(fds[2], index, page_size)
                    if index["n_page"] != page_count:
                        raise _NotCopyable("the WAL index holds %d pages, the snapshot %d" % (index["n_page"], page_count))
                writer.execute("ROLLBACK")
                writer.close()
                writer = None
            if any(page > page_count for page in wal_pages):
                wal_pages = dict((page, offset) for page, offset in wal_pages.items() if page <= page_count)
            main_pages = os.fstat(fds[0]).st_size // page_size
            if any(page not in wal_pages for page in range(main_pages + 1, page_count + 1)):
                raise _NotCopyable("the database file is shorter than the snapshot and the WAL does not hold the rest")
        except (_NotCopyable, sqlite3.Error, OSError) as exc:
            return dict(method="backup-api", reason=str(exc))
        try:
            sha256, size = _copy_pages(fds[0], fds[2] if is_wal else None, wal_pages, page_size, page_count, out, is_wal)
        except _NotCopyable as exc:
            raise MaintenanceError("SQLite snapshot of %s failed: %s" % (source_path, exc))
        out.flush()
        reader.execute("ROLLBACK")
        return dict(method="file-copy", schema_revision=revision, sha256=sha256, size_bytes=size,
                    journal_mode=journal_mode)
    finally:
        # connections first: the read transaction must end before our descriptors are closed (POSIX locks)
        for connection in (writer, reader):
            if connection is not None:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
        for fd in fds:
            os.close(fd)
