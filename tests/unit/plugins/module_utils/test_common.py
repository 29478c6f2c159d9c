# -*- coding: utf-8 -*-
import threading
import time

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    backoff_delays,
    bounded_parallel_map,
    parse_duration,
)


@pytest.mark.parametrize("text,seconds", [
    ("30d", 30 * 86400), ("12h", 12 * 3600), ("1d2h", 86400 + 7200), ("45m", 2700), ("2w", 14 * 86400),
    ("90s", 90), ("3600", 3600), (0, 0), ("1.5h", 5400), (" 1d 2h ", 93600),
])
def test_parse_duration_accepts_mlflow_gc_syntax(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "30x", "d30", "-1d", -5, "1d-2h", "1dd"])
def test_parse_duration_rejects_garbage_and_negatives(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_backoff_delays_are_capped_and_jittered():
    assert backoff_delays(5, 1.0, 4.0, rng=lambda: 1.0) == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_delays(3, 1.0, 4.0, rng=lambda: 0.0) == [0.0, 0.0, 0.0]


def test_bounded_parallel_map_limits_in_flight_calls_and_reports_errors():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def work(item):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        if item == 7:
            raise ValueError("seven")
        return item * 2

    pulled = []

    def source():
        for item in range(40):
            pulled.append(item)
            yield item

    results = list(bounded_parallel_map(work, source(), 4))
    assert state["peak"] <= 4
    assert sorted(item for item, _r, _e in results) == list(range(40))
    errors = [(item, str(error)) for item, _r, error in results if error]
    assert errors == [(7, "seven")]
    assert all(result == item * 2 for item, result, error in results if not error)


def test_bounded_parallel_map_pulls_lazily():
    pulled = []

    def source():
        for item in range(1000):
            pulled.append(item)
            yield item

    iterator = bounded_parallel_map(lambda x: x, source(), 3)
    next(iterator)
    assert len(pulled) <= 4
