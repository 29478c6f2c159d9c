# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The result of a runs_cleanup plan, shared by the REST path (runs_cleanup_job) and the database path (runs_bulk).

Pure: a plan (``run_selection.plan_deletions``/``plan_restores``) in, result keys out, so both paths report
the same keys the same way.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import capped


def count_key(state):
    """The result key that counts the runs acted on: ``deleted`` or ``restored``."""
    return "deleted" if state == "deleted" else "restored"


def plan_result(plan, limit, **fields):
    """The result before anything is done: nothing counted yet, the protected runs by reason, ``fields`` added."""
    reasons = {}
    for reason in plan.protected.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    result = dict(
        changed=bool(plan.act or plan.reap), deleted=0, restored=0, reaped=0, protected=plan.protected_count,
        protected_reasons=reasons, protected_run_ids=capped(plan.protected, limit),
        run_ids_truncated=any(limit >= 0 and len(ids) > limit for ids in (plan.act, plan.reap, plan.protected)),
    )
    result.update(fields)
    return result


def record_done(result, state, done, reaped, limit):
    """Count what was done (or, in check mode, would be): counts, capped id lists and ``changed``."""
    result.update({count_key(state): len(done), "reaped": len(reaped)})
    result.update(run_ids=capped(done, limit), reaped_run_ids=capped(reaped, limit))
    result["changed"] = bool(done or reaped)
    return result


def remaining_runs(plan, finished, reap_finished):
    """``(remaining, reap_remaining)``: the planned run ids not finished, in plan order."""
    finished, reap_finished = set(finished), set(reap_finished)
    return ([run_id for run_id in plan.act if run_id not in finished],
            [run_id for run_id in plan.reap if run_id not in reap_finished])
