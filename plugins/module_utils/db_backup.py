# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store backup: the steps behind db_backup (db_restore's are in ``db_restore``).

I/O happens here; decisions (retention, listing status) live in ``retention`` and ``backups``; the check of a
new backup (``verify``) in ``db_verify``.
Check mode runs the same code up to the first write and reports what would be written and pruned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_snapshot
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_verify import stale_verify_temps, verify_new
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_tables import store_kind as kind_named
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import apply_retention
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import pgpass_file


class BackupOptions:
    """db_backup's options, validated here (before any side effect).

    ``timeout`` bounds each external command (the module passes its ``deadline``); ``mode`` is the mode of the
    backup files and manifests (default 0600; directories get the matching 0700-style mode). ``store_kind``:
    ``tracking`` or ``auth`` (mlflow_tables.StoreKind).
    """

    def __init__(self, dest, fmt="custom", jobs=1, compression="auto", verify="checksum", retention=None,
                 incomplete_grace=3600.0, force=False, prefix="mlflow", lock_wait_timeout=60, timeout=3600,
                 connect_timeout=10, mode=None, deadline=None, db_connect_timeout=None, store_kind=None):
        if deadline is not None:
            timeout = deadline
        if db_connect_timeout is not None:
            connect_timeout = db_connect_timeout
        prefix = backups.validate_prefix(prefix)
        backups.check_jobs(jobs)
        self.file_mode = fsutil.parse_mode(mode)
        if self.file_mode is None:
            self.file_mode = fsutil.FILE_MODE
        self.dir_mode = fsutil.dir_mode_for(self.file_mode)
        self.dest = os.path.abspath(dest)
        self.fmt = fmt
        self.jobs = jobs
        self.compression = compression
        self.verify = verify
        self.retention = dict((k, v) for k, v in (retention or {}).items() if v)
        self.incomplete_grace = incomplete_grace
        self.force = force
        self.prefix = prefix
        self.lock_wait_timeout = lock_wait_timeout
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.kind = kind_named(store_kind)


def _summary(path, manifest):
    return dict(path=path, manifest=backups.manifest_path_for(path), size_bytes=manifest.get("size_bytes"),
                sha256=manifest.get("sha256"), engine=manifest.get("engine"), format=manifest.get("format"),
                compression=manifest.get("compression"), duration_s=manifest.get("duration_s"),
                schema_revision=manifest.get("schema_revision"), created_at=manifest.get("created_at"))


class _NoLock:
    """Check mode writes nothing, not even a lock file."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _prepare_dest(dest, check_mode, dir_mode=fsutil.DIR_MODE):
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise MaintenanceError("dest %s exists and is not a directory" % dest)
    if not os.path.isdir(dest):
        if check_mode:
            return
        try:
            fsutil.makedirs_private(dest, dir_mode)
        except OSError as exc:
            raise MaintenanceError(backups.os_error_message(exc, "cannot create dest %s" % dest))
    if not check_mode and not os.access(dest, os.W_OK | os.X_OK):
        raise MaintenanceError("dest %s is not writable by this user" % dest)


def _extension(engine, fmt, external):
    if engine == "sqlite":
        return "db" + compress.COMPRESSION_EXT[external]
    if fmt == "directory":
        return "dir"
    return ("dump" if fmt == "custom" else "sql") + compress.COMPRESSION_EXT[external]


def run_backup(store, opts, check_mode=False, warn=None):
    """Back up ``store`` into ``opts.dest``; returns the module result (without ``changed`` decided elsewhere)."""
    warn = warn or (lambda msg: None)
    started = backups.utc_now()
    watch = Stopwatch()
    compression = compress.resolve_compression(opts.compression)
    kind = opts.kind
    identity = backups.store_identity(store, opts.prefix, kind.name)
    if store.is_sqlite:
        sqlite_store.check_source(store.path)
        problem = _sqlite_backup_problem(store.path, kind)
        if problem:
            raise MaintenanceError("SQLite database %s is not %s: %s; refusing to back it up "
                                   "(check backend_store_uri and store_kind)" % (store.path, kind.title, problem))
    _prepare_dest(opts.dest, check_mode, opts.dir_mode)
    fmt = "sqlite" if store.is_sqlite else opts.fmt
    pg_dump = major = None
    if store.is_mysql:
        # MySQL/MariaDB: always one plain SQL dump (``format`` and ``jobs`` do not apply); pg_dump is the dump tool
        fmt = "plain"
        pg_dump = myt.find_tool(myt.DUMP_TOOLS, "the MySQL dump tool")
    elif store.is_postgresql:
        pg_dump = pgt.require_tool("pg_dump")
        major = pgt.tool_major(pg_dump)
        if fmt == "directory" and compression == "zstd" and (major or 0) < 16:
            warn("pg_dump %s cannot write zstd in directory format (PostgreSQL 16+ can); using its gzip" % major)
            compression = "gzip"
    lock = _NoLock() if check_mode else backups.DirectoryLock(opts.dest, opts.prefix)
    with lock:
        items, ignored = split_by_identity(backups.list_backups(opts.dest, opts.prefix), identity)
        newest = backups.newest_complete(items, store.engine)
        snap = None
        if store.is_sqlite:
            fingerprint = sqlite_store.fingerprint(store.path)
        else:
            # the newest backup's fingerprint lets an unchanged store be told in O(1) (postgres_snapshot, mysql_tools)
            previous = None if opts.force or not newest else newest["manifest"].get("fingerprint")
            if store.is_mysql:
                if newest and (newest["manifest"].get("format") != "plain" or newest["manifest"].get("compression") != compression):
                    previous = None  # another format or compression is never "unchanged": nothing to compare
                # the exact comparison runs alongside the dump (mysql_tools: SameAsPrevious); check mode decides first
                snap = myt.DumpSnapshot(store, opts.connect_timeout, opts.lock_wait_timeout, previous=previous,
                                        defer_scan=not check_mode, version_tables=kind.version_tables)
            else:
                snap = postgres_snapshot.DumpSnapshot(store, opts.connect_timeout, opts.lock_wait_timeout, previous=previous,
                                                      version_tables=kind.version_tables)
            fingerprint = snap.fingerprint
        try:
            tables = snap.tables if store.is_mysql else snap.table_names if snap is not None else None
            if snap is not None and (snap.schema_revision is None or kind.marker_table not in tables):
                raise MaintenanceError("%s database %s is not %s (%s); refusing to back it up "
                                       "(check backend_store_uri and store_kind)" % (
                                           "MySQL" if store.is_mysql else "PostgreSQL", store.redacted(), kind.title,
                                           "no MLflow schema revision in %s" % kind.version_table
                                           if snap.schema_revision is None else "no %s table" % kind.marker_table))
            result = dict(created=False, unchanged=False, verified=None, backup=None)
            manifest = newest["manifest"] if newest else {}
            unchanged = bool(newest) and not opts.force and fingerprint is not None \
                and manifest.get("fingerprint") == fingerprint and manifest.get("format") == fmt and manifest.get("compression") == compression
            if unchanged:
                unchanged = _newest_intact(newest, opts, result, warn)
            if unchanged:
                result.update(unchanged=True, backup=_summary(newest["path"], manifest),
                              msg="the store has not changed since %s (%s); no new backup" % (
                                  newest["name"], fingerprint["method"]))
                new_entry = None
            else:
                external = compression if (store.is_sqlite or store.is_mysql) else pgt.dump_argv(
                    pg_dump, fmt, opts.jobs, compression, None, 1, major=major)[1]
                name = backups.backup_name(opts.prefix, store.engine, started, _extension(store.engine, fmt, external))
                path = os.path.join(opts.dest, name)
                new_entry = (name, started)
                if check_mode:
                    result.update(created=True, backup=dict(path=path, manifest=backups.manifest_path_for(path),
                                                            size_bytes=None, sha256=None, engine=store.engine,
                                                            format=fmt, compression=compression, duration_s=None,
                                                            schema_revision=None, created_at=backups.iso(started)),
                                  msg="would write %s" % path)
                else:
                    try:
                        manifest = _write_backup(store, opts, path, fmt, compression, external, started, fingerprint,
                                                 snap, pg_dump, watch, identity)
                    except myt.SameAsPrevious:
                        # MySQL: the exact fingerprint, read alongside the dump, equals the newest backup's
                        manifest = None
                        if newest["manifest"].get("format") == fmt and newest["manifest"].get("compression") == \
                                compression and _newest_intact(newest, opts, result, warn):
                            result.update(unchanged=True, backup=_summary(newest["path"], newest["manifest"]),
                                          msg="the store has not changed since %s (%s); no new backup" % (
                                              newest["name"], snap.fingerprint["method"]))
                            new_entry = None
                        else:
                            snap.close()
                            snap = myt.DumpSnapshot(store, opts.connect_timeout, opts.lock_wait_timeout,
                                                    version_tables=kind.version_tables)
                            manifest = _write_backup(store, opts, path, fmt, compression, external, started, None,
                                                     snap, pg_dump, watch, identity)
                    if manifest is not None:
                        result.update(created=True, backup=_summary(path, manifest), verified=manifest.get("verified"),
                                      msg="wrote %s" % path)
        finally:
            if snap is not None:
                snap.close()
        result.update(_prune(items, new_entry, opts, check_mode))
        result["ignored"] = ignored
    result["store"] = identity
    return result


def _newest_intact(newest, opts, result, warn):
    """Whether the newest backup may stand for an unchanged store: its checksum holds (unless verify is none)."""
    if opts.verify == "none":
        return True
    try:
        backups.verify_checksum(newest["path"], newest["manifest"])
    except MaintenanceError as exc:
        warn("%s; taking a new backup" % exc.msg)
        return False
    result["verified"] = "checksum"
    return True


def _sqlite_backup_problem(path, kind):
    """Why ``path`` is not an MLflow SQLite database of ``kind`` (no schema revision, for the auth database also no
    users table), or None. A 0-byte file is not one."""
    if os.path.getsize(path) == 0:
        return "it is empty (0 bytes)"
    conn = sqlite_store.connect(path, "ro", what="SQLite backend store")
    try:
        if sqlite_store.schema_revision(conn, kind.version_tables) is None:
            return "it has no MLflow schema revision (%s is missing or empty)" % kind.version_table
        if kind.name != "tracking" and kind.marker_table not in sqlite_store.table_names(conn):
            return "it has no %s table" % kind.marker_table
    finally:
        conn.close()
    return None


def split_by_identity(items, identity):
    """``(ours, ignored)``: complete backups of exactly this store and prefix stay with the incomplete entries
    (which retention and the grace clean-up handle); complete backups of another store, or without a recorded
    identity, go to ``ignored`` (name and reason) and are never pruned by this store's retention.
    """
    ours, ignored = [], []
    for item in items:
        if item["status"] != "complete" or backups.same_store(item["manifest"], identity):
            ours.append(item)
            continue
        recorded = backups.manifest_identity(item["manifest"])
        ignored.append(dict(name=item["name"], path=item["path"], store=recorded,
                            reason="backup of %s" % backups.describe_identity(recorded)))
    return ours, ignored


def _tools(store, pg_dump, compression):
    tools = dict(python=backups.python_version(), compressor=compress.compression_tool(compression))
    if store.is_sqlite:
        tools["sqlite"] = sqlite3.sqlite_version
    elif store.is_mysql:
        tools["dump"] = db_tools.tool_version(pg_dump)
    else:
        tools["pg_dump"] = db_tools.tool_version(pg_dump)
    return tools


def _write_backup(store, opts, path, fmt, compression, external, started, fingerprint, snap, pg_dump, watch,
                  identity):
    with fsutil.private_umask():
        return _write_backup_private(store, opts, path, fmt, compression, external, started, fingerprint, snap,
                                     pg_dump, watch, identity)


def _write_backup_private(store, opts, path, fmt, compression, external, started, fingerprint, snap, pg_dump, watch,
                          identity):
    partial = path + backups.PARTIAL_SUFFIX
    raw = path + ".raw" + backups.PARTIAL_SUFFIX
    scratch = []
    manifest = dict(format_version=backups.MANIFEST_VERSION, file=os.path.basename(path), engine=store.engine,
                    format=fmt, compression=compression, external_compression=external,
                    created_at=backups.iso(started), source=store.redacted(), fingerprint=fingerprint,
                    tools=_tools(store, pg_dump, compression), kind="directory" if fmt == "directory" else "file",
                    store=identity)
    if opts.kind.name != "tracking":
        manifest["store_kind"] = opts.kind.name
    try:
        if store.is_sqlite:
            # file copy under a read transaction (hashed in the same pass), else the backup API: sqlite_store's doc
            with fsutil.open_private(raw, opts.file_mode) as out:
                copied = sqlite_store.copy_snapshot(store.path, out, busy_timeout=opts.lock_wait_timeout,
                                                    version_tables=opts.kind.version_tables)
                if copied["method"] == "file-copy":
                    os.fsync(out.fileno())
            manifest["snapshot_method"] = copied["method"]
            if copied["method"] == "file-copy":
                manifest["schema_revision"] = copied["schema_revision"]
            else:
                manifest["snapshot_fallback_reason"] = copied["reason"]
                manifest["schema_revision"] = sqlite_store.snapshot(store.path, raw, busy_timeout=opts.lock_wait_timeout,
                                                                    version_tables=opts.kind.version_tables)
            if external == "none" and copied["method"] == "file-copy":
                os.rename(raw, partial)
                sha256, size = copied["sha256"], copied["size_bytes"]
            elif external == "none":
                with open(raw, "rb") as handle:
                    os.fsync(handle.fileno())
                os.rename(raw, partial)
                sha256, size = fsutil.file_sha256(partial), os.path.getsize(partial)
            else:
                with open(raw, "rb") as source, fsutil.open_private(partial, opts.file_mode) as out:
                    sink = compress.HashingWriter(out)
                    compress.compress_stream(source, sink, external, timeout=opts.timeout)
                    out.flush()
                    os.fsync(out.fileno())
                os.unlink(raw)
                sha256, size = sink.sha256.hexdigest(), sink.size
            files = None
        elif store.is_mysql:
            manifest.update(schema_revision=snap.schema_revision, tables=snap.tables, database=store.database,
                            server_version=snap.server_version)
            with myt.option_file(store) as defaults_file:
                argv = myt.dump_argv(pg_dump, defaults_file, store.database,
                                     oracle=myt.is_oracle_mysqldump(manifest["tools"].get("dump")))
                snap.start_scan()  # a pending exact fingerprint: in the snapshot taken before the dump (mysql_tools)
                sha256, size = myt.dump_to(store, argv, partial, external, opts.timeout, opts.file_mode)
            manifest["fingerprint"] = snap.finish_scan(opts.timeout)
            if snap.same_as_previous:
                raise myt.SameAsPrevious()  # before the rename: the partial file goes (run_backup decides)
            files = None
        else:
            manifest.update(schema_revision=snap.schema_revision, database=store.database,
                            server_version=snap.server_version)
            snap.start_scan()  # a pending exact fingerprint: in the same snapshot, while pg_dump runs (postgres_snapshot)
            with pgpass_file(store) as pgpass:
                env = pgt.child_env(store, pgpass, connect_timeout=opts.connect_timeout)
                out_path = partial if (fmt == "directory" or external == "none") else None
                argv, _external = pgt.dump_argv(pg_dump, fmt, opts.jobs, compression, snap.snapshot_id,
                                                opts.lock_wait_timeout, out_path=out_path,
                                                major=pgt.tool_major(pg_dump))
                sha256, size, files = pgt.dump_to(store, env, argv, external, partial, opts.timeout,
                                                  directory=(fmt == "directory"))
            manifest.update(fingerprint=snap.finish_scan(opts.timeout), row_counts=snap.row_counts)
            if fmt == "directory":
                fsutil.chmod_tree(partial, opts.file_mode, opts.dir_mode)
            else:
                os.chmod(partial, opts.file_mode)
        fsutil.atomic_rename(partial, path)
        scratch.append(path)
        manifest.update(size_bytes=size, sha256=sha256)
        if files is not None:
            manifest["files"] = files
        # the SQLite file copy hashed the very bytes it wrote, in the same pass: no second read (db_verify)
        manifest["verified"] = verify_new(store, opts, path, manifest, hashed_as_written=(
            manifest.get("snapshot_method") == "file-copy" and external == "none"))
        manifest["duration_s"] = watch.elapsed()
        manifest["completed_at"] = backups.iso(backups.utc_now())
        fsutil.write_json_atomic(backups.manifest_path_for(path), manifest, mode=opts.file_mode)
        scratch.remove(path)
        return manifest
    except OSError as exc:
        raise MaintenanceError(backups.os_error_message(exc, "writing backup %s failed" % path))
    finally:
        for leftover in [partial, raw, raw + "-journal", raw + "-wal", raw + "-shm",
                         backups.manifest_path_for(path) + backups.PARTIAL_SUFFIX] + scratch:
            try:
                fsutil.remove_path(leftover)
            except OSError:
                pass


def _prune(items, new_entry, opts, check_mode):
    """Retention over complete backups (plus the new one), and incomplete leftovers past the grace period."""
    complete = [(item["name"], item["created_at"]) for item in items if item["status"] == "complete"]
    by_name = dict((item["name"], item) for item in items)
    if new_entry:
        complete.append(new_entry)
    decisions = apply_retention(complete, opts.retention)
    pruned, kept = [], []
    for decision in decisions:
        if decision["keep"]:
            kept.append(dict(name=decision["id"], reasons=decision["reasons"]))
            continue
        item = by_name[decision["id"]]
        pruned.append(dict(name=item["name"], path=item["path"], created_at=item["manifest"]["created_at"],
                           reason=decision["reasons"][0]))
    stale = backups.stale_incomplete(items, opts.incomplete_grace)
    stale += stale_verify_temps(opts.dest, opts.prefix, opts.incomplete_grace)
    removed_incomplete = [dict(name=item["name"], path=item["path"], reason=item["reason"]) for item in stale]
    if not check_mode:
        for entry in pruned:
            # manifest first: a crash in between leaves an incomplete entry, never a false complete one
            fsutil.remove_path(backups.manifest_path_for(entry["path"]))
            fsutil.remove_path(entry["path"])
        for item in stale:
            fsutil.remove_path(item["path"])
            if item["manifest_path"]:
                fsutil.remove_path(item["manifest_path"])
        if pruned or removed_incomplete:
            fsutil.fsync_dir(opts.dest)
    return dict(pruned=pruned, kept=kept, removed_incomplete=removed_incomplete)
