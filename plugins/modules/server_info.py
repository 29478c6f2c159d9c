#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: server_info
short_description: Check an MLflow tracking server and its host against health thresholds
version_added: 0.1.0
description:
  - Probes a tracking server with C(GET /health), C(GET /version) and one authenticated API call
    (an experiments search with C(max_results=1)), and measures the latency of each.
  - Measures the CPU, memory and disk use of the host the module runs on, for each path in O(disk_paths).
  - Every problem becomes a failed check with a one-line reason; a closed port, a server that never
    answers or trickles its answer, rejected credentials, a TLS error and an HTTP server that is not
    MLflow all return within O(timeout).
  - Each probe must complete (connect and the whole answer) within O(timeout), and all of them within
    O(deadline); a probe cut off by the deadline fails its check with a reason naming the deadline.
  - Does not import mlflow; it needs only C(requests) and C(psutil).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  thresholds:
    description:
      - Limits above which a check fails. Unset keys keep their defaults.
    type: dict
    default: {}
    suboptions:
      cpu_percent:
        description: Highest acceptable CPU use, sampled over 0.2 seconds.
        type: float
        default: 90
      memory_percent:
        description: Highest acceptable memory use.
        type: float
        default: 90
      disk_percent:
        description: Highest acceptable use of each filesystem in O(disk_paths).
        type: float
        default: 90
      latency_ms:
        description: Highest acceptable latency of the slowest of the three probes.
        type: float
        default: 2000
  disk_paths:
    description:
      - Paths whose filesystems are checked, for example the artifact and database directories.
    type: list
    elements: path
    default: ['/']
  check_resources:
    description:
      - Whether to measure the host's CPU, memory and disks. Turn off when the module runs on a
        controller rather than on the tracking server's host.
    type: bool
    default: true
  fail_on_unhealthy:
    description:
      - Fail the task when any check fails, with the failed checks in RV(ignore:msg).
      - By default the task succeeds and RV(healthy) says the outcome.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same probes in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
requirements:
  - requests >= 2.25
  - psutil >= 5.8
notes:
  - Uses the tracking family. The backend store and S3 families are accepted for C(module_defaults) and ignored.
  - The module never reports C(changed).
  - The C(latency_ms) check compares the slowest probe's latency with O(thresholds.latency_ms).
  - Probes are not retried, whatever O(retries) says, so the result tells what the server does now.
seealso:
  - name: MLflow tracking server
    description: The server whose health this module checks.
    link: https://mlflow.org/docs/latest/tracking/server.html
"""

EXAMPLES = r"""
- name: Check the tracking server and its disks
  mlflowops.maintenance.server_info:
    tracking_uri: https://mlflow.example.com
    username: "{{ mlflow_user }}"
    password: "{{ mlflow_password }}"
    disk_paths:
      - /
      - /srv/mlflow
  register: mlflow_health

- name: Fail the host when the server is unhealthy or a threshold is breached
  mlflowops.maintenance.server_info:
    tracking_uri: http://127.0.0.1:5000
    thresholds:
      disk_percent: 80
      latency_ms: 500
    fail_on_unhealthy: true

- name: Probe only the server, from the controller
  mlflowops.maintenance.server_info:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    timeout: 5
    check_resources: false
  delegate_to: localhost
"""

RETURN = r"""
healthy:
  description: Whether every check passed.
  returned: always
  type: bool
  sample: true
checks:
  description: One entry a check; failed checks carry the reason in C(msg).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: C(reachable), C(health), C(version), C(api), C(latency_ms), C(cpu_percent), C(memory_percent) or C(disk_percent:<path>).
      type: str
    ok:
      description: Whether the check passed.
      type: bool
    value:
      description: The measured value.
      type: raw
    threshold:
      description: The limit compared against, if any.
      type: raw
    msg:
      description: A one-line reason.
      type: str
  sample:
    - {name: reachable, ok: true, value: 200, threshold: null, msg: answered HTTP 200}
    - {name: api, ok: false, value: 401, threshold: 200, msg: "authentication failed: HTTP 401 from the experiments search API"}
server:
  description: What the tracking server answered.
  returned: always
  type: dict
  contains:
    reachable:
      description: Whether C(/health) answered with any HTTP response.
      type: bool
    status:
      description: HTTP status of C(/health).
      type: int
    version:
      description: MLflow version from C(/version), or null.
      type: str
    latency_ms:
      description: Latency of C(/health) in milliseconds.
      type: float
    latencies_ms:
      description: Latency of each probe (C(health), C(version), C(api)).
      type: dict
    api_ok:
      description: Whether the authenticated experiments search succeeded.
      type: bool
    errors:
      description: One-line error per failed probe.
      type: dict
  sample: {reachable: true, status: 200, version: "3.17.2", latency_ms: 3.1, api_ok: true}
resources:
  description: Host resources; null when O(check_resources=false).
  returned: always
  type: dict
  contains:
    cpu_percent:
      description: CPU use over a 0.2 s sample.
      type: float
    memory_percent:
      description: Memory use.
      type: float
    disks:
      description: Use of each path in O(disk_paths).
      type: list
      elements: dict
  sample: {cpu_percent: 12.5, memory_percent: 41.0, disks: [{path: /, percent: 22.0, free_bytes: 85899345920}]}
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.health import (
    PSUTIL_IMPORT_ERROR,
    evaluate_checks,
    host_resources,
    probe_server,
    summarize_failures,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def run(module):
    params = module.params
    # Each probe must complete within ``timeout``, all of them within the deadline: a trickling server is unhealthy.
    client = TrackingClient.from_module(module, attempt_limit=params["timeout"])
    server = probe_server(client)
    resources = host_resources(params["disk_paths"]) if params["check_resources"] else None
    checks = evaluate_checks(server, resources, params["thresholds"])
    healthy = all(check["ok"] for check in checks)
    result = dict(changed=False, healthy=healthy, checks=checks, server=server, resources=resources)
    if not healthy and params["fail_on_unhealthy"]:
        raise MaintenanceError("unhealthy: %s" % summarize_failures(checks), **result)
    return result


def main():
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=dict(
        thresholds=dict(type="dict", default={}, options=dict(
            cpu_percent=dict(type="float", default=90.0),
            memory_percent=dict(type="float", default=90.0),
            disk_percent=dict(type="float", default=90.0),
            latency_ms=dict(type="float", default=2000.0),
        )),
        disk_paths=dict(type="list", elements="path", default=["/"]),
        check_resources=dict(type="bool", default=True),
        fail_on_unhealthy=dict(type="bool", default=False),
    ), requires=("tracking",))
    if module.params["check_resources"]:
        module.require_lib("psutil", PSUTIL_IMPORT_ERROR)
    module.run(run, module)


if __name__ == "__main__":
    main()
