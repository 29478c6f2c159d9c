# -*- coding: utf-8 -*-
"""Host preparation (roles/prepare, playbooks/prepare.yml): the modules' requirements installed into a virtualenv
with ansible.builtin.pip, check mode creating nothing, an unchanged second run, the rest of the run using the
prepared interpreter; and every module failing with one clear message on a host whose Python lacks a library."""

import json
import os
import platform
import re
import subprocess
import sys

import pytest

from harness.runner import REPO_ROOT, run_playbook

pytestmark = [pytest.mark.integration]
PREPARE = os.path.join(REPO_ROOT, "playbooks", "prepare.yml")
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
IMPORTS = "import requests, psutil, boto3, zstandard, psycopg2, pymysql"


def _changed(run):
    """The localhost's changed count from the PLAY RECAP."""
    match = re.search(r"localhost\s+:.*?changed=(\d+)", run.stdout.split("PLAY RECAP")[-1])
    assert match, run.stdout[-2000:]
    return int(match.group(1))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Check mode on a fresh host, then the real run followed by a play that uses the prepared interpreter."""
    root = tmp_path_factory.mktemp("prepare")
    venv = str(root / "venv")
    extra = {"prepare_venv": venv, "prepare_python": BASE_PYTHON}
    check = run_playbook(PREPARE, extra_vars=extra, check=True, timeout=300)
    check.left_venv = os.path.exists(venv)
    playbook = root / "prepare-then-use.yml"
    playbook.write_text(json.dumps([
        {"ansible.builtin.import_playbook": PREPARE},
        {"name": "use it", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "interpreter", "ansible.builtin.setup": {"gather_subset": ["!all", "!min", "python"]}},
            {"name": "probe", "mlflowops.maintenance.server_info": {"tracking_uri": "http://127.0.0.1:9", "timeout": 2}},
        ]}]))
    # Not pinned as an extra var (the highest precedence): the role's fact decides, as with a real inventory.
    first = run_playbook(str(playbook), extra_vars=dict(extra, ansible_python_interpreter=None), timeout=600,
                         env={"ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    return venv, extra, check, first


def test_check_mode_creates_nothing(prepared):
    venv, _extra, check, _first = prepared
    assert check.rc == 0, check.stdout[-3000:] + check.stderr[-2000:]
    assert _changed(check) >= 1, "check mode predicts the installation"
    assert not check.left_venv


def test_installs_into_a_virtualenv_and_the_run_uses_it(prepared):
    venv, _extra, _check, first = prepared
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
    python = os.path.join(venv, "bin", "python")
    # The libraries import with the virtualenv's Python, which is not the test's Python.
    subprocess.run([python, "-c", IMPORTS], check=True, timeout=120)
    assert os.path.realpath(os.path.dirname(python)) != os.path.realpath(os.path.dirname(sys.executable))
    facts = first.task("interpreter")["result"]["ansible_facts"]
    assert facts["ansible_python"]["executable"] == python
    probe = first.task("probe")
    # It ran in the virtualenv: requests for the API (the server is down: a probe result, not an import error),
    # psutil for the host's resources.
    assert probe["status"] == "ok" and not probe["result"]["healthy"], probe
    assert probe["result"]["resources"], probe


def test_second_run_and_check_mode_change_nothing(prepared):
    venv, extra, _check, _first = prepared
    listing = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "freeze"], check=True,
                             capture_output=True, text=True).stdout
    for check in (True, False):
        run = run_playbook(PREPARE, extra_vars=extra, check=check, timeout=300)
        assert run.rc == 0, run.stdout[-3000:]
        assert _changed(run) == 0, run.stdout[-3000:]
    assert subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "freeze"], check=True,
                          capture_output=True, text=True).stdout == listing


def test_bad_options_fail_before_anything(tmp_path):
    run = run_playbook(PREPARE, extra_vars={"prepare_venv": "relative/venv"}, timeout=120)
    assert run.rc != 0 and "prepare_venv must be an absolute path" in run.stdout
    run = run_playbook(PREPARE, extra_vars={"prepare_venv": str(tmp_path / "v"), "prepare_mode": "conda"}, timeout=120)
    assert run.rc != 0 and "prepare_mode" in run.stdout
    assert not os.path.exists(str(tmp_path / "v"))


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A Python without any of the modules' third-party libraries."""
    venv = str(tmp_path_factory.mktemp("bare") / "venv")
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = os.path.join(venv, "bin", "python")
    assert subprocess.run([python, "-c", "import requests"], capture_output=True, check=False).returncode != 0
    return python


MISSING = [
    ("rest", "server_info", {"tracking_uri": "http://127.0.0.1:9", "check_resources": False}, "requests"),
    ("rest-bulk", "runs_cleanup", {"tracking_uri": "http://127.0.0.1:9", "older_than": "30d"}, "requests"),
    ("store-postgres", "db_optimize", {"backend_store_uri": "postgresql://mlflow:{secret}@127.0.0.1:9/mlflow"}, "psycopg2"),
    ("store-mysql", "db_backup", {"backend_store_uri": "mysql+pymysql://mlflow:{secret}@127.0.0.1:9/mlflow",
                                  "dest": "{tmp}/store-mysql"}, "PyMySQL"),
    ("s3", "artifacts_backup", {"src": "s3://bucket/mlflow", "dest": "{tmp}/s3", "aws_secret_key": "{secret}"}, "boto3"),
]


def test_missing_library_is_one_clear_message_naming_it_and_the_host(bare_python, tmp_path):
    """One REST, two store and one S3 module run with a Python lacking their libraries (one playbook)."""
    secret = "pw-%s" % os.urandom(4).hex()
    tasks = []
    for name, module, args, _library in MISSING:
        args = dict((key, value.format(secret=secret, tmp=str(tmp_path)) if isinstance(value, str) else value)
                    for key, value in args.items())
        tasks.append({"name": name, "mlflowops.maintenance." + module: args, "ignore_errors": True})
    playbook = tmp_path / "missing.json"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    run = run_playbook(str(playbook), extra_vars={"ansible_python_interpreter": bare_python}, timeout=300)
    assert run.rc == 0, run.stdout[-3000:]
    for name, _module, _args, library in MISSING:
        record = run.task(name)
        assert record["status"] == "failed", record
        msg = record["result"]["msg"]
        expected = "Failed to import the required Python library (%s) on %s's Python %s." % (
            library, platform.node(), bare_python)
        assert msg.startswith(expected), (name, msg)
        assert "Traceback" not in msg and "module_stderr" not in record["result"], (name, record["result"])
    assert secret not in run.stdout + run.stderr + json.dumps(run.records)
    assert os.listdir(str(tmp_path)) == ["missing.json"], "nothing written before the library check"
