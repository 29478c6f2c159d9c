# -*- coding: utf-8 -*-
"""SQLite backups by file copy under a read transaction, proven under continuous writes.

Writers commit runs without pause (in WAL mode a second thread checkpoints, PASSIVE and RESTART/TRUNCATE,
so the WAL is backfilled and restarted during the copies). Each copy must pass integrity_check, hold every
run committed before the copy started, and be one consistent state: the runs it holds are exactly the
first N in commit order. The copy method is asserted to be the file copy (not the backup-API fallback).
"""

import hashlib
import json
import os
import sqlite3
import threading
import time

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import BackupOptions, run_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

from harness.runner import run_module


class Writer(threading.Thread):
    """Commits one run per transaction (plus churn: updates and deletes of other tables' rows), in order."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.committed = 0
        self.stop_event = threading.Event()
        self.error = None

    def run(self):
        try:
            connection = sqlite3.connect(self.path, timeout=60)
            connection.execute("PRAGMA synchronous=OFF")  # commits at memory speed: more of them per copy
            while not self.stop_event.is_set():
                number = self.committed + 1
                connection.execute("INSERT INTO runs (run_uuid, seq, payload) VALUES (?, ?, randomblob(3000))",
                                   ("run-%08d" % number, number))
                connection.execute("UPDATE churn SET v = randomblob(500) WHERE id = ?", (number % 500,))
                connection.commit()
                self.committed = number
                time.sleep(0.0005)  # a tracking server's writes come with gaps: a waiting locker gets its turn
            connection.close()
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc


class Checkpointer(threading.Thread):
    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.stop_event = threading.Event()
        self.count = 0

    def run(self):
        connection = sqlite3.connect(self.path, timeout=60)
        modes = ["PASSIVE", "PASSIVE", "RESTART", "TRUNCATE"]
        while not self.stop_event.wait(0.03):
            try:
                connection.execute("PRAGMA wal_checkpoint(%s)" % modes[self.count % len(modes)]).fetchall()
            except sqlite3.OperationalError:
                pass
            self.count += 1
        connection.close()


def make_store(path, journal_mode):
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=%s" % journal_mode)
    connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
    connection.execute("INSERT INTO alembic_version VALUES ('copy-test')")
    connection.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, seq INTEGER, payload BLOB)")
    connection.execute("CREATE TABLE churn (id INTEGER PRIMARY KEY, v BLOB)")
    connection.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 499) "
                       "INSERT INTO churn SELECT i, randomblob(500) FROM n")
    connection.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
                       "INSERT INTO runs SELECT printf('seed-%08d', i), -i, randomblob(3000) FROM n")
    connection.commit()
    connection.close()


class SlowFile:
    """A destination that takes 2 ms per write, so that each copy lasts long enough for many commits."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        time.sleep(0.002)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_file_copy_is_consistent_under_continuous_writes(tmp_path, journal_mode, monkeypatch):
    monkeypatch.setattr(sqlite_store, "COPY_CHUNK", 64 * 1024)
    source = str(tmp_path / "mlflow.db")
    make_store(source, journal_mode)
    writer = Writer(source)
    checkpointer = Checkpointer(source) if journal_mode == "wal" else None
    writer.start()
    if checkpointer:
        checkpointer.start()
    copies = []
    try:
        deadline = time.monotonic() + 15
        while len(copies) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
            before = writer.committed
            target = str(tmp_path / ("copy-%d.db" % len(copies)))
            with open(target, "wb") as out:
                copied = sqlite_store.copy_snapshot(source, SlowFile(out), busy_timeout=30)
            assert copied["method"] == "file-copy", copied
            copies.append((target, before, copied, writer.committed))
    finally:
        writer.stop_event.set()
        writer.join(30)
        if checkpointer:
            checkpointer.stop_event.set()
            checkpointer.join(30)
    assert writer.error is None, writer.error
    assert len(copies) >= 4 and writer.committed > copies[0][1]
    grew = 0
    for target, before, copied, after in copies:
        with open(target, "rb") as handle:
            data = handle.read()
        assert hashlib.sha256(data).hexdigest() == copied["sha256"] and len(data) == copied["size_bytes"]
        assert data[18:20] == b"\x01\x01"  # a rollback-journal file: no WAL needed beside it
        assert copied["schema_revision"] == "copy-test"
        sqlite_store.integrity_check(target)
        connection = sqlite3.connect("file:%s?mode=ro" % target, uri=True)
        try:
            seqs = [row[0] for row in connection.execute("SELECT seq FROM runs WHERE seq > 0 ORDER BY seq")]
            seeded = connection.execute("SELECT count(*) FROM runs WHERE seq < 0").fetchone()[0]
        finally:
            connection.close()
        # every run committed before the copy started, and one consistent state: exactly runs 1..N
        assert seeded == 3000
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= before
        grew = max(grew, after - len(seqs))
    assert not os.path.exists(copies[0][0] + "-wal")
    print("%s: %d copies, %d commits, up to %d runs committed during a copy (not in it), %d checkpoints" % (
        journal_mode, len(copies), writer.committed, grew, checkpointer.count if checkpointer else 0))
    if checkpointer:
        # the WAL case really ran under writes and checkpoints during the copies
        assert grew > 20 and checkpointer.count > 10


def test_backup_api_fallback_when_the_copy_does_not_apply(tmp_path, monkeypatch):
    source = str(tmp_path / "mlflow.db")
    make_store(source, "wal")
    holder = sqlite3.connect(source)
    holder.execute("INSERT INTO runs VALUES ('x', 0, NULL)")
    holder.commit()  # the WAL holds frames; the open connection keeps the WAL and -shm in place

    def inconsistent(_data):
        raise sqlite_store._NotCopyable("index header copies differ")  # pylint: disable=protected-access

    monkeypatch.setattr(sqlite_store, "parse_wal_index_header", inconsistent)
    try:
        with open(str(tmp_path / "copy.db"), "wb") as out:
            copied = sqlite_store.copy_snapshot(source, out)
            assert copied == {"method": "backup-api", "reason": "index header copies differ"} and out.tell() == 0
        store = parse_backend_store_uri("sqlite:///" + source)
        result = run_backup(store, BackupOptions(str(tmp_path / "dest"), compression="none", verify="restore"))
    finally:
        holder.close()
    with open(result["backup"]["manifest"]) as handle:
        manifest = json.load(handle)
    assert manifest["snapshot_method"] == "backup-api" and manifest["verified"] == "restore"
    assert manifest["snapshot_fallback_reason"] == "index header copies differ"
    connection = sqlite3.connect(result["backup"]["path"])
    try:
        assert connection.execute("SELECT count(*) FROM runs WHERE run_uuid = 'x'").fetchone()[0] == 1
    finally:
        connection.close()


def test_db_backup_uses_the_file_copy_and_restores(tmp_path):
    source = str(tmp_path / "mlflow.db")
    make_store(source, "wal")
    writer = Writer(source)
    writer.start()
    try:
        time.sleep(0.3)
        before = writer.committed
        dest = str(tmp_path / "backups")
        result, _run = run_module("db_backup", {"backend_store_uri": "sqlite:///" + source, "dest": dest,
                                                "compression": "none", "verify": "restore"})
    finally:
        writer.stop_event.set()
        writer.join(30)
    assert result["_status"] == "ok", result.get("msg")
    path = result["backup"]["path"]
    with open(result["backup"]["manifest"]) as handle:
        manifest = json.load(handle)
    assert manifest["snapshot_method"] == "file-copy" and manifest["verified"] == "restore"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    target = str(tmp_path / "restored.db")
    restored, _run = run_module("db_restore", {"backend_store_uri": "sqlite:///" + target, "src": dest,
                                               "allow_other_store": True})
    assert restored["_status"] == "ok", restored.get("msg")
    sqlite_store.integrity_check(target)
    connection = sqlite3.connect(target)
    try:
        count = connection.execute("SELECT count(*) FROM runs WHERE seq > 0").fetchone()[0]
    finally:
        connection.close()
    assert count >= before
