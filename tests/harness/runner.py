# -*- coding: utf-8 -*-
"""Run the collection through real Ansible: one module task, or a playbook, and read the results."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")
BIN_DIR = os.path.dirname(sys.executable)


def collections_path():
    """A directory holding ansible_collections/mlflowops/maintenance -> this checkout."""
    digest = hashlib.sha256(REPO_ROOT.encode()).hexdigest()[:12]
    base = os.path.join(tempfile.gettempdir(), "mlflowops-collection-%s-%d" % (digest, os.getuid()))
    namespace_dir = os.path.join(base, "ansible_collections", "mlflowops")
    os.makedirs(namespace_dir, exist_ok=True)
    link = os.path.join(namespace_dir, "maintenance")
    if os.path.realpath(link) != REPO_ROOT:
        tmp_link = "%s.%d" % (link, os.getpid())
        os.symlink(REPO_ROOT, tmp_link)
        os.replace(tmp_link, link)
    return base


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_DIR,
        "ANSIBLE_CALLBACKS_ENABLED": "result_file",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": BIN_DIR + os.pathsep + env.get("PATH", ""),
    })
    env.update(extra or {})
    return env


class AnsibleRun:
    def __init__(self, rc, stdout, stderr, records, duration):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.records = records
        self.duration = duration

    def task(self, name=None, action=None):
        """The last record of the named task (or action)."""
        for record in reversed(self.records):
            if (name is None or record["task"] == name) and (action is None or record["action"].endswith(action)):
                return record
        raise KeyError("no result for task %r / action %r in:\n%s\n%s" % (name, action, self.stdout, self.stderr))

    def role_task(self, name):
        """The last record of a role's task ``name`` (records carry the role prefix, ``role : name``)."""
        for record in reversed(self.records):
            if record["task"] == name or record["task"].endswith(" : " + name):
                return record
        raise KeyError("no task %r in:\n%s" % (name, self.stdout[-4000:]))

    def recap(self):
        """{host: {ok, changed, unreachable, failed, ...}} from the PLAY RECAP of the run's stdout."""
        hosts = {}
        for line in self.stdout.split("PLAY RECAP")[-1].splitlines():
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if match:
                hosts[match.group(1)] = dict((key, int(value)) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2)))
        return hosts


def run_playbook(playbook, inventory="localhost,", extra_vars=None, check=False, diff=False, verbosity=0,
                 env=None, timeout=900, limit=None, forks=None, cwd=None):
    result_file = tempfile.NamedTemporaryFile(prefix="mlflowops-results-", suffix=".jsonl", delete=False)
    result_file.close()
    argv = [os.path.join(BIN_DIR, "ansible-playbook"), "-i", inventory, playbook]
    all_vars = {"ansible_python_interpreter": sys.executable}
    all_vars.update(extra_vars or {})
    # ansible_python_interpreter=None: not pinned (the inventory, a set_fact or ANSIBLE_PYTHON_INTERPRETER decides)
    all_vars = dict((key, value) for key, value in all_vars.items() if value is not None)
    vars_file = tempfile.NamedTemporaryFile("w", prefix="mlflowops-vars-", suffix=".json", delete=False)
    json.dump(all_vars, vars_file)
    vars_file.close()
    argv += ["-e", "@" + vars_file.name]
    if inventory.endswith(","):
        argv += ["-c", "local"]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if verbosity:
        argv.append("-" + "v" * verbosity)
    if limit:
        argv += ["--limit", limit]
    if forks:
        argv += ["--forks", str(forks)]
    started = time.monotonic()
    try:
        completed = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                                   env=ansible_env(dict(env or {}, MLFLOWOPS_RESULT_FILE=result_file.name)))
        with open(result_file.name) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    finally:
        os.unlink(result_file.name)
        os.unlink(vars_file.name)
    return AnsibleRun(completed.returncode, completed.stdout, completed.stderr, records, time.monotonic() - started)


def run_module(module, args, check=False, diff=False, verbosity=0, env=None, timeout=900, task_vars=None,
               module_env=None):
    """Run one task of ``mlflowops.maintenance.<module>`` on localhost; returns (result dict, AnsibleRun).

    ``env`` is the environment of ansible-playbook; ``module_env`` the task's ``environment:``.
    """
    name = module if "." in module else "mlflowops.maintenance." + module
    task = {"name": "under test", name: args}
    if task_vars:
        task["vars"] = task_vars
    if module_env:
        task["environment"] = module_env
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]
    with tempfile.NamedTemporaryFile("w", prefix="mlflowops-play-", suffix=".json", delete=False) as handle:
        json.dump(play, handle)
    try:
        run = run_playbook(handle.name, check=check, diff=diff, verbosity=verbosity, env=env, timeout=timeout)
    finally:
        os.unlink(handle.name)
    record = run.task("under test")
    result = dict(record["result"])
    result["_status"] = record["status"]
    return result, run
