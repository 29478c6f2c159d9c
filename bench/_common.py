# -*- coding: utf-8 -*-
"""What the benchmarks share: timing, medians, the measured process tree, one-task plays, the figures' JSON."""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from harness.runner import ansible_env, BIN_DIR  # noqa: E402  pylint: disable=wrong-import-position


def timed(func):
    """``(seconds, value)`` of one call of ``func``."""
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def median_of(reps, func, cleanup=None):
    """``(median seconds, every time, last value)`` of ``reps`` calls; ``cleanup(value)`` after each."""
    times, value = [], None
    for _rep in range(reps):
        elapsed, value = timed(func)
        times.append(elapsed)
        if cleanup:
            cleanup(value)
    return statistics.median(times), times, value


def interleaved_medians(reps, candidates):
    """``[(name, median seconds)]`` of candidates ``(name, func, cleanup)`` run round-robin: every rep runs each
    candidate once, in order, so a burst of outside load lands on all of them alike rather than on one row."""
    times = dict((name, []) for name, _func, _cleanup in candidates)
    for _rep in range(reps):
        for name, func, cleanup in candidates:
            elapsed, value = timed(func)
            times[name].append(elapsed)
            if cleanup:
                cleanup(value)
    return [(name, statistics.median(times[name])) for name, _func, _cleanup in candidates]


def medians(rows):
    """{key: median over the rows} for rows of figures that all have the same keys."""
    return dict((key, statistics.median(row[key] for row in rows)) for key in rows[0])


def write_figures(figures, path=None):
    """Write the figures to ``path`` (when given) and print them as the last line: one JSON object."""
    if path:
        with open(path, "w") as handle:
            json.dump(figures, handle, indent=2)
    print(json.dumps(figures, sort_keys=True))


class TreeMemory:
    """Peak summed RSS of a process and its descendants, and of the biggest single process."""

    def __init__(self, pid, interval=0.05):
        import psutil  # pylint: disable=import-outside-toplevel
        self.psutil = psutil
        self.pid = pid
        self.interval = interval
        self.peak_tree = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        psutil = self.psutil
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
                sizes = []
                for proc in procs:
                    try:
                        sizes.append(proc.memory_info().rss)
                    except psutil.Error:
                        pass
                self.peak_tree = max(self.peak_tree, sum(sizes))
                self.peak_single = max([self.peak_single] + sizes)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def stop(self):
        self._stop.set()
        self.thread.join()


def run_measured(argv, env, timeout=7200):
    """``(wall seconds, TreeMemory, stdout)`` of a command that must succeed."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(process.pid)
    out, err = process.communicate(timeout=timeout)
    wall = time.monotonic() - started
    memory.stop()
    if process.returncode != 0:
        raise RuntimeError("%s failed (%s):\n%s\n%s" % (argv[0], process.returncode, out[-3000:], err[-3000:]))
    return wall, memory, out


def play_measured(module, args, prefix="mlflowops-bench"):
    """One task of ``mlflowops.maintenance.<module>`` through ansible-playbook, measured; it must not fail.

    Returns ``(wall seconds, TreeMemory)``.
    """
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": module, "mlflowops.maintenance." + module: args}]}]
    path = "/tmp/%s-%s.json" % (prefix, uuid.uuid4().hex[:8])
    with open(path, "w") as handle:
        json.dump(play, handle)
    try:
        argv = [os.path.join(BIN_DIR, "ansible-playbook"), "-i", "localhost,", "-c", "local", path,
                "-e", "ansible_python_interpreter=%s" % sys.executable]
        wall, memory, out = run_measured(argv, ansible_env())
    finally:
        os.unlink(path)
    assert "failed=0" in out, out[-2000:]
    return wall, memory
