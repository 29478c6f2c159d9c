# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store restore: the steps behind db_restore.

Order: every option and the backup are validated (manifest, checksum, engine, store identity), then the
target (a directory, a non-empty store without ``force``), then the backup's content (integrity, an MLflow
schema) on a private temporary copy next to the target; only then is the target replaced. Check mode runs
the same steps and removes the temporary copy instead of renaming it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import grp
import os
import pwd
import stat as _stat

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_verify
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mlflow_tables
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import pgpass_file

RESTORE_TEMP_MARK = ".restore-"


# ---------------------------------------------------------------- pure decisions

def resolve_owner(owner=None, group=None):
    """``(uid, gid)`` for the ``owner`` and ``group`` options (names or numeric ids; None when unset)."""
    return (_numeric_id(owner, lambda name: pwd.getpwnam(name).pw_uid, "owner %r is not a user on this host"),
            _numeric_id(group, lambda name: grp.getgrnam(name).gr_gid, "group %r is not a group on this host"))


def _numeric_id(value, lookup, unknown):
    """None for an unset ``value``, the number of a numeric one, else ``lookup(name)`` (KeyError: ``unknown``)."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise MaintenanceError(unknown % text)


def final_ownership(old_stat, uid=None, gid=None, mode=None, default_mode=fsutil.FILE_MODE):
    """The ``(uid, gid, mode)`` the restored file gets.

    Options win; otherwise the replaced file's owner, group and permission bits are kept; a new file gets
    the current user and ``default_mode`` (0600).
    """
    if old_stat is not None:
        base_uid, base_gid, base_mode = old_stat.st_uid, old_stat.st_gid, _stat.S_IMODE(old_stat.st_mode)
    else:
        base_uid, base_gid, base_mode = os.geteuid(), os.getegid(), default_mode
    return (base_uid if uid is None else uid, base_gid if gid is None else gid,
            base_mode if mode is None else mode)


def stale_restore_temps(target, grace_seconds, now=None):
    """Hidden ``.<name>.restore-<time>.partial`` files of killed restores of ``target`` older than the grace."""
    directory, base = os.path.split(target)
    lead = ".%s%s" % (base, RESTORE_TEMP_MARK)
    stale = []
    try:
        names = sorted(os.listdir(directory or "."))
    except OSError:
        return stale
    for name in names:
        if name.startswith(lead) and name.endswith(backups.PARTIAL_SUFFIX):
            path = os.path.join(directory, name)
            if fsutil.is_stale(path, grace_seconds, now=now) and not os.path.isdir(path):
                stale.append(path)
    return stale


def content_problem(entry, problem, kind=mlflow_tables.TRACKING):
    return "backup %s is not %s: %s; refusing to restore it (allow_non_mlflow=true restores it " \
        "anyway)" % (entry, kind.title, problem)


def postgres_content_problem(manifest, kind=mlflow_tables.TRACKING):
    """Why a PostgreSQL or MySQL backup's manifest does not describe an MLflow database of ``kind``, or None."""
    if not manifest.get("size_bytes"):
        return "it is empty (0 bytes)"
    counts = manifest.get("row_counts")
    if not isinstance(counts, dict) and isinstance(manifest.get("tables"), list):
        # MySQL backups without verify=restore record the table list only
        counts = dict((table, None) for table in manifest["tables"])
    if isinstance(counts, dict):
        if not counts:
            return "it holds no tables"
        missing = kind.missing_tables(counts)
        if missing:
            return "it has no %s table" % " and no ".join(missing)
    if not manifest.get("schema_revision"):
        return "it records no MLflow schema revision"
    return None


# ---------------------------------------------------------------- source

def _listing(items):
    return ", ".join("%s (%s: %s)" % (i["name"], i["status"], i["reason"]) for i in items[:5]) or "none"


def resolve_source(src, engine=None, identity=None, allow_other_store=False):
    """``(entry_path, manifest)`` for a backup file, its manifest, or a directory.

    A directory means its newest complete backup of exactly this store (``identity``: engine and location);
    with ``allow_other_store`` the newest complete backup of the engine, whatever store it came from.
    """
    src = os.path.abspath(src)
    if os.path.isdir(src) and not os.path.exists(backups.manifest_path_for(src)):
        items = backups.list_backups(src)
        if identity is not None and not allow_other_store:
            ours = [i for i in items if i["status"] != "complete"
                    or backups.same_store(i["manifest"], identity, match_prefix=False)]
            newest = backups.newest_complete(ours, engine)
            if newest is None:
                others = [i for i in items if i["status"] == "complete" and i not in ours
                          and i["manifest"]["engine"] == engine]
                if others:
                    raise MaintenanceError(
                        "no complete backup of %s in %s; the %d other complete %s backup(s) there belong to other "
                        "stores or record none (newest: %s, of %s); set allow_other_store=true to restore one" % (
                            identity["location"], src, len(others), engine, others[0]["name"],
                            backups.describe_identity(backups.manifest_identity(others[0]["manifest"]))))
        else:
            newest = backups.newest_complete(items, engine)
        if newest is None:
            raise MaintenanceError("no complete %sbackup in %s; found: %s" % (
                (engine + " ") if engine else "", src, _listing(items)))
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


# ---------------------------------------------------------------- restore

def run_restore(store, src, force=False, keep_previous=True, target_database=None, jobs=1, timeout=3600,
                connect_timeout=10, check_mode=False, allow_other_store=False, allow_non_mlflow=False,
                owner=None, group=None, mode=None, incomplete_grace=3600.0, deadline=None, db_connect_timeout=None,
                store_kind=None):
    """Restore ``src`` into ``store``; returns the module result. ``timeout`` bounds each external command.

    ``store_kind``: ``tracking`` (default) or ``auth``; only a backup of that kind is restored."""
    if deadline is not None:
        timeout = deadline
    if db_connect_timeout is not None:
        connect_timeout = db_connect_timeout
    watch = Stopwatch()
    # options first, before anything is read or written
    backups.check_jobs(jobs)
    file_mode = fsutil.parse_mode(mode)
    if not store.is_sqlite and (owner not in (None, "") or group not in (None, "") or file_mode is not None):
        raise MaintenanceError("owner, group and mode apply to SQLite stores only")
    if target_database and store.is_sqlite:
        raise MaintenanceError("target_database applies to PostgreSQL and MySQL stores only")
    uid, gid = resolve_owner(owner, group)
    kind = mlflow_tables.store_kind(store_kind)
    identity = backups.store_identity(store, kind=kind.name)
    entry, manifest = resolve_source(src, store.engine, identity, allow_other_store)
    backed_up = manifest.get("store_kind") or mlflow_tables.TRACKING.name
    if backed_up != kind.name:
        raise MaintenanceError("backup %s is a backup of %s, and the target is to be %s (store_kind=%s); refusing "
                               "to restore it" % (entry, mlflow_tables.store_kind(backed_up).title
                                                  if backed_up in mlflow_tables.STORE_KINDS else backed_up,
                                                  kind.title, kind.name))
    backups.verify_checksum(entry, manifest)
    if manifest["engine"] != store.engine:
        raise MaintenanceError("backup %s is a %s backup; the target store is %s" % (
            entry, manifest["engine"], store.engine))
    recorded = backups.manifest_identity(manifest)
    other_store = not backups.same_store(manifest, identity, match_prefix=False)
    if other_store and not allow_other_store:
        raise MaintenanceError("backup %s is a backup of %s, not of the target %s; refusing to restore it "
                               "(allow_other_store=true restores it anyway)" % (
                                   entry, backups.describe_identity(recorded), identity["location"]))
    result = dict(restored=dict(path=entry, manifest=backups.manifest_path_for(entry), engine=manifest["engine"],
                                format=manifest["format"], created_at=manifest["created_at"],
                                sha256=manifest["sha256"], schema_revision=manifest.get("schema_revision"),
                                store=recorded),
                  target=store.redacted(), other_store=other_store, previous=None, changed=True)
    if store.is_sqlite:
        _restore_sqlite(store.path, entry, manifest, force, keep_previous, check_mode, result,
                        allow_non_mlflow=allow_non_mlflow, ownership=(uid, gid, file_mode), grace=incomplete_grace,
                        kind=kind)
    else:
        problem = postgres_content_problem(manifest, kind)
        if problem and not allow_non_mlflow:
            raise MaintenanceError(content_problem(entry, problem, kind))
        if store.is_mysql:
            _restore_mysql(store, entry, manifest, force, target_database, timeout, connect_timeout, check_mode, result)
        else:
            _restore_postgres(store, entry, manifest, force, target_database, jobs, timeout, connect_timeout,
                              check_mode, result)
    result["duration_s"] = watch.elapsed()
    into = result["target"] if store.is_sqlite else "database %s (%s)" % (result["target_database"], result["target"])
    result["msg"] = ("would restore" if check_mode else "restored") + " %s into %s" % (entry, into)
    return result


def _target_stat(target):
    try:
        return os.stat(target)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise MaintenanceError("cannot inspect the target store %s: %s" % (target, exc.strerror or exc))


def _restore_sqlite(target, entry, manifest, force, keep_previous, check_mode, result, allow_non_mlflow=False,
                    ownership=(None, None, None), grace=3600.0, kind=mlflow_tables.TRACKING):
    # the file the server opens: a symlinked store path is restored where it points, the link stays
    target = os.path.realpath(target)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise MaintenanceError("the directory of the target store %s does not exist" % target)
    old_stat = _target_stat(target)
    if old_stat is not None and _stat.S_ISDIR(old_stat.st_mode):
        raise MaintenanceError("the target store %s is a directory, not a SQLite file; check backend_store_uri" % target)
    if old_stat is not None and not _stat.S_ISREG(old_stat.st_mode):
        raise MaintenanceError("the target store %s is not a regular file; refusing to replace it" % target)
    if sqlite_store.has_user_tables(target) and not force:
        raise MaintenanceError("target store %s is not empty; set force=true to replace it (the current file is "
                               "kept as %s.pre-restore-<timestamp>)" % (target, target))
    stale = stale_restore_temps(target, grace)
    result["removed_partials"] = stale
    when = backups.stamp(backups.utc_now())
    previous = "%s.pre-restore-%s" % (target, when) if old_stat is not None and keep_previous else None
    result["previous"] = previous
    uid, gid, mode = final_ownership(old_stat, *ownership)
    result["owner"] = dict(uid=uid, gid=gid, mode="%04o" % mode)
    temp = os.path.join(directory, ".%s%s%s%s" % (os.path.basename(target), RESTORE_TEMP_MARK, when,
                                                  backups.PARTIAL_SUFFIX))
    try:
        if not check_mode:
            for path in stale:
                fsutil.remove_path(path)
        with open(entry, "rb") as source, fsutil.open_private(temp) as out:
            compress.decompress_stream(source, out, manifest["compression"])
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(temp) == 0:
            problem = "it is empty (0 bytes)"
        else:
            sqlite_store.integrity_check(temp)
            problem = sqlite_store.check_mlflow_file(temp, what="restored copy", kind=kind)
        if problem and not allow_non_mlflow:
            raise MaintenanceError(content_problem(entry, problem, kind))
        if check_mode:
            return
        temp_stat = os.stat(temp)
        if (uid, gid) != (temp_stat.st_uid, temp_stat.st_gid):
            try:
                os.chown(temp, uid, gid)
            except OSError as exc:
                raise MaintenanceError("cannot give the restored copy of %s owner %s:%s (%s); run as root (become) "
                                       "or set owner and group to the current user" % (
                                           target, uid, gid, exc.strerror or exc))
        os.chmod(temp, mode)
        if previous:
            os.link(target, previous)
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.lexists(target + suffix):
                if previous and suffix == "-wal":
                    os.rename(target + suffix, previous + suffix)
                else:
                    os.unlink(target + suffix)
        fsutil.atomic_rename(temp, target)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise MaintenanceError("the target store %s is a directory, not a SQLite file" % target)
        raise MaintenanceError(backups.os_error_message(exc, "restoring %s into %s failed" % (entry, target)))
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


def _recorded_tables(manifest):
    """The tables a backup holds, as its manifest records them (``tables``, else the ``row_counts`` keys)."""
    return list(manifest.get("tables") or (manifest.get("row_counts") or {}).keys())


def _restore_postgres(store, entry, manifest, force, target_database, jobs, timeout, connect_timeout, check_mode,
                      result):
    """pg_restore --clean --if-exists into the store's (or ``target_database``) database.

    With ``force``, MLflow's tables that the backup does not hold (created after it, for example by a later
    schema migration) are dropped first, with what depends on them: --clean drops only the backup's own objects,
    and a newer table's foreign key on one of them would make that drop fail. They are listed in ``dropped_tables``;
    other tables the backup does not hold are left alone and listed in ``kept_tables``.
    """
    database = target_database or store.database
    result["target_database"] = database
    exists = pgt.database_exists(store, connect_timeout, database)
    existing = pgt.database_tables(store, connect_timeout, database) if exists else []
    if existing and not force:
        raise MaintenanceError("target database %s is not empty; set force=true to replace its MLflow tables "
                               "(pg_restore --clean --if-exists)" % database)
    by_name = dict((pgt.table_key(*table), table) for table in existing)
    drop, result["kept_tables"] = mlflow_tables.extra_tables_plan(list(by_name), _recorded_tables(manifest))
    result["dropped_tables"] = drop
    extra = [by_name[name] for name in drop]
    result["created_database"] = not exists
    if check_mode:
        return
    if not exists:
        pgt.create_database(store, connect_timeout, database)
    pgt.drop_tables(store, connect_timeout, database, extra)
    with fsutil.private_umask():
        with pgpass_file(store) as pgpass:
            env = pgt.child_env(store, pgpass, database=database, connect_timeout=connect_timeout)
            pgt.restore_from(store, env, manifest, entry, database, jobs, timeout, clean=True,
                             scratch_dir=os.path.dirname(entry))
    expected = manifest.get("row_counts")
    if expected:
        _check_counts(database, expected, pgt.database_counts(store, connect_timeout, database))


def _check_counts(database, expected, counts):
    missing = db_verify.count_differences(expected or {}, counts)
    if missing:
        raise MaintenanceError("restored database %s differs from the backup's row counts: %s" % (
            database, db_verify.describe_differences(missing)))


def _restore_mysql(store, entry, manifest, force, target_database, timeout, connect_timeout, check_mode, result):
    """Replay the dump into the store's (or ``target_database``) database; refuses a non-empty one without force.

    With ``force``, every table of the target is dropped first (foreign key checks off), then the dump is
    replayed into the empty database, so it is the backup's again: tables created after the backup (e.g. by a
    migration, MySQL DDL is not transactional) are gone, and no newer table definition can clash with the
    backup's foreign keys. Those the backup does not hold are reported in ``dropped_tables``.
    """
    database = target_database or store.database
    result["target_database"] = database
    exists = myt.database_exists(store, connect_timeout, database)
    existing = myt.database_tables(store, connect_timeout, database) if exists else []
    if existing and not force:
        raise MaintenanceError("target database %s is not empty; set force=true to replace its MLflow tables "
                               "(each table of the backup is dropped and recreated)" % database)
    result["created_database"] = not exists
    recorded = _recorded_tables(manifest)
    result["dropped_tables"], result["kept_tables"] = mlflow_tables.extra_tables_plan(existing, recorded)
    client = myt.find_tool(myt.CLIENT_TOOLS, "the MySQL client")
    if check_mode:
        return
    if not exists:
        myt.create_database(store, connect_timeout, database)
    replaced = sorted(set(existing) & set(recorded)) + result["dropped_tables"]
    if replaced:
        myt.drop_tables(store, connect_timeout, database, replaced)
    with fsutil.private_umask():
        with myt.option_file(store) as defaults_file:
            argv = myt.client_argv(client, defaults_file, database, connect_timeout=connect_timeout)
            myt.restore_from(store, argv, entry, manifest.get("external_compression", manifest["compression"]),
                             timeout, database)
    expected = manifest.get("row_counts")
    counts = myt.database_counts(store, connect_timeout, database)
    _check_counts(database, expected, counts)
    absent = sorted(set(manifest.get("tables") or []) - set(counts))
    if absent:
        raise MaintenanceError("restored database %s lacks table(s) of the backup: %s" % (database, ", ".join(absent)))
    result["row_counts"] = counts
