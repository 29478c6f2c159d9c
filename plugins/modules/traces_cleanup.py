#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: traces_cleanup
short_description: Trace retention for MLflow 3 tracking servers (permanent deletion of old traces)
version_added: 0.2.0
description:
  - Permanently deletes MLflow traces older than O(older_than) through the tracking server's REST API
    (C(/api/3.0/mlflow/traces/search) and C(/api/3.0/mlflow/traces/delete-traces)); it never imports mlflow.
  - MLflow has no trace TTL, and its trace archival only moves span payloads to the artifact store; this is the
    retention the server lacks. Trace deletion is permanent, with no undo.
  - The selection (age on the trace's request time, O(experiments), O(filter)) is searched on the server, every page,
    in every selected workspace, and counted before anything is deleted. When it holds more than O(max_delete)
    traces the task fails before deleting any.
  - Traces carrying O(keep_tag) are never deleted. In an experiment where any selected trace carries it, or when
    O(filter) is set, deletion goes by trace ids (O(batch_size) per request); otherwise by timestamp, oldest first,
    O(batch_size) per request, up to the counted number.
  - If the server goes away midway (or the O(deadline) passes), the task fails saying how many traces were deleted
    and how many remain; running it again completes the job.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  older_than:
    description:
      - Age of the traces to delete, measured on their request time, in C(mlflow gc --older-than) syntax
        (V(30d), V(12h), V(1d2h), V(2w)); a bare number is seconds.
      - When not set, every trace matching O(experiments) and O(filter) is selected (still capped by O(max_delete)).
    type: str
  experiments:
    description:
      - Experiment names or ids. A numeric entry is tried as an id first, then as a name. Unknown ones fail the task
        before anything changes. Default is every active experiment (in each selected workspace).
    type: list
    elements: str
  filter:
    description:
      - An extra MLflow trace search filter, ANDed with the age, for example C(trace.status = 'ERROR') or
        C(tag.env = 'dev'). Only AND is supported.
    type: str
  keep_tag:
    description:
      - Traces carrying this tag with any value except V(false), V(0), V(no) or V(off) are never deleted.
        An empty string disables the protection.
    type: str
    default: mlflowops.keep
  max_delete:
    description:
      - Safety cap on the traces one invocation deletes; a larger selection fails before any deletion.
        V(-1) disables the cap.
    type: int
    default: 100000
  batch_size:
    description:
      - Traces per delete request (1 to 10000).
    type: int
    default: 1000
attributes:
  check_mode:
    support: full
    description: Searches and counts exactly what would be deleted, through the same code path; deletes nothing.
  diff_mode:
    support: none
    description: Results give counts per experiment instead of a diff.
requirements:
  - requests >= 2.25
notes:
  - Uses the tracking family. With O(workspace) (a name, a list, or V(all)) the cleanup runs in each of those
    workspaces of a server started with C(--enable-workspaces); on a server without workspaces, setting it fails
    before any change.
  - The backend store and S3 families are accepted for C(module_defaults) and ignored.
  - A second identical invocation reports C(changed=false).
seealso:
  - module: mlflowops.maintenance.logged_models_cleanup
  - module: mlflowops.maintenance.runs_cleanup
"""

EXAMPLES = r"""
- name: Delete traces older than 30 days in every experiment, except those tagged mlflowops.keep
  mlflowops.maintenance.traces_cleanup:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    older_than: 30d

- name: Delete failed traces older than a week in two experiments, in every workspace
  mlflowops.maintenance.traces_cleanup:
    tracking_uri: http://127.0.0.1:5000
    workspace: all
    experiments: [chatbot, "12"]
    older_than: 7d
    filter: "trace.status = 'ERROR'"
    max_delete: 500000
"""

RETURN = r"""
deleted:
  description: Traces deleted (in check mode, that would be), over every experiment and workspace.
  returned: always
  type: int
  sample: 1980
selected:
  description: Traces the selection held (deleted plus any left by a failure).
  returned: always
  type: int
protected:
  description: Selected traces kept because of the keep tag.
  returned: always
  type: int
deleted_per_experiment:
  description: Traces deleted per experiment id (C(<workspace>/<id>) when workspaces are used), for the experiments
    in RV(experiments).
  returned: always
  type: dict
  sample: {"1": 1200, "7": 780}
experiments:
  description: Per experiment holding selected or protected traces, C(experiment_id), C(workspace) (when set),
    C(selected), C(deleted), C(protected) and the deletion C(mode) (C(timestamp) or C(ids)).
  returned: always
  type: list
  elements: dict
experiments_searched:
  description: How many experiments were searched (over every selected workspace).
  returned: always
  type: int
search_filter:
  description: The server-side trace search filter.
  returned: always
  type: str
  sample: "trace.timestamp_ms < 1793000000000"
failures:
  description: Delete requests that failed with an error other than a lost server, as C(id) (experiment) and C(msg).
  returned: always
  type: list
  elements: dict
failure_count:
  description: How many delete requests failed.
  returned: always
  type: int
failures_truncated:
  description: Whether RV(failures) lists only the first 50.
  returned: always
  type: bool
duration_s:
  description: Wall-clock seconds the module took.
  returned: always
  type: float
"""

import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    cleanup_argument_spec,
    normalise_workspaces,
    tracking_targets,
    validate_common,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.traces import MAX_BATCH_SIZE, run_traces_cleanup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def main():
    argument_spec = cleanup_argument_spec(100000, batch_size=dict(type="int", default=1000))
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("tracking",))

    def job():
        # Every option is checked before the first request (the job checks them again, harmlessly).
        validate_common(module.params, int(time.time() * 1000), "batch_size", MAX_BATCH_SIZE)
        normalise_workspaces(module.params.get("workspace"))
        targets = tracking_targets(module, TrackingClient.from_module, deadline=module.deadline)
        return run_traces_cleanup(module.params, targets, check_mode=module.check_mode, deadline=module.deadline)

    module.run(job)


if __name__ == "__main__":
    main()
