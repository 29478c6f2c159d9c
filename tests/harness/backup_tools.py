# -*- coding: utf-8 -*-
"""Helpers for the backup/restore tests: a REST metric writer, a backup under writes, a killable play."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from harness.runner import BIN_DIR, ansible_env
from harness.services import api


class MetricWriter(threading.Thread):
    """Logs metrics to one run through the tracking server's REST API until stopped.

    ``committed`` holds ``(key, step, monotonic time the call returned)`` of every acknowledged write.
    """

    def __init__(self, url, run_id, key="writer_metric"):
        super().__init__(daemon=True)
        self.url = url
        self.run_id = run_id
        self.key = key
        self.committed = []
        self.errors = []
        self._stop_event = threading.Event()

    def run(self):
        step = 0
        while not self._stop_event.is_set():
            try:
                api(self.url, "runs/log-metric", {"run_id": self.run_id, "key": self.key, "value": float(step),
                                                  "timestamp": int(time.time() * 1000), "step": step})
                self.committed.append((self.key, step, time.monotonic()))
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(str(exc))
            step += 1

    def stop(self):
        self._stop_event.set()
        self.join(30)

    def committed_before(self, moment):
        return set((key, step) for key, step, when in self.committed if when < moment)


def make_blob_sqlite(path, megabytes, wal=False):
    """A SQLite file of about ``megabytes`` of incompressible rows (fast to build)."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS runs (run_uuid TEXT PRIMARY KEY)")  # db_restore wants an MLflow store
    conn.execute("INSERT INTO alembic_version VALUES ('test')")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO blobs (data) SELECT randomblob(65536) FROM n", (megabytes * 16,))
    conn.commit()
    conn.close()
    return path


def start_play(module, args):
    """Start ansible-playbook running one task of the module, in its own process group. Returns the Popen."""
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "under test", "mlflowops.maintenance." + module: args}]}]
    handle = tempfile.NamedTemporaryFile("w", prefix="mlflowops-play-", suffix=".json", delete=False)
    json.dump(play, handle)
    handle.close()
    argv = [os.path.join(BIN_DIR, "ansible-playbook"), "-i", "localhost,", "-c", "local", handle.name,
            "-e", "ansible_python_interpreter=%s" % sys.executable]
    return subprocess.Popen(argv, env=ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def descendants(pid):
    """Every live process whose parent chain leads to ``pid`` (it may have left the process group)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc):
    """SIGKILL the play's process group and every descendant, deepest (the module) included."""
    victims = descendants(proc.pid)
    for pid in reversed(victims):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)
    return victims


def run_tasks(tasks, env=None, verbosity=0, timeout=900):
    """Run several module tasks in one ansible-playbook (one start-up); failures do not stop the play.

    ``tasks``: list of ``(name, module, args)`` or ``(name, module, args, extra task keywords)``, e.g.
    ``{"check_mode": True}``. Returns ``({name: result with "_status"}, AnsibleRun)``.
    """
    from harness.runner import run_playbook  # pylint: disable=import-outside-toplevel
    play_tasks = []
    for task in tasks:
        name, module, args = task[:3]
        entry = {"name": name, "mlflowops.maintenance." + module: args, "ignore_errors": True}
        if len(task) > 3:
            entry.update(task[3])
        play_tasks.append(entry)
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}]
    with tempfile.NamedTemporaryFile("w", prefix="mlflowops-play-", suffix=".json", delete=False) as handle:
        json.dump(play, handle)
    try:
        run = run_playbook(handle.name, env=env, verbosity=verbosity, timeout=timeout)
    finally:
        os.unlink(handle.name)
    results = {}
    for task in tasks:
        record = run.task(task[0])
        result = dict(record["result"])
        result["_status"] = record["status"]
        results[task[0]] = result
    return results, run


class UnderWrites:
    """What ``backup_and_restore_under_writes`` saw: results, the play, the writer's run and the sampler."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def backup_and_restore_under_writes(server, exp_id, password, tools, dest, restore_args):
    """db_backup (verify: restore) then db_restore of ``server``'s store, at -vvv, while a client keeps logging
    metrics through the tracking server and /proc is sampled for ``password`` (the server's own process, which
    the harness starts with the URI in its argv, is excluded)."""
    from harness.proc_sampler import ProcSampler  # pylint: disable=import-outside-toplevel
    writer_run = api(server.url, "runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    writer = MetricWriter(server.url, writer_run)
    sampler = ProcSampler(password, tools, exclude_pgids=[server.process.pid])
    writer.start()
    sampler.start()
    time.sleep(1.0)
    started = time.monotonic()
    try:
        results, run = run_tasks([
            ("backup", "db_backup", {"backend_store_uri": server.backend_store_uri, "dest": dest,
                                     "verify": "restore", "force": True}),
            ("restore", "db_restore", dict(restore_args, backend_store_uri=server.backend_store_uri, src=dest)),
        ], verbosity=3)
    finally:
        writer.stop()
        sampler.stop()
    return UnderWrites(results=results, run=run, writer=writer, writer_run=writer_run, sampler=sampler,
                       started=started)
