#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: runs_cleanup
short_description: Soft-delete old MLflow runs, reap stale RUNNING runs, or undo a cleanup
version_added: 0.1.0
description:
  - Retention cleanup of an MLflow tracking server through its REST API (it never imports mlflow).
  - Selects runs on the server with a search filter (C(attributes.start_time < <ms>) or
    C(attributes.end_time < <ms>), the chosen statuses, and O(filter)), pages through every result,
    and soft-deletes the selected runs with bounded concurrency.
  - Runs that a registered model version points to, runs carrying the O(keep_tag), and RUNNING runs
    are never deleted.
  - The whole selection is computed first; when it holds more than O(max_delete) runs the module
    fails before changing anything.
  - With O(reap_running_after), runs still RUNNING that long after their start are marked KILLED with
    an end time (runs left behind by crashed jobs).
  - With O(state=active), soft-deleted runs matching the same selection are restored, which undoes a
    cleanup before M(mlflowops.maintenance.gc) purges it.
  - If the server goes away midway, the task fails and says how many runs were done and how many
    remain; running it again completes the job.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.tracking
options:
  state:
    description:
      - V(deleted) soft-deletes the selected runs.
      - V(active) restores soft-deleted runs that match the same selection.
    type: str
    choices: [deleted, active]
    default: deleted
  older_than:
    description:
      - Age of the runs to select, in C(mlflow gc --older-than) syntax (V(30d), V(12h), V(1d2h), V(45m), V(2w));
        a bare number is seconds.
      - Measured on O(time_field). Negative ages and unparsable values fail before anything changes.
      - When not set, every run matching the other criteria is selected.
    type: str
  time_field:
    description:
      - The run time that O(older_than) applies to. RUNNING runs have no end time, so V(end_time) never
        selects them.
    type: str
    choices: [start_time, end_time]
    default: start_time
  experiments:
    description:
      - Experiment names or ids. A numeric entry is tried as an id first, then as a name.
      - An unknown experiment fails the task before anything changes.
      - Default is every active experiment.
    type: list
    elements: str
  statuses:
    description:
      - Run statuses to select. RUNNING runs are never deleted, whatever this says.
    type: list
    elements: str
    choices: [FINISHED, FAILED, KILLED]
    default: [FINISHED, FAILED, KILLED]
  filter:
    description:
      - An extra MLflow run search filter, ANDed with the age and status criteria, for example
        C(tags.team = 'vision') or C(metrics.accuracy < 0.5). MLflow filters support only AND.
    type: str
  keep_tag:
    description:
      - Runs carrying this tag with any value except V(false), V(0), V(no) or V(off) are protected.
      - Set to an empty string to disable tag protection.
    type: str
    default: mlflowops.keep
  protect_registered:
    description:
      - Protect runs that any registered model version points to.
    type: bool
    default: true
  max_delete:
    description:
      - Safety cap on the number of runs deleted (or restored) by one invocation. When the selection
        is larger, the task fails before changing anything.
      - V(-1) disables the cap.
    type: int
    default: 10000
  concurrency:
    description:
      - How many delete, restore or update requests are in flight at once.
    type: int
    default: 8
  reap_running_after:
    description:
      - Runs still RUNNING this long after their start time are marked KILLED and given an end time.
        Same syntax as O(older_than). Applies to the selected experiments and O(filter).
      - A reaped run that then matches the selection (KILLED in O(statuses), old enough) is deleted in
        the same invocation.
    type: str
  run_ids_limit:
    description:
      - The most run ids listed in each of RV(run_ids), RV(reaped_run_ids) and RV(protected_run_ids).
    type: int
    default: 1000
attributes:
  check_mode:
    support: full
    description: Selects through the same code path and reports counts and ids; changes nothing.
  diff_mode:
    support: none
    description: Results list the affected run ids instead of a diff.
notes:
  - A second identical invocation reports C(changed=false).
  - Runs deleted by this module stay restorable until M(mlflowops.maintenance.gc) purges them.
seealso:
  - module: mlflowops.maintenance.gc
"""

EXAMPLES = r"""
- name: Soft-delete finished, failed and killed runs older than 30 days
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    older_than: 30d

- name: Clean two experiments, only failed runs, keep runs tagged team=vision
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    experiments: [churn-model, "17"]
    statuses: [FAILED]
    older_than: 7d
    filter: "tags.team != 'vision'"
    max_delete: 50000
    concurrency: 16

- name: Mark runs left RUNNING for over a day by crashed jobs as KILLED
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    reap_running_after: 1d
    older_than: 90d

- name: Undo a cleanup before gc runs
  mlflowops.maintenance.runs_cleanup:
    tracking_uri: http://127.0.0.1:5000
    older_than: 30d
    state: active
"""

RETURN = r"""
deleted:
  description: Runs soft-deleted (in check mode, that would be).
  returned: always
  type: int
  sample: 1980
restored:
  description: Runs restored by O(state=active) (in check mode, that would be).
  returned: always
  type: int
  sample: 0
reaped:
  description: RUNNING runs marked KILLED (in check mode, that would be).
  returned: always
  type: int
  sample: 3
protected:
  description: Selected runs kept because of a registered model version, the keep tag, or a RUNNING status.
  returned: always
  type: int
  sample: 12
protected_reasons:
  description: Count of protected runs by reason (C(registered_model), C(keep_tag), C(running)).
  returned: always
  type: dict
  sample: {registered_model: 10, keep_tag: 2}
run_ids:
  description: Ids of the runs deleted or restored, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
reaped_run_ids:
  description: Ids of the reaped runs, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
protected_run_ids:
  description: Ids of the protected runs, at most O(run_ids_limit).
  returned: always
  type: list
  elements: str
run_ids_truncated:
  description: Whether any of the id lists was cut at O(run_ids_limit).
  returned: always
  type: bool
experiment_ids:
  description: The experiments searched.
  returned: always
  type: list
  elements: str
search_filter:
  description: The server-side run search filter used for the selection.
  returned: always
  type: str
  sample: "attributes.start_time < 1793000000000 AND attributes.status != 'RUNNING' AND attributes.status != 'SCHEDULED'"
failures:
  description: Runs whose request failed with an error other than a lost server (for example HTTP 403), with the reason.
  returned: always
  type: list
  elements: dict
duration_s:
  description: Wall-clock seconds the module took.
  returned: always
  type: float
  sample: 14.2
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    DEFAULT_KEEP_TAG,
    DEFAULT_STATUSES,
    build_filter,
    build_reap_filter,
    capped,
    check_cap,
    cutoff_ms,
    plan_deletions,
    plan_restores,
    resolve_experiments,
    validate_statuses,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import (
    TrackingClient,
    TrackingError,
    tracking_argument_spec,
)

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
    return isinstance(exc, TrackingError) and (exc.kind in ("connection", "timeout") or exc.status in (502, 503, 504))


def is_not_found(exc):
    return isinstance(exc, TrackingError) and exc.status == 404


def apply(client, endpoint, payloads, concurrency, progress):
    """POST each payload with bounded concurrency; stops submitting when the server goes away.

    ``progress`` collects ``done`` (ids), ``gone`` (ids already gone), ``failures`` and ``fatal``.
    Requests already in flight when the server goes away are still accounted for.
    """
    def call(payload):
        return client.post(endpoint, payload)

    def until_fatal():
        for payload in payloads:
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


def run_cleanup(module, client):
    params = module.params
    now = int(time.time() * 1000)
    state = params["state"]
    statuses = validate_statuses(params["statuses"])
    cutoff = cutoff_ms(params["older_than"], now) if params["older_than"] not in (None, "") else None
    reap_cutoff = None
    if params["reap_running_after"] not in (None, ""):
        reap_cutoff = cutoff_ms(params["reap_running_after"], now, "reap_running_after")
    if params["concurrency"] < 1:
        raise MaintenanceError("concurrency must be at least 1, got %d" % params["concurrency"])
    search_filter = build_filter(cutoff, params["time_field"], statuses, params["filter"])
    experiment_ids = experiment_ids_for(client, params["experiments"])

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
    if module.check_mode:
        result.update({count_key: len(plan.act), "reaped": len(plan.reap)})
        result.update(run_ids=capped(plan.act, limit), reaped_run_ids=capped(plan.reap, limit))
        return result

    reap_progress = new_progress()
    if plan.reap:
        apply(client, "runs/update", ({"run_id": run_id, "status": "KILLED", "end_time": now} for run_id in plan.reap),
              params["concurrency"], reap_progress)
    progress = new_progress()
    if reap_progress["fatal"] is None and plan.act:
        apply(client, endpoint, ({"run_id": run_id} for run_id in plan.act), params["concurrency"], progress)

    result.update({count_key: len(progress["done"]), "reaped": len(reap_progress["done"])})
    result.update(run_ids=capped(progress["done"], limit), reaped_run_ids=capped(reap_progress["done"], limit))
    result["failures"] = (reap_progress["failures"] + progress["failures"])[:FAILURES_LISTED]
    result["changed"] = bool(progress["done"] or reap_progress["done"])
    fatal = reap_progress["fatal"] or progress["fatal"]
    if fatal is not None:
        finished = set(progress["done"]) | set(progress["gone"])
        remaining = [run_id for run_id in plan.act if run_id not in finished]
        reap_remaining = [run_id for run_id in plan.reap
                          if run_id not in set(reap_progress["done"]) | set(reap_progress["gone"])]
        verb = "deleted" if state == "deleted" else "restored"
        raise MaintenanceError(
            "the tracking server stopped answering midway: %d of %d runs %s, %d remain; %d of %d stale runs reaped, "
            "%d remain (%s). Rerun the task to finish the job."
            % (len(progress["done"]), len(plan.act), verb, len(remaining), len(reap_progress["done"]),
               len(plan.reap), len(reap_remaining), fatal.msg),
            remaining=len(remaining) + len(reap_remaining), remaining_run_ids=capped(remaining, limit), **result)
    if result["failures"]:
        failed = len(reap_progress["failures"]) + len(progress["failures"])
        raise MaintenanceError("%d runs could not be changed (first: %s); %d runs %s"
                               % (failed, result["failures"][0]["error"], len(progress["done"]), count_key), **result)
    return result


def main():
    argument_spec = tracking_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["deleted", "active"], default="deleted"),
        older_than=dict(type="str"),
        time_field=dict(type="str", choices=["start_time", "end_time"], default="start_time"),
        experiments=dict(type="list", elements="str"),
        statuses=dict(type="list", elements="str", choices=["FINISHED", "FAILED", "KILLED"],
                      default=list(DEFAULT_STATUSES)),
        filter=dict(type="str"),
        keep_tag=dict(type="str", default=DEFAULT_KEEP_TAG, no_log=False),
        protect_registered=dict(type="bool", default=True),
        max_delete=dict(type="int", default=10000),
        concurrency=dict(type="int", default=8),
        reap_running_after=dict(type="str"),
        run_ids_limit=dict(type="int", default=1000),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    watch = Stopwatch()
    try:
        client = TrackingClient.from_module(module, pool_size=max(16, module.params["concurrency"] * 2))
        result = run_cleanup(module, client)
    except MaintenanceError as exc:
        details = dict(exc.details)
        details.pop("msg", None)
        details["duration_s"] = watch.elapsed()
        module.fail_json(msg=exc.msg, **details)
    result["duration_s"] = watch.elapsed()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
