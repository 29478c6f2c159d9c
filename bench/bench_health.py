# -*- coding: utf-8 -*-
"""Benchmark: the health playbook over a 20-host inventory, and server_info's own run time against
a baseline that imports mlflow and uses MlflowClient.

    .venv/bin/python bench/bench_health.py [--servers 3] [--hosts 20] [--forks 10] [--repeat 7]

1. Starts --servers live MLflow servers (SQLite) on loopback.
2. Runs playbooks/health.yml over --hosts local hosts (ansible_connection=local), each pointing at one
   of the servers, with --forks; reports the wall time and the wall time per host (median of --repeat).
3. Times one module run in a fresh interpreter, as Ansible runs it (server_info with its JSON args),
   against the baseline in a fresh interpreter: ``import mlflow``, MlflowClient.search_experiments,
   GET /health and /version, psutil resources. Reports medians and the ratio (target < 0.30).
4. Per-task time through ansible-playbook: a small callback plugin (written to a temp directory and
   enabled for the playbook runs of step 2) records, per host, when each task started and ended on
   that host; reports the median per-host time of every task of the role (the server_info task is
   what step 3 times outside Ansible).
The last line of the output is one JSON object with every figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness.runner import CALLBACK_DIR, collections_path, run_playbook  # noqa: E402  pylint: disable=wrong-import-position
from harness.services import MlflowServer  # noqa: E402  pylint: disable=wrong-import-position

BASELINE = r"""
import sys, json, psutil, requests
import mlflow
from mlflow.tracking import MlflowClient
uri = sys.argv[1]
client = MlflowClient(tracking_uri=uri)
client.search_experiments(max_results=1)
health = requests.get(uri + "/health", timeout=10).text
version = requests.get(uri + "/version", timeout=10).text
print(json.dumps(dict(health=health, version=version, cpu=psutil.cpu_percent(interval=0.2),
                      memory=psutil.virtual_memory().percent, disk=psutil.disk_usage("/").percent)))
"""


TASK_TIMER = r'''
# Bench-only callback: per-host start and end of every task, one JSON line each, to $MLFLOWOPS_TASK_TIMES.
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.started = {}

    def v2_runner_on_start(self, host, task):
        self.started[(host.get_name(), task._uuid)] = time.time()

    def _done(self, result, status):
        key = (result._host.get_name(), result._task._uuid)
        started = self.started.pop(key, None)
        if started is None:
            return
        with open(os.environ["MLFLOWOPS_TASK_TIMES"], "a") as handle:
            handle.write(json.dumps(dict(host=key[0], task=result._task.get_name(), action=result._task.action,
                                         status=status, seconds=time.time() - started)) + "\n")

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")
'''


def task_timer_env(workdir):
    """Environment for run_playbook that adds the task_timer callback next to the harness's result_file."""
    plugins = os.path.join(workdir, "callback_plugins")
    os.makedirs(plugins, exist_ok=True)
    with open(os.path.join(plugins, "task_timer.py"), "w") as handle:
        handle.write(TASK_TIMER)
    times = os.path.join(workdir, "task-times.jsonl")
    return times, {"ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join([CALLBACK_DIR, plugins]),
                   "ANSIBLE_CALLBACKS_ENABLED": "result_file,task_timer", "MLFLOWOPS_TASK_TIMES": times}


def per_task_medians(path):
    """{task name: {median per-host seconds, hosts timed, status counts}} from the task_timer lines."""
    by_task = {}
    with open(path) as handle:
        for line in handle:
            entry = json.loads(line)
            by_task.setdefault(entry["task"], []).append(entry)
    out = {}
    for task, entries in by_task.items():
        ran = [e["seconds"] for e in entries if e["status"] != "skipped"]
        out[task] = dict(action=entries[0]["action"], median_s_per_host=round(statistics.median(ran), 3) if ran else None,
                         max_s_per_host=round(max(ran), 3) if ran else None,
                         results=len(entries), skipped=sum(1 for e in entries if e["status"] == "skipped"))
    return out


def timed(argv, env=None):
    started = time.monotonic()
    completed = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=120)
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError("%s failed: %s %s" % (argv[:3], completed.stdout[-500:], completed.stderr[-2000:]))
    return elapsed, completed.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    servers = [MlflowServer().start() for _index in range(args.servers)]
    workdir = tempfile.mkdtemp(prefix="mlflowops-bench-health-")
    try:
        inventory = os.path.join(workdir, "inventory.json")
        hosts = dict(("host%02d" % index, {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "mlflow_tracking_uri": servers[index % len(servers)].url,
        }) for index in range(args.hosts))
        with open(inventory, "w") as handle:
            json.dump({"all": {"hosts": hosts}}, handle)

        playbook = os.path.join(REPO, "playbooks", "health.yml")
        extra = {"health_thresholds": {"cpu_percent": 100, "memory_percent": 100, "disk_percent": 100,
                                       "latency_ms": 60000}}
        play_times = []
        times_file, timer_env = task_timer_env(workdir)
        for _round in range(args.repeat):
            run = run_playbook(playbook, inventory=inventory, extra_vars=extra, forks=args.forks, env=timer_env)
            if run.rc != 0:
                raise RuntimeError(run.stdout[-3000:])
            probes = [r for r in run.records if r["action"].endswith("server_info")]
            assert len(probes) == args.hosts and all(r["result"].get("healthy") for r in probes), run.stdout[-3000:]
            play_times.append(run.duration)
        tasks = per_task_medians(times_file)
        probe_task = [name for name, figures in tasks.items() if figures["action"].endswith("server_info")]
        assert probe_task and tasks[probe_task[0]]["results"] == args.hosts * args.repeat, tasks

        env = dict(os.environ, PYTHONPATH=collections_path())
        args_file = os.path.join(workdir, "args.json")
        with open(args_file, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": {"tracking_uri": servers[0].url}}, handle)
        module_argv = [sys.executable, "-m", "ansible_collections.mlflowops.maintenance.plugins.modules.server_info",
                       args_file]
        baseline_argv = [sys.executable, "-c", BASELINE, servers[0].url]
        timed(module_argv, env)
        timed(baseline_argv)  # warm the page cache for both before measuring
        module_times, baseline_times = [], []
        for _round in range(args.repeat):
            elapsed, out = timed(module_argv, env)
            assert json.loads(out)["server"]["api_ok"], out
            module_times.append(elapsed)
            elapsed, _out = timed(baseline_argv)
            baseline_times.append(elapsed)

        play = statistics.median(play_times)
        module = statistics.median(module_times)
        baseline = statistics.median(baseline_times)
        probe = tasks[probe_task[0]]["median_s_per_host"]
        for name, figures in sorted(tasks.items()):
            print("task %-60s median %.3f s per host (%d results, %d skipped)" % (
                name, figures["median_s_per_host"] or 0.0, figures["results"], figures["skipped"]))
        print(json.dumps({
            "hosts": args.hosts, "forks": args.forks, "servers": args.servers, "repeat": args.repeat,
            "playbook_wall_s_median": round(play, 2),
            "playbook_wall_per_host_s": round(play / args.hosts, 3),
            "module_run_s_median": round(module, 3),
            "baseline_mlflowclient_s_median": round(baseline, 3),
            "module_over_baseline": round(module / baseline, 3),
            "target": "< 0.30",
            "server_info_task_s_per_host_median": probe,
            "server_info_task_over_module_run": round(probe / module, 3) if probe else None,
            "per_task": tasks,
        }, sort_keys=True))
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
