# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers shared by every module: retries, durations, bounded concurrency, timing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import random
import re
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait


class MaintenanceError(Exception):
    """An expected failure with a message fit for ``fail_json(msg=...)``."""

    def __init__(self, msg, **details):
        super(MaintenanceError, self).__init__(msg)
        self.msg = msg
        self.details = details


def backoff_delays(retries, delay, max_delay, rng=random.random):
    """Full-jitter exponential backoff: the sleeps before each retry."""
    return [rng() * min(max_delay, delay * (2 ** attempt)) for attempt in range(retries)]


def jittered_backoff(retries=3, delay=0.5, max_delay=8.0, should_retry=None):
    """Decorator: retry the call when ``should_retry(exc)`` is true, sleeping with full jitter.

    ``retries`` may also be given per call through a ``retries`` attribute of the first
    argument (the client instance), so one decorated method serves callers that want no retry.
    """

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            attempts = getattr(args[0], "retries", retries) if args else retries
            for sleep_for in backoff_delays(attempts, delay, max_delay) + [None]:
                try:
                    return func(*args, **kwargs)
                except Exception as exc:  # pylint: disable=broad-except
                    if sleep_for is None or should_retry is None or not should_retry(exc):
                        raise
                    time.sleep(sleep_for)
            raise AssertionError("unreachable")

        return wrapper

    return decorator


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    """Seconds in a duration written the way ``mlflow gc --older-than`` takes it: ``30d``, ``1d2h``, ``90m``.

    A bare number is seconds. Raises ValueError with a readable message on anything else,
    including negative ages.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative: %r" % (text,))
        return float(text)
    value = str(text).strip().lower().replace(" ", "")
    if value.startswith("-"):
        raise ValueError("a duration cannot be negative: %r" % (text,))
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    if not value or _DURATION_PART.sub("", value):
        raise ValueError(
            "%r is not a duration; write it like mlflow gc's --older-than: 30d, 12h, 1d2h, 45m, 2w" % (text,)
        )
    return float(sum(float(n) * _DURATION_SECONDS[unit] for n, unit in _DURATION_PART.findall(value)))


def bounded_parallel_map(func, items, concurrency):
    """Apply ``func`` to each item with at most ``concurrency`` calls in flight.

    Yields ``(item, result, error)`` in completion order. Items are pulled from the iterable
    only as slots free up, so an iterator over millions of items never sits in memory whole.
    ``error`` is the exception the call raised, or None.
    """
    concurrency = max(1, int(concurrency))
    iterator = iter(items)
    if concurrency == 1:
        for item in iterator:
            try:
                yield item, func(item), None
            except Exception as exc:  # pylint: disable=broad-except
                yield item, None, exc
        return
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        in_flight = {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < concurrency:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                in_flight[pool.submit(func, item)] = item
            if not in_flight:
                return
            done, _pending = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                error = future.exception()
                yield item, (None if error else future.result()), error


class Stopwatch:
    """Wall-clock seconds since creation, rounded for results."""

    def __init__(self):
        self.started = time.monotonic()

    def elapsed(self):
        return round(time.monotonic() - self.started, 3)


class DeadlineExceeded(MaintenanceError):
    """The task's wall-clock deadline passed; ``details`` carry what was done so far."""


class Deadline:
    """A wall-clock budget for a whole task, on top of per-request timeouts.

    ``seconds`` of None or 0 means no deadline. ``remaining()`` caps a per-request timeout so that a
    server trickling bytes cannot hold the task past its deadline; ``check(what)`` raises
    DeadlineExceeded once the budget is spent.
    """

    def __init__(self, seconds=None, clock=time.monotonic):
        self.seconds = float(seconds) if seconds else None
        self._clock = clock
        self.started = clock()

    def expired(self):
        return self.seconds is not None and self._clock() - self.started >= self.seconds

    def remaining(self, cap=None):
        """Seconds left (at least a small positive floor), or ``cap`` when there is no deadline."""
        if self.seconds is None:
            return cap
        left = max(0.05, self.seconds - (self._clock() - self.started))
        return left if cap is None else min(cap, left)

    def check(self, what="the task", **details):
        if self.expired():
            raise DeadlineExceeded(
                "%s stopped at its deadline of %ss; a rerun continues where it stopped" % (what, int(self.seconds)),
                **details)
