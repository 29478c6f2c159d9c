# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure decisions of artifacts_audit: entity records, the join of entities with the store's folders
(missing, orphaned, awaiting gc, unmapped), option checks and the refusals to remove orphans.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_layout import (
    ELSEWHERE,
    ID_KEYS,
    KINDS,
    MODEL,
    RUN,
    TRACE,
    UNMAPPED,
    Ownership,
    locate,
    normalize_relative,
    run_folder,
    store_identity,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import check_count
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import redact_uri

KIND_NAMES = {RUN: "run", MODEL: "logged model", TRACE: "trace"}
TRACE_ARTIFACT_TAG = "mlflow.artifactLocation"
TRACE_ARCHIVE_TAG = "mlflow.trace.archiveLocation"
TRACE_SPANS_TAG = "mlflow.trace.spansLocation"
MODEL_READY = "LOGGED_MODEL_READY"


def run_record(info):
    return dict(run_id=info.get("run_id") or info.get("run_uuid"), experiment_id=info.get("experiment_id"),
                lifecycle_stage=info.get("lifecycle_stage"), artifact_uri=info.get("artifact_uri"))


def model_record(info, lifecycle_stage="active"):
    """A logged model as the audit needs it (the REST info has no lifecycle stage: the caller knows it)."""
    return dict(model_id=info.get("model_id"), experiment_id=str(info.get("experiment_id")),
                lifecycle_stage=lifecycle_stage, status=info.get("status"), artifact_uri=info.get("artifact_uri"))


def trace_record(trace, lifecycle_stage="active"):
    """A trace of the v3 search as the audit needs it: id, experiment, tags (a map; older servers sent a list)."""
    tags = trace.get("tags") or {}
    if isinstance(tags, list):
        tags = dict((tag.get("key"), tag.get("value")) for tag in tags)
    location = (trace.get("trace_location") or {}).get("mlflow_experiment") or {}
    return dict(trace_id=trace.get("trace_id") or trace.get("request_id"),
                experiment_id=str(location.get("experiment_id") or trace.get("experiment_id")),
                lifecycle_stage=lifecycle_stage, tags=dict(tags))


def entity_locations(kind, entity):
    """``[(uri, expected)]``: where an entity's artifacts live, and whether a missing folder is worth reporting.

    Runs: their artifact URI (a run that never logged an artifact has no folder: reported, as before). Logged
    models: their artifact URI, expected once the model is READY. Traces: ``mlflow.artifactLocation`` and, once
    archived, ``mlflow.trace.archiveLocation``; the one named by ``mlflow.trace.spansLocation`` holds the
    spans and is expected.
    """
    if kind == RUN:
        return [(entity.get("artifact_uri"), True)]
    if kind == MODEL:
        return [(entity.get("artifact_uri"), entity.get("status") == MODEL_READY)]
    tags = entity.get("tags") or {}
    spans = tags.get(TRACE_SPANS_TAG)
    locations = []
    if tags.get(TRACE_ARTIFACT_TAG):
        locations.append((tags[TRACE_ARTIFACT_TAG], spans == "ARTIFACT_REPO"))
    if tags.get(TRACE_ARCHIVE_TAG):
        locations.append((tags[TRACE_ARCHIVE_TAG], spans == "ARCHIVE_REPO"))
    return locations


def _kind_totals():
    return dict((kind, dict(folders=0, objects=0, bytes=0, missing=0, orphans=0, orphan_bytes=0, awaiting_gc=0,
                            awaiting_gc_bytes=0)) for kind in KINDS)


def classify(runs, stats, identity, resolve=os.path.realpath, models=(), traces=(), judged=KINDS):
    """Pure join (with the path resolver injected).

    ``runs``: dicts with run_id, experiment_id, lifecycle_stage, artifact_uri; ``models``: model_id,
    experiment_id, lifecycle_stage, status, artifact_uri; ``traces``: trace_id, experiment_id, lifecycle_stage,
    tags. ``judged``: the kinds whose folders may be orphans (a kind the server could not list is not judged).

    Returns missing (entities without their folder), orphans (candidate folders no entity owns), awaiting_gc
    (deleted entities whose folder is still there), unmapped (entities whose URI cannot be mapped), external
    (entities whose artifacts provably live outside the store), per-experiment counts, per-kind totals and the
    objects of folders of kinds not judged.
    """
    ownership = Ownership()
    known_ids = set()
    missing, awaiting_gc, unmapped = [], [], []
    external = dict((kind, 0) for kind in KINDS)
    per_experiment = {}
    normalized_folders = {}
    for folder, counts in stats.folders.items():
        normalized_folders.setdefault(normalize_relative(folder), []).append((folder, counts))
    counters = {RUN: ("runs", "deleted_runs"), MODEL: ("logged_models", "deleted_logged_models"),
                TRACE: ("traces", "traces_awaiting_gc")}
    for kind, entities in ((RUN, runs), (MODEL, models), (TRACE, traces)):
        id_key = ID_KEYS[kind]
        for entity in entities:
            ident = entity[id_key]
            experiment_id = str(entity["experiment_id"])
            row = per_experiment.setdefault(experiment_id, dict(runs=0, deleted_runs=0, runs_without_artifacts=0,
                                                                logged_models=0, deleted_logged_models=0, traces=0,
                                                                traces_awaiting_gc=0))
            row[counters[kind][0]] += 1
            known_ids.add(ident)
            deleted = entity.get("lifecycle_stage") == "deleted"
            if deleted:
                row[counters[kind][1]] += 1
            seen_external = False
            for uri, expected in entity_locations(kind, entity):
                where, detail = locate(uri, identity, resolve)
                if where == UNMAPPED:
                    unmapped.append({id_key: ident, "kind": kind, "experiment_id": experiment_id,
                                     "lifecycle_stage": entity.get("lifecycle_stage"), "artifact_uri": redact_uri(uri),
                                     "reason": detail})
                    continue
                if where == ELSEWHERE:
                    seen_external = True
                    continue
                ownership.add(detail)
                folder = run_folder(detail)
                present = normalized_folders.get(folder)
                if not present:
                    if expected:
                        if kind == RUN:
                            row["runs_without_artifacts"] += 1
                        missing.append({id_key: ident, "kind": kind, "experiment_id": experiment_id,
                                        "lifecycle_stage": entity.get("lifecycle_stage"), "folder": folder})
                elif deleted:
                    awaiting_gc.append({id_key: ident, "kind": kind, "experiment_id": experiment_id, "folder": folder,
                                        "objects": sum(counts[0] for _name, counts in present),
                                        "bytes": sum(counts[1] for _name, counts in present)})
            external[kind] += 1 if seen_external else 0
    orphans = []
    totals = _kind_totals()
    unjudged_objects = 0
    for folder, (count, size) in sorted(stats.folders.items()):
        kind = stats.kinds.get(folder, RUN)
        totals[kind]["folders"] += 1
        totals[kind]["objects"] += count
        totals[kind]["bytes"] += size
        if kind not in judged:
            unjudged_objects += count
            continue
        normalized = normalize_relative(folder)
        if normalized is None or ownership.owns(normalized) or normalized.rsplit("/", 1)[-1] in known_ids:
            continue
        orphans.append(dict(folder=folder, kind=kind, experiment_id=stats.experiment_of(folder + "/-"),
                            objects=count, bytes=size))
    for name, items in (("missing", missing), ("orphans", orphans), ("awaiting_gc", awaiting_gc)):
        for item in items:
            totals[item["kind"]][name] += 1
            if name != "missing":
                totals[item["kind"]][name.rstrip("s") + "_bytes"] += item["bytes"]
    return dict(missing=missing, orphans=orphans, awaiting_gc=awaiting_gc, unmapped=unmapped, external=external,
                per_experiment=per_experiment, by_kind=totals, unjudged_objects=unjudged_objects)


def validate_options(params):
    """Every option checked before the first request or listing; returns the destination's identity."""
    check_count(params.get("concurrency"), "concurrency", 1)
    check_count(params.get("max_remove"), "max_remove", 0, unlimited=-1)
    if not params.get("artifacts_destination"):
        raise MaintenanceError("artifacts_audit needs artifacts_destination")
    for experiment_id in params.get("experiment_ids") or []:
        if not str(experiment_id).strip() or "/" in str(experiment_id) or str(experiment_id).strip() in (".", ".."):
            raise MaintenanceError("experiment_ids: %r is not an experiment id" % experiment_id)
    return store_identity(params["artifacts_destination"])


def removal_refusal(unmapped, candidates, max_remove):
    """Why orphans must not be removed (a message), or None. Pure."""
    if unmapped:
        listed = ", ".join("%s %s (%s)" % (KIND_NAMES[item.get("kind", RUN)], item[ID_KEYS[item.get("kind", RUN)]],
                                           item["artifact_uri"] or item["reason"]) for item in unmapped[:10])
        more = " and %d more" % (len(unmapped) - 10) if len(unmapped) > 10 else ""
        return ("refusing to remove orphans: %d run(s), logged model(s) or trace(s) have artifact locations that "
                "cannot be mapped onto "
                "artifacts_destination, so no folder is provably orphaned: %s%s; nothing was removed"
                % (len(unmapped), listed, more))
    if max_remove is not None and max_remove >= 0 and len(candidates) > max_remove:
        return ("refusing to remove orphans: %d orphaned folders would be removed, more than max_remove=%d; "
                "nothing was removed. Check them in the orphans list, then raise max_remove."
                % (len(candidates), max_remove))
    return None


def workspace_refusal(scope, whole_store):
    """Why orphans must not be removed on a server with workspaces (a message), or None. Pure.

    ``scope``: ``enabled`` (the server has workspaces), ``selected`` (the audited workspaces, None when the option
    is unset) and ``complete`` (every workspace of the server is audited).
    """
    if not scope or not scope.get("enabled"):
        return None
    if scope.get("selected") is None:
        return ("refusing to remove orphans: the tracking server has workspaces enabled and workspace is not set, so "
                "entities of other workspaces look orphaned; set workspace (all for the whole store); nothing was removed")
    if whole_store and not scope.get("complete"):
        return ("refusing to remove orphans: the whole store is audited but only workspace(s) %s of the server are; "
                "set workspace: all, or name the experiments in experiment_ids; nothing was removed"
                % ", ".join(scope["selected"]))
    return None
