#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: artifacts_audit
short_description: Join an MLflow tracking store's runs, logged models and traces with its artifact store
version_added: 0.1.0
description:
  - Lists the artifact store (the tracking server's C(--artifacts-destination), a local directory or
    C(s3://bucket/prefix), laid out as C(<experiment_id>/<run_id>/artifacts/...),
    C(<experiment_id>/models/<model_id>/artifacts/...) and C(<experiment_id>/traces/<trace_id>/artifacts/...),
    below C(workspaces/<name>/) on a server with workspaces) page by page, then reads every run of every experiment,
    active and deleted, every MLflow 3 logged model and every trace through the tracking server's REST API, all pages.
  - The store is listed before the entities are read, so a folder of a run, model or trace created during the
    audit is never taken for an orphan.
  - Reports, per kind (run, logged model, trace; see RV(by_kind)), the folders that are missing (a run's, a READY logged
    model's, or the folder a trace's spans live in, its archived payload included), orphaned folders that no
    entity owns (for example trace data left behind when traces were deleted), artifacts awaiting C(mlflow gc)
    (deleted runs, soft-deleted logged models, anything of a deleted experiment), with objects and bytes, and
    objects and bytes per experiment.
  - A logged-model folder that no active model owns is looked up with C(logged-models/<id>?allow_deleted=true);
    a soft-deleted model awaits gc, and an unknown one is an orphan.
  - On a server without the logged-models or the traces API (MLflow 2), those folders are not judged
    (RV(unjudged_kinds)) and count in RV(other_objects).
  - Downloads nothing and does not import mlflow.
  - With O(remove_orphans=true), deletes the folders that are provably orphaned, and nothing else.
    Every run's, logged model's and trace's artifact URI (for traces, the C(mlflow.artifactLocation) and
    C(mlflow.trace.archiveLocation) tags) is mapped onto the store by identity, not by text (local paths by their
    real path, so a symlinked or differently spelled destination or C(artifact_location) still matches; S3 by
    bucket and normalised key; C(mlflow-artifacts:) relative to the destination). A folder is removed only
    when no entity's artifacts are in it, above it or below it, no entity read carries its id, and the
    tracking server answers C(runs/get), C(logged-models/<id>?allow_deleted=true) or C(traces/<id>) for that id
    with 404 in every audited workspace.
  - If any entity's artifact location cannot be mapped onto the store (an unknown scheme, a relative path),
    nothing is removed and the task fails naming those entities (RV(unmapped)).
  - With O(workspace) (a name, a list, or V(all)) the audit reads the entities of each of those workspaces of a
    server started with C(--enable-workspaces); on a server without workspaces, setting it fails before anything
    is read. On a server with workspaces, O(remove_orphans) needs O(workspace) set, and V(all) (every workspace)
    unless O(experiment_ids) limits the audit, or it refuses before removing anything, since entities of a workspace
    that is not audited would look orphaned.
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
      - Audit only these experiments (their runs, logged models, traces and their folders of the store). By
        default, every experiment, deleted ones included, and the whole store.
      - An id that no audited workspace has fails the task before anything is removed.
    type: list
    elements: str
  remove_orphans:
    description:
      - Delete the provably orphaned run, logged-model and trace folders (see the description).
      - In check mode, RV(removed_folders) lists exactly the folders that would be removed, after the same
        checks with the tracking server, and nothing is deleted.
    type: bool
    default: false
  max_remove:
    description:
      - The most folders one invocation removes. When more orphaned folders are found, the task fails
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
  - Runs, logged models and traces are searched in chunks of 100 experiments with the REST API's largest page.
  - Traces that keep their spans in the tracking store (C(mlflow.trace.spansLocation=TRACKING_STORE)) are not
    missing without a folder; MLflow still writes a C(traces.json) there, which deleting the trace leaves behind.
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

- name: Audit every workspace of a server started with --enable-workspaces
  mlflowops.maintenance.artifacts_audit:
    tracking_uri: https://mlflow.example.com
    artifacts_destination: s3://mlflow-artifacts/mlflow
    workspace: all
  register: audit

- name: Remove orphaned run, logged-model and trace folders of a local artifact store
  mlflowops.maintenance.artifacts_audit:
    tracking_uri: http://127.0.0.1:5000
    artifacts_destination: /srv/mlflow/artifacts
    remove_orphans: true
"""

RETURN = r"""
experiments:
  description:
    - Objects, bytes, runs, logged models and traces per experiment id (with its C(workspace) when workspaces are
      audited). C(traces_awaiting_gc) counts traces of a deleted experiment.
  returned: always
  type: dict
  sample: {"1": {name: churn, lifecycle_stage: active, objects: 1200, bytes: 52428800, runs: 400, deleted_runs: 12,
           runs_without_artifacts: 3, logged_models: 20, deleted_logged_models: 2, traces: 5000, traces_awaiting_gc: 0}}
runs:
  description: Runs read from the tracking server (active and deleted).
  returned: always
  type: int
  sample: 2500
logged_models:
  description: Logged models read (active ones, and soft-deleted ones found behind folders).
  returned: always
  type: int
traces:
  description: Traces read.
  returned: always
  type: int
by_kind:
  description:
    - Per kind (C(run), C(logged_model), C(trace)) the C(folders), C(objects) and C(bytes) of its folders in the store,
      and how many are C(missing), C(orphans) (with C(orphan_bytes)) and C(awaiting_gc) (with C(awaiting_gc_bytes)).
  returned: always
  type: dict
  sample: {trace: {folders: 5000, objects: 5000, bytes: 9000000, missing: 0, orphans: 1200, orphan_bytes: 2100000,
           awaiting_gc: 0, awaiting_gc_bytes: 0}}
unjudged_kinds:
  description: Kinds whose folders are not judged because the server has no API to list them (C(logged_model), C(trace)).
  returned: always
  type: list
  elements: str
workspaces:
  description: The workspaces audited.
  returned: when O(workspace) is set
  type: list
  elements: str
objects:
  description: Objects (files) in the audited part of the artifact store.
  returned: always
  type: int
total_bytes:
  description: Bytes in the audited part of the artifact store.
  returned: always
  type: int
missing:
  description:
    - The first 100 entities whose expected folder does not exist (C(kind), C(run_id), C(model_id) or C(trace_id),
      C(experiment_id), C(lifecycle_stage), C(folder)).
  returned: always
  type: list
  elements: dict
missing_count:
  description: How many runs, READY logged models and traces lack their folder.
  returned: always
  type: int
orphans:
  description:
    - The first 100 run, logged-model and trace folders that no entity read owns (C(folder), C(kind), C(experiment_id),
      C(objects), C(bytes)).
    - With O(remove_orphans), the tracking server is asked about each one's id before removal; folders of entities it
      knows are kept and listed in RV(claimed_folders).
  returned: always
  type: list
  elements: dict
orphan_count:
  description: How many orphaned folders there are (every kind).
  returned: always
  type: int
orphan_bytes:
  description: Bytes in orphaned folders (every kind).
  returned: always
  type: int
awaiting_gc:
  description:
    - The first 100 deleted runs, soft-deleted logged models and entities of deleted experiments whose artifacts are
      still stored (C(kind), C(run_id), C(model_id) or C(trace_id), C(experiment_id), C(folder), C(objects), C(bytes)).
  returned: always
  type: list
  elements: dict
awaiting_gc_count:
  description: How many deleted entities still have artifacts.
  returned: always
  type: int
awaiting_gc_bytes:
  description: Bytes held by deleted entities.
  returned: always
  type: int
unmapped_runs:
  description: How many runs have an artifact URI that cannot be mapped onto O(artifacts_destination).
  returned: always
  type: int
unmapped_count:
  description: How many artifact URIs of runs, logged models and traces cannot be mapped onto O(artifacts_destination).
  returned: always
  type: int
other_objects:
  description: Objects outside run, logged-model and trace folders, or in folders of RV(unjudged_kinds); not judged.
  returned: always
  type: int
unmapped:
  description: The first 100 artifact URIs of entities that cannot be mapped onto the store (C(kind), C(run_id),
    C(model_id) or C(trace_id), C(experiment_id), C(lifecycle_stage), C(artifact_uri), C(reason)). Any of them makes
    O(remove_orphans) refuse.
  returned: always
  type: list
  elements: dict
external_runs:
  description: Runs whose artifacts provably live outside O(artifacts_destination) (another bucket or directory).
  returned: always
  type: int
external_count:
  description: Runs, logged models and traces with artifacts provably outside O(artifacts_destination).
  returned: always
  type: int
removed:
  description: Orphaned objects deleted (would be, in check mode).
  returned: always
  type: int
removed_folders:
  description: The folders removed (would be, in check mode), at most 1,000.
  returned: always
  type: list
  elements: str
removed_folders_truncated:
  description: Whether RV(removed_folders) lists only the first 1,000.
  returned: always
  type: bool
claimed_folders:
  description: Orphan candidates kept because the tracking server knows their id (its artifacts live elsewhere).
  returned: always
  type: list
  elements: str
failures:
  description: Folders whose removal failed (the first 100), as C(id) (the folder) and C(msg) (the reason).
  returned: always
  type: list
  elements: dict
failure_count:
  description: How many folder removals failed.
  returned: always
  type: int
failures_truncated:
  description: Whether RV(failures) lists only the first 100.
  returned: always
  type: bool
duration_s:
  description: Wall-clock seconds.
  returned: always
  type: float
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import describe_failure
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit import run_audit
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import run_with_deadline
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_classify import validate_options
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_rest import audit_targets
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import normalise_workspaces
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def run(module):
    params = module.params
    # Every option is checked before the first request (run_audit checks them again, harmlessly).
    validate_options(params)
    normalise_workspaces(params.get("workspace"))
    targets, scope = audit_targets(module, TrackingClient.from_module, pool_size=max(16, (params["concurrency"] or 1) * 2))
    # The audit checks the deadline itself; the backstop ends a call stuck on a trickling S3 or tracking endpoint.
    return run_with_deadline(
        lambda: run_audit(params, check_mode=module.check_mode, deadline=module.deadline, targets=targets, scope=scope),
        module.deadline, hard_exit=True, what="artifacts_audit",
        describe=lambda details: "folders removed before it are gone, the rest are still listed as orphans")


def main():
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=dict(
        experiment_ids=dict(type="list", elements="str"),
        remove_orphans=dict(type="bool", default=False),
        concurrency=dict(type="int", default=16),
        max_remove=dict(type="int", default=1000),
    ), requires=("tracking", "artifacts_destination"))
    module.run(run, module, describe=describe_failure)


if __name__ == "__main__":
    main()
