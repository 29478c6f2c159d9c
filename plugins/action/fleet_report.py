# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side: build the fleet report from every host's registered results and write it under ``dest``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

from ansible.plugins.action import ActionBase

from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import merge_argument_spec
from ansible_collections.mlflowops.maintenance.plugins.module_utils.fleet_report_spec import ARGUMENT_SPEC
from ansible_collections.mlflowops.maintenance.plugins.plugin_utils import fleet_report as fr

# The action group's option families are accepted (module_defaults for the group reach this task too) and ignored.
FULL_ARGUMENT_SPEC = merge_argument_spec(ARGUMENT_SPEC)


def _host_value(hostvars, host, name):
    try:
        values = hostvars[host]
        return values[name] if name in values else None
    except KeyError:
        return None


def _read_previous(path):
    try:
        with open(path) as handle:
            previous = json.load(handle)
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) and previous.get("format") == fr.REPORT_FORMAT else None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation, args = self.validate_argument_spec(argument_spec=FULL_ARGUMENT_SPEC)
        del validation
        if args["keep_history"] < 1:
            return dict(result, failed=True, msg="keep_history must be at least 1")
        if args["backup_max_age_hours"] <= 0:
            return dict(result, failed=True, msg="backup_max_age_hours must be positive")
        directory = args["report_dir"]
        if os.path.islink(directory) or (os.path.exists(directory) and not os.path.isdir(directory)):
            return dict(result, failed=True, msg="report_dir %s is a symlink or not a directory; refusing to write there"
                        % directory)
        history = os.path.join(directory, fr.HISTORY_DIR)
        if os.path.islink(history):
            return dict(result, failed=True, msg="%s is a symlink; refusing to write there" % history)

        now = datetime.datetime.now(datetime.timezone.utc)
        hostvars = (task_vars or {}).get("hostvars", {})
        rows = []
        for host in args["hosts"]:
            rows.append(fr.host_row(
                host, health=_host_value(hostvars, host, args["health_var"]),
                stats=_host_value(hostvars, host, args["stats_var"]),
                backups=_host_value(hostvars, host, args["backups_var"]),
                cleanup=fr.decode_slurp_json(_host_value(hostvars, host, args["cleanup_var"])),
                offsite=_host_value(hostvars, host, args["offsite_var"]),
                now=now, backup_max_age_hours=args["backup_max_age_hours"]))
        previous = _read_previous(os.path.join(directory, "report.json"))
        report = fr.build_report(rows, now=now, previous=previous, backup_max_age_hours=args["backup_max_age_hours"])
        rendered = dict(json=json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
                        html=fr.render_html(report), md=fr.render_markdown(report))
        files = [os.path.join(directory, "report." + kind) for kind in fr.KINDS]
        files += [os.path.join(history, fr.history_name(now, kind)) for kind in fr.KINDS]
        result.update(changed=True, markdown=rendered["md"], summary=report["summary"], report_files=files,
                      report_html=files[1], report_json=files[0], generated_at=report["generated_at"],
                      hosts_reported=len(rows), history_pruned=[])
        if self._task.check_mode:
            result["msg"] = "would write the fleet report for %d hosts in %s" % (len(rows), directory)
            return result
        try:
            fsutil.makedirs_private(history)
            for kind in fr.KINDS:
                data = rendered[kind].encode("utf-8")
                fsutil.write_bytes_atomic(os.path.join(history, fr.history_name(now, kind)), data)
                fsutil.write_bytes_atomic(os.path.join(directory, "report." + kind), data)
            pruned = fr.history_to_prune(os.listdir(history), args["keep_history"])
            for name in pruned:
                path = os.path.join(history, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)
        except OSError as exc:
            return dict(result, changed=False, failed=True, msg="cannot write the fleet report in %s: %s" % (
                directory, exc.strerror or exc))
        result["history_pruned"] = pruned
        result["msg"] = "wrote the fleet report for %d hosts: %s" % (len(rows), files[1])
        return result
