#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fleet_report
short_description: Write the MLflow fleet report (HTML with charts, JSON, Markdown) on the controller
version_added: 0.2.0
description:
  - An action plugin that runs on the controller. It reads the results each host registered (by default
    C(report_health) from M(mlflowops.maintenance.server_info), C(report_stats) from
    M(mlflowops.maintenance.store_info), C(report_backups) from M(mlflowops.maintenance.backup_info) and
    C(report_cleanup), an M(ansible.builtin.slurp) of the cleanup state file) and writes C(report.html),
    C(report.json) and C(report.md) in O(report_dir), plus dated copies under C(history/).
  - The HTML page is self-contained (inline CSS and SVG charts, no script, nothing fetched) with the store size per
    host, the newest backup's age against O(backup_max_age_hours), runs by lifecycle stage, and the change in store
    size since the previous report (read from C(report.json) before it is replaced).
  - A host whose results are missing or failed is still listed, with its errors.
  - Use it through the C(mlflowops.maintenance.report) role, once per play (C(run_once)).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  hosts:
    description: The inventory hostnames to report on (for example C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  report_dir:
    description:
      - Directory on the controller for the report (created 0700). A symlink is refused.
    type: path
    required: true
  backup_max_age_hours:
    description: A host whose newest complete backup is older than this (or missing) is flagged.
    type: float
    default: 26
  keep_history:
    description:
      - Dated copies kept per kind (json, html, md) in C(history/); older ones of exactly this naming are removed.
    type: int
    default: 30
  health_var:
    description: Name of each host's registered M(mlflowops.maintenance.server_info) result.
    type: str
    default: report_health
  stats_var:
    description: Name of each host's registered M(mlflowops.maintenance.store_info) result.
    type: str
    default: report_stats
  backups_var:
    description: Name of each host's registered M(mlflowops.maintenance.backup_info) result.
    type: str
    default: report_backups
  cleanup_var:
    description: Name of each host's registered M(ansible.builtin.slurp) result of the cleanup state file.
    type: str
    default: report_cleanup
  offsite_var:
    description:
      - Name of each host's registered M(mlflowops.maintenance.backup_offsite) result, run in check mode
        (O(mlflowops.maintenance.backup_offsite#module:state=present)), for the offsite column.
      - A host without it (no offsite copy configured, or the task skipped) shows as not configured.
    type: str
    default: report_offsite
attributes:
  check_mode:
    support: full
    description: Builds the report and returns it without writing.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Always reports C(changed) when it writes, since every run writes a new dated report.
  - A member of the C(mlflowops.maintenance.mlflow) action group, so that the group's C(module_defaults) reach it;
    it accepts the tracking, backend store, S3 and O(deadline) options and ignores them (it reads registered
    results, not a server or a store).
"""

EXAMPLES = r"""
- name: Write the fleet report
  mlflowops.maintenance.fleet_report:
    hosts: "{{ ansible_play_hosts_all }}"
    report_dir: "{{ playbook_dir }}/mlflow-reports"
  run_once: true
  register: fleet
"""

RETURN = r"""
markdown:
  description: The Markdown summary (also written as C(report.md)).
  returned: always
  type: str
summary:
  description: Hosts, healthy count, unhealthy hosts, hosts whose newest backup is too old, run and size totals.
  returned: always
  type: dict
report_files:
  description: The files written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
report_html:
  description: The HTML page's path.
  returned: always
  type: str
report_json:
  description: The JSON report's path.
  returned: always
  type: str
generated_at:
  description: UTC time of the report.
  returned: always
  type: str
hosts_reported:
  description: Number of hosts in the report.
  returned: always
  type: int
history_pruned:
  description: Dated copies removed by O(keep_history).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.fleet_report_spec import ARGUMENT_SPEC


def main():
    # Reached only when the action plugin of the same name is not used (it always is, from this collection).
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=ARGUMENT_SPEC)
    module.fail_json(msg="fleet_report runs on the controller through its action plugin; call it as "
                         "mlflowops.maintenance.fleet_report from a play")


if __name__ == "__main__":
    main()
