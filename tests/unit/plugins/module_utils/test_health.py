# -*- coding: utf-8 -*-
from ansible_collections.mlflowops.maintenance.plugins.module_utils.health import evaluate_checks


def server(**overrides):
    base = dict(reachable=True, status=200, version="3.17.2", latency_ms=5.0, api_ok=True, api_status=200,
                health_body="OK", latencies_ms={"health": 5.0, "version": 3.0, "api": 40.0}, errors={})
    base.update(overrides)
    return base


def resources(cpu=10.0, memory=20.0, disks=None):
    return dict(cpu_percent=cpu, memory_percent=memory,
                disks=disks if disks is not None else [dict(path="/", percent=50.0)])


def names_failed(checks):
    return [check["name"] for check in checks if not check["ok"]]


def test_all_good():
    checks = evaluate_checks(server(), resources(), {})
    assert names_failed(checks) == []
    assert [c["name"] for c in checks] == ["reachable", "health", "version", "api", "latency_ms",
                                           "cpu_percent", "memory_percent", "disk_percent:/"]


def test_unreachable_server_is_one_failed_check_with_reason():
    checks = evaluate_checks(dict(reachable=False, errors={"health": "connection refused"}), None, {})
    assert checks == [dict(name="reachable", ok=False, value=None, threshold=None, msg="connection refused")]


def test_thresholds_and_latency_use_slowest_probe():
    checks = evaluate_checks(server(), resources(cpu=95.0, disks=[dict(path="/data", percent=81.0)]),
                             {"latency_ms": 30.0, "disk_percent": 80.0, "cpu_percent": None})
    assert names_failed(checks) == ["latency_ms", "cpu_percent", "disk_percent:/data"]
    latency = [c for c in checks if c["name"] == "latency_ms"][0]
    assert latency["value"] == 40.0 and latency["threshold"] == 30.0


def test_not_mlflow_and_auth_failures():
    checks = evaluate_checks(server(health_body="<html>", version=None, api_ok=False, api_status=401,
                                    errors={"api": "authentication failed: HTTP 401"}), None, {})
    assert names_failed(checks) == ["health", "version", "api"]


def test_missing_disk_path_fails_its_check():
    checks = evaluate_checks(None, resources(disks=[dict(path="/nope", error="cannot stat /nope")]), {})
    assert names_failed(checks) == ["disk_percent:/nope"]
