# -*- coding: utf-8 -*-
"""server_info through Ansible against real MLflow servers, and every failure kind."""

import time

import pytest

from harness.runner import run_module
from harness.services import FrontProxy, PlainHttpServer, SilentListener, closed_port_url

RELAXED = {"cpu_percent": 100, "memory_percent": 100, "disk_percent": 100, "latency_ms": 10000}


def checks_by_name(result):
    return dict((check["name"], check) for check in result["checks"])


def test_live_sqlite_server_is_healthy_with_version(mlflow_sqlite):
    result, _run = run_module("server_info", {"tracking_uri": mlflow_sqlite.url, "thresholds": RELAXED,
                                              "disk_paths": ["/", mlflow_sqlite.root]})
    assert result["_status"] == "ok"
    assert result["changed"] is False
    assert result["healthy"] is True, result["checks"]
    assert result["server"]["version"] == "3.17.2"
    assert result["server"]["api_ok"] is True
    assert [d["path"] for d in result["resources"]["disks"]] == ["/", mlflow_sqlite.root]


def test_live_postgres_s3_server_is_healthy_in_check_mode(mlflow_pg_s3):
    result, _run = run_module("server_info", {"tracking_uri": mlflow_pg_s3.url, "thresholds": RELAXED,
                                              "check_resources": False}, check=True)
    assert result["healthy"] is True, result["checks"]
    assert result["changed"] is False
    assert result["resources"] is None


def test_closed_port_returns_promptly_with_reason():
    started = time.monotonic()
    result, _run = run_module("server_info", {"tracking_uri": closed_port_url(), "timeout": 5})
    assert time.monotonic() - started < 15
    assert result["_status"] == "ok"
    assert result["healthy"] is False
    reachable = checks_by_name(result)["reachable"]
    assert reachable["ok"] is False
    assert "connection refused" in reachable["msg"]


def test_server_that_never_answers_returns_within_timeout():
    listener = SilentListener().start()
    try:
        started = time.monotonic()
        result, run = run_module("server_info", {"tracking_uri": listener.url, "timeout": 3,
                                                 "check_resources": False})
        # The module's own time: the whole ansible-playbook run minus its start-up is below timeout + 2 s.
        elapsed = time.monotonic() - started
    finally:
        listener.stop()
    assert result["healthy"] is False
    assert "no answer within the timeout" in checks_by_name(result)["reachable"]["msg"]
    assert elapsed < 3 + 2 + 4, "took %.1fs (ansible start-up included): %s" % (elapsed, run.stdout)


def test_not_mlflow_http_server_fails_health_version_and_api():
    server = PlainHttpServer().start()
    try:
        result, _run = run_module("server_info", {"tracking_uri": server.url, "check_resources": False})
    finally:
        server.stop()
    checks = checks_by_name(result)
    assert result["healthy"] is False
    assert checks["reachable"]["ok"] is True
    assert checks["health"]["ok"] is False and "not MLflow's OK" in checks["health"]["msg"]
    assert checks["version"]["ok"] is False
    assert checks["api"]["ok"] is False and "404" in checks["api"]["msg"]


def test_tls_error_is_a_failed_check_and_ca_path_fixes_it(mlflow_sqlite):
    proxy = FrontProxy(mlflow_sqlite.url, tls=True).start()
    try:
        bad, _run = run_module("server_info", {"tracking_uri": proxy.url, "check_resources": False})
        good, _run = run_module("server_info", {"tracking_uri": proxy.url, "ca_path": proxy.cert_path,
                                                "check_resources": False, "thresholds": RELAXED})
        insecure, _run = run_module("server_info", {"tracking_uri": proxy.url, "validate_certs": False,
                                                    "check_resources": False, "thresholds": RELAXED})
    finally:
        proxy.stop()
    assert bad["healthy"] is False
    assert "TLS error" in checks_by_name(bad)["reachable"]["msg"]
    assert good["healthy"] is True, good["checks"]
    assert insecure["healthy"] is True, insecure["checks"]


def test_basic_auth_good_and_bad_credentials(mlflow_basic_auth):
    args = {"tracking_uri": mlflow_basic_auth.url, "check_resources": False, "thresholds": RELAXED}
    good, _run = run_module("server_info", dict(args, username="admin", password=mlflow_basic_auth.admin_password))
    bad, run = run_module("server_info", dict(args, username="admin", password="wrong-password"), verbosity=3)
    assert good["healthy"] is True, good["checks"]
    api_check = checks_by_name(bad)["api"]
    assert bad["healthy"] is False
    assert api_check["ok"] is False and api_check["value"] == 401
    assert "authentication failed: HTTP 401" in api_check["msg"]
    assert "wrong-password" not in run.stdout + run.stderr


def test_credentials_from_environment(mlflow_basic_auth):
    env = {"MLFLOW_TRACKING_URI": mlflow_basic_auth.url, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": mlflow_basic_auth.admin_password}
    result, _run = run_module("server_info", {"check_resources": False, "thresholds": RELAXED}, env=env)
    assert result["healthy"] is True, result["checks"]


def test_bearer_token_auth(mlflow_sqlite):
    proxy = FrontProxy(mlflow_sqlite.url, token="s3cr3t-token").start()
    try:
        args = {"tracking_uri": proxy.url, "check_resources": False, "thresholds": RELAXED}
        good, _run = run_module("server_info", dict(args, token="s3cr3t-token"))
        bad, run = run_module("server_info", dict(args, token="not-the-token"), verbosity=3)
    finally:
        proxy.stop()
    assert good["healthy"] is True, good["checks"]
    assert checks_by_name(bad)["api"]["value"] == 401
    assert "not-the-token" not in run.stdout + run.stderr


def test_threshold_breach_fails_when_asked(mlflow_sqlite):
    result, _run = run_module("server_info", {"tracking_uri": mlflow_sqlite.url, "fail_on_unhealthy": True,
                                              "thresholds": dict(RELAXED, disk_percent=0.001)})
    assert result["_status"] == "failed"
    assert result["msg"].startswith("unhealthy: disk_percent:/")
    assert "Traceback" not in result.get("module_stderr", "")


@pytest.mark.parametrize("uri", ["ftp://example.invalid", "not a uri"])
def test_bad_tracking_uri_is_a_clear_error(uri):
    result, _run = run_module("server_info", {"tracking_uri": uri})
    assert result["_status"] == "failed"
    assert "tracking_uri must be the http:// or https:// address" in result["msg"]


def test_module_does_not_import_mlflow(mlflow_sqlite, tmp_path):
    # A poisoned mlflow package first on the module's path: importing it fails the task.
    poison = tmp_path / "poison" / "mlflow"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('server_info imported mlflow')\n")
    result, _run = run_module("server_info", {"tracking_uri": mlflow_sqlite.url, "check_resources": False,
                                              "thresholds": RELAXED},
                              module_env={"PYTHONPATH": str(poison.parent)})
    assert result["_status"] == "ok", result
    assert result["healthy"] is True
