# -*- coding: utf-8 -*-
"""Every module's main() in-process: argument validation, the family options, check mode and the failure path.

The jobs are replaced by fakes: these tests check the module layer (options, the one failure path, what reaches
the job), not the jobs themselves (unit tests of module_utils and the integration tests do that).
"""

import importlib
import os
import sqlite3
from unittest import mock

import pytest
import yaml

from harness.module_args import ModuleFailed, run_main

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

COLLECTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")
PREFIX = "ansible_collections.mlflowops.maintenance.plugins.modules."
ACTION_GROUP = yaml.safe_load(open(os.path.join(COLLECTION, "meta", "runtime.yml")))["action_groups"]["mlflow"]

# Every family option at once, as one module_defaults block would set them.
FAMILY_ARGS = dict(
    tracking_uri="http://127.0.0.1:9", username="u", password="p", validate_certs=False, timeout=5.0, retries=1,
    backend_store_uri="sqlite:////nonexistent/mlflow.db", db_password="x", db_connect_timeout=3,
    artifacts_destination="/nonexistent/artifacts", endpoint_url="http://127.0.0.1:9", region="us-east-1",
    aws_access_key="AKIA", aws_secret_key="secret", s3_retries=0, s3_connect_timeout=1.0, s3_read_timeout=1.0,
)


# The module's own required options (anything, they are not used before validation ends).
REQUIRED = dict(db_backup=dict(dest="/x"), db_restore=dict(src="/x"), artifacts_backup=dict(src="/a", dest="/b"),
                backup_info=dict(path="/x"), backup_offsite=dict(path="/x", bucket="b", namespace="h"),
                fleet_report=dict(hosts=["a"], report_dir="/x"))


def load(name):
    return importlib.import_module(PREFIX + name)


def failed(main, args, **kwargs):
    with pytest.raises(ModuleFailed) as info:
        run_main(main, args, **kwargs)
    return info.value.result


@pytest.mark.parametrize("name", ACTION_GROUP)
def test_unknown_option_fails_validation_with_duration(name):
    result = failed(load(name).main, dict(REQUIRED.get(name, {}), no_such_option=1), name=name)
    assert "Unsupported parameters" in result["msg"] and "no_such_option" in result["msg"] and "duration_s" in result


@pytest.mark.parametrize("name", ACTION_GROUP)
def test_every_family_option_is_accepted_and_checked_before_any_work(name):
    # A negative deadline fails in the base, after validation accepted every family option.
    result = failed(load(name).main, dict(FAMILY_ARGS, deadline=-1, **REQUIRED.get(name, {})), name=name)
    assert result["msg"] == "deadline must not be negative, got -1", result["msg"]


@pytest.fixture(name="sqlite_uri")
def fixture_sqlite_uri(tmp_path):
    path = str(tmp_path / "mlflow.db")
    sqlite3.connect(path).close()
    return "sqlite:///" + path


class FakeJob:
    """Records its call; returns ``result`` or raises ``error``."""

    def __init__(self, result=None, error=None):
        self.result = result if result is not None else dict(changed=False, done=0)
        self.error = error
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return dict(self.result)

    def check_mode(self):
        args, kwargs = self.calls[-1]
        if "check_mode" in kwargs:
            return kwargs["check_mode"]
        for value in args:
            if isinstance(value, bool):
                return value
            if hasattr(value, "check_mode"):
                return value.check_mode
        raise AssertionError("no check_mode reached the job: %r" % (self.calls[-1],))


def tracking_case(name, job_name, **args):
    return (name, job_name, dict(args, tracking_uri="http://127.0.0.1:9"),
            dict(tracking_targets=lambda *a, **k: []))


# What a module reads from its job's result besides passing it on.
JOB_RESULT = dict(db_backup=dict(created=False, pruned=[], removed_incomplete=[]))
READ_ONLY = ("backup_info",)  # no check mode to pass on: the job only reads

# (module, job function patched in the module's namespace, arguments, other names patched)
CASES = [
    ("artifacts_backup", "run", dict(src="/nonexistent/src", dest="/nonexistent/dest"), {}),
    ("artifacts_audit", "run", dict(tracking_uri="http://127.0.0.1:9", artifacts_destination="/nonexistent"), {}),
    ("backup_info", "run", dict(path="/nonexistent"), {}),
    ("backup_offsite", "run", dict(path="/nonexistent", bucket="b", namespace="h", backend_store_uri="SQLITE"), {}),
    ("db_backup", "run_backup", dict(dest="/nonexistent/backups", backend_store_uri="SQLITE"), {}),
    ("db_restore", "run_restore", dict(src="/nonexistent/backup.db", backend_store_uri="SQLITE"), {}),
    ("db_optimize", "optimize_sqlite", dict(backend_store_uri="SQLITE"), {}),
    ("db_schema", "run_schema", dict(backend_store_uri="SQLITE"), {}),
    ("gc", "run_gc", dict(backend_store_uri="SQLITE", artifacts_destination="/nonexistent"),
     dict(GcStore=mock.MagicMock(), ArtifactDeleter=mock.MagicMock(), gc_workspaces=lambda *a: None)),
    ("server_info", "run", dict(tracking_uri="http://127.0.0.1:9", check_resources=False), {}),
    tracking_case("runs_cleanup", "run_cleanup_in_workspaces", experiments=["1"]),
    tracking_case("traces_cleanup", "run_traces_cleanup", experiments=["1"], older_than="30d"),
    tracking_case("logged_models_cleanup", "run_logged_models_cleanup", experiments=["1"], older_than="30d"),
]


def run_case(case, sqlite_uri, job, check_mode=False):
    name, job_name, args, others = case
    module = load(name)
    args = dict((key, sqlite_uri if value == "SQLITE" else value) for key, value in args.items())
    patches = dict(others, **{job_name: job})
    with mock.patch.multiple(module, **patches):
        return run_main(module.main, args, check_mode=check_mode, name=name)


def test_the_cases_cover_the_action_group():
    assert sorted(case[0] for case in CASES) == sorted(set(ACTION_GROUP) & set(case[0] for case in CASES))
    missing = set(ACTION_GROUP) - set(case[0] for case in CASES)
    # fleet_report's work is its action plugin's (tests/unit/plugins/plugin_utils, the report role's tests).
    assert missing <= {"store_info", "fleet_report"}, "add a main() case for %s" % sorted(missing)


def test_fleet_report_without_its_action_plugin_says_where_it_runs():
    result = failed(load("fleet_report").main, dict(FAMILY_ARGS, hosts=["a"], report_dir="/x"), name="fleet_report")
    assert "runs on the controller through its action plugin" in result["msg"] and "duration_s" in result


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_check_mode_reaches_the_job_and_the_result_gets_duration(case, sqlite_uri):
    for check_mode in (True, False):
        job = FakeJob(dict(JOB_RESULT.get(case[0], {}), changed=not check_mode, done=3))
        result = run_case(case, sqlite_uri, job, check_mode=check_mode)
        assert len(job.calls) == 1
        if case[0] not in READ_ONLY:
            assert job.check_mode() is check_mode
        assert result["done"] == 3 and isinstance(result["duration_s"], float)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_job_failure_is_one_message_with_what_was_done(case, sqlite_uri):
    job = FakeJob(error=MaintenanceError("stopped midway", deleted=2, remaining=5))
    with pytest.raises(ModuleFailed) as info:
        run_case(case, sqlite_uri, job)
    result = info.value.result
    assert result["msg"] == "stopped midway" and (result["deleted"], result["remaining"]) == (2, 5)
    assert "exception" not in result or not result["exception"]
    assert "duration_s" in result


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_an_unexpected_error_is_one_line_without_traceback(case, sqlite_uri):
    job = FakeJob(error=RuntimeError("disk on fire\nsecond line"))
    with pytest.raises(ModuleFailed) as info:
        run_case(case, sqlite_uri, job)
    result = info.value.result
    assert "disk on fire" in result["msg"] and "\n" not in result["msg"]
    assert not result.get("exception")


@pytest.mark.parametrize("name,args,words", [
    ("db_backup", dict(dest="/x", retention=dict(keep_last=-1)), "keep_last"),
    ("db_backup", dict(dest="/x", jobs=0), "jobs must be at least 1"),
    ("db_backup", dict(dest="/x", incomplete_grace="soon"), "incomplete_grace"),
    ("artifacts_backup", dict(src="/a", dest="/b", mode="snapshot", retention=dict(keep_daily=-2)), "keep_daily"),
    ("artifacts_backup", dict(src="/a", dest="/b", concurrency=0), "concurrency"),
    ("db_restore", dict(src="/x", jobs=0), "jobs must be at least 1"),
    ("db_optimize", dict(min_free_ratio=2.0), "min_free_ratio"),
])
def test_option_checks_fail_before_the_job_runs(name, args, words, sqlite_uri):
    job_name = dict(db_backup="run_backup", artifacts_backup="copy_job", db_restore="run_restore",
                    db_optimize="optimize_sqlite")[name]
    module = load(name)
    target = module if hasattr(module, job_name) else importlib.import_module(
        "ansible_collections.mlflowops.maintenance.plugins.module_utils.artifacts_backup_job")
    job = FakeJob()
    with mock.patch.object(target, job_name, job):
        result = failed(module.main, dict(args, backend_store_uri=sqlite_uri), name=name)
    assert words in result["msg"] and job.calls == []


@pytest.mark.parametrize("name,needs", [
    ("db_backup", "backend_store_uri"), ("db_restore", "backend_store_uri"), ("db_optimize", "backend_store_uri"),
    ("gc", "backend_store_uri"), ("server_info", "tracking_uri"), ("traces_cleanup", "tracking_uri"),
    ("logged_models_cleanup", "tracking_uri"), ("artifacts_audit", "tracking_uri"), ("runs_cleanup", "tracking_uri"),
])
def test_a_missing_family_option_is_named(name, needs, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    result = failed(load(name).main, REQUIRED.get(name, {}), name=name)
    assert needs in result["msg"]
