# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers shared by every module: retries, durations, bounded concurrency, timing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import random
import re
import sys
import threading
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


class Failures:
    """The result-key contract for failures: a capped list of ``{id, msg}`` (``kind`` optional) plus the count.

    ``as_result()`` gives ``failures``, ``failure_count`` and ``failures_truncated``. Thread-safe enough for
    worker threads (list appends and an int increment under the GIL are serialised by a lock here).
    """

    def __init__(self, limit=100, msg_limit=500):
        self.items = []
        self.count = 0
        self.limit = limit
        self.msg_limit = msg_limit
        self._lock = threading.Lock()

    def add(self, ident, msg, kind=None):
        item = dict(id=str(ident), msg=str(msg)[:self.msg_limit])
        if kind:
            item["kind"] = kind
        with self._lock:
            self.count += 1
            if len(self.items) < self.limit:
                self.items.append(item)

    @property
    def truncated(self):
        return self.count > len(self.items)

    def first(self):
        """One line about the first failure, for a ``msg``."""
        return "%s: %s" % (self.items[0]["id"], self.items[0]["msg"]) if self.items else ""

    def as_result(self):
        return dict(failures=list(self.items), failure_count=self.count, failures_truncated=self.truncated)


def run_bounded(func, seconds, name="mlflowops-request"):
    """``func()`` in a daemon thread, waited for at most ``seconds``; ``(finished, result, error)``.

    With ``seconds`` None, calls ``func`` directly. An unfinished call is abandoned: its thread ends with
    the process, and its socket with it.
    """
    if seconds is None:
        try:
            return True, func(), None
        except Exception as exc:  # pylint: disable=broad-except
            return True, None, exc
    outcome = {}

    def target():
        try:
            outcome["result"] = func()
        except BaseException as exc:  # pylint: disable=broad-except
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=name)
    worker.daemon = True
    worker.start()
    worker.join(max(0.0, seconds))
    if worker.is_alive():
        return False, None, None
    return True, outcome.get("result"), outcome.get("error")


def _exit_now():
    """Leave the process once the result is printed, without waiting for threads stuck in a network call."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(1)  # pylint: disable=protected-access


def run_with_deadline(func, deadline, progress=None, hard_exit=False, what="the task", describe=None):
    """Run ``func()`` and return its value; raise DeadlineExceeded if it has not ended by ``deadline``.

    The code inside checks the deadline itself and stops cleanly with its progress; this is the backstop for a
    call stuck in the network (a server trickling bytes never trips a per-read timeout). ``progress()`` gives the
    partial result for the error and ``describe(details)`` its words. With ``hard_exit``, a job thread still stuck
    at interpreter exit does not hold the process (it exits once the module's result is printed).
    """
    if deadline is None or deadline.seconds is None:
        return func()
    finished, value, error = run_bounded(func, deadline.remaining() + 1.0, name="mlflowops-job")
    if not finished:
        if hard_exit and hasattr(threading, "_register_atexit"):
            threading._register_atexit(_exit_now)  # pylint: disable=protected-access
        details = progress() if progress is not None else {}
        done = describe(details) if describe is not None else "what was done before it is kept"
        raise DeadlineExceeded("%s stopped at its deadline of %ss; %s; a rerun continues where it stopped"
                               % (what, int(deadline.seconds), done), **details)
    if error is not None:
        raise error
    return value
