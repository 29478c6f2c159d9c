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
  - With O(remove_orphans=true), deletes the orphaned folders.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.s3
options:
  artifacts_destination:
    description:
      - The artifact store, as given to C(mlflow server --artifacts-destination), a local directory or
        C(s3://bucket/prefix).
      - Runs' C(mlflow-artifacts:/<experiment_id>/<run_id>/artifacts) URIs are mapped onto it; URIs that spell
        the destination itself work too. Runs whose artifacts live elsewhere are counted in RV(unmapped_runs).
    type: str
    required: true
  experiment_ids:
    description:
      - Audit only these experiments (their runs and their folders of the store). By default, every experiment,
        deleted ones included, and the whole store.
    type: list
    elements: str
  remove_orphans:
    description:
      - Delete the orphaned run folders. In check mode they are reported in RV(orphans) and nothing is deleted.
    type: bool
    default: false
  concurrency:
    description:
      - Most delete requests in flight when removing orphans.
    type: int
    default: 16
attributes:
  check_mode:
    support: full
    description: Audits the same way; O(remove_orphans) reports what it would delete.
  diff_mode:
    support: none
    description: Many files change at once; the results list counts and the first keys instead of a diff.
notes:
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
  description: The first 100 run folders no run owns (C(folder), C(experiment_id), C(objects), C(bytes)).
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
  description: Runs whose artifact URI does not point into O(artifacts_destination).
  returned: always
  type: int
other_objects:
  description: Objects outside run folders (logged models, traces), not judged.
  returned: always
  type: int
removed:
  description: Orphaned objects deleted (would be, in check mode).
  returned: always
  type: int
duration_s:
  description: Wall-clock seconds.
  returned: always
  type: float
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit as audit_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import (
    TrackingClient,
    tracking_argument_spec,
)

MAX_LISTED = audit_utils.MAX_LISTED


def open_store(params):
    destination = params["artifacts_destination"]
    if s3_utils.is_s3_url(destination):
        bucket, prefix = s3_utils.parse_s3_url(destination)
        client = s3_utils.build_client(params, pool_size=params["concurrency"])
        s3_utils.check_bucket(client, bucket, "artifacts_destination")
        return sync_utils.S3Store(client, bucket, prefix)
    if "://" in destination and not destination.startswith("file://"):
        raise MaintenanceError("artifacts_destination must be a local directory or s3://bucket/prefix, got %r" % destination)
    path = destination[len("file://"):] if destination.startswith("file://") else destination
    store = sync_utils.LocalStore(path)
    if not store.exists():
        raise MaintenanceError("artifacts_destination %s is not a directory" % store.root)
    return store


def list_store(store, experiment_ids):
    """Every object of the store (or of the experiments' folders), keys relative to the store root."""
    if not experiment_ids:
        yield from store.list()
        return
    for experiment_id in experiment_ids:
        if store.kind == "s3":
            yield from store.list(below=experiment_id)
        else:
            for entry in sync_utils.LocalStore(store.path(experiment_id)).list():
                entry.key = experiment_id + "/" + entry.key
                yield entry


def remove_folders(store, folders, concurrency):
    """Delete every object of the folders; returns the number of objects deleted."""
    removed = 0
    if store.kind == "local":
        for folder in folders:
            path = store.path(folder)
            removed += sum(len(files) for _root, _dirs, files in os.walk(path))
            shutil.rmtree(path)
        return removed
    keys = []
    for folder in folders:
        keys.extend(store.full_key(entry.key) for entry in store.list(below=folder))
    errors = store.delete_keys(keys)
    if errors:
        raise MaintenanceError("could not delete %d orphaned object(s); first: %s %s" % (len(errors), errors[0][0], errors[0][1]))
    return len(keys)


def run(module):
    params = module.params
    stopwatch = Stopwatch()
    store = open_store(params)
    client = TrackingClient.from_module(module)
    experiment_ids = [str(value) for value in (params["experiment_ids"] or [])]

    # The store first: a run folder listed here belongs to a run that the search below will see.
    stats = audit_utils.FolderStats()
    for entry in list_store(store, experiment_ids):
        stats.add(entry.key, entry.size)

    experiments = dict((str(item["experiment_id"]), item) for item in client.search_experiments(view_type="ALL"))
    wanted = experiment_ids or sorted(experiments)
    runs = []
    for offset in range(0, len(wanted), 100):
        for run_item in client.search_runs(wanted[offset:offset + 100], run_view_type="ALL"):
            info = run_item.get("info", {})
            runs.append(dict(run_id=info.get("run_id") or info.get("run_uuid"), experiment_id=info.get("experiment_id"),
                             lifecycle_stage=info.get("lifecycle_stage"), artifact_uri=info.get("artifact_uri")))

    verdict = audit_utils.classify(runs, stats, params["artifacts_destination"])
    per_experiment = {}
    for experiment_id in sorted(set(wanted) | set(stats.experiments) | set(verdict["per_experiment"])):
        if experiment_ids and experiment_id not in experiment_ids:
            continue
        objects, size = stats.experiments.get(experiment_id, (0, 0))
        row = dict(name=experiments.get(experiment_id, {}).get("name"),
                   lifecycle_stage=experiments.get(experiment_id, {}).get("lifecycle_stage"),
                   objects=objects, bytes=size, runs=0, deleted_runs=0, runs_without_artifacts=0)
        row.update(verdict["per_experiment"].get(experiment_id, {}))
        per_experiment[experiment_id] = row

    orphans = verdict["orphans"]
    removed = 0
    if params["remove_orphans"] and orphans:
        if module.check_mode:
            removed = sum(item["objects"] for item in orphans)
        else:
            removed = remove_folders(store, [item["folder"] for item in orphans], params["concurrency"])
    return dict(
        changed=bool(params["remove_orphans"] and orphans),
        experiments=per_experiment, runs=len(runs), objects=stats.objects, bytes=stats.bytes,
        missing=verdict["missing"][:MAX_LISTED], missing_count=len(verdict["missing"]),
        orphans=orphans[:MAX_LISTED], orphan_count=len(orphans), orphan_bytes=sum(item["bytes"] for item in orphans),
        awaiting_gc=verdict["awaiting_gc"][:MAX_LISTED], awaiting_gc_count=len(verdict["awaiting_gc"]),
        awaiting_gc_bytes=sum(item["bytes"] for item in verdict["awaiting_gc"]),
        unmapped_runs=len(verdict["unmapped"]), other_objects=stats.other_objects, removed=removed,
        duration_s=stopwatch.elapsed())


def main():
    argument_spec = tracking_argument_spec()
    argument_spec.update(s3_utils.s3_argument_spec())
    argument_spec.update(
        artifacts_destination=dict(type="str", required=True),
        experiment_ids=dict(type="list", elements="str"),
        remove_orphans=dict(type="bool", default=False),
        concurrency=dict(type="int", default=16),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        result = run(module)
    except MaintenanceError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg=sync_utils.describe_failure(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
