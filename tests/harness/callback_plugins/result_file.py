# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: append each task result as one JSON line to $MLFLOWOPS_RESULT_FILE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: result_file
type: aggregate
short_description: Write task results as JSON lines for the test harness
description:
  - Appends one JSON object per task result to the file named by E(MLFLOWOPS_RESULT_FILE).
requirements:
  - enabled in configuration
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_file"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        path = os.environ.get("MLFLOWOPS_RESULT_FILE")
        if not path:
            return
        record = dict(host=result._host.get_name(), task=result._task.get_name(), status=status,
                      action=result._task.action, result=result._result)
        with open(path, "a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")
