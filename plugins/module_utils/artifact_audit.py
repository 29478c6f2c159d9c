# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Join a tracking store's runs, logged models and traces with an artifact store's listing: what is missing,
orphaned, awaiting gc.

The artifact store is a proxied-artifacts destination laid out as ``<experiment_id>/<run_id>/artifacts/...``,
``<experiment_id>/models/<model_id>/artifacts/...`` (MLflow 3 logged models) and
``<experiment_id>/traces/<trace_id>/artifacts/...`` (trace data and archived span payloads), below
``workspaces/<name>/`` on a server with workspaces, plus whatever experiments with a custom
``artifact_location`` inside it hold. Nothing is downloaded: the store is listed, the entities come from the
REST API (logged models and traces only from servers that have those APIs).

Orphan removal deletes only what is provably orphaned:

- every run's, logged model's and trace's artifact URI (a trace's ``mlflow.artifactLocation`` and
  ``mlflow.trace.archiveLocation`` tags) is mapped onto the store by identity, not by text: local paths through
  ``os.path.realpath`` (symlinks, ``//``, ``/./``, trailing slashes), S3 locations by bucket and
  normalised key, ``mlflow-artifacts:`` URIs relative to the destination;
- an entity whose URI cannot be mapped (an unknown scheme, a relative path, another host's ``file:`` URI)
  makes the module refuse to remove anything, and the result names those entities;
- a folder is a candidate only when no entity's artifact root is inside it, equal to it, or above it, and
  no entity read carries its id; each candidate is then confirmed with the server (``runs/get``,
  ``logged-models/<id>?allow_deleted=true`` or ``traces/<id>``, which must answer 404 in every audited
  workspace) before it is removed, which also covers entities of experiments outside ``experiment_ids``;
- a server (or an API) the audit cannot read completely never yields candidates: logged-model folders are
  not judged on a server without the logged-models API, nor trace folders without the traces API, and on a
  server with workspaces a whole-store removal needs every workspace audited (``workspace: all``);
- a cap (``max_remove``) refuses before anything is deleted; check mode lists exactly what would go.

The parts: artifact_audit_layout (store identities, URI mapping, folder totals; pure),
artifact_audit_classify (records, the join, the refusals; pure), artifact_audit_rest (the tracking server),
artifact_audit_store (listing and removal); this module is the job that ties them together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_classify import (
    KIND_NAMES,
    classify,
    removal_refusal,
    run_record,
    validate_options,
    workspace_refusal,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_layout import (
    KINDS,
    MODEL,
    RUN,
    TRACE,
    FolderStats,
    experiment_prefixes,
    experiment_roots,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_rest import (
    EXPERIMENTS_PER_SEARCH,
    confirm_orphans,
    read_deleted_models,
    read_models,
    read_traces,
    unowned_model_ids,
    workspaces_enabled,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_store import MAX_LISTED, list_store, open_store, remove_folders
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import describe_failure
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Failures, MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient

REMOVED_LISTED = 1000


def _read_failed(exc, what, stats, runs):
    reason = exc.msg if isinstance(exc, MaintenanceError) else describe_failure(exc)
    return MaintenanceError("artifacts_audit stopped while %s after listing %d objects and reading %d runs; "
                            "nothing was removed (%s)" % (what, stats.objects, len(runs), reason),
                            objects=stats.objects, runs=len(runs), removed=0)


def run_audit(params, check_mode=False, deadline=None, client=None, targets=None, scope=None):
    """The whole audit; returns the result dict or raises MaintenanceError saying what was done.

    ``targets``: [(workspace or None, TrackingClient)] (audit_targets); ``client`` alone means one target without a
    workspace. ``scope``: what the targets cover (audit_targets), for the workspace refusal.
    """
    identity = validate_options(params)
    max_remove = params.get("max_remove", -1)
    store = open_store(params, identity)
    if targets is None:
        if client is None:
            client = TrackingClient(
                params["tracking_uri"], username=params.get("username"), password=params.get("password"),
                token=params.get("token"), validate_certs=params.get("validate_certs", True),
                ca_path=params.get("ca_path"), timeout=params.get("timeout", 30.0), retries=params.get("retries", 3),
                deadline=deadline, pool_size=max(16, params["concurrency"] * 2))
        targets = [(None, client)]
    scope = dict(scope or dict(enabled=None, selected=None, complete=False))
    experiment_ids = [str(value).strip() for value in (params.get("experiment_ids") or [])]
    stats = FolderStats()
    runs, models, traces = [], [], []
    supported = {MODEL: True, TRACE: True}
    experiments, workspace_of = {}, {}
    what = "reading the experiments"
    try:
        for workspace, target in targets:
            for item in target.search_experiments(view_type="ALL"):
                experiments[str(item["experiment_id"])] = item
                workspace_of[str(item["experiment_id"])] = workspace
        unknown = [ident for ident in experiment_ids if ident not in experiments]
        if unknown:
            raise MaintenanceError("experiment_ids: unknown experiment(s) %s" % ", ".join(unknown))
        wanted = experiment_ids or sorted(experiments)
        stats = FolderStats(experiment_roots(experiments, identity))
        # The store before the entities: a folder listed here belongs to an entity that the searches below see.
        what = "listing the artifact store"
        prefixes = experiment_prefixes(experiment_ids, experiments, identity) if experiment_ids else None
        for entry in list_store(store, prefixes):
            stats.add(entry.key, entry.size)
            if deadline is not None and stats.objects % 1000 == 0:
                deadline.check("artifacts_audit", objects=stats.objects, removed=0)
        audited = {}
        for workspace, target in targets:
            mine = [ident for ident in wanted if workspace_of.get(ident) == workspace]
            audited[workspace] = set(mine)
            deleted = set(ident for ident in mine if experiments[ident].get("lifecycle_stage") == "deleted")
            where = " in workspace %s" % workspace if workspace else ""
            what = "reading the runs" + where
            for offset in range(0, len(mine), EXPERIMENTS_PER_SEARCH):
                for run_item in target.search_runs(mine[offset:offset + EXPERIMENTS_PER_SEARCH], run_view_type="ALL"):
                    runs.append(run_record(run_item.get("info", {})))
            for kind, reader, into in ((MODEL, read_models, models), (TRACE, read_traces, traces)):
                what = "reading the %ss%s" % (KIND_NAMES[kind], where)
                found = reader(target, mine, deleted) if (mine and supported[kind]) else []
                if found is None:
                    supported[kind] = False
                else:
                    into.extend(found)
        if supported[MODEL]:
            what = "reading the logged models behind unknown model folders"
            models.extend(read_deleted_models(targets, unowned_model_ids(stats, models), audited, params["concurrency"]))
    except MaintenanceError as exc:
        raise _read_failed(exc, what, stats, runs)
    except Exception as exc:  # pylint: disable=broad-except
        raise _read_failed(exc, what, stats, runs)

    judged = [RUN] + [kind for kind in (MODEL, TRACE) if supported[kind]]
    verdict = classify(runs, stats, identity, models=models, traces=traces, judged=judged)
    per_experiment = {}
    for experiment_id in sorted(set(wanted) | set(stats.experiments) | set(verdict["per_experiment"])):
        if experiment_ids and experiment_id not in experiment_ids:
            continue
        objects, size = stats.experiments.get(experiment_id, (0, 0))
        row = dict(name=experiments.get(experiment_id, {}).get("name"),
                   lifecycle_stage=experiments.get(experiment_id, {}).get("lifecycle_stage"),
                   objects=objects, bytes=size, runs=0, deleted_runs=0, runs_without_artifacts=0, logged_models=0,
                   deleted_logged_models=0, traces=0, traces_awaiting_gc=0)
        if workspace_of.get(experiment_id):
            row["workspace"] = workspace_of[experiment_id]
        row.update(verdict["per_experiment"].get(experiment_id, {}))
        per_experiment[experiment_id] = row

    orphans = verdict["orphans"]
    unmapped = verdict["unmapped"]
    result = dict(
        changed=False, experiments=per_experiment, runs=len(runs), logged_models=len(models), traces=len(traces),
        objects=stats.objects, total_bytes=stats.bytes, by_kind=verdict["by_kind"],
        unjudged_kinds=[kind for kind in KINDS if kind not in judged],
        missing=verdict["missing"][:MAX_LISTED], missing_count=len(verdict["missing"]),
        orphans=orphans[:MAX_LISTED], orphan_count=len(orphans), orphan_bytes=sum(item["bytes"] for item in orphans),
        awaiting_gc=verdict["awaiting_gc"][:MAX_LISTED], awaiting_gc_count=len(verdict["awaiting_gc"]),
        awaiting_gc_bytes=sum(item["bytes"] for item in verdict["awaiting_gc"]),
        unmapped_runs=len([item for item in unmapped if item["kind"] == RUN]), unmapped_count=len(unmapped),
        unmapped=unmapped[:MAX_LISTED], external_runs=verdict["external"][RUN],
        external_count=sum(verdict["external"].values()),
        other_objects=stats.other_objects + verdict["unjudged_objects"],
        removed=0, removed_folders=[], removed_folders_truncated=False, claimed_folders=[], **Failures().as_result())
    if scope.get("selected") is not None:
        result["workspaces"] = list(scope["selected"])
    if not (params.get("remove_orphans") and orphans):
        return result

    if scope.get("enabled") is None:
        try:
            scope["enabled"] = workspaces_enabled(targets[0][1])
        except Exception as exc:  # pylint: disable=broad-except
            raise MaintenanceError("artifacts_audit stopped while asking the tracking server about workspaces; nothing "
                                   "was removed (%s)" % describe_failure(exc), **result)
    refusal = workspace_refusal(scope, whole_store=not experiment_ids)
    if refusal:
        raise MaintenanceError(refusal, **result)
    refusal = removal_refusal(unmapped, orphans, max_remove)
    if refusal:
        raise MaintenanceError(refusal, **result)
    try:
        confirmed, claimed = confirm_orphans([target for _workspace, target in targets], orphans,
                                             params["concurrency"])
    except Exception as exc:  # pylint: disable=broad-except
        raise MaintenanceError("artifacts_audit stopped while confirming orphans with the tracking server; nothing "
                               "was removed (%s)" % describe_failure(exc), **result)
    result["claimed_folders"] = [item["folder"] for item in claimed][:MAX_LISTED]
    folders = [item["folder"] for item in confirmed]
    if check_mode:
        result.update(changed=bool(folders), removed=sum(item["objects"] for item in confirmed),
                      removed_folders=folders[:REMOVED_LISTED], removed_folders_truncated=len(folders) > REMOVED_LISTED)
        return result
    progress = remove_folders(store, identity, folders, params["concurrency"], deadline)
    done = progress["removed_folders"]
    result.update(changed=bool(done), removed=progress["removed_objects"], removed_folders=sorted(done)[:REMOVED_LISTED],
                  removed_folders_truncated=len(done) > REMOVED_LISTED,
                  **progress["failures"].as_result())
    if progress["stopped"] or progress["failures"].count:
        failures = progress["failures"]
        cause = progress["stopped"] or "%d removal(s) failed (first: %s)" % (failures.count, failures.items[0]["msg"])
        raise MaintenanceError("artifacts_audit stopped removing orphans: %d of %d orphaned folders removed "
                               "(%d objects), %d remain; %s. Rerun the task to finish the job."
                               % (len(done), len(folders), progress["removed_objects"], len(folders) - len(done), cause),
                               **result)
    return result
