# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store backup and restore: the steps behind db_backup and db_restore.

I/O happens here; decisions (retention, listing status) live in ``retention`` and ``backups``.
Check mode runs the same code up to the first write and reports what would be written and pruned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import apply_retention
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import pgpass_file


class BackupOptions:
    def __init__(self, dest, fmt="custom", jobs=1, compression="auto", verify="checksum", retention=None,
                 incomplete_grace=3600.0, force=False, prefix="mlflow", lock_wait_timeout=60, timeout=3600,
                 connect_timeout=10):
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


def _prepare_dest(dest, check_mode):
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise MaintenanceError("dest %s exists and is not a directory" % dest)
    if not os.path.isdir(dest):
        if check_mode:
            return
        try:
            os.makedirs(dest, 0o750)
        except OSError as exc:
            raise MaintenanceError(backups.os_error_message(exc, "cannot create dest %s" % dest))
    if not check_mode and not os.access(dest, os.W_OK | os.X_OK):
        raise MaintenanceError("dest %s is not writable by this user" % dest)


def _extension(engine, fmt, external):
    if engine == "sqlite":
        return "db" + backups.COMPRESSION_EXT[external]
    if fmt == "directory":
        return "dir"
    return ("dump" if fmt == "custom" else "sql") + backups.COMPRESSION_EXT[external]


def run_backup(store, opts, check_mode=False, warn=None):
    """Back up ``store`` into ``opts.dest``; returns the module result (without ``changed`` decided elsewhere)."""
    warn = warn or (lambda msg: None)
    started = backups.utc_now()
    watch = Stopwatch()
    compression = backups.resolve_compression(opts.compression)
    _prepare_dest(opts.dest, check_mode)
    fmt = "sqlite" if store.is_sqlite else opts.fmt
    pg_dump = major = None
    if store.is_postgresql:
        pg_dump = pgt.require_tool("pg_dump")
        major = pgt.tool_major(pg_dump)
        if fmt == "directory" and compression == "zstd" and (major or 0) < 16:
            warn("pg_dump %s cannot write zstd in directory format (PostgreSQL 16+ can); using its gzip" % major)
            compression = "gzip"
    lock = _NoLock() if check_mode else backups.DirectoryLock(opts.dest, opts.prefix)
    with lock:
        items = backups.list_backups(opts.dest, opts.prefix)
        newest = backups.newest_complete(items, store.engine)
        snap = None
        if store.is_sqlite:
            fingerprint = sqlite_store.fingerprint(store.path)
        else:
            snap = pgt.DumpSnapshot(store, opts.connect_timeout, opts.lock_wait_timeout)
            fingerprint = snap.fingerprint
        try:
            result = dict(created=False, unchanged=False, verified=None, backup=None)
            manifest = newest["manifest"] if newest else {}
            unchanged = bool(newest) and not opts.force and manifest.get("fingerprint") == fingerprint \
                and manifest.get("format") == fmt and manifest.get("compression") == compression
            if unchanged and opts.verify != "none":
                try:
                    backups.verify_checksum(newest["path"], manifest)
                    result["verified"] = "checksum"
                except MaintenanceError as exc:
                    warn("%s; taking a new backup" % exc.msg)
                    unchanged = False
            if unchanged:
                result.update(unchanged=True, backup=_summary(newest["path"], manifest),
                              msg="the store has not changed since %s (%s); no new backup" % (
                                  newest["name"], fingerprint["method"]))
                new_entry = None
            else:
                external = compression if store.is_sqlite else pgt.dump_argv(
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
                    manifest = _write_backup(store, opts, path, fmt, compression, external, started, fingerprint,
                                             snap, pg_dump, watch)
                    result.update(created=True, backup=_summary(path, manifest), verified=manifest.get("verified"),
                                  msg="wrote %s" % path)
        finally:
            if snap is not None:
                snap.close()
        result.update(_prune(items, new_entry, opts, check_mode))
    return result


def _tools(store, pg_dump, compression):
    tools = dict(python=backups.python_version(), compressor=backups.compression_tool(compression))
    if store.is_sqlite:
        tools["sqlite"] = sqlite3.sqlite_version
    else:
        tools["pg_dump"] = pgt.tool_version(pg_dump)
    return tools


def _write_backup(store, opts, path, fmt, compression, external, started, fingerprint, snap, pg_dump, watch):
    partial = path + backups.PARTIAL_SUFFIX
    raw = path + ".raw" + backups.PARTIAL_SUFFIX
    scratch = []
    manifest = dict(format_version=backups.MANIFEST_VERSION, file=os.path.basename(path), engine=store.engine,
                    format=fmt, compression=compression, external_compression=external,
                    created_at=backups.iso(started), source=store.redacted(), fingerprint=fingerprint,
                    tools=_tools(store, pg_dump, compression), kind="directory" if fmt == "directory" else "file")
    try:
        if store.is_sqlite:
            manifest["schema_revision"] = sqlite_store.snapshot(store.path, raw, busy_timeout=opts.lock_wait_timeout)
            if external == "none":
                with open(raw, "rb") as handle:
                    os.fsync(handle.fileno())
                os.rename(raw, partial)
                sha256, size = backups.file_sha256(partial), os.path.getsize(partial)
            else:
                with open(raw, "rb") as source, open(partial, "wb") as out:
                    sink = backups.HashingWriter(out)
                    backups.compress_stream(source, sink, external, timeout=opts.timeout)
                    out.flush()
                    os.fsync(out.fileno())
                os.unlink(raw)
                sha256, size = sink.sha256.hexdigest(), sink.size
            files = None
        else:
            manifest.update(schema_revision=snap.schema_revision, row_counts=snap.row_counts,
                            database=store.database, server_version=snap.server_version)
            with pgpass_file(store) as pgpass:
                env = pgt.child_env(store, pgpass, connect_timeout=opts.connect_timeout)
                out_path = partial if (fmt == "directory" or external == "none") else None
                argv, _external = pgt.dump_argv(pg_dump, fmt, opts.jobs, compression, snap.snapshot_id,
                                                opts.lock_wait_timeout, out_path=out_path,
                                                major=pgt.tool_major(pg_dump))
                sha256, size, files = pgt.dump_to(store, env, argv, external, partial, opts.timeout,
                                                  directory=(fmt == "directory"))
        backups.atomic_rename(partial, path)
        scratch.append(path)
        manifest.update(size_bytes=size, sha256=sha256)
        if files is not None:
            manifest["files"] = files
        manifest["verified"] = _verify_new(store, opts, path, manifest)
        manifest["duration_s"] = watch.elapsed()
        manifest["completed_at"] = backups.iso(backups.utc_now())
        backups.write_json_atomic(backups.manifest_path_for(path), manifest)
        scratch.remove(path)
        return manifest
    except OSError as exc:
        raise MaintenanceError(backups.os_error_message(exc, "writing backup %s failed" % path))
    finally:
        for leftover in [partial, raw, raw + "-journal", raw + "-wal", raw + "-shm",
                         backups.manifest_path_for(path) + backups.PARTIAL_SUFFIX] + scratch:
            try:
                backups.remove_path(leftover)
            except OSError:
                pass


def _verify_new(store, opts, path, manifest):
    if opts.verify == "none":
        return None
    backups.verify_checksum(path, manifest)
    if opts.verify == "checksum":
        return "checksum"
    if store.is_sqlite:
        manifest["row_counts"] = _sqlite_restore_check(path, manifest, os.path.dirname(path))
    else:
        _postgres_restore_check(store, opts, path, manifest)
    return "restore"


def _sqlite_restore_check(path, manifest, scratch_dir):
    """Decompress into a temporary file, run integrity_check, count rows; the temp file is removed."""
    if manifest.get("compression", "none") == "none":
        sqlite_store.integrity_check(path)
        return sqlite_store.row_counts(path)
    temp = os.path.join(scratch_dir, ".verify-%s%s" % (os.path.basename(path), backups.PARTIAL_SUFFIX))
    try:
        with open(path, "rb") as source, open(temp, "wb") as out:
            backups.decompress_stream(source, out, manifest["compression"])
        sqlite_store.integrity_check(temp)
        return sqlite_store.row_counts(temp)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _postgres_restore_check(store, opts, path, manifest):
    scratch = pgt.scratch_name(store.database)
    pgt.create_database(store, opts.connect_timeout, scratch)
    try:
        with pgpass_file(store) as pgpass:
            env = pgt.child_env(store, pgpass, database=scratch, connect_timeout=opts.connect_timeout)
            pgt.restore_from(store, env, manifest, path, scratch, opts.jobs, opts.timeout, clean=False,
                             scratch_dir=os.path.dirname(path))
        counts = pgt.database_counts(store, opts.connect_timeout, scratch)
    finally:
        pgt.drop_database(store, opts.connect_timeout, scratch)
    expected = manifest.get("row_counts") or {}
    diff = dict((t, (expected.get(t), counts.get(t))) for t in set(expected) | set(counts)
                if expected.get(t) != counts.get(t))
    if diff:
        raise MaintenanceError("verify restore of %s: row counts differ from the source as of the dump: %s" % (
            path, ", ".join("%s %s != %s" % (t, a, b) for t, (a, b) in sorted(diff.items())[:5])))


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
    removed_incomplete = [dict(name=item["name"], path=item["path"], reason=item["reason"]) for item in stale]
    if not check_mode:
        for entry in pruned:
            # manifest first: a crash in between leaves an incomplete entry, never a false complete one
            backups.remove_path(backups.manifest_path_for(entry["path"]))
            backups.remove_path(entry["path"])
        for item in stale:
            backups.remove_path(item["path"])
            if item["manifest_path"]:
                backups.remove_path(item["manifest_path"])
        if pruned or removed_incomplete:
            backups.fsync_dir(opts.dest)
    return dict(pruned=pruned, kept=kept, removed_incomplete=removed_incomplete)


# ---------------------------------------------------------------- restore

def resolve_source(src, engine=None):
    """``(entry_path, manifest)`` for a backup file, its manifest, or a directory (its newest complete backup)."""
    src = os.path.abspath(src)
    if os.path.isdir(src) and not os.path.exists(backups.manifest_path_for(src)):
        items = backups.list_backups(src)
        newest = backups.newest_complete(items, engine)
        if newest is None:
            statuses = ", ".join("%s (%s: %s)" % (i["name"], i["status"], i["reason"]) for i in items[:5]) or "none"
            raise MaintenanceError("no complete %sbackup in %s; found: %s" % (
                (engine + " ") if engine else "", src, statuses))
        return newest["path"], newest["manifest"]
    if src.endswith(backups.MANIFEST_SUFFIX):
        manifest_path, entry = src, src[:-len(backups.MANIFEST_SUFFIX)]
    else:
        manifest_path, entry = backups.manifest_path_for(src), src
    if not os.path.exists(entry) and not os.path.exists(manifest_path):
        raise MaintenanceError("backup %s does not exist" % src)
    if not os.path.exists(manifest_path):
        raise MaintenanceError("backup %s has no manifest: it is incomplete (interrupted); refusing to restore it"
                               % entry)
    try:
        manifest = backups.read_manifest(manifest_path)
    except ValueError as exc:
        raise MaintenanceError("backup %s is incomplete: %s; refusing to restore it" % (entry, exc))
    if manifest["file"] != os.path.basename(entry):
        raise MaintenanceError("manifest %s names %s, not %s; refusing to restore" % (
            manifest_path, manifest["file"], os.path.basename(entry)))
    return entry, manifest


def run_restore(store, src, force=False, keep_previous=True, target_database=None, jobs=1, timeout=3600,
                connect_timeout=10, check_mode=False):
    watch = Stopwatch()
    entry, manifest = resolve_source(src, store.engine)
    backups.verify_checksum(entry, manifest)
    if manifest["engine"] != store.engine:
        raise MaintenanceError("backup %s is a %s backup; the target store is %s" % (
            entry, manifest["engine"], store.engine))
    result = dict(restored=dict(path=entry, manifest=backups.manifest_path_for(entry), engine=manifest["engine"],
                                format=manifest["format"], created_at=manifest["created_at"],
                                sha256=manifest["sha256"], schema_revision=manifest.get("schema_revision")),
                  target=store.redacted(), previous=None, changed=True)
    if store.is_sqlite:
        _restore_sqlite(store.path, entry, manifest, force, keep_previous, check_mode, result)
    else:
        _restore_postgres(store, entry, manifest, force, target_database, jobs, timeout, connect_timeout,
                          check_mode, result)
    result["duration_s"] = watch.elapsed()
    into = result["target"] if store.is_sqlite else "database %s (%s)" % (result["target_database"], result["target"])
    result["msg"] = ("would restore" if check_mode else "restored") + " %s into %s" % (entry, into)
    return result


def _restore_sqlite(target, entry, manifest, force, keep_previous, check_mode, result):
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise MaintenanceError("the directory of the target store %s does not exist" % target)
    if sqlite_store.has_user_tables(target) and not force:
        raise MaintenanceError("target store %s is not empty; set force=true to replace it (the current file is "
                               "kept as %s.pre-restore-<timestamp>)" % (target, target))
    when = backups.stamp(backups.utc_now())
    previous = "%s.pre-restore-%s" % (target, when) if os.path.exists(target) and keep_previous else None
    result["previous"] = previous
    if check_mode:
        return
    temp = os.path.join(directory, ".%s.restore-%s%s" % (os.path.basename(target), when, backups.PARTIAL_SUFFIX))
    try:
        with open(entry, "rb") as source, open(temp, "wb") as out:
            backups.decompress_stream(source, out, manifest["compression"])
            out.flush()
            os.fsync(out.fileno())
        sqlite_store.integrity_check(temp)
        if previous:
            os.link(target, previous)
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.exists(target + suffix):
                if previous and suffix == "-wal":
                    os.rename(target + suffix, previous + suffix)
                else:
                    os.unlink(target + suffix)
        backups.atomic_rename(temp, target)
    except OSError as exc:
        raise MaintenanceError(backups.os_error_message(exc, "restoring %s into %s failed" % (entry, target)))
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _restore_postgres(store, entry, manifest, force, target_database, jobs, timeout, connect_timeout, check_mode,
                      result):
    database = target_database or store.database
    result["target_database"] = database
    exists = pgt.database_exists(store, connect_timeout, database)
    if exists and pgt.database_has_tables(store, connect_timeout, database) and not force:
        raise MaintenanceError("target database %s is not empty; set force=true to replace its MLflow tables "
                               "(pg_restore --clean --if-exists)" % database)
    result["created_database"] = not exists
    if check_mode:
        return
    if not exists:
        pgt.create_database(store, connect_timeout, database)
    with pgpass_file(store) as pgpass:
        env = pgt.child_env(store, pgpass, database=database, connect_timeout=connect_timeout)
        pgt.restore_from(store, env, manifest, entry, database, jobs, timeout, clean=True,
                         scratch_dir=os.path.dirname(entry))
    expected = manifest.get("row_counts")
    if expected:
        counts = pgt.database_counts(store, connect_timeout, database)
        missing = dict((t, (n, counts.get(t))) for t, n in expected.items() if counts.get(t) != n)
        if missing:
            raise MaintenanceError("restored database %s differs from the backup's row counts: %s" % (
                database, ", ".join("%s %s != %s" % (t, a, b) for t, (a, b) in sorted(missing.items())[:5])))
