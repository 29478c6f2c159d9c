#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: backup_info
short_description: List MLflow backend-store backups with their manifests and status
version_added: 0.1.0
description:
  - Lists the backups that M(mlflowops.maintenance.db_backup) wrote into a directory, newest first, with their
    manifest data and a status, for AWX surveys and monitoring.
  - C(complete) means a valid manifest whose backup exists with the recorded size (and, with
    O(verify_checksums=true), the recorded sha256). C(incomplete) means no valid manifest (an interrupted backup
    or a C(.partial) leftover). C(corrupt) means a valid manifest whose backup is missing or differs from it.
  - Read-only.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  path:
    description:
      - Directory of backups (O(mlflowops.maintenance.db_backup#module:dest)). A missing directory lists no backups.
    type: path
    required: true
  prefix:
    description:
      - Only list backups written with exactly this prefix (C(mlflow) does not list C(mlflow-prod-...)); a manifest
        that records another prefix is not listed either. By default every backup-like name is listed.
    type: str
  verify_checksums:
    description:
      - Re-read every complete backup and check its sha256 (reads all the data).
    type: bool
    default: false
notes:
  - Uses none of the option families; they are accepted for C(module_defaults) and ignored.
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
seealso:
  - module: mlflowops.maintenance.db_backup
  - module: mlflowops.maintenance.db_restore
"""

EXAMPLES = r"""
- name: List backups
  mlflowops.maintenance.backup_info:
    path: /var/backups/mlflow
  register: backups

- name: Alert when the newest complete backup is older than a day
  ansible.builtin.assert:
    that:
      - backups.latest is not none
      - (now(utc=true) - (backups.latest.created_at | to_datetime('%Y-%m-%dT%H:%M:%S.%fZ'))).total_seconds() < 86400
"""

RETURN = r"""
backups:
  description: Every backup-like entry, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: File or directory name.
      type: str
    path:
      description: Full path.
      type: str
    manifest_path:
      description: Its manifest, or null.
      type: str
    status:
      description: C(complete), C(incomplete) or C(corrupt).
      type: str
    reason:
      description: Why it has that status.
      type: str
    created_at:
      description: UTC creation time from the manifest.
      type: str
    engine:
      description: C(sqlite), C(postgresql) or C(mysql).
      type: str
    format:
      description: Backup format.
      type: str
    compression:
      description: Compression.
      type: str
    size_bytes:
      description: Size recorded in the manifest.
      type: int
    sha256:
      description: sha256 recorded in the manifest.
      type: str
    schema_revision:
      description: MLflow schema revision.
      type: str
    source:
      description: Source store URI without password.
      type: str
    store:
      description:
        - The store identity the manifest records (C(engine), C(location) without credentials, C(prefix)), or null
          for a backup written before identities were recorded; M(mlflowops.maintenance.db_restore) restores only
          backups of the same store unless told otherwise.
      type: dict
    manifest:
      description: The whole manifest, or null.
      type: dict
  sample:
    - name: mlflow-sqlite-20260101T020000000000Z.db.zst
      path: /var/backups/mlflow/mlflow-sqlite-20260101T020000000000Z.db.zst
      status: complete
      reason: manifest valid
      engine: sqlite
latest:
  description: The newest complete backup (same keys as an item of RV(backups)), or null.
  returned: always
  type: dict
counts:
  description: Number of entries of each status.
  returned: always
  type: dict
  sample: {complete: 7, incomplete: 1, corrupt: 0}
exists:
  description: Whether the directory exists (a missing directory lists no backups).
  returned: always
  type: bool
total_size_bytes:
  description: Sum of the complete backups' sizes.
  returned: always
  type: int
"""

import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError


def run(params):
    if os.path.exists(params["path"]) and not os.path.isdir(params["path"]):
        raise MaintenanceError("%s is not a directory" % params["path"])
    try:
        items = backups.list_backups(params["path"], params["prefix"], verify_checksums=params["verify_checksums"])
    except OSError as exc:
        raise MaintenanceError("cannot list %s: %s" % (params["path"], exc))
    listed = [backups.public_item(item) for item in items]
    counts = dict(complete=0, incomplete=0, corrupt=0)
    for item in listed:
        counts[item["status"]] += 1
    latest = next((item for item in listed if item["status"] == "complete"), None)
    total = sum(item["size_bytes"] or 0 for item in listed if item["status"] == "complete")
    return dict(changed=False, exists=os.path.isdir(params["path"]), backups=listed, latest=latest, counts=counts,
                total_size_bytes=total)


def main():
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=dict(
        path=dict(type="path", required=True),
        prefix=dict(type="str"),
        verify_checksums=dict(type="bool", default=False),
    ))
    module.run(run, module.params)


if __name__ == "__main__":
    main()
