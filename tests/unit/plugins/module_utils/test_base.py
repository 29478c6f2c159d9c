# -*- coding: utf-8 -*-
"""MlflowOpsModule: option families, secrets masked before validation, the one failure path, duration_s."""
import json
import platform

import pytest

from ansible.module_utils.six.moves.urllib.parse import quote, quote_plus

from ansible_collections.mlflowops.maintenance.plugins.module_utils import base
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import DeadlineExceeded, MaintenanceError

from harness.module_args import patch_module_args

SECRET = "MlPw#Sec%ret/1"
ENCODED = quote(SECRET, safe="")
PG_URI = "postgresql://mlflow:%s@db.example:5432/mlflow" % ENCODED
FORMS = set([SECRET, ENCODED, quote(SECRET), quote_plus(SECRET)])


def run_module(capsys, args, spec=None, verbosity=0, **kwargs):
    """Build the module (and run ``job`` if given); returns (exit code, result dict, raw stdout)."""
    job = kwargs.pop("job", None)
    args = dict(args, _ansible_module_name="mlflowops.maintenance.unit", _ansible_verbosity=verbosity)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exited:
            module = base.MlflowOpsModule(argument_spec=spec or {}, **kwargs)
            module.run(job or (lambda: dict(changed=False)))
    out = capsys.readouterr().out
    return exited.value.code, json.loads(out), out


def assert_no_secret(text):
    leaked = [form for form in FORMS if form in text]
    assert not leaked, "secret forms %s in %s" % (leaked, text)


def test_families_hold_the_contract_names_once():
    spec = base.family_argument_spec()
    for name in ("tracking_uri", "username", "password", "token", "validate_certs", "ca_path", "timeout", "retries",
                 "backend_store_uri", "db_password", "db_connect_timeout", "artifacts_destination",
                 "endpoint_url", "region", "aws_access_key", "aws_secret_key", "session_token", "profile",
                 "s3_validate_certs", "s3_connect_timeout", "s3_read_timeout", "s3_retries",
                 "multipart_threshold_mb", "multipart_chunksize_mb", "deadline"):
        assert name in spec, name
    for old in ("connect_timeout", "read_timeout"):
        assert old not in spec
    names = [name for family in base.FAMILIES.values() for name in family]
    assert len(names) == len(set(names))
    assert not any(option.get("required") for option in spec.values())
    assert spec["deadline"] == dict(type="int", default=3600)


def test_a_module_may_not_redeclare_a_family_option():
    with pytest.raises(ValueError, match="timeout"):
        base.merge_argument_spec(dict(timeout=dict(type="int")))


def test_uri_secret_forms_reads_raw_params_aliases_and_fallback_variables():
    spec = base.family_argument_spec()
    forms = base.uri_secret_forms({"backend_store_uri": PG_URI}, spec, environ={})
    assert FORMS <= forms
    # any value that looks like a URI counts, nested too
    assert FORMS <= base.uri_secret_forms({"other": {"x": [PG_URI]}}, spec, environ={})
    # the fallback variable of a URI option counts even when the option is not given
    assert FORMS <= base.uri_secret_forms({}, spec, environ={"MLFLOW_BACKEND_STORE_URI": PG_URI})
    assert "" not in base.uri_secret_forms({"tracking_uri": "http://u:@h"}, spec, environ={})


@pytest.mark.parametrize("bad", [
    {"jobs": 0},                   # the module's own check, in the job
    {"jobs": "abc"},               # argument validation: wrong type
    {"unknown_option": True},      # argument validation: unsupported parameter
    {"deadline": "soon"},          # a family option of the wrong type
])
def test_secrets_are_masked_when_validation_fails(capsys, bad):
    def job():
        raise MaintenanceError("jobs must be at least 1")

    args = dict({"backend_store_uri": PG_URI, "auth_database_uri": PG_URI.replace("mlflow", "auth"),
                 "tracking_uri": "http://admin:%s@tracking.example" % ENCODED}, **bad)
    spec = dict(jobs=dict(type="int", default=1), auth_database_uri=dict(type="str"))
    code, result, out = run_module(capsys, args, spec=spec, job=job)
    assert code == 1 and result["failed"]
    assert ("jobs must be at least 1" in result["msg"]) == (bad == {"jobs": 0})
    assert_no_secret(out)
    assert "duration_s" in result


def test_secrets_from_fallback_variables_are_masked(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", PG_URI)
    code, result, out = run_module(capsys, {"unknown_option": 1})
    assert code == 1 and "Unsupported parameters" in result["msg"]
    assert_no_secret(out)
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", PG_URI.replace(ENCODED, "x") + "?password=" + ENCODED)
    code, result, out = run_module(capsys, {"jobs": "abc"}, spec=dict(jobs=dict(type="int")))
    assert code == 1
    assert_no_secret(out)


def test_success_adds_duration_and_masks_invocation(capsys):
    code, result, out = run_module(capsys, {"backend_store_uri": PG_URI}, job=lambda: dict(changed=True, n=1))
    assert code == 0 and result["changed"] and result["n"] == 1
    assert isinstance(result["duration_s"], float)
    assert_no_secret(out)
    assert result["invocation"]["module_args"]["backend_store_uri"].startswith("postgresql://mlflow:****")


def test_maintenance_error_keeps_what_was_done(capsys):
    def job():
        raise DeadlineExceeded("stopped at its deadline", deleted=3, remaining=7, failed=False)

    code, result, _out = run_module(capsys, {}, job=job)
    assert code == 1 and result["failed"] is True
    assert result["msg"] == "stopped at its deadline"
    assert (result["deleted"], result["remaining"]) == (3, 7)
    assert "duration_s" in result


def test_oserror_and_unexpected_errors_are_one_line_without_traceback(capsys):
    def oserror():
        raise OSError(13, "Permission denied", "/srv/backups")

    code, result, _out = run_module(capsys, {}, job=oserror)
    assert code == 1
    assert result["msg"] == "unit failed: [Errno 13] Permission denied: '/srv/backups'"
    assert "exception" not in result

    def unexpected():
        raise RuntimeError("connection to postgresql://u:%s@h/db failed\nsecond line" % ENCODED)

    code, result, out = run_module(capsys, {}, job=unexpected)
    assert code == 1
    assert result["msg"] == "unit failed: RuntimeError: connection to postgresql://u:***@h/db failed"
    assert "exception" not in result
    assert_no_secret(out)


def test_unexpected_error_traceback_only_at_vvv(capsys):
    def unexpected():
        raise KeyError("boom")

    _code, result, _out = run_module(capsys, {}, job=unexpected, verbosity=3)
    assert "KeyError" in result["msg"]
    # ansible-core >= 2.19 keeps tracebacks out unless the controller asks; older cores show it at -vvv.
    assert "exception" not in result or "Traceback" in str(result["exception"])


def test_describe_hook_words_unexpected_errors(capsys):
    def unexpected():
        raise ValueError("x")

    with patch_module_args({"_ansible_module_name": "unit"}):
        module = base.MlflowOpsModule(argument_spec={})
        with pytest.raises(SystemExit):
            module.run(unexpected, describe=lambda exc: "described: %s" % exc)
    assert json.loads(capsys.readouterr().out)["msg"] == "described: x"


@pytest.mark.parametrize("requires,args,words", [
    (("tracking",), {}, "needs tracking_uri (or the MLFLOW_TRACKING_URI environment variable)"),
    (("store",), {}, "needs backend_store_uri (or the MLFLOW_BACKEND_STORE_URI environment variable)"),
    (("artifacts_destination",), {"tracking_uri": "http://h"}, "needs artifacts_destination"),
])
def test_required_family_fails_before_the_job(capsys, monkeypatch, requires, args, words):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    ran = []
    code, result, _out = run_module(capsys, args, requires=requires, job=lambda: ran.append(1))
    assert code == 1 and words in result["msg"] and not ran


@pytest.mark.parametrize("args,words", [
    ({"deadline": -1}, "deadline must not be negative"),
    ({"s3_retries": -1}, "s3_retries must not be negative"),
    ({"timeout": 0}, "timeout must be greater than 0"),
])
def test_family_values_are_checked(capsys, args, words):
    code, result, _out = run_module(capsys, args)
    assert code == 1 and words in result["msg"]


def test_deadline_is_ready_for_jobs(capsys):
    seen = {}

    def job():
        return dict(seconds=seen["module"].deadline.seconds)

    with patch_module_args({"deadline": 0, "_ansible_module_name": "unit"}):
        module = base.MlflowOpsModule(argument_spec={})
        seen["module"] = module
        with pytest.raises(SystemExit):
            module.run(job)
    assert json.loads(capsys.readouterr().out)["seconds"] is None


def test_require_lib_names_the_library_and_the_host(capsys):
    with patch_module_args({"_ansible_module_name": "unit"}):
        module = base.MlflowOpsModule(argument_spec={})
        module.require_lib("psycopg2", None)  # present: nothing happens
        with pytest.raises(SystemExit):
            module.require_lib("psycopg2", "Traceback: ImportError")
    result = json.loads(capsys.readouterr().out)
    assert "(psycopg2)" in result["msg"] and platform.node() in result["msg"]


def _action_group_modules():
    import os
    import yaml
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    with open(os.path.join(root, "meta", "runtime.yml")) as handle:
        names = yaml.safe_load(handle)["action_groups"]["mlflow"]
    return [(name, os.path.join(root, "plugins", "modules", name + ".py")) for name in names]


@pytest.mark.parametrize("name,path", _action_group_modules())
def test_every_action_group_member_uses_the_base_and_documents_every_family(name, path):
    import re
    import yaml
    with open(path) as handle:
        source = handle.read()
    assert "MlflowOpsModule(" in source, "%s does not build its module with MlflowOpsModule" % name
    assert "AnsibleModule(" not in source
    documentation = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', source, re.S).group(1))
    fragments = set(documentation.get("extends_documentation_fragment") or [])
    assert fragments >= set("mlflowops.maintenance.%s" % f for f in ("common", "tracking", "backend_store", "s3"))
