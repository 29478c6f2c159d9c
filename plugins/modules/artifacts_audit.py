#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: artifacts_audit
short_description: Join an MLflow tracking store's runs with its artifact store, and report what does not match
version_added: 0.1.0
description:
  - Lists the artifact store (the tracking server's C(--artifacts-destination), a local directory or
    C(s3://bucket/prefix), laid out as C(<experiment_id>/<run_id>/artifacts/...)) page by page, then reads every
    run of every experiment, active and deleted, through the tracking server's REST API, all pages.
  - The store is listed before the runs are read, so a folder of a run created during the audit is never
    taken for an orphan.
  - Reports runs whose artifact folder is missing, orphaned run folders that no run owns, artifacts of deleted
    runs that C(mlflow gc) has not removed yet, and objects and bytes per experiment.
  - Downloads nothing and does not import mlflow.
  - With O(remove_orphans=true), deletes the run folders that are provably orphaned, and nothing else.
    Every run's artifact URI is mapped onto the store by identity, not by text (local paths by their real
    path, so a symlinked or differently spelled destination or C(artifact_location) still matches; S3 by
    bucket and normalised key; C(mlflow-artifacts:) relative to the destination). A folder is removed only
    when no run's artifacts are in it, above it or below it, no run read carries its run id, and the
    tracking server answers C(runs/get) for that run id with 404.
  - If any run's artifact location cannot be mapped onto the store (an unknown scheme, a relative path),
    nothing is removed and the task fails naming those runs (RV(unmapped)).
  - Stops at O(deadline), and after 3 consecutive failed removals, saying what was done.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  artifacts_destination:
    description:
      - The artifact store, as given to C(mlflow server --artifacts-destination), a local directory or
        C(s3://bucket/prefix).
      - Runs' C(mlflow-artifacts:/<experiment_id>/<run_id>/artifacts) URIs are mapped onto it. C(file:) URIs and
        absolute paths are compared by real path, C(s3://) URIs by bucket and normalised key. Runs whose artifacts
        provably live elsewhere are counted in RV(external_runs); runs that cannot be mapped in RV(unmapped_runs).
      - Required by this module (it is an option of the backend store family, so C(module_defaults) can set it).
    type: str
  experiment_ids:
    description:
      - Audit only these experiments (their runs and their folders of the store). By default, every experiment,
        deleted ones included, and the whole store.
    type: list
    elements: str
  remove_orphans:
    description:
      - Delete the provably orphaned run folders (see the description).
      - In check mode, RV(removed_folders) lists exactly the folders that would be removed, after the same
        checks with the tracking server, and nothing is deleted.
    type: bool
    default: false
  max_remove:
    description:
      - The most run folders one invocation removes. When more orphaned folders are found, the task fails
        before removing any.
      - V(-1) disables the cap; any other negative value fails the task before anything is read.
    type: int
    default: 1000
  concurrency:
    description:
      - Most confirmation requests and folder removals in flight when removing orphans. At least V(1).
    type: int
    default: 16
attributes:
  check_mode:
    support: full
    description: Audits the same way; O(remove_orphans) reports what it would delete.
  diff_mode:
    support: none
    description: Many files change at once; the results list counts and the first keys instead of a diff.
requirements:
  - requests >= 2.25
  - boto3 >= 1.28 (S3 artifact stores)
notes:
  - Uses the tracking family, the S3 family (for an C(s3://) O(artifacts_destination)) and O(artifacts_destination);
    the other backend store options are accepted for C(module_defaults) and ignored.
  - A run that never logged an artifact has no folder and is listed in RV(missing) too; an empty artifact
    folder does not exist in S3 either. Read RV(missing) with that in mind, or compare it with a backup.
  - Runs are searched in chunks of 100 experiments with the REST API's largest page.
seealso:
  - module: mlflowops.maintenance.artifacts_backup
"""

EXAMPLES = r"""
- name: Audit the artifact bucket against the tracking server
  mlflowops.maintenance.artifacts_audit:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    artifacts_destination: s3://mlflow-artifacts/mlflow
    endpoint_url: https://minio.example.com
  register: audit

- name: Remove orphaned run folders of a local artifact store
  mlflowops.maintenance.artifacts_audit:
    tracking_uri: http://127.0.0.1:5000
    artifacts_destination: /srv/mlflow/artifacts
    remove_orphans: true
"""

RETURN = r"""
experiments:
  description: Objects, bytes and runs per experiment id.
  returned: always
  type: dict
  sample: {"1": {name: churn, lifecycle_stage: active, objects: 1200, bytes: 52428800, runs: 400, deleted_runs: 12,
           runs_without_artifacts: 3}}
runs:
  description: Runs read from the tracking server (active and deleted).
  returned: always
  type: int
  sample: 2500
objects:
  description: Objects (files) in the audited part of the artifact store.
  returned: always
  type: int
bytes:
  description: Bytes in the audited part of the artifact store.
  returned: always
  type: int
missing:
  description: The first 100 runs whose artifact folder does not exist (C(run_id), C(experiment_id), C(lifecycle_stage), C(folder)).
  returned: always
  type: list
  elements: dict
missing_count:
  description: How many runs have no artifact folder.
  returned: always
  type: int
orphans:
  description:
    - The first 100 run folders that no run read owns (C(folder), C(experiment_id), C(objects), C(bytes)).
    - With O(remove_orphans), the tracking server is asked about each one's run id before removal; folders of runs it
      knows are kept and listed in RV(claimed_folders).
  returned: always
  type: list
  elements: dict
orphan_count:
  description: How many orphaned run folders there are.
  returned: always
  type: int
orphan_bytes:
  description: Bytes in orphaned run folders.
  returned: always
  type: int
awaiting_gc:
  description: The first 100 deleted runs whose artifacts are still stored (C(run_id), C(experiment_id), C(folder), C(objects), C(bytes)).
  returned: always
  type: list
  elements: dict
awaiting_gc_count:
  description: How many deleted runs still have artifacts.
  returned: always
  type: int
awaiting_gc_bytes:
  description: Bytes held by deleted runs.
  returned: always
  type: int
unmapped_runs:
  description: How many runs have an artifact URI that cannot be mapped onto O(artifacts_destination).
  returned: always
  type: int
other_objects:
  description: Objects outside run folders (logged models, traces), not judged.
  returned: always
  type: int
unmapped:
  description: The first 100 runs whose artifact URI cannot be mapped onto the store (C(run_id), C(experiment_id),
    C(lifecycle_stage), C(artifact_uri), C(reason)). Any of them makes O(remove_orphans) refuse.
  returned: always
  type: list
  elements: dict
external_runs:
  description: Runs whose artifacts provably live outside O(artifacts_destination) (another bucket or directory).
  returned: always
  type: int
removed:
  description: Orphaned objects deleted (would be, in check mode).
  returned: always
  type: int
removed_folders:
  description: The run folders removed (would be, in check mode), at most 1,000.
  returned: always
  type: list
  elements: str
claimed_folders:
  description: Orphan candidates kept because the tracking server knows their run id (its artifacts live elsewhere).
  returned: always
  type: list
  elements: str
removal_failures:
  description: Folders whose removal failed, with the reason (C(folder), C(error)).
  returned: when removals were attempted
  type: list
  elements: dict
duration_s:
  description: Wall-clock seconds.
  returned: always
  type: float
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit as audit_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def run(module):
    params = module.params
    client = TrackingClient.from_module(module, pool_size=max(16, (params["concurrency"] or 1) * 2))
    return audit_utils.run_audit(params, check_mode=module.check_mode, deadline=module.deadline, client=client)


def main():
    module = MlflowOpsModule(argument_spec=dict(
        experiment_ids=dict(type="list", elements="str"),
        remove_orphans=dict(type="bool", default=False),
        concurrency=dict(type="int", default=16),
        max_remove=dict(type="int", default=1000),
    ), requires=("tracking", "artifacts_destination"))
    module.run(run, module, describe=sync_utils.describe_failure)


if __name__ == "__main__":
    main()
