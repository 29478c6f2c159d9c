# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runs_cleanup job: select runs over REST, check the cap, then delete, restore or reap them.

Every option is validated (``run_selection.validate_cleanup_options``) before the first request. The
deletions stop, with partial progress in the failure, when the server goes away (a transport failure,
or the client's fail-fast after consecutive failures) or when the task's deadline passes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Failures, MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    build_filter,
    build_reap_filter,
    capped,
    check_cap,
    plan_deletions,
    plan_restores,
    registered_ids_of_version,
    resolve_experiments,
    validate_cleanup_options,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_cleanup_result import count_key, plan_result, record_done, remaining_runs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

FAILURES_LISTED = 50


def registered_run_ids(client):
    """Run ids of every registered model version (its run_id and a ``runs:/`` source), all pages."""
    found = set()
    for version in client.search_model_versions():
        found.update(registered_ids_of_version(version))
    return found


def experiment_ids_for(client, requested):
    if requested:
        return resolve_experiments(requested, client.get_experiment, client.get_experiment_by_name)
    return [experiment["experiment_id"] for experiment in client.search_experiments("ACTIVE_ONLY")]


def search_all(client, experiment_ids, filter_string, view_type):
    """Every run matching the filter, across experiments, in batches of experiments per search."""
    for offset in range(0, len(experiment_ids), 100):
        yield from client.search_runs(experiment_ids[offset:offset + 100], filter_string, run_view_type=view_type)


def is_server_gone(exc):
    """A failure that ends the job: the server is unreachable or unwell, or the deadline passed."""
    return isinstance(exc, TrackingError) and (exc.kind in ("deadline", "connection", "timeout", "gone")
                                               or exc.status in (502, 503, 504))


def is_not_found(exc):
    return isinstance(exc, TrackingError) and exc.status == 404


def apply(client, endpoint, payloads, concurrency, progress, deadline=None):
    """POST each payload with bounded concurrency; stops submitting when the server goes away.

    ``progress`` collects ``done`` (ids), ``gone`` (ids already gone), ``failures`` and ``fatal``.
    Requests already in flight when the server goes away are still accounted for.
    """
    def call(payload):
        return client.post(endpoint, payload)

    def until_fatal():
        for payload in payloads:
            if progress["fatal"] is None and deadline is not None and deadline.expired():
                progress["fatal"] = TrackingError("the task's deadline of %ss passed" % int(deadline.seconds), "deadline")
            if progress["fatal"] is not None:
                return
            yield payload

    for payload, _result, error in client.map_concurrently(call, until_fatal(), concurrency):
        run_id = payload["run_id"]
        if error is None:
            progress["done"].append(run_id)
        elif is_not_found(error):
            progress["gone"].append(run_id)
        elif is_server_gone(error):
            progress["fatal"] = progress["fatal"] or error
        else:
            progress["failures"].add(run_id, getattr(error, "msg", str(error)))


def new_progress(failures=None):
    """``failures`` (a common.Failures) may be shared by several passes of one job."""
    return dict(done=[], gone=[], failures=failures if failures is not None else Failures(limit=FAILURES_LISTED), fatal=None)


def _selection_failed(exc, what):
    """A failure while selecting: nothing was changed yet; say so, with what stopped it."""
    if isinstance(exc, TrackingError) and exc.kind == "deadline":
        return MaintenanceError("runs_cleanup stopped at its deadline while %s; nothing was changed (%s)" % (what, exc.msg),
                                deleted=0, restored=0, reaped=0)
    return MaintenanceError("%s; nothing was changed" % exc.msg if "nothing was changed" not in exc.msg else exc.msg,
                            **dict(exc.details, deleted=0, restored=0, reaped=0))


def run_cleanup(params, client, check_mode=False, deadline=None, now=None):
    """The whole job; returns the result dict or raises MaintenanceError (with partial progress)."""
    now = int(time.time() * 1000) if now is None else now
    state = params["state"]
    options = validate_cleanup_options(params, now)
    statuses, cutoff, reap_cutoff = options["statuses"], options["cutoff"], options["reap_cutoff"]
    search_filter = build_filter(cutoff, params["time_field"], statuses, params["filter"])

    what = "resolving the experiments"
    try:
        experiment_ids = experiment_ids_for(client, params["experiments"])
        what = "searching the runs"
        reap_candidates = []
        if reap_cutoff is not None and experiment_ids:
            reap_candidates = list(search_all(client, experiment_ids, build_reap_filter(reap_cutoff, params["filter"]),
                                              "ACTIVE_ONLY"))
        if state == "deleted":
            protected_ids = registered_run_ids(client) if params["protect_registered"] else set()
            candidates = search_all(client, experiment_ids, search_filter, "ACTIVE_ONLY") if experiment_ids else []
            plan = plan_deletions(candidates, protected_ids, params["keep_tag"], reap_candidates, cutoff,
                                  params["time_field"], statuses, reap_time=now)
            endpoint = "runs/delete"
        else:
            candidates = search_all(client, experiment_ids, search_filter, "DELETED_ONLY") if experiment_ids else []
            plan = plan_restores(candidates)
            reap_plan = plan_deletions([], set(), None, reap_candidates, None)
            plan.reap = reap_plan.reap
            endpoint = "runs/restore"
    except TrackingError as exc:
        raise _selection_failed(exc, what)
    check_cap(len(plan.act), params["max_delete"], "delete" if state == "deleted" else "restore")

    limit = params["run_ids_limit"]
    failures = Failures(limit=FAILURES_LISTED)
    result = plan_result(plan, limit, experiment_ids=experiment_ids, search_filter=search_filter, **failures.as_result())
    if check_mode:
        return record_done(result, state, plan.act, plan.reap, limit)

    concurrency = params["concurrency"]
    reap_progress = new_progress(failures)
    if plan.reap:
        apply(client, "runs/update", ({"run_id": run_id, "status": "KILLED", "end_time": now} for run_id in plan.reap),
              concurrency, reap_progress, deadline)
    progress = new_progress(failures)
    if reap_progress["fatal"] is None and plan.act:
        apply(client, endpoint, ({"run_id": run_id} for run_id in plan.act), concurrency, progress, deadline)

    record_done(result, state, progress["done"], reap_progress["done"], limit)
    result.update(failures.as_result())
    fatal = reap_progress["fatal"] or progress["fatal"]
    if fatal is not None:
        remaining, reap_remaining = remaining_runs(plan, progress["done"] + progress["gone"],
                                                   reap_progress["done"] + reap_progress["gone"])
        cause = ("stopped at its deadline" if fatal.kind == "deadline"
                 else "stopped: the tracking server stopped answering midway")
        raise MaintenanceError(
            "runs_cleanup %s: %d of %d runs %s, %d remain; %d of %d stale runs reaped, "
            "%d remain (%s). Rerun the task to finish the job."
            % (cause, len(progress["done"]), len(plan.act), count_key(state), len(remaining), len(reap_progress["done"]),
               len(plan.reap), len(reap_remaining), fatal.msg),
            remaining=len(remaining) + len(reap_remaining), remaining_run_ids=capped(remaining, limit), **result)
    if failures.count:
        raise MaintenanceError("%d runs could not be changed (first: %s); %d runs %s"
                               % (failures.count, failures.items[0]["msg"], len(progress["done"]), count_key(state)), **result)
    return result


def _merge_results(parts, limit):
    """One result from the per-workspace results [(workspace, result)] (counts summed, id lists capped)."""
    merged = dict(changed=False, deleted=0, restored=0, reaped=0, protected=0, protected_reasons={}, run_ids=[],
                  reaped_run_ids=[], protected_run_ids=[], experiment_ids=[], run_ids_truncated=False, failures=[],
                  failure_count=0, failures_truncated=False, workspaces=[], per_workspace={})
    for workspace, result in parts:
        merged["workspaces"].append(workspace)
        merged["changed"] = merged["changed"] or bool(result.get("changed"))
        for key in ("deleted", "restored", "reaped", "protected", "failure_count"):
            merged[key] += result.get(key, 0) or 0
        for reason, count in (result.get("protected_reasons") or {}).items():
            merged["protected_reasons"][reason] = merged["protected_reasons"].get(reason, 0) + count
        for key in ("run_ids", "reaped_run_ids", "protected_run_ids", "experiment_ids", "failures"):
            merged[key].extend(result.get(key) or [])
        merged["run_ids_truncated"] = merged["run_ids_truncated"] or bool(result.get("run_ids_truncated"))
        merged["failures_truncated"] = merged["failures_truncated"] or bool(result.get("failures_truncated"))
        merged["search_filter"] = result.get("search_filter")
        merged["per_workspace"][workspace] = dict((key, result.get(key, 0)) for key in ("deleted", "restored", "reaped"))
    for key in ("run_ids", "reaped_run_ids", "protected_run_ids"):
        if limit >= 0 and len(merged[key]) > limit:
            merged[key] = merged[key][:limit]
            merged["run_ids_truncated"] = True
    if len(merged["failures"]) > FAILURES_LISTED:
        merged["failures"] = merged["failures"][:FAILURES_LISTED]
        merged["failures_truncated"] = True
    return merged


def run_cleanup_in_workspaces(params, targets, check_mode=False, deadline=None, now=None):
    """run_cleanup over ``targets`` ([(workspace or None, TrackingClient)], mlflow3_cleanup.tracking_targets).

    One target (no ``workspace``, or one workspace) is run_cleanup itself. Several are counted first, all of them,
    with the same selection in check mode, so ``max_delete`` applies to the whole selection and fails before any
    change; then each workspace is cleaned with what is left of the cap. A failure in one workspace says what was
    done in the ones before it.
    """
    now = int(time.time() * 1000) if now is None else now
    if len(targets) == 1:
        return run_cleanup(params, targets[0][1], check_mode=check_mode, deadline=deadline, now=now)
    key = count_key(params["state"])
    counted = []
    for workspace, client in targets:
        try:
            counted.append((workspace, run_cleanup(params, client, check_mode=True, deadline=deadline, now=now)))
        except MaintenanceError as exc:
            raise MaintenanceError("in workspace %s: %s" % (workspace, exc.msg), **dict(exc.details, workspace=workspace))
    check_cap(sum(result[key] for _workspace, result in counted), params["max_delete"],
              "delete" if params["state"] == "deleted" else "restore")
    if check_mode:
        return _merge_results(counted, params["run_ids_limit"])
    done = []
    budget = params["max_delete"]
    for workspace, client in targets:
        own = dict(params, max_delete=budget)
        try:
            result = run_cleanup(own, client, check_mode=False, deadline=deadline, now=now)
        except MaintenanceError as exc:
            before = _merge_results(done, params["run_ids_limit"]) if done else dict(deleted=0, restored=0, reaped=0)
            raise MaintenanceError(
                "in workspace %s: %s (before it, in workspace(s) %s: %d runs %s, %d reaped)"
                % (workspace, exc.msg, ", ".join(w for w, _r in done) or "none", before[key], key,
                   before["reaped"]), **dict(exc.details, workspace=workspace))
        done.append((workspace, result))
        if budget is not None and budget >= 0:
            budget = max(0, budget - result[key])
    return _merge_results(done, params["run_ids_limit"])
