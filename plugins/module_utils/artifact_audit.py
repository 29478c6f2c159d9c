# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Join a tracking store's runs with an artifact store's listing: what is missing, orphaned, awaiting gc.

The artifact store is a proxied-artifacts destination laid out as ``<experiment_id>/<run_id>/artifacts/...``
(what ``mlflow server --artifacts-destination`` writes). Nothing is downloaded: the store is listed, the
runs come from the REST API.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LISTED = 100


def run_folder(artifact_uri, destination):
    """The ``<experiment_id>/<run_id>`` folder of a run's artifact URI under ``destination``, or None.

    Understands ``mlflow-artifacts:/1/<run>/artifacts`` (and the ``mlflow-artifacts://host/...`` form) and
    URIs spelled with the destination itself (``s3://bucket/prefix/1/<run>/artifacts``, ``file:///dir/...``,
    ``/dir/...``).
    """
    uri = (artifact_uri or "").strip()
    path = None
    if uri.startswith("mlflow-artifacts:"):
        rest = uri[len("mlflow-artifacts:"):]
        if rest.startswith("//"):
            rest = "/" + rest[2:].partition("/")[2]
        path = rest
    else:
        dest = destination.rstrip("/")
        candidates = [dest]
        if dest.startswith("/"):
            candidates.append("file://" + dest)
        for candidate in candidates:
            if uri == candidate or uri.startswith(candidate + "/"):
                path = uri[len(candidate):]
                break
    if path is None:
        return None
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[-1] == "artifacts":
        parts = parts[:-1]
    if len(parts) != 2:
        return None
    return "/".join(parts)


def folder_of_key(key):
    """``<experiment_id>/<run_id>`` of an artifact store key when it looks like a run folder, else None."""
    parts = key.split("/", 2)
    if len(parts) >= 3 and RUN_ID.match(parts[1]):
        return parts[0] + "/" + parts[1]
    return None


class FolderStats(object):
    """Objects and bytes per run folder and per experiment, accumulated from a listing."""

    def __init__(self):
        self.folders = {}
        self.experiments = {}
        self.other_objects = 0
        self.other_bytes = 0
        self.objects = 0
        self.bytes = 0

    def add(self, key, size):
        self.objects += 1
        self.bytes += size
        experiment = key.split("/", 1)[0] if "/" in key else ""
        stats = self.experiments.setdefault(experiment, [0, 0])
        stats[0] += 1
        stats[1] += size
        folder = folder_of_key(key)
        if folder is None:
            self.other_objects += 1
            self.other_bytes += size
            return
        stats = self.folders.setdefault(folder, [0, 0])
        stats[0] += 1
        stats[1] += size


def classify(runs, stats, destination):
    """Pure join. ``runs``: dicts with run_id, experiment_id, lifecycle_stage, artifact_uri.

    Returns a dict: missing (runs without a folder), orphans (folders no run owns), awaiting_gc
    (deleted runs whose folder is still there), unmapped (runs whose artifacts live elsewhere), and
    per-experiment counts.
    """
    owned = set()
    missing, awaiting_gc, unmapped = [], [], []
    per_experiment = {}
    for run in runs:
        experiment_id = str(run["experiment_id"])
        row = per_experiment.setdefault(experiment_id, dict(runs=0, deleted_runs=0, runs_without_artifacts=0))
        row["runs"] += 1
        deleted = run.get("lifecycle_stage") == "deleted"
        if deleted:
            row["deleted_runs"] += 1
        folder = run_folder(run.get("artifact_uri"), destination)
        if folder is None:
            unmapped.append(run["run_id"])
            continue
        owned.add(folder)
        present = stats.folders.get(folder)
        if present is None:
            row["runs_without_artifacts"] += 1
            missing.append(dict(run_id=run["run_id"], experiment_id=experiment_id,
                                lifecycle_stage=run.get("lifecycle_stage"), folder=folder))
        elif deleted:
            awaiting_gc.append(dict(run_id=run["run_id"], experiment_id=experiment_id, folder=folder,
                                    objects=present[0], bytes=present[1]))
    orphans = [dict(folder=folder, experiment_id=folder.split("/")[0], objects=count, bytes=size)
               for folder, (count, size) in sorted(stats.folders.items()) if folder not in owned]
    return dict(missing=missing, orphans=orphans, awaiting_gc=awaiting_gc, unmapped=unmapped,
                per_experiment=per_experiment)
