# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of every module of the mlflow action group.
    DOCUMENTATION = r"""
options:
  deadline:
    description:
      - Wall-clock budget of the whole task, in seconds, on top of the per-request timeouts.
        C(0) means no deadline.
      - A task that reaches its deadline stops with a clear message that says what was already done;
        a rerun continues where it stopped.
      - Replaces the former C(timeout) option of M(mlflowops.maintenance.db_backup) and
        M(mlflowops.maintenance.db_restore).
    type: int
    default: 3600
notes:
  - Every module of the C(group/mlflowops.maintenance.mlflow) action group accepts every option of the
    tracking, backend store and S3 families, so that one C(module_defaults) block configures the whole
    collection. A module ignores the families it does not use (see its other notes).
  - Every result has C(duration_s), the wall-clock seconds the task took.
"""
