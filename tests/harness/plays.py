# -*- coding: utf-8 -*-
"""Several module tasks in one ansible-playbook run (one Ansible start-up instead of one per task)."""

import json
import os
import tempfile

from harness.runner import run_playbook


def play(*tasks, **run_kwargs):
    """``(name, module, args[, task keywords])`` per task, each with ignore_errors; returns ({name: result}, run).

    Each result carries ``_status`` (``ok``/``failed``) like harness.runner.run_module's. ``run_kwargs`` go to
    harness.runner.run_playbook.
    """
    body = []
    for task in tasks:
        entry = {"name": task[0], "mlflowops.maintenance." + task[1]: task[2], "ignore_errors": True}
        entry.update(task[3] if len(task) > 3 else {})
        body.append(entry)
    with tempfile.NamedTemporaryFile("w", prefix="mlflowops-play-", suffix=".json", delete=False) as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": body}], handle)
    try:
        run = run_playbook(handle.name, **run_kwargs)
    finally:
        os.unlink(handle.name)
    return dict((task[0], dict(run.task(task[0])["result"], _status=run.task(task[0])["status"])) for task in tasks), run


def module_play(module):
    """play() for tasks of one module: ``(name, args[, task keywords])`` per task."""
    def play_module(*tasks, **run_kwargs):
        return play(*((task[0], module) + tuple(task[1:]) for task in tasks), **run_kwargs)
    return play_module


def write_file(path, data):
    """A file with its parent directories (artifacts written behind MLflow's back)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
