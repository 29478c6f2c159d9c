# -*- coding: utf-8 -*-
"""runs_cleanup_result: the result keys both runs_cleanup paths (REST and database) build from a plan."""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import Plan
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_cleanup_result import (
    count_key,
    plan_result,
    record_done,
    remaining_runs,
)


def a_plan(act=(), reap=(), protected=None):
    plan = Plan()
    plan.act, plan.reap, plan.protected = list(act), list(reap), dict(protected or {})
    return plan


def test_count_key_names_the_state():
    assert (count_key("deleted"), count_key("active")) == ("deleted", "restored")


def test_plan_result_counts_nothing_yet_and_groups_protection_by_reason():
    plan = a_plan(act=["a", "b"], protected={"p1": "registered_model", "p2": "keep_tag", "p3": "keep_tag"})
    result = plan_result(plan, 2, method="database")
    assert result["changed"] is True and (result["deleted"], result["restored"], result["reaped"]) == (0, 0, 0)
    assert result["protected"] == 3 and result["protected_reasons"] == {"registered_model": 1, "keep_tag": 2}
    assert len(result["protected_run_ids"]) == 2 and result["run_ids_truncated"] is True
    assert result["method"] == "database"


def test_plan_result_of_an_empty_plan_changes_nothing():
    result = plan_result(a_plan(), -1)
    assert result["changed"] is False and result["run_ids_truncated"] is False and result["protected_run_ids"] == []


def test_record_done_caps_the_ids_and_reports_changed_from_what_was_done():
    result = record_done(plan_result(a_plan(act=["a", "b", "c"]), 2), "active", ["a", "b", "c"], [], 2)
    assert (result["restored"], result["deleted"], result["reaped"]) == (3, 0, 0)
    assert result["run_ids"] == ["a", "b"] and result["reaped_run_ids"] == [] and result["changed"] is True
    assert record_done(plan_result(a_plan(act=["a"]), -1), "deleted", [], [], -1)["changed"] is False


def test_remaining_runs_keeps_plan_order():
    plan = a_plan(act=["c", "a", "b"], reap=["r1", "r2"])
    assert remaining_runs(plan, ["a"], ["r2"]) == (["c", "b"], ["r1"])
