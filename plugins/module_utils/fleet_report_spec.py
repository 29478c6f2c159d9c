# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleet_report's own options, shared by its action plugin (which does the work on the controller) and its module
file (documentation, and the failure when it is run without the action plugin)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ARGUMENT_SPEC = dict(
    hosts=dict(type="list", elements="str", required=True),
    report_dir=dict(type="path", required=True),
    backup_max_age_hours=dict(type="float", default=26.0),
    keep_history=dict(type="int", default=30),
    health_var=dict(type="str", default="report_health"),
    stats_var=dict(type="str", default="report_stats"),
    backups_var=dict(type="str", default="report_backups"),
    cleanup_var=dict(type="str", default="report_cleanup"),
    offsite_var=dict(type="str", default="report_offsite"),
)
