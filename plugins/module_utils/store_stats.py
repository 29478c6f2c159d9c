# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only statistics of one MLflow server for the fleet report: runs by lifecycle stage and status, store and
artifact sizes. Pure helpers here; the module only wires them to the REST client and the filesystem."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
LIFECYCLE_STAGES = ("active", "deleted")


def tally_runs(runs, limit=None):
    """Count runs (REST ``Run`` dicts) by lifecycle stage and by status.

    Returns (counts, truncated): counts has ``total``, ``by_stage`` {stage: n} and ``by_status`` {status: n}, with
    every known stage and status present (0 when none). Stops after ``limit`` runs (truncated=True)."""
    by_stage = dict((stage, 0) for stage in LIFECYCLE_STAGES)
    by_status = dict((status, 0) for status in RUN_STATUSES)
    total = 0
    for run in runs:
        if limit is not None and total >= limit:
            return dict(total=total, by_stage=by_stage, by_status=by_status), True
        info = run.get("info", {}) if isinstance(run, dict) else {}
        stage = str(info.get("lifecycle_stage") or "unknown")
        status = str(info.get("status") or "UNKNOWN")
        by_stage[stage] = by_stage.get(stage, 0) + 1
        by_status[status] = by_status.get(status, 0) + 1
        total += 1
    return dict(total=total, by_stage=by_stage, by_status=by_status), False


def sqlite_store_size(path):
    """Bytes of a SQLite store with its WAL and shared-memory files (missing parts count 0); None if absent."""
    if not os.path.isfile(path):
        return None
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.lstat(path + suffix).st_size
        except OSError:
            pass
    return total


def tree_size(root, max_files=None):
    """(size_bytes, file_count, truncated) of the regular files under ``root``; symlinks are neither followed nor
    counted, so a link out of the store never inflates (or escapes) the measurement."""
    size = 0
    count = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    if max_files is not None and count >= max_files:
                        return size, count, True
                    size += entry.stat(follow_symlinks=False).st_size
                    count += 1
            except OSError:
                continue
    return size, count, False


def local_artifact_root(destination):
    """The local directory of an artifact destination (a path or file:// URI), or None for remote stores."""
    if not destination:
        return None
    if destination.startswith("file://"):
        return destination[len("file://"):] or None
    if "://" in destination:
        return None
    return destination
