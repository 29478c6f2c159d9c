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

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    build_filter,
    build_reap_filter,
    capped,
    check_cap,
    plan_deletions,
    plan_restores,
    resolve_experiments,
    validate_cleanup_options,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

FAILURES_LISTED = 50


def registered_run_ids(client):
    """Run ids of every registered model version, all pages."""
    return set(version["run_id"] for version in client.search_model_versions() if version.get("run_id"))


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
            progress["failures"].append(dict(run_id=run_id, error=getattr(error, "msg", str(error))))


def new_progress():
    return dict(done=[], gone=[], failures=[], fatal=None)


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
    reasons = {}
    for reason in plan.protected.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    result = dict(
        changed=bool(plan.act or plan.reap), deleted=0, restored=0, reaped=0, protected=plan.protected_count,
        protected_reasons=reasons, protected_run_ids=capped(plan.protected, limit), experiment_ids=experiment_ids,
        search_filter=search_filter, failures=[],
        run_ids_truncated=any(limit >= 0 and len(ids) > limit for ids in (plan.act, plan.reap, plan.protected)),
    )
    count_key = "deleted" if state == "deleted" else "restored"
    if check_mode:
        result.update({count_key: len(plan.act), "reaped": len(plan.reap)})
        result.update(run_ids=capped(plan.act, limit), reaped_run_ids=capped(plan.reap, limit))
        return result

    concurrency = params["concurrency"]
    reap_progress = new_progress()
    if plan.reap:
        apply(client, "runs/update", ({"run_id": run_id, "status": "KILLED", "end_time": now} for run_id in plan.reap),
              concurrency, reap_progress, deadline)
    progress = new_progress()
    if reap_progress["fatal"] is None and plan.act:
        apply(client, endpoint, ({"run_id": run_id} for run_id in plan.act), concurrency, progress, deadline)

    result.update({count_key: len(progress["done"]), "reaped": len(reap_progress["done"])})
    result.update(run_ids=capped(progress["done"], limit), reaped_run_ids=capped(reap_progress["done"], limit))
    result["failures"] = (reap_progress["failures"] + progress["failures"])[:FAILURES_LISTED]
    result["changed"] = bool(progress["done"] or reap_progress["done"])
    fatal = reap_progress["fatal"] or progress["fatal"]
    if fatal is not None:
        finished = set(progress["done"]) | set(progress["gone"])
        remaining = [run_id for run_id in plan.act if run_id not in finished]
        reap_done = set(reap_progress["done"]) | set(reap_progress["gone"])
        reap_remaining = [run_id for run_id in plan.reap if run_id not in reap_done]
        verb = "deleted" if state == "deleted" else "restored"
        cause = ("stopped at its deadline" if fatal.kind == "deadline"
                 else "stopped: the tracking server stopped answering midway")
        raise MaintenanceError(
            "runs_cleanup %s: %d of %d runs %s, %d remain; %d of %d stale runs reaped, "
            "%d remain (%s). Rerun the task to finish the job."
            % (cause, len(progress["done"]), len(plan.act), verb, len(remaining), len(reap_progress["done"]),
               len(plan.reap), len(reap_remaining), fatal.msg),
            remaining=len(remaining) + len(reap_remaining), remaining_run_ids=capped(remaining, limit), **result)
    if result["failures"]:
        failed = len(reap_progress["failures"]) + len(progress["failures"])
        raise MaintenanceError("%d runs could not be changed (first: %s); %d runs %s"
                               % (failed, result["failures"][0]["error"], len(progress["done"]), count_key), **result)
    return result
