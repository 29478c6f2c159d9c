# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checking a backup's content: db_backup's ``verify`` (checksum, or a restore into a scratch copy) and the row count
comparisons db_backup and db_restore make.

``verify: restore`` restores SQLite backups into a hidden ``.verify-<backup>.partial`` file next to the backup,
and PostgreSQL and MySQL backups into a scratch database on the same server; both are removed afterwards (a
killed run's temporary file is removed by the next run's grace clean-up, :func:`stale_verify_temps`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import pgpass_file


# ---------------------------------------------------------------- pure comparisons

def count_differences(expected, counts, both_ways=False):
    """``{table: (expected, found)}`` where the row counts differ: over ``expected``'s tables, or with
    ``both_ways`` over the tables of either side (a table on one side only differs)."""
    tables = (set(expected) | set(counts)) if both_ways else set(expected)
    return dict((t, (expected.get(t), counts.get(t))) for t in tables if expected.get(t) != counts.get(t))


def describe_differences(differences):
    """The first five differences of :func:`count_differences`, by table name, on one line."""
    return ", ".join("%s %s != %s" % (t, a, b) for t, (a, b) in sorted(differences.items())[:5])


# ---------------------------------------------------------------- db_backup's verify

def verify_new(store, opts, path, manifest, hashed_as_written=False):
    """db_backup's ``verify`` of a new backup; returns what was verified (None, ``checksum`` or ``restore``).

    ``hashed_as_written``: the manifest's sha256 was computed in the copy's own pass from the very buffers that
    were written (the SQLite file copy), so the backup is not read a second time to hash it again (that read
    would come from the page cache the copy just filled); its size is checked. Otherwise the backup is re-read
    and its sha256 compared with the manifest's.
    """
    if opts.verify == "none":
        return None
    if hashed_as_written:
        backups.verify_size(path, manifest)
    else:
        backups.verify_checksum(path, manifest)
    if opts.verify == "checksum":
        return "checksum"
    if store.is_sqlite:
        manifest["row_counts"] = _sqlite_restore_check(path, manifest, os.path.dirname(path))
    elif store.is_mysql:
        manifest["row_counts"] = _mysql_restore_check(store, opts, path, manifest)
    else:
        _postgres_restore_check(store, opts, path, manifest)
    return "restore"


VERIFY_TEMP_PREFIX = ".verify-"


def _sqlite_restore_check(path, manifest, scratch_dir):
    """Decompress into a temporary file, run integrity_check, count rows; the temp file is removed."""
    if manifest.get("compression", "none") == "none":
        sqlite_store.integrity_check(path)
        return sqlite_store.row_counts(path)
    temp = os.path.join(scratch_dir, "%s%s%s" % (VERIFY_TEMP_PREFIX, os.path.basename(path), backups.PARTIAL_SUFFIX))
    try:
        fsutil.remove_path(temp)
        with open(path, "rb") as source, fsutil.open_private(temp) as out:
            compress.decompress_stream(source, out, manifest["compression"])
        sqlite_store.integrity_check(temp)
        return sqlite_store.row_counts(temp)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _postgres_restore_check(store, opts, path, manifest):
    scratch = db_tools.scratch_name(store.database)
    pgt.create_database(store, opts.connect_timeout, scratch)
    try:
        with pgpass_file(store) as pgpass:
            env = pgt.child_env(store, pgpass, database=scratch, connect_timeout=opts.connect_timeout)
            pgt.restore_from(store, env, manifest, path, scratch, opts.jobs, opts.timeout, clean=False,
                             scratch_dir=os.path.dirname(path))
        counts = pgt.database_counts(store, opts.connect_timeout, scratch)
    finally:
        pgt.drop_database(store, opts.connect_timeout, scratch)
    diff = count_differences(manifest.get("row_counts") or {}, counts, both_ways=True)
    if diff:
        raise MaintenanceError("verify restore of %s: row counts differ from the source as of the dump: %s" % (
            path, describe_differences(diff)))


def _mysql_restore_check(store, opts, path, manifest):
    """Restore into a scratch database on the same server; its row counts become the manifest's ``row_counts``.

    The dump's snapshot cannot be shared, so the check is: the dump restores without an error, holds every table
    the source had, and the MLflow revision; the counts recorded are those of the restored copy (exact for it).
    """
    scratch = db_tools.scratch_name(store.database)
    myt.create_database(store, opts.connect_timeout, scratch)
    try:
        with myt.option_file(store) as defaults_file:
            argv = myt.client_argv(myt.find_tool(myt.CLIENT_TOOLS, "the MySQL client"), defaults_file, scratch,
                                   connect_timeout=opts.connect_timeout)
            myt.restore_from(store, argv, path, manifest.get("external_compression", "none"), opts.timeout, scratch)
        counts = myt.database_counts(store, opts.connect_timeout, scratch)
    finally:
        myt.drop_database(store, opts.connect_timeout, scratch)
    missing = sorted(set(manifest.get("tables") or []) - set(counts))
    if missing:
        raise MaintenanceError("verify restore of %s: the restored copy lacks table(s) %s" % (path, ", ".join(missing)))
    return counts


def stale_verify_temps(directory, prefix, grace_seconds, now=None):
    """Hidden ``.verify-<our backup>.partial`` files (a killed verify=restore) older than the grace period."""
    stale = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return stale
    for name in names:
        if not (name.startswith(VERIFY_TEMP_PREFIX) and name.endswith(backups.PARTIAL_SUFFIX)):
            continue
        if backups.name_prefix(name[len(VERIFY_TEMP_PREFIX):]) != prefix:
            continue
        path = os.path.join(directory, name)
        if fsutil.is_stale(path, grace_seconds, now=now):
            stale.append(dict(name=name, path=path, manifest_path=None, status="incomplete",
                              reason="verification temp file of a killed run"))
    return stale
