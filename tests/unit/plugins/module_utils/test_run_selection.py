# -*- coding: utf-8 -*-
import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    build_filter,
    build_reap_filter,
    capped,
    check_cap,
    cutoff_ms,
    has_keep_tag,
    plan_deletions,
    plan_restores,
    protection_reason,
    resolve_experiments,
    validate_statuses,
)

NOW = 1800000000000
DAY = 86400000


def run(run_id, status="FINISHED", start=NOW - 40 * DAY, end=None, tags=None):
    info = {"run_id": run_id, "status": status, "start_time": start, "end_time": end}
    return {"info": info, "data": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}


def test_cutoff_uses_mlflow_gc_syntax():
    assert cutoff_ms("30d", NOW) == NOW - 30 * DAY
    assert cutoff_ms("1d2h", NOW) == NOW - DAY - 2 * 3600000


@pytest.mark.parametrize("bad", ["abc", "-1d", "30x", ""])
def test_bad_ages_fail_with_option_name(bad):
    with pytest.raises(MaintenanceError) as info:
        cutoff_ms(bad, NOW, "reap_running_after")
    assert info.value.msg.startswith("reap_running_after:")


def test_filter_is_server_side_and_excludes_running():
    text = build_filter(NOW, "start_time", ["FINISHED", "FAILED", "KILLED"], None)
    assert text == ("attributes.start_time < %d AND attributes.status != 'RUNNING' "
                    "AND attributes.status != 'SCHEDULED'" % NOW)


def test_filter_with_fewer_statuses_end_time_and_user_filter():
    text = build_filter(5, "end_time", ["FAILED"], "tags.team = 'vision'")
    assert text.startswith("attributes.end_time < 5 AND ")
    for status in ("RUNNING", "SCHEDULED", "FINISHED", "KILLED"):
        assert "attributes.status != '%s'" % status in text
    assert "'FAILED'" not in text
    assert text.endswith("AND tags.team = 'vision'")


def test_filter_without_age():
    assert build_filter(None, "start_time", ["FINISHED", "FAILED", "KILLED"]).startswith("attributes.status")


def test_or_filters_and_bad_time_fields_are_refused():
    with pytest.raises(MaintenanceError):
        build_filter(NOW, "start_time", ["FINISHED"], "tags.a = '1' OR tags.b = '2'")
    with pytest.raises(MaintenanceError):
        build_filter(NOW, "created", ["FINISHED"])


def test_reap_filter():
    assert build_reap_filter(7, "params.x = '1'") == ("attributes.status = 'RUNNING' AND attributes.start_time < 7 "
                                                      "AND params.x = '1'")


def test_statuses_never_include_running():
    assert validate_statuses(["killed", "FINISHED", "KILLED"]) == ["FINISHED", "KILLED"]
    with pytest.raises(MaintenanceError):
        validate_statuses(["RUNNING"])
    with pytest.raises(MaintenanceError):
        validate_statuses([])


def test_keep_tag_values():
    assert has_keep_tag(run("a", tags={"mlflowops.keep": "true"}), "mlflowops.keep")
    assert has_keep_tag(run("a", tags={"mlflowops.keep": ""}), "mlflowops.keep")
    assert not has_keep_tag(run("a", tags={"mlflowops.keep": "false"}), "mlflowops.keep")
    assert not has_keep_tag(run("a", tags={"other": "true"}), "mlflowops.keep")
    assert not has_keep_tag(run("a", tags={"mlflowops.keep": "true"}), "")


def test_protection_reasons():
    assert protection_reason(run("a", status="RUNNING"), set(), "k") == "running"
    assert protection_reason(run("a"), {"a"}, "k") == "registered_model"
    assert protection_reason(run("a", tags={"k": "1"}), set(), "k") == "keep_tag"
    assert protection_reason(run("a"), {"b"}, "k") is None


def test_plan_deletions_protects_and_dedups():
    candidates = [run("a"), run("b", tags={"k": "yes"}), run("c"), run("a"), run("d", status="RUNNING")]
    plan = plan_deletions(candidates, {"c"}, "k")
    assert plan.act == ["a"]
    assert plan.protected == {"b": "keep_tag", "c": "registered_model", "d": "running"}


def test_reaped_runs_join_deletions_when_they_then_match():
    stale_old = run("old", status="RUNNING", start=NOW - 40 * DAY)
    stale_new = run("new", status="RUNNING", start=NOW - 2 * DAY)
    stale_kept = run("kept", status="RUNNING", start=NOW - 40 * DAY, tags={"k": "1"})
    plan = plan_deletions([run("x")], set(), "k", [stale_old, stale_new, stale_kept], NOW - 30 * DAY,
                          "start_time", ["FINISHED", "FAILED", "KILLED"], reap_time=NOW)
    assert plan.reap == ["old", "new", "kept"]
    assert plan.act == ["old", "x"]
    assert plan.protected == {"kept": "keep_tag"}
    # Without KILLED selected, or on end_time (set to now by the reaper), reaped runs stay.
    plan = plan_deletions([], set(), "k", [stale_old], NOW - 30 * DAY, "start_time", ["FINISHED"], reap_time=NOW)
    assert plan.act == [] and plan.reap == ["old"]
    plan = plan_deletions([], set(), "k", [stale_old], NOW - 30 * DAY, "end_time", ["KILLED"], reap_time=NOW)
    assert plan.act == []


def test_plan_restores_everything_selected():
    assert plan_restores([run("a"), run("b"), run("a")]).act == ["a", "b"]


def test_cap():
    check_cap(10, 10)
    check_cap(10**6, -1)
    with pytest.raises(MaintenanceError) as info:
        check_cap(11, 10)
    assert "nothing was changed" in info.value.msg and info.value.details["selected"] == 11


def test_resolve_experiments_by_id_and_name_unknown_fail_together():
    by_id = {"1": {"experiment_id": "1"}, "7": {"experiment_id": "7"}}
    by_name = {"churn": {"experiment_id": "7"}, "2024": {"experiment_id": "9"}}
    assert resolve_experiments(["1", "churn", "7", "2024"], by_id.get, by_name.get) == ["1", "7", "9"]
    with pytest.raises(MaintenanceError) as info:
        resolve_experiments(["1", "nope", "42"], by_id.get, by_name.get)
    assert "nope, 42" in info.value.msg


def test_capped():
    assert capped(range(5), 2) == [0, 1]
    assert capped(range(3), -1) == [0, 1, 2]
