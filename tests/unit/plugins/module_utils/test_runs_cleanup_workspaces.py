# -*- coding: utf-8 -*-
"""runs_cleanup over several workspaces: the cap applies to the whole selection, results sum the workspaces."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import runs_cleanup_job as job
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

PARAMS = dict(state="deleted", max_delete=10, run_ids_limit=1000)


def fake_cleanup(selected, calls):
    """A run_cleanup stand-in: each client (a workspace name) selects ``selected[name]`` runs."""
    def run_cleanup(params, client, check_mode=False, deadline=None, now=None):
        calls.append((client, check_mode, params["max_delete"]))
        count = selected[client]
        if params["max_delete"] >= 0 and count > params["max_delete"]:
            raise MaintenanceError("over the cap")
        ids = ["%s-%d" % (client, index) for index in range(count)]
        return dict(changed=bool(count), deleted=count, restored=0, reaped=0, protected=1,
                    protected_reasons={"keep_tag": 1}, run_ids=ids, reaped_run_ids=[], protected_run_ids=[client + "-k"],
                    experiment_ids=[client + "-exp"], run_ids_truncated=False, failures=[], failure_count=0,
                    failures_truncated=False, search_filter="f")
    return run_cleanup


def test_the_cap_counts_every_workspace_before_any_change(monkeypatch):
    calls = []
    monkeypatch.setattr(job, "run_cleanup", fake_cleanup({"a": 6, "b": 5}, calls))
    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup_in_workspaces(PARAMS, [("a", "a"), ("b", "b")], now=1)
    assert "more than max_delete=10" in info.value.msg
    assert all(check for _client, check, _cap in calls), "nothing ran outside check mode"


def test_results_sum_the_workspaces_and_the_cap_shrinks(monkeypatch):
    calls = []
    monkeypatch.setattr(job, "run_cleanup", fake_cleanup({"a": 6, "b": 4}, calls))
    result = job.run_cleanup_in_workspaces(PARAMS, [("a", "a"), ("b", "b")], now=1)
    assert result["deleted"] == 10 and result["protected"] == 2 and result["protected_reasons"] == {"keep_tag": 2}
    assert result["per_workspace"] == {"a": dict(deleted=6, restored=0, reaped=0), "b": dict(deleted=4, restored=0, reaped=0)}
    assert len(result["run_ids"]) == 10 and result["changed"] is True and result["workspaces"] == ["a", "b"]
    assert [(client, cap) for client, check, cap in calls if not check] == [("a", 10), ("b", 4)]
    checked = job.run_cleanup_in_workspaces(dict(PARAMS, run_ids_limit=3), [("a", "a"), ("b", "b")], check_mode=True, now=1)
    assert checked["deleted"] == 10 and checked["run_ids"] == ["a-0", "a-1", "a-2"] and checked["run_ids_truncated"]


def test_a_failure_in_a_later_workspace_says_what_was_done(monkeypatch):
    calls = []
    cleanup = fake_cleanup({"a": 2, "b": 1}, calls)

    def failing(params, client, check_mode=False, deadline=None, now=None):
        if client == "b" and not check_mode:
            raise MaintenanceError("server gone", deleted=0)
        return cleanup(params, client, check_mode, deadline, now)
    monkeypatch.setattr(job, "run_cleanup", failing)
    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup_in_workspaces(PARAMS, [("a", "a"), ("b", "b")], now=1)
    assert info.value.msg.startswith("in workspace b: server gone") and "in workspace(s) a: 2 runs deleted" in info.value.msg
    assert info.value.details["workspace"] == "b"
