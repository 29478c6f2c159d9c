#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gc
short_description: Permanently delete soft-deleted MLflow runs and experiments, faster than mlflow gc
version_added: 0.1.0
description:
  - Purges runs in the C(deleted) lifecycle stage from the backend store, with their artifacts, and
    experiments in the C(deleted) stage with all their runs. It runs on the tracking server's host
    (or anywhere that reaches its database and artifact store), with MLflow installed there.
  - Run rows are purged many runs per transaction, from every table whose foreign key references
    C(runs.run_uuid) (found by reflecting the live schema, so new MLflow tables are covered), plus the
    runs' dataset inputs. Experiments are removed with MLflow's own store code.
  - The artifacts of each batch of runs are deleted concurrently, before the batch's rows. Local
    directories and S3 prefixes are deleted directly (reporting the bytes freed); any other URI goes
    through MLflow's artifact repository for it.
  - A run whose artifacts or rows cannot be deleted is reported in RV(failures) and keeps its rows, so a
    rerun retries it; the other runs carry on. Run ids are streamed in batches, so memory stays bounded.
  - Runs whose deletion time is NULL (deleted before MLflow recorded it) are reported in RV(undated_runs)
    and purged only with O(include_undated=true).
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
      - Purge only runs deleted longer ago than this (C(mlflow gc --older-than) syntax, V(30d), V(12h), V(1d2h)),
        and experiments whose last update is older than this.
      - When not set, every deleted run and experiment is purged.
    type: str
  experiment_ids:
    description:
      - Limit gc to these experiments. Their deleted runs are purged and, when the experiment itself is in
        the deleted stage and old enough, the experiment too.
      - An unknown experiment id fails the task before anything changes.
    type: list
    elements: str
  run_ids:
    description:
      - Purge only these runs. Each must exist and be in the deleted stage, or the task fails before anything
        changes. Experiments are not purged when this is set.
    type: list
    elements: str
  include_undated:
    description:
      - Also purge deleted runs (and deleted experiments) that have no deletion time.
    type: bool
    default: false
  purge_experiments:
    description:
      - Whether to purge experiments in the deleted stage (with all their runs and logged models).
    type: bool
    default: true
  purge_logged_models:
    description:
      - Whether to purge MLflow 3 logged models in the deleted stage (soft-deleted, for example by
        M(mlflowops.maintenance.logged_models_cleanup)) whose last update is older than O(older_than), as
        C(mlflow gc) does. Their rows go from every table that references C(logged_models.model_id) (reflected
        from the live schema), with their dataset inputs/outputs and entity associations; their artifacts are
        deleted first, concurrently.
    type: bool
    default: true
  logged_model_ids:
    description:
      - Purge only these logged models (C(mlflow gc --logged-model-ids)). Each must exist and be in the deleted
        stage, or the task fails before anything changes. Runs and experiments are not purged when this is set
        (unless O(run_ids) names runs too).
    type: list
    elements: str
  jobs:
    description:
      - Also delete finished job records (C(SUCCEEDED), C(FAILED), C(TIMEOUT), C(CANCELED)) created before
        O(older_than), as C(mlflow gc --jobs) does.
    type: bool
    default: false
  job_ids:
    description:
      - Delete only these job records (when finished); implies O(jobs).
    type: list
    elements: str
  artifacts_destination:
    description:
      - The tracking server's C(--artifacts-destination), a directory or C(s3://bucket/prefix). Proxied
        C(mlflow-artifacts:) run URIs are mapped onto it and deleted directly.
      - For S3, the usual environment applies (E(AWS_ACCESS_KEY_ID), E(AWS_SECRET_ACCESS_KEY),
        E(MLFLOW_S3_ENDPOINT_URL), E(MLFLOW_S3_IGNORE_TLS)); set it with the task's C(environment).
    type: str
  tracking_uri:
    description:
      - The tracking server's address, used to delete proxied C(mlflow-artifacts:) artifacts through the
        server when O(artifacts_destination) is not set. Slower than O(artifacts_destination).
      - If not set, the value of the E(MLFLOW_TRACKING_URI) environment variable is used.
    type: str
  batch_size:
    description:
      - Runs purged per database transaction.
    type: int
    default: 500
  concurrency:
    description:
      - Artifact deletions in flight at once.
    type: int
    default: 16
  run_ids_limit:
    description:
      - The most run ids listed in RV(run_ids).
    type: int
    default: 1000
attributes:
  check_mode:
    support: full
    description: Lists what would be purged through the same selection; deletes nothing.
  diff_mode:
    support: none
    description: Results list the affected run ids instead of a diff.
requirements:
  - mlflow (on the host the module runs on)
  - sqlalchemy
  - psycopg2 or psycopg, for PostgreSQL stores
  - PyMySQL, for MySQL/MariaDB stores (every table that references runs or logged models is read from the live
    schema and deleted first, so MySQL foreign keys without ON DELETE CASCADE never fail the purge)
  - boto3, for S3 artifact stores
notes:
  - Uses the backend store family, O(tracking_uri) of the tracking family, and the S3 family (for an C(s3://)
    O(artifacts_destination)); the other tracking options are accepted for C(module_defaults) and ignored.
  - With O(workspace) (a name, a list, or V(all)), only runs, logged models, experiments and job records of those
    workspaces are purged (C(mlflow gc --workspace / --all-workspaces)); a store without workspaces fails before any
    change. Without it, the whole store is covered.
  - A second identical invocation reports C(changed=false).
  - Use M(mlflowops.maintenance.runs_cleanup) first to soft-delete runs; until gc purges them,
    C(runs_cleanup state=active) can restore them.
seealso:
  - module: mlflowops.maintenance.runs_cleanup
  - name: mlflow gc
    description: The MLflow command this module replaces.
    link: https://mlflow.org/docs/latest/cli.html#mlflow-gc
"""

EXAMPLES = r"""
- name: Purge runs deleted more than 7 days ago, artifacts on local disk
  mlflowops.maintenance.gc:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    artifacts_destination: /srv/mlflow/artifacts
    older_than: 7d

- name: Purge from PostgreSQL with artifacts in S3
  mlflowops.maintenance.gc:
    backend_store_uri: postgresql://mlflow@db.internal:5432/mlflow
    db_password: "{{ mlflow_db_password }}"
    artifacts_destination: s3://mlflow-artifacts/mlflow
    older_than: 30d
  environment:
    MLFLOW_S3_ENDPOINT_URL: https://minio.internal:9000
    AWS_ACCESS_KEY_ID: "{{ s3_key }}"
    AWS_SECRET_ACCESS_KEY: "{{ s3_secret }}"

- name: See what would be purged, including legacy runs without a deletion time
  mlflowops.maintenance.gc:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    artifacts_destination: /srv/mlflow/artifacts
    include_undated: true
  check_mode: true
  register: gc_plan
"""

RETURN = r"""
purged_runs:
  description: Runs permanently deleted (in check mode, that would be).
  returned: always
  type: int
  sample: 1980
purged_logged_models:
  description: MLflow 3 logged models permanently deleted, rows and artifacts (in check mode, that would be).
  returned: always
  type: int
  sample: 12
logged_model_ids:
  description: Ids of the purged logged models, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
logged_model_ids_truncated:
  description: Whether RV(logged_model_ids) was cut at O(run_ids_limit).
  returned: always
  type: bool
purged_jobs:
  description: Finished job records deleted (O(jobs) or O(job_ids)).
  returned: always
  type: int
purged_experiments:
  description: Experiments permanently deleted (in check mode, that would be).
  returned: always
  type: int
  sample: 1
experiments:
  description: The purged experiments, with C(experiment_id) and C(name).
  returned: always
  type: list
  elements: dict
run_ids:
  description: Ids of the purged runs, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
run_ids_truncated:
  description: Whether RV(run_ids) was cut at O(run_ids_limit).
  returned: always
  type: bool
failures:
  description:
    - Runs, experiments, logged models or jobs that could not be purged (the first 100), as C(id), C(kind) and C(msg);
      they keep their rows.
  returned: always
  type: list
  elements: dict
  sample: [{id: 0a1b2c, kind: run, msg: "artifacts: ClientError: Access Denied"}]
failure_count:
  description: How many runs, experiments, logged models or jobs could not be purged.
  returned: always
  type: int
failures_truncated:
  description: Whether RV(failures) lists only the first 100.
  returned: always
  type: bool
freed_bytes:
  description: Bytes of artifacts deleted; null in check mode or when an artifact repository does not tell.
  returned: always
  type: int
  sample: 104857600
undated_runs:
  description: Deleted runs without a deletion time that were left alone (O(include_undated=false)).
  returned: always
  type: int
undated_run_ids:
  description: The first 100 of those runs.
  returned: always
  type: list
  elements: str
undated_run_ids_truncated:
  description: Whether RV(undated_run_ids) lists only the first 100.
  returned: always
  type: bool
duration_s:
  description: Wall-clock seconds the module took.
  returned: always
  type: float
"""

import os
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import gc_quick
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    normalise_workspaces,
    select_workspaces,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import cutoff_ms
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module

# The full path (SQLAlchemy, boto3) is imported on first use, after gc_quick had its look: load_full_path().
GcStore = ArtifactDeleter = run_gc = None


def load_full_path():
    """Import the full gc path once (names a test patched stay patched)."""
    # pylint: disable=global-statement,import-outside-toplevel,redefined-outer-name
    global GcStore, ArtifactDeleter, run_gc
    if GcStore is None:
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_store import GcStore
    if ArtifactDeleter is None:
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_delete import ArtifactDeleter
    if run_gc is None:
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_job import run_gc


def main():
    argument_spec = dict(
        older_than=dict(type="str"),
        experiment_ids=dict(type="list", elements="str"),
        run_ids=dict(type="list", elements="str"),
        include_undated=dict(type="bool", default=False),
        purge_experiments=dict(type="bool", default=True),
        purge_logged_models=dict(type="bool", default=True),
        logged_model_ids=dict(type="list", elements="str"),
        jobs=dict(type="bool", default=False),
        job_ids=dict(type="list", elements="str"),
        batch_size=dict(type="int", default=500),
        concurrency=dict(type="int", default=16),
        run_ids_limit=dict(type="int", default=1000),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("store",))
    module.run(run, module)


def gc_workspaces(store, workspace):
    """None (the whole store) without the workspace option; else the selected workspaces (``all``: every one)."""
    requested = normalise_workspaces(workspace)
    if not requested:
        return None
    return select_workspaces(requested, store.workspace_names())


def run(module):
    params = module.params
    store = None
    try:
        cutoff = None
        if params["older_than"] not in (None, ""):
            cutoff = cutoff_ms(params["older_than"], int(time.time() * 1000))
        for option in ("batch_size", "concurrency"):
            if params[option] < 1:
                raise MaintenanceError("%s must be at least 1, got %d" % (option, params[option]))
        backend = backend_store_from_module(module)
        if backend.is_sqlite and not os.path.exists(backend.path):
            raise MaintenanceError("backend store %s does not exist" % backend.redacted())
        # Nothing deleted in the store: decided with sqlite3 before SQLAlchemy's and boto3's imports.
        if gc_quick.quick_check_applies(params, backend.is_sqlite):
            counts = gc_quick.sqlite_deleted_counts(backend.path, timeout=max(30, params["db_connect_timeout"] or 0))
            if counts is not None and gc_quick.nothing_to_purge(counts, params["purge_experiments"],
                                                                params["purge_logged_models"]):
                return gc_quick.empty_result(module.check_mode)
        load_full_path()
        store = GcStore(backend.sqlalchemy_url(), params["db_connect_timeout"])
        store.set_workspaces(gc_workspaces(store, params.get("workspace")))
        deleter = ArtifactDeleter(params["artifacts_destination"], params["tracking_uri"], s3_params=params,
                                  pool_size=params["concurrency"])
        result = run_gc(store, deleter, cutoff=cutoff, include_undated=params["include_undated"],
                        experiment_ids=params["experiment_ids"], run_ids=params["run_ids"],
                        batch_size=params["batch_size"], concurrency=params["concurrency"],
                        check_mode=module.check_mode, run_ids_limit=params["run_ids_limit"],
                        purge_experiments=params["purge_experiments"], deadline=module.deadline,
                        purge_logged_models=params["purge_logged_models"],
                        logged_model_ids=params["logged_model_ids"], jobs=params["jobs"], job_ids=params["job_ids"])
    finally:
        if store is not None:
            store.close()
    return result


if __name__ == "__main__":
    main()
