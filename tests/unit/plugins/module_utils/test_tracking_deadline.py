# -*- coding: utf-8 -*-
"""TrackingClient's wall-clock deadline and fail-fast, against loopback fault servers."""

import time

import pytest

from harness.faults import ErrorServer, TrickleServer, refused_url

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, DeadlineExceeded, run_bounded
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import (
    RequestDeadlineExceeded,
    TrackingClient,
    TrackingError,
    is_transport_failure,
    request_timeout,
)


@pytest.mark.parametrize("mode", ["all", "body"])
def test_trickling_server_stops_at_the_deadline(mode):
    with TrickleServer(interval=0.2, mode=mode) as server:
        client = TrackingClient(server.url, timeout=1, retries=0, deadline=Deadline(2))
        started = time.monotonic()
        with pytest.raises(RequestDeadlineExceeded) as info:
            client.post("runs/search", {"experiment_ids": ["0"]})
        elapsed = time.monotonic() - started
        assert server.bytes_sent >= 3, "the server trickled, so a per-read timeout of 1 s never tripped"
    assert 1.5 <= elapsed < 3.5
    assert isinstance(info.value, DeadlineExceeded)
    assert info.value.kind == "deadline"
    assert "deadline of 2s" in info.value.msg


def test_expired_deadline_sends_nothing():
    with ErrorServer(status=200) as server:
        deadline = Deadline(1, clock=iter([0.0] + [5.0] * 10).__next__)
        client = TrackingClient(server.url, retries=0, deadline=deadline)
        with pytest.raises(RequestDeadlineExceeded):
            client.get("experiments/search")
        assert server.connections == 0


def test_no_deadline_calls_directly_and_timeouts_are_capped():
    assert run_bounded(lambda: 42, None) == (True, 42, None)
    finished, result, error = run_bounded(lambda: 1 / 0, 5)
    assert finished and result is None and isinstance(error, ZeroDivisionError)
    assert run_bounded(lambda: time.sleep(2), 0.1)[0] is False
    assert request_timeout(30, None) == (30.0, 30.0)
    assert request_timeout(30, Deadline(0)) == (30.0, 30.0)
    assert request_timeout(30, Deadline(5))[0] <= 5.0


def test_fail_fast_after_consecutive_transport_failures():
    client = TrackingClient(refused_url(), retries=0, fail_fast_after=3)
    for _attempt in range(3):
        with pytest.raises(TrackingError) as info:
            client.get("experiments/get", experiment_id="1")
        assert info.value.kind == "connection"
    started = time.monotonic()
    with pytest.raises(TrackingError) as info:
        client.get("experiments/get", experiment_id="1")
    assert info.value.kind == "gone"
    assert "failed 3 calls in a row" in info.value.msg
    assert "connection refused" in info.value.msg
    assert time.monotonic() - started < 0.5
    assert is_transport_failure(info.value)


def test_server_errors_count_and_an_answer_resets_the_count():
    with ErrorServer(status=503) as failing:
        client = TrackingClient(failing.url, retries=1, fail_fast_after=2)
        with pytest.raises(TrackingError) as info:
            client.get("experiments/search")
        assert info.value.status == 503
        assert failing.connections == 2, "one retry"
        assert client.consecutive_failures == 1
        client._record(TrackingError("404", "http", 404))  # pylint: disable=protected-access
        assert client.consecutive_failures == 0
        for _attempt in range(2):
            with pytest.raises(TrackingError):
                client.get("experiments/search")
        with pytest.raises(TrackingError) as info:
            client.get("experiments/search")
        assert info.value.kind == "gone"


def test_attempt_limit_bounds_one_probe_without_a_deadline():
    with TrickleServer(interval=0.2) as server:
        client = TrackingClient(server.url, timeout=1, retries=0, attempt_limit=1)
        started = time.monotonic()
        with pytest.raises(TrackingError) as info:
            client.timed_request("GET", "/health")
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0
    assert info.value.kind == "timeout" and not isinstance(info.value, DeadlineExceeded)
    assert "no complete answer within the timeout of 1s" in info.value.msg
