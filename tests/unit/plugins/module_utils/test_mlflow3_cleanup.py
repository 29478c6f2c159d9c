# -*- coding: utf-8 -*-
"""Pure decisions of traces_cleanup and logged_models_cleanup, and the job logic against a fake client."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import logged_models, mlflow3_cleanup, traces
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError, single_workspace

NOW = 10 ** 13
DAY = 86400 * 1000


def trace(trace_id, tags=None):
    return {"trace_id": trace_id, "tags": dict(tags or {})}


@pytest.mark.parametrize("value,protects", [("true", True), ("", True), ("x", True), ("false", False),
                                            ("0", False), ("No", False), (" off ", False)])
def test_keep_value_protects(value, protects):
    assert mlflow3_cleanup.keep_value_protects({"mlflowops.keep": value}, "mlflowops.keep") is protects
    assert mlflow3_cleanup.keep_value_protects({"mlflowops.keep": value}, "") is False


def test_build_trace_filter_and_or_refused():
    assert traces.build_trace_filter(123, "") == "trace.timestamp_ms < 123"
    assert traces.build_trace_filter(123, " tag.env = 'dev' ") == "trace.timestamp_ms < 123 AND tag.env = 'dev'"
    assert traces.build_trace_filter(None, "trace.status = 'ERROR'") == "trace.status = 'ERROR'"
    with pytest.raises(MaintenanceError, match="only AND"):
        traces.build_trace_filter(1, "a = 1 or b = 2")


def test_plan_traces_protects_keep_tag_and_picks_the_mode():
    found = [trace("a"), trace("b", {"mlflowops.keep": "1"}), trace("c", {"mlflowops.keep": "false"}), trace("a")]
    plan = traces.plan_traces("7", found, "mlflowops.keep", cutoff=5, has_user_filter=False)
    assert plan.delete_ids == ["a", "c"] and plan.protected_ids == ["b"] and plan.mode == "ids"
    plain = traces.plan_traces("7", [trace("a"), trace("c")], "mlflowops.keep", cutoff=5, has_user_filter=False)
    assert plain.mode == "timestamp"
    assert traces.plan_traces("7", [trace("a")], "k", cutoff=5, has_user_filter=True).mode == "ids"
    assert traces.plan_traces("7", [trace("a")], "k", cutoff=None, has_user_filter=False).mode == "ids"


def test_delete_requests_by_timestamp_stop_at_the_counted_number_and_by_ids_in_batches():
    plan = traces.plan_traces("3", [trace("t%d" % i) for i in range(5)], "k", cutoff=1000, has_user_filter=False)
    bodies = list(traces.delete_requests(plan, 1000, 2))
    assert bodies == [({"experiment_id": "3", "max_timestamp_millis": 999, "max_traces": 2}, 2),
                      ({"experiment_id": "3", "max_timestamp_millis": 999, "max_traces": 2}, 2),
                      ({"experiment_id": "3", "max_timestamp_millis": 999, "max_traces": 1}, 1)]
    plan.mode = "ids"
    assert [b["request_ids"] for b, _n in traces.delete_requests(plan, 1000, 2)] == [["t0", "t1"], ["t2", "t3"], ["t4"]]


class FakeTraceClient:
    """Experiments 1 and 2; the server goes away after ``die_after`` delete calls."""

    def __init__(self, store, die_after=None):
        self.store = store  # {experiment_id: [trace dicts with ts]}
        self.deletes = 0
        self.die_after = die_after

    def search_experiments(self, view_type):
        return [{"experiment_id": e} for e in sorted(self.store)]

    def get_experiment(self, experiment_id):
        return {"experiment_id": experiment_id} if experiment_id in self.store else None

    def get_experiment_by_name(self, name):
        return None

    def post(self, path, body):
        if path == traces.SEARCH_PATH:
            exp = body["locations"][0]["mlflow_experiment"]["experiment_id"]
            cutoff = int(body["filter"].split("<")[1])
            return {"traces": [t for t in self.store[exp] if t["ts"] < cutoff]}
        self.deletes += 1
        if self.die_after is not None and self.deletes > self.die_after:
            raise TrackingError("connection refused", "connection")
        exp = body["experiment_id"]
        if "request_ids" in body:
            victims = [t for t in self.store[exp] if t["trace_id"] in body["request_ids"]]
        else:
            victims = sorted([t for t in self.store[exp] if t["ts"] <= body["max_timestamp_millis"]],
                             key=lambda t: t["ts"])[:body["max_traces"]]
        for victim in victims:
            self.store[exp].remove(victim)
        return {"traces_deleted": len(victims)}


def fake_store():
    return {"1": [dict(trace("o%d" % i), ts=NOW - 40 * DAY - i) for i in range(10)]
            + [dict(trace("n%d" % i), ts=NOW - DAY) for i in range(3)],
            "2": [dict(trace("k", {"mlflowops.keep": "y"}), ts=NOW - 50 * DAY)]
            + [dict(trace("p%d" % i), ts=NOW - 45 * DAY) for i in range(4)]}


PARAMS = dict(older_than="30d", experiments=None, filter=None, keep_tag="mlflowops.keep", max_delete=100, batch_size=3)


def test_job_check_mode_counts_and_run_deletes_exactly():
    client = FakeTraceClient(fake_store())
    checked = traces.run_traces_cleanup(dict(PARAMS), [(None, client)], check_mode=True, now=NOW)
    assert checked["deleted"] == 14 and checked["deleted_per_experiment"] == {"1": 10, "2": 4} and client.deletes == 0
    result = traces.run_traces_cleanup(dict(PARAMS), [(None, client)], now=NOW)
    assert result["deleted"] == 14 and result["protected"] == 1 and result["changed"] is True
    assert [t["trace_id"] for t in client.store["2"]] == ["k"] and len(client.store["1"]) == 3
    again = traces.run_traces_cleanup(dict(PARAMS), [(None, client)], now=NOW)
    assert again["changed"] is False and again["deleted"] == 0


def test_job_cap_fails_before_any_delete():
    client = FakeTraceClient(fake_store())
    with pytest.raises(MaintenanceError, match="max_delete=13"):
        traces.run_traces_cleanup(dict(PARAMS, max_delete=13), [(None, client)], now=NOW)
    assert client.deletes == 0


def test_job_lost_server_reports_partial_progress():
    client = FakeTraceClient(fake_store(), die_after=2)
    with pytest.raises(MaintenanceError) as caught:
        traces.run_traces_cleanup(dict(PARAMS), [(None, client)], now=NOW)
    assert "6 of 14 traces deleted, 8 remain" in caught.value.msg
    assert caught.value.details["deleted"] == 6 and caught.value.details["remaining"] == 8


def test_registered_references_and_reason():
    versions = [{"source": "models:/m-1"}, {"model_id": "m-2", "source": "runs:/r/model"},
                {"source": "s3://b/1/models/m-3/artifacts/sub"}]
    ids, sources = logged_models.registered_references(versions)
    assert ids == {"m-1", "m-2"}
    assert logged_models.registered_reason({"info": {"model_id": "m-1"}}, ids, sources)
    assert logged_models.registered_reason({"info": {"model_id": "m-2"}}, ids, sources)
    assert logged_models.registered_reason({"info": {"model_id": "m-3", "artifact_uri": "s3://b/1/models/m-3/artifacts"}},
                                           ids, sources)
    assert not logged_models.registered_reason({"info": {"model_id": "m-33", "artifact_uri": "s3://b/1/models/m-33/a"}},
                                               ids, sources)


def test_plan_models():
    models = [{"info": {"model_id": "a", "experiment_id": "1"}},
              {"info": {"model_id": "b", "experiment_id": "1", "tags": [{"key": "keep", "value": "yes"}]}},
              {"info": {"model_id": "c", "experiment_id": "2"}},
              {"info": {"model_id": "a", "experiment_id": "1"}}]
    plan = logged_models.plan_models(models, ({"c"}, set()), "keep")
    assert plan.delete == [("a", "1", None)] and plan.protected == {"b": "keep_tag", "c": "registered_model"}


def test_workspaces_normalised_and_selected():
    assert mlflow3_cleanup.normalise_workspaces(None) == []
    assert mlflow3_cleanup.normalise_workspaces(["a", " b", "a"]) == ["a", "b"]
    assert mlflow3_cleanup.normalise_workspaces("a,b") == ["a", "b"]
    with pytest.raises(MaintenanceError):
        mlflow3_cleanup.normalise_workspaces(["all", "a"])
    assert mlflow3_cleanup.select_workspaces(["all"], ["default", "x"]) == ["default", "x"]
    with pytest.raises(MaintenanceError, match="unknown workspace"):
        mlflow3_cleanup.select_workspaces(["y"], ["default", "x"])
    assert single_workspace(None) is None and single_workspace(["x"]) == "x"
    with pytest.raises(MaintenanceError):
        single_workspace(["all"])
    with pytest.raises(MaintenanceError):
        single_workspace(["a", "b"])


@pytest.mark.parametrize("params,match", [(dict(max_delete=-2), "max_delete"), (dict(batch_size=0), "batch_size"),
                                          (dict(batch_size=10001), "at most"), (dict(older_than="-1d"), "negative"),
                                          (dict(older_than="abc"), "not a duration")])
def test_validate_common(params, match):
    with pytest.raises(MaintenanceError, match=match):
        mlflow3_cleanup.validate_common(dict(PARAMS, **params), NOW, "batch_size", traces.MAX_BATCH_SIZE)
