# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health probes of a tracking server and its host, and the pure threshold evaluation."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import traceback

from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

PSUTIL_IMPORT_ERROR = None
try:
    import psutil
except ImportError:
    psutil = None
    PSUTIL_IMPORT_ERROR = traceback.format_exc()

DEFAULT_THRESHOLDS = dict(cpu_percent=90.0, memory_percent=90.0, disk_percent=90.0, latency_ms=2000.0)
VERSION_PATTERN = re.compile(r"^\d+\.\d+(\.\d+)?\S*$")


def _ms(seconds):
    return round(seconds * 1000.0, 1)


def probe_server(client):
    """GET /health, GET /version and one authenticated API call; never raises for server faults.

    A transport failure on /health (refused, timed out, TLS) stops there: the other probes
    would only wait out the same timeout again.
    """
    server = dict(reachable=False, status=None, version=None, latency_ms=None, api_ok=False,
                  health_body=None, latencies_ms={}, errors={})
    try:
        response, elapsed = client.timed_request("GET", "/health")
    except TrackingError as exc:
        server["errors"]["health"] = exc.msg
        server["error_kind"] = exc.kind
        return server
    server.update(reachable=True, status=response.status_code, latency_ms=_ms(elapsed),
                  health_body=response.text.strip()[:100])
    server["latencies_ms"]["health"] = _ms(elapsed)

    try:
        response, elapsed = client.timed_request("GET", "/version")
        server["latencies_ms"]["version"] = _ms(elapsed)
        text = response.text.strip()
        if response.status_code == 200 and VERSION_PATTERN.match(text):
            server["version"] = text
        else:
            server["errors"]["version"] = "GET /version returned HTTP %s, not an MLflow version" % response.status_code
    except TrackingError as exc:
        server["errors"]["version"] = exc.msg

    try:
        response, elapsed = client.timed_request(
            "POST", "experiments/search", json={"max_results": 1, "view_type": "ACTIVE_ONLY"})
        server["latencies_ms"]["api"] = _ms(elapsed)
        if response.status_code in (401, 403):
            server["errors"]["api"] = "authentication failed: HTTP %s from the experiments search API" % (
                response.status_code)
            server["api_status"] = response.status_code
        elif response.status_code != 200:
            server["errors"]["api"] = "experiments search API returned HTTP %s (not an MLflow tracking server?)" % (
                response.status_code)
            server["api_status"] = response.status_code
        else:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and ("experiments" in body or body == {}):
                server["api_ok"] = True
                server["api_status"] = 200
            else:
                server["errors"]["api"] = "experiments search API did not answer with MLflow JSON"
    except TrackingError as exc:
        server["errors"]["api"] = exc.msg
    return server


def host_resources(disk_paths, cpu_interval=0.2):
    """CPU, memory and per-path disk use of the host the module runs on."""
    memory = psutil.virtual_memory()
    resources = dict(
        cpu_percent=psutil.cpu_percent(interval=cpu_interval),
        cpu_count=psutil.cpu_count(),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        memory_percent=memory.percent,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        disks=[],
    )
    for path in disk_paths:
        try:
            usage = psutil.disk_usage(path)
            resources["disks"].append(dict(path=path, percent=usage.percent, total_bytes=usage.total,
                                           used_bytes=usage.used, free_bytes=usage.free))
        except OSError as exc:
            resources["disks"].append(dict(path=path, error="cannot stat %s: %s" % (path, exc.strerror or exc)))
    return resources


def _check(name, ok, value=None, threshold=None, msg=""):
    return dict(name=name, ok=bool(ok), value=value, threshold=threshold, msg=msg)


def evaluate_checks(server, resources, thresholds):
    """The list of ``{name, ok, value, threshold, msg}`` checks; pure, for unit tests."""
    limits = dict(DEFAULT_THRESHOLDS)
    limits.update(dict((k, v) for k, v in (thresholds or {}).items() if v is not None))
    errors = (server or {}).get("errors", {})
    checks = []
    if server is not None:
        if not server["reachable"]:
            checks.append(_check("reachable", False, None, None, errors.get("health", "unreachable")))
        else:
            checks.append(_check("reachable", True, server["status"], None, "answered HTTP %s" % server["status"]))
            healthy_body = server["status"] == 200 and server.get("health_body") == "OK"
            checks.append(_check(
                "health", healthy_body, server["status"], 200,
                "GET /health answered OK" if healthy_body else
                "GET /health returned HTTP %s %r, not MLflow's OK" % (server["status"], server.get("health_body"))))
            checks.append(_check("version", bool(server["version"]), server["version"], None,
                                 errors.get("version", "MLflow %s" % server["version"])))
            checks.append(_check("api", server["api_ok"], server.get("api_status"), 200,
                                 errors.get("api", "experiments search API answered")))
            latency = max(server["latencies_ms"].values()) if server["latencies_ms"] else None
            checks.append(_check(
                "latency_ms", latency is not None and latency <= limits["latency_ms"], latency,
                limits["latency_ms"], "slowest probe took %s ms" % latency))
    if resources is not None:
        for name in ("cpu_percent", "memory_percent"):
            value = resources[name]
            checks.append(_check(name, value <= limits[name], value, limits[name],
                                 "%s %s%% (limit %s%%)" % (name.split("_", 1)[0], value, limits[name])))
        for disk in resources["disks"]:
            name = "disk_percent:%s" % disk["path"]
            if "error" in disk:
                checks.append(_check(name, False, None, limits["disk_percent"], disk["error"]))
            else:
                limit = limits["disk_percent"]
                msg = "disk %s %s%% used (limit %s%%)" % (disk["path"], disk["percent"], limit)
                checks.append(_check(name, disk["percent"] <= limit, disk["percent"], limit, msg))
    return checks


def summarize_failures(checks):
    return "; ".join("%s: %s" % (check["name"], check["msg"]) for check in checks if not check["ok"])
