# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""gc's cheap first look: does a SQLite store hold anything gc could purge?

Run on every host of a fleet, gc most often finds nothing to do. Deciding that with the standard library's
``sqlite3`` (a few milliseconds) spares SQLAlchemy's and boto3's imports (about a second of CPU per host).
Any doubt (another engine, options that select or scope, a store that cannot be read) sends the caller down
the full path, which gives the real answer or the real error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sqlite3

from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

DELETED = "deleted"
# Options that select, scope or widen what gc purges: with any of them set, take the full path.
SCOPING_OPTIONS = ("experiment_ids", "run_ids", "logged_model_ids", "job_ids", "workspace")


def quick_check_applies(params, is_sqlite):
    """True when gc may decide "nothing to purge" from counts alone (SQLite, whole store, no job records)."""
    if not is_sqlite or params.get("jobs"):
        return False
    return not any(params.get(option) for option in SCOPING_OPTIONS)


def nothing_to_purge(counts, purge_experiments=True, purge_logged_models=True):
    """``counts``: {"runs", "experiments", "logged_models"} in the deleted stage (None: the table is absent)."""
    if counts.get("runs"):
        return False
    if purge_experiments and counts.get("experiments"):
        return False
    return not (purge_logged_models and counts.get("logged_models"))


def sqlite_deleted_counts(path, timeout=30):
    """Rows in the deleted stage per table of a SQLite backend store, opened read-only; None when unreadable."""
    try:
        connection = sqlite_store.connect(path, "ro", timeout=timeout, what="SQLite backend store")
    except MaintenanceError:
        return None
    try:
        tables = sqlite_store.table_names(connection)
        if not {"runs", "experiments"} <= tables:
            return None
        counts = {}
        for table in ("runs", "experiments", "logged_models"):
            if table not in tables:
                counts[table] = None
                continue
            # Only fixed table names are interpolated; the stage is a bound parameter.
            counts[table] = connection.execute("SELECT COUNT(*) FROM %s WHERE lifecycle_stage = ?" % table,
                                               (DELETED,)).fetchone()[0]
        return counts
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def empty_result(check_mode=False):
    """What ``gc_job.run_gc`` returns when it purges nothing (kept identical by a unit test)."""
    return dict(changed=False, purged_runs=0, purged_logged_models=0, logged_model_ids=[],
                logged_model_ids_truncated=False, purged_jobs=0, purged_experiments=0, experiments=[], run_ids=[],
                run_ids_truncated=False, freed_bytes=None if check_mode else 0, undated_runs=0, undated_run_ids=[],
                undated_run_ids_truncated=False, failures=[], failure_count=0, failures_truncated=False)
