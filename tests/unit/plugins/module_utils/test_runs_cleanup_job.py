# -*- coding: utf-8 -*-
"""runs_cleanup's job: options validated before any request, partial progress at a deadline or a lost server."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import runs_cleanup_job as job
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import validate_cleanup_options
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

PARAMS = dict(state="deleted", older_than="30d", time_field="start_time", experiments=["1"],
              statuses=["FINISHED", "FAILED", "KILLED"], filter=None, keep_tag="mlflowops.keep",
              protect_registered=False, max_delete=10000, concurrency=1, reap_running_after=None, run_ids_limit=1000)


class FakeClient(object):
    """Serves a search over ``run_ids``; ``fail_after`` deletes succeed, then every call raises ``error``."""

    def __init__(self, run_ids, fail_after=None, error=None, on_delete=None):
        self.run_ids = run_ids
        self.fail_after = fail_after
        self.error = error
        self.on_delete = on_delete
        self.calls = []

    def get_experiment(self, experiment_id):
        self.calls.append("get_experiment")
        return {"experiment_id": experiment_id}

    def get_experiment_by_name(self, name):
        return None

    def search_runs(self, experiment_ids, filter_string, run_view_type="ACTIVE_ONLY"):
        self.calls.append("search_runs")
        return iter([{"info": {"run_id": run_id, "status": "FINISHED"}} for run_id in self.run_ids])

    def post(self, endpoint, payload):
        self.calls.append(endpoint)
        deletes = self.calls.count(endpoint)
        if self.on_delete:
            self.on_delete(deletes)
        if self.fail_after is not None and deletes > self.fail_after:
            raise self.error
        return {}

    def map_concurrently(self, func, items, concurrency):
        for item in items:
            try:
                yield item, func(item), None
            except Exception as exc:  # pylint: disable=broad-except
                yield item, None, exc


@pytest.mark.parametrize("overrides,message", [
    ({"max_delete": -5}, "max_delete must be at least 0, or -1 for no limit, got -5"),
    ({"concurrency": 0}, "concurrency must be at least 1"),
    ({"concurrency": -3}, "concurrency must be at least 1"),
    ({"run_ids_limit": -2}, "run_ids_limit must be at least 0"),
    ({"older_than": "abc"}, "older_than:"),
    ({"filter": "tags.a = 'x' OR tags.b = 'y'"}, "support only AND"),
])
def test_bad_options_fail_before_any_request(overrides, message):
    client = FakeClient(["a" * 32])
    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup(dict(PARAMS, **overrides), client)
    assert message in info.value.msg
    assert client.calls == [], "no request before every option is valid"


def test_minus_one_disables_the_cap():
    assert validate_cleanup_options(dict(PARAMS, max_delete=-1), 0)["cutoff"] == -30 * 86400 * 1000
    result = job.run_cleanup(dict(PARAMS, max_delete=-1), FakeClient(["a" * 32, "b" * 32]), check_mode=True)
    assert result["deleted"] == 2


def test_deadline_midway_stops_with_partial_progress():
    clock = [0.0]
    deadline = Deadline(10, clock=lambda: clock[0])

    def tick(deletes):
        if deletes == 3:
            clock[0] = 11.0

    client = FakeClient(["%032x" % index for index in range(10)], on_delete=tick)
    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup(PARAMS, client, deadline=deadline)
    assert "stopped at its deadline" in info.value.msg
    assert "3 of 10 runs deleted, 7 remain" in info.value.msg
    assert info.value.details["deleted"] == 3 and info.value.details["remaining"] == 7
    assert client.calls.count("runs/delete") == 3


def test_lost_server_and_fail_fast_stop_with_partial_progress():
    # "gone": the client's fail-fast after consecutive failures (HTTP 500 included, see test_tracking_deadline).
    for error in (TrackingError("refused", "connection"), TrackingError("not sent", "gone"),
                  TrackingError("HTTP 503", "http", 503)):
        client = FakeClient(["%032x" % index for index in range(10)], fail_after=4, error=error)
        with pytest.raises(MaintenanceError) as info:
            job.run_cleanup(PARAMS, client)
        assert "4 of 10 runs deleted, 6 remain" in info.value.msg, info.value.msg
        assert client.calls.count("runs/delete") == 5


def test_search_at_the_deadline_says_nothing_changed():
    class Expired(FakeClient):
        def search_runs(self, *args, **kwargs):
            raise TrackingError("POST runs/search: no complete answer before the task's deadline of 10s", "deadline")

    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup(PARAMS, Expired([]))
    assert "stopped at its deadline while searching the runs; nothing was changed" in info.value.msg


def test_a_single_server_error_is_a_per_run_failure():
    client = FakeClient(["%032x" % index for index in range(10)], fail_after=8, error=TrackingError("HTTP 500", "http", 500))
    with pytest.raises(MaintenanceError) as info:
        job.run_cleanup(PARAMS, client)
    assert "2 runs could not be changed" in info.value.msg and "8 runs deleted" in info.value.msg
    assert client.calls.count("runs/delete") == 10
