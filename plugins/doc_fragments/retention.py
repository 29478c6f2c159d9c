# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The restic-style retention option shared by db_backup (backups) and artifacts_backup (snapshots).
    DOCUMENTATION = r"""
options:
  retention:
    description:
      - Which complete backups (or snapshots) to keep, with restic's C(forget) semantics. One kept if any rule
        matches; calendar periods count only where they hold one; the newest complete one is never removed.
      - An empty policy (the default) keeps everything. A rule at C(0) is off; a negative count fails the task
        before anything is read or written.
    type: dict
    default: {}
    suboptions:
      keep_last:
        description: Keep the N newest.
        type: int
      keep_hourly:
        description: Keep the newest of each of the N most recent hours that have one.
        type: int
      keep_daily:
        description: Keep the newest of each of the N most recent days that have one.
        type: int
      keep_weekly:
        description: Keep the newest of each of the N most recent ISO weeks that have one.
        type: int
      keep_monthly:
        description: Keep the newest of each of the N most recent months that have one.
        type: int
      keep_yearly:
        description: Keep the newest of each of the N most recent years that have one.
        type: int
"""
