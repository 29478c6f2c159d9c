#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: runs_cleanup
short_description: Soft-delete old MLflow runs, reap stale RUNNING runs, or undo a cleanup
version_added: 0.1.0
description:
  - Retention cleanup of an MLflow tracking server through its REST API (it never imports mlflow), or, with
    O(method=database), directly in its backend store.
  - Selects runs on the server with a search filter (C(attributes.start_time < <ms>) or
    C(attributes.end_time < <ms>), the chosen statuses, and O(filter)), pages through every result,
    and soft-deletes the selected runs with bounded concurrency.
  - Runs that a registered model version points to, runs carrying the O(keep_tag), and RUNNING runs
    are never deleted.
  - The whole selection is computed first; when it holds more than O(max_delete) runs the module
    fails before changing anything.
  - With O(reap_running_after), runs still RUNNING that long after their start are marked KILLED with
    an end time (runs left behind by crashed jobs).
  - With O(state=active), soft-deleted runs matching the same selection are restored, which undoes a
    cleanup before M(mlflowops.maintenance.gc) purges it.
  - If the server goes away midway (a connection or timeout failure, or O(retries) exhausted on HTTP 5xx three
    calls in a row), or the task's O(deadline) passes, the task stops and says how many runs were done and how
    many remain; running it again completes the job.
  - Every option is checked before the first request; a negative count or concurrency fails the task.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  state:
    description:
      - V(deleted) soft-deletes the selected runs.
      - V(active) restores soft-deleted runs that match the same selection.
    type: str
    choices: [deleted, active]
    default: deleted
  older_than:
    description:
      - Age of the runs to select, in C(mlflow gc --older-than) syntax (V(30d), V(12h), V(1d2h), V(45m), V(2w));
        a bare number is seconds.
      - Measured on O(time_field). Negative ages and unparsable values fail before anything changes.
      - When not set, every run matching the other criteria is selected.
    type: str
  time_field:
    description:
      - The run time that O(older_than) applies to. RUNNING runs have no end time, so V(end_time) never
        selects them.
    type: str
    choices: [start_time, end_time]
    default: start_time
  experiments:
    description:
      - Experiment names or ids. A numeric entry is tried as an id first, then as a name.
      - An unknown experiment fails the task before anything changes.
      - Default is every active experiment.
    type: list
    elements: str
  statuses:
    description:
      - Run statuses to select. RUNNING runs are never deleted, whatever this says.
    type: list
    elements: str
    choices: [FINISHED, FAILED, KILLED]
    default: [FINISHED, FAILED, KILLED]
  filter:
    description:
      - An extra MLflow run search filter, ANDed with the age and status criteria, for example
        C(tags.team = 'vision') or C(metrics.accuracy < 0.5). MLflow filters support only AND.
    type: str
  keep_tag:
    description:
      - Runs carrying this tag with any value except V(false), V(0), V(no) or V(off) are protected.
      - Set to an empty string to disable tag protection.
    type: str
    default: mlflowops.keep
  protect_registered:
    description:
      - Protect runs that any registered model version points to.
    type: bool
    default: true
  max_delete:
    description:
      - Safety cap on the number of runs deleted (or restored) by one invocation. When the selection
        is larger, the task fails before changing anything.
      - V(-1) disables the cap. Any other negative value fails the task before anything changes.
    type: int
    default: 10000
  concurrency:
    description:
      - How many delete, restore or update requests are in flight at once. At least V(1).
    type: int
    default: 8
  reap_running_after:
    description:
      - Runs still RUNNING this long after their start time are marked KILLED and given an end time.
        Same syntax as O(older_than). Applies to the selected experiments and O(filter).
      - A reaped run that then matches the selection (KILLED in O(statuses), old enough) is deleted in
        the same invocation.
    type: str
  run_ids_limit:
    description:
      - The most run ids listed in each of RV(run_ids), RV(reaped_run_ids) and RV(protected_run_ids).
      - V(0) lists none; a negative value fails the task.
    type: int
    default: 1000
  method:
    description:
      - V(rest) works through the tracking server's REST API (O(tracking_uri)); one request per run.
      - V(database) works directly in the backend store (O(backend_store_uri); SQLite, PostgreSQL, MySQL), at the
        database's speed, with the same selection, protections, O(max_delete) check, reaping and undo. It sets
        C(lifecycle_stage) and C(deleted_time) (cleared on restore) exactly as MLflow's own store does, so MLflow,
        C(mlflow gc) and M(mlflowops.maintenance.gc) treat the runs alike.
      - With V(database), O(filter) is translated to SQL when it holds only C(<type>.<key> <comparator> <value>)
        clauses joined by AND on tags and params (C(=), C(!=), C(LIKE), C(ILIKE)), metrics (C(=), C(!=), C(<), C(<=),
        C(>), C(>=)) and the attributes C(start_time), C(end_time), C(status), C(run_name), C(run_id), C(user_id),
        C(artifact_uri); anything else (C(IN), C(IS NULL), datasets) fails before any change, naming the clause.
      - With V(database), a selected run that assessments name as their source (MLflow deletes those assessments
        with the run) fails the task before any change; use V(rest) for those.
      - With V(database), the changes go in transactions of O(batch_size) runs, so the server keeps serving;
        O(deadline) is checked between them, and a stop reports what was committed. O(concurrency) is ignored.
    type: str
    choices: [rest, database]
    default: rest
  batch_size:
    description:
      - Runs changed per transaction by O(method=database). At least V(1). Ignored by O(method=rest).
    type: int
    default: 1000
attributes:
  check_mode:
    support: full
    description: Selects through the same code path and reports counts and ids; changes nothing.
  diff_mode:
    support: none
    description: Results list the affected run ids instead of a diff.
requirements:
  - requests >= 2.25
  - SQLAlchemy and the database driver (psycopg2 or psycopg, PyMySQL) for O(method=database)
notes:
  - O(method=rest) uses the tracking family; O(method=database) uses the backend store family (and the
    C(workspace) option of the tracking family). The S3 family is accepted for C(module_defaults) and ignored.
  - With O(method=rest) and O(workspace) set to a list or V(all), the cleanup runs in each of those workspaces of a
    server started with C(--enable-workspaces) (on a server without workspaces it fails before any change); the whole
    selection over every workspace is counted first, so O(max_delete) fails before any change, and the results sum
    the workspaces (RV(per_workspace)).
  - A second identical invocation reports C(changed=false).
  - Runs deleted by this module stay restorable until M(mlflowops.maintenance.gc) purges them.
seealso:
  - module: mlflowops.maintenance.gc
"""

EXAMPLES = r"""
- name: Soft-delete finished, failed and killed runs older than 30 days
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    older_than: 30d

- name: Clean two experiments, only failed runs, keep runs tagged team=vision
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    experiments: [churn-model, "17"]
    statuses: [FAILED]
    older_than: 7d
    filter: "tags.team != 'vision'"
    max_delete: 50000
    concurrency: 16

- name: Mark runs left RUNNING for over a day by crashed jobs as KILLED
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    reap_running_after: 1d
    older_than: 90d

- name: Clean 100,000 runs at the database's speed, straight in the backend store
  mlflowops.maintenance.runs_cleanup:
    method: database
    backend_store_uri: postgresql://mlflow@db.example.com/mlflow
    db_password: "{{ mlflow_db_password }}"
    older_than: 90d
    max_delete: 200000

- name: Undo a cleanup before gc runs
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    older_than: 30d
    state: active
"""

RETURN = r"""
deleted:
  description: Runs soft-deleted (in check mode, that would be).
  returned: always
  type: int
  sample: 1980
restored:
  description: Runs restored by O(state=active) (in check mode, that would be).
  returned: always
  type: int
  sample: 0
reaped:
  description: RUNNING runs marked KILLED (in check mode, that would be).
  returned: always
  type: int
  sample: 3
protected:
  description: Selected runs kept because of a registered model version, the keep tag, or a RUNNING status.
  returned: always
  type: int
  sample: 12
protected_reasons:
  description: Count of protected runs by reason (C(registered_model), C(keep_tag), C(running)).
  returned: always
  type: dict
  sample: {registered_model: 10, keep_tag: 2}
run_ids:
  description: Ids of the runs deleted or restored, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
reaped_run_ids:
  description: Ids of the reaped runs, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
protected_run_ids:
  description: Ids of the protected runs, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
run_ids_truncated:
  description: Whether any of the id lists was cut at O(run_ids_limit).
  returned: always
  type: bool
experiment_ids:
  description: The experiments searched.
  returned: always
  type: list
  elements: str
search_filter:
  description: The server-side run search filter used for the selection.
  returned: always
  type: str
  sample: "attributes.start_time < 1793000000000 AND attributes.status != 'RUNNING' AND attributes.status != 'SCHEDULED'"
failures:
  description: Runs whose request failed with an error other than a lost server (for example HTTP 403), as C(id) and C(msg).
  returned: always
  type: list
  elements: dict
  sample: [{id: 0a1b2c, msg: "HTTP 403: PERMISSION_DENIED"}]
method:
  description: V(database) when the backend store was changed directly.
  returned: with O(method=database)
  type: str
transactions:
  description: Transactions committed by O(method=database).
  returned: with O(method=database)
  type: int
failure_count:
  description: How many runs could not be changed.
  returned: always
  type: int
failures_truncated:
  description: Whether RV(failures) lists only the first 50.
  returned: always
  type: bool
workspaces:
  description: The workspaces cleaned, when O(workspace) is a list or V(all).
  returned: when O(workspace) names several workspaces
  type: list
  elements: str
per_workspace:
  description: C(deleted), C(restored) and C(reaped) per workspace, when O(workspace) is a list or V(all).
  returned: when O(workspace) names several workspaces
  type: dict
  sample: {team-a: {deleted: 120, restored: 0, reaped: 1}}
duration_s:
  description: Wall-clock seconds the module took.
  returned: always
  type: float
  sample: 14.2
"""

import os
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    DEFAULT_KEEP_TAG,
    DEFAULT_STATUSES,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_cleanup_job import run_cleanup_in_workspaces
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import validate_cleanup_options
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import normalise_workspaces, tracking_targets
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def main():
    argument_spec = dict(
        state=dict(type="str", choices=["deleted", "active"], default="deleted"),
        older_than=dict(type="str"),
        time_field=dict(type="str", choices=["start_time", "end_time"], default="start_time"),
        experiments=dict(type="list", elements="str"),
        statuses=dict(type="list", elements="str", choices=["FINISHED", "FAILED", "KILLED"],
                      default=list(DEFAULT_STATUSES)),
        filter=dict(type="str"),
        keep_tag=dict(type="str", default=DEFAULT_KEEP_TAG, no_log=False),
        protect_registered=dict(type="bool", default=True),
        max_delete=dict(type="int", default=10000),
        concurrency=dict(type="int", default=8),
        reap_running_after=dict(type="str"),
        run_ids_limit=dict(type="int", default=1000),
        method=dict(type="str", choices=["rest", "database"], default="rest"),
        batch_size=dict(type="int", default=1000),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec)
    database = module.params["method"] == "database"
    module.require("store" if database else "tracking")
    if database:
        # SQLAlchemy only for method=database: the REST path (every host of a fleet) skips its import.
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.sql_engine import SQLALCHEMY_IMPORT_ERROR
        module.require_lib("sqlalchemy", SQLALCHEMY_IMPORT_ERROR)

    def job():
        if database:
            if module.params["batch_size"] < 1:
                raise MaintenanceError("batch_size must be at least 1, got %d; nothing was changed" % module.params["batch_size"])
            store = backend_store_from_module(module)
            if store.is_sqlite and not os.path.isfile(store.path):
                raise MaintenanceError("the SQLite backend store %s does not exist; nothing was changed" % store.path)
            # pylint: disable-next=import-outside-toplevel
            from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_bulk import run_cleanup_database
            return run_cleanup_database(module.params, store.sqlalchemy_url(), check_mode=module.check_mode,
                                        deadline=module.deadline, chunk_size=module.params["batch_size"],
                                        connect_timeout=module.params["db_connect_timeout"])
        # Every option is checked before the first request (listing the workspaces is one).
        validate_cleanup_options(module.params, int(time.time() * 1000))
        normalise_workspaces(module.params.get("workspace"))
        targets = tracking_targets(module, TrackingClient.from_module, pool_size=max(16, module.params["concurrency"] * 2),
                                   deadline=module.deadline)
        return run_cleanup_in_workspaces(module.params, targets, check_mode=module.check_mode, deadline=module.deadline)

    module.run(job)


if __name__ == "__main__":
    main()
