# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traces_cleanup job: trace retention over MLflow 3's REST API, without importing mlflow.

Selection: ``POST /api/3.0/mlflow/traces/search`` per experiment with ``trace.timestamp_ms < <cutoff>`` ANDed
with the user's filter, every page (500 per page, the server's maximum). The whole selection (over every
workspace and experiment) is counted before anything is deleted, so ``max_delete`` fails first and check
mode counts exactly.

Deletion: ``POST /api/3.0/mlflow/traces/delete-traces`` (permanent). When an experiment's selection holds no
protected trace and no user filter, it deletes by timestamp (``max_timestamp_millis = cutoff - 1``, oldest
first, ``max_traces = batch_size`` per call, up to the counted number); otherwise by trace ids,
``batch_size`` ids per call, so a keep-tagged trace is never in a deleted batch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    Failures,
    and_filters,
    check_cap,
    error_text,
    experiment_ids_for,
    is_server_gone,
    keep_value_protects,
    selection_failed,
    user_filter,
    validate_common,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

SEARCH_PATH = "/api/3.0/mlflow/traces/search"
DELETE_PATH = "/api/3.0/mlflow/traces/delete-traces"
SEARCH_PAGE_SIZE = 500  # the server refuses more
MAX_BATCH_SIZE = 10000


# -- pure decisions ------------------------------------------------------------------------------

def build_trace_filter(cutoff, extra_filter=None):
    """The server-side trace search filter: older than ``cutoff`` (epoch ms) AND the user's filter."""
    parts = []
    if cutoff is not None:
        parts.append("trace.timestamp_ms < %d" % int(cutoff))
    parts.append(user_filter(extra_filter))
    return and_filters(parts)


def trace_id_of(trace):
    return trace.get("trace_id") or trace.get("request_id")


def trace_tags(trace):
    """{key: value} of a trace as the v3 search returns it (a map; older servers sent a list)."""
    tags = trace.get("tags") or {}
    if isinstance(tags, list):
        return dict((tag.get("key"), tag.get("value")) for tag in tags)
    return dict(tags)


class TracePlan:
    """One experiment's selection: trace ids to delete and ids protected by the keep tag."""

    def __init__(self, experiment_id, workspace=None):
        self.experiment_id = str(experiment_id)
        self.workspace = workspace
        self.delete_ids = []
        self.protected_ids = []
        self.mode = "ids"


def plan_traces(experiment_id, traces, keep_tag, cutoff, has_user_filter, workspace=None):
    """Classify an experiment's searched traces, and choose how to delete them.

    Timestamp deletion (fewer, id-less requests) only when nothing in the selection is protected, there is
    no user filter (the server's timestamp deletion does not apply it) and there is a cutoff.
    """
    plan = TracePlan(experiment_id, workspace)
    seen = set()
    for trace in traces:
        trace_id = trace_id_of(trace)
        if not trace_id or trace_id in seen:
            continue
        seen.add(trace_id)
        if keep_value_protects(trace_tags(trace), keep_tag):
            plan.protected_ids.append(trace_id)
        else:
            plan.delete_ids.append(trace_id)
    plan.mode = choose_delete_mode(len(plan.protected_ids), has_user_filter, cutoff)
    return plan


def choose_delete_mode(protected_count, has_user_filter, cutoff):
    """``timestamp`` or ``ids`` (see plan_traces)."""
    if protected_count or has_user_filter or cutoff is None:
        return "ids"
    return "timestamp"


def delete_requests(plan, cutoff, batch_size):
    """The delete-traces request bodies for a plan, in order: ``(body, how many it is meant to delete)``."""
    if plan.mode == "timestamp":
        remaining = len(plan.delete_ids)
        while remaining > 0:
            count = min(batch_size, remaining)
            yield dict(experiment_id=plan.experiment_id, max_timestamp_millis=int(cutoff) - 1, max_traces=count), count
            remaining -= count
        return
    for offset in range(0, len(plan.delete_ids), batch_size):
        ids = plan.delete_ids[offset:offset + batch_size]
        yield dict(experiment_id=plan.experiment_id, request_ids=ids), len(ids)


# -- the job -------------------------------------------------------------------------------------

def search_traces(client, experiment_id, filter_string):
    body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": str(experiment_id)}}],
            "max_results": SEARCH_PAGE_SIZE}
    if filter_string:
        body["filter"] = filter_string
    while True:
        page = client.post(SEARCH_PATH, body)
        yield from page.get("traces") or []
        token = page.get("next_page_token")
        if not token:
            return
        body["page_token"] = token


def select(targets, params, cutoff, search_filter, deadline=None):
    """Plans of every (workspace, client) target and experiment; raises before any change on a bad input."""
    plans = []
    for workspace, client in targets:
        what = "resolving the experiments"
        try:
            experiment_ids = experiment_ids_for(client, params.get("experiments"))
            what = "searching the traces"
            for experiment_id in experiment_ids:
                if deadline is not None:
                    deadline.check("traces_cleanup (selection; nothing was changed)", deleted=0)
                traces = search_traces(client, experiment_id, search_filter)
                plans.append((client, plan_traces(experiment_id, traces, params.get("keep_tag"), cutoff,
                                                  bool((params.get("filter") or "").strip()), workspace)))
        except TrackingError as exc:
            where = " in workspace %s" % workspace if workspace else ""
            raise selection_failed("traces_cleanup", exc, what + where, deleted=0)
    return plans


def experiment_report(plan):
    report = dict(experiment_id=plan.experiment_id, selected=len(plan.delete_ids), deleted=0,
                  protected=len(plan.protected_ids), mode=plan.mode)
    if plan.workspace:
        report["workspace"] = plan.workspace
    return report


def run_traces_cleanup(params, targets, check_mode=False, deadline=None, now=None):
    """The whole job over ``targets`` ([(workspace or None, TrackingClient)]); returns the result dict.

    Raises MaintenanceError with what was deleted so far when the server goes away or the deadline passes;
    a rerun selects what is left and completes the job.
    """
    now = int(time.time() * 1000) if now is None else now
    cutoff = validate_common(params, now, "batch_size", MAX_BATCH_SIZE)
    search_filter = build_trace_filter(cutoff, params.get("filter"))
    plans = select(targets, params, cutoff, search_filter, deadline)
    total = sum(len(plan.delete_ids) for _client, plan in plans)
    check_cap(total, params.get("max_delete"), "traces")

    # Experiments with nothing selected or protected are left out of the per-experiment results (a server may
    # hold thousands); ``experiments_searched`` counts them all.
    searched = len(plans)
    plans = [(client, plan) for client, plan in plans if plan.delete_ids or plan.protected_ids]
    reports = [experiment_report(plan) for _client, plan in plans]
    failures = Failures()
    result = dict(changed=bool(total), deleted=0, protected=sum(len(plan.protected_ids) for _c, plan in plans),
                  selected=total, experiments=reports, experiments_searched=searched, search_filter=search_filter,
                  **failures.as_result())
    if check_mode:
        for report in reports:
            report["deleted"] = report["selected"]
        result.update(deleted=total, deleted_per_experiment=per_experiment(reports))
        return result

    fatal = None
    for (client, plan), report in zip(plans, reports):
        for body, expected in delete_requests(plan, cutoff, params["batch_size"]):
            if deadline is not None and deadline.expired():
                fatal = TrackingError("the task's deadline of %ss passed" % int(deadline.seconds), "deadline")
            if fatal is not None:
                break
            try:
                answer = client.post(DELETE_PATH, body)
            except TrackingError as exc:
                if is_server_gone(exc):
                    fatal = exc
                    break
                failures.add(plan.experiment_id, error_text(exc))
                continue
            done = int(answer.get("traces_deleted") or 0)
            report["deleted"] += done
            if plan.mode == "timestamp" and done < expected:
                break  # someone else deleted some of them; nothing older is left
        if fatal is not None:
            break

    deleted = sum(report["deleted"] for report in reports)
    result.update(changed=bool(deleted), deleted=deleted, deleted_per_experiment=per_experiment(reports),
                  **failures.as_result())
    if fatal is not None:
        cause = ("stopped at its deadline" if getattr(fatal, "kind", None) == "deadline"
                 else "stopped: the tracking server stopped answering midway")
        raise MaintenanceError(
            "traces_cleanup %s: %d of %d traces deleted, %d remain (%s). Rerun the task to finish the job."
            % (cause, deleted, total, total - deleted, error_text(fatal)), remaining=total - deleted, **result)
    if failures.count:
        raise MaintenanceError("%d delete requests failed (first: %s); %d traces deleted"
                               % (failures.count, failures.items[0]["msg"], deleted), **result)
    return result


def per_experiment(reports):
    """{experiment id (``workspace/id`` with workspaces): traces deleted}."""
    counts = {}
    for report in reports:
        key = "%s/%s" % (report["workspace"], report["experiment_id"]) if report.get("workspace") else report["experiment_id"]
        counts[key] = counts.get(key, 0) + report["deleted"]
    return counts
