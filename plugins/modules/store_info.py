#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: store_info
short_description: Count an MLflow server's runs by lifecycle stage and status, and size its stores
version_added: 0.2.0
description:
  - Reads, never writes. Counts the runs of every experiment (active and deleted) through the REST API, by
    lifecycle stage and by status.
  - Sizes the backend store (SQLite file with its WAL; other engines report no size) and a local artifact store
    (regular files under O(artifacts_destination); symlinks are not followed). An S3 artifact store reports no size.
  - The fleet report (role C(mlflowops.maintenance.report)) collects it from every host.
  - Does not import mlflow; it needs only C(requests).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  count_runs:
    description: Whether to count runs through the REST API (pages of every experiment's runs).
    type: bool
    default: true
  max_runs:
    description: Stop counting after this many runs (RV(runs_truncated) is then true).
    type: int
    default: 1000000
  max_files:
    description: Stop sizing the artifact store after this many files (C(truncated) in RV(artifacts) is then true).
    type: int
    default: 1000000
notes:
  - O(backend_store_uri) and O(artifacts_destination) are optional; without them the sizes are null. The S3 options
    are ignored.
  - Check mode runs the same code path; nothing is ever changed.
"""

EXAMPLES = r"""
- name: What is on this server
  mlflowops.maintenance.store_info:
    tracking_uri: http://127.0.0.1:5000
    backend_store_uri: sqlite:////var/lib/mlflow/mlflow.db
    artifacts_destination: /var/lib/mlflow/artifacts
  register: stats
"""

RETURN = r"""
runs:
  description: Run counts (null with O(count_runs=false)).
  returned: always
  type: dict
  contains:
    total:
      description: Runs counted.
      type: int
    by_stage:
      description: Runs per lifecycle stage (C(active), C(deleted)).
      type: dict
    by_status:
      description: Runs per status (C(RUNNING), C(SCHEDULED), C(FINISHED), C(FAILED), C(KILLED)).
      type: dict
  sample: {total: 12, by_stage: {active: 10, deleted: 2}, by_status: {FINISHED: 11, FAILED: 1, RUNNING: 0}}
runs_truncated:
  description: Whether counting stopped at O(max_runs).
  returned: always
  type: bool
experiments:
  description: Experiments by lifecycle stage.
  returned: always
  type: dict
  sample: {active: 3, deleted: 1}
store:
  description: The backend store's engine and size (C(size_bytes) null where not measured).
  returned: always
  type: dict
  sample: {engine: sqlite, size_bytes: 1048576}
artifacts:
  description: The artifact store's kind (C(local), C(remote) or null) and, for a local one, its size and file count.
  returned: always
  type: dict
  sample: {kind: local, size_bytes: 2048, file_count: 3, truncated: false}
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_stats import (
    local_artifact_root,
    sqlite_store_size,
    tally_runs,
    tree_size,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def _all_runs(client, experiment_ids):
    for start in range(0, len(experiment_ids), 100):
        yield from client.search_runs(experiment_ids[start:start + 100], run_view_type="ALL")


def run(module):
    params = module.params
    result = dict(changed=False, runs=None, runs_truncated=False, experiments={},
                  store=dict(engine=None, size_bytes=None),
                  artifacts=dict(kind=None, size_bytes=None, file_count=None, truncated=False))
    if params.get("backend_store_uri"):
        store = backend_store_from_module(module)
        result["store"]["engine"] = store.engine
        if store.is_sqlite:
            result["store"]["size_bytes"] = sqlite_store_size(store.path)
    destination = params.get("artifacts_destination")
    root = local_artifact_root(destination)
    if root:
        size, count, truncated = tree_size(root, params["max_files"])
        result["artifacts"] = dict(kind="local", size_bytes=size, file_count=count, truncated=truncated)
    elif destination:
        result["artifacts"]["kind"] = "remote"
    if params["count_runs"]:
        client = TrackingClient.from_module(module)
        experiments = list(client.search_experiments(view_type="ALL"))
        stages = {}
        for experiment in experiments:
            stage = experiment.get("lifecycle_stage") or "unknown"
            stages[stage] = stages.get(stage, 0) + 1
        result["experiments"] = stages
        ids = [experiment["experiment_id"] for experiment in experiments]
        counts, truncated = tally_runs(_all_runs(client, ids) if ids else [], params["max_runs"])
        result["runs"] = counts
        result["runs_truncated"] = truncated
    return result


def main():
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=dict(
        count_runs=dict(type="bool", default=True),
        max_runs=dict(type="int", default=1000000),
        max_files=dict(type="int", default=1000000),
    ))
    for name in ("max_runs", "max_files"):
        if module.params[name] < 1:
            module.fail_json(msg="%s must be at least 1" % name)
    if module.params["count_runs"] and not module.params.get("tracking_uri"):
        module.fail_json(msg="tracking_uri is required to count runs (or set MLFLOW_TRACKING_URI, or count_runs: false)")
    module.run(run, module)


if __name__ == "__main__":
    main()
