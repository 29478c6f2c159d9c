#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: backup_offsite
short_description: Push a host's backup sets to S3, verify them there, prune them there, and fetch them back
version_added: 0.2.0
description:
  - With O(state=present), uploads every complete backup set of this store in O(path) (the backup written by
    M(mlflowops.maintenance.db_backup), the backup role's set manifest C(<backup>.set.json) and the artifact
    snapshot manifest it names) that is not yet offsite, under C(s3://<bucket>/<prefix>/<namespace>/), verifies
    each upload, and applies O(retention) offsite.
  - A set is uploaded data first, then the artifact snapshot manifest (as C(<backup>.artifacts.json)) and the set
    manifest, and the backup's own manifest (C(<backup>.manifest.json)) last, only once every data object was
    verified. A set without its manifest offsite is incomplete; it is never fetched and never counted by retention.
  - With O(state=fetched), downloads the newest complete offsite set of this store (or the set O(name)) into
    O(path), checking every byte against its manifest's sha256, so that M(mlflowops.maintenance.db_restore) can
    restore it.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
  - mlflowops.maintenance.retention
options:
  state:
    description:
      - V(present) pushes, verifies and prunes offsite; V(fetched) downloads one set into O(path).
    type: str
    choices: [present, fetched]
    default: present
  path:
    description:
      - This host's local backup directory (the backup role's C(backup_dest/<namespace>)). O(state=present) reads
        it; O(state=fetched) writes into it (created 0700 when missing; files 0600; never through a symlink).
    type: path
    required: true
  bucket:
    description: The bucket.
    type: str
    required: true
  prefix:
    description:
      - Key prefix inside the bucket (C(a/b)); the host's sets go under C(<prefix>/<namespace>/).
    type: str
    default: mlflow-backups
  namespace:
    description:
      - This host's key component under O(prefix), usually C(inventory_hostname). One component, no C(/).
      - Listing, retention and fetching never look outside C(<prefix>/<namespace>/).
    type: str
    required: true
  backup_prefix:
    description: The backups' name prefix (O(mlflowops.maintenance.db_backup#module:prefix)).
    type: str
    default: mlflow
  retention:
    description:
      - Which complete offsite sets of this store to keep (only with O(state=present)).
      - Applied to this store's complete offsite sets together with the complete local ones, so a local set
        that retention would drop offsite is not uploaded. Sets whose manifest records another store, another
        prefix, or no identity, are never pruned; neither is the newest complete set.
  verify:
    description:
      - How each uploaded data object is checked before its manifest goes up.
      - V(checksum) reads the object back from S3 in full and compares its sha256 and size with the backup's
        manifest (proves what S3 serves; costs one download of each new set).
      - V(size) compares the size S3 reports (HEAD) only; the upload itself carries a SHA-256 checksum that S3
        checks on receipt. Offsite corruption is then caught when the set is fetched.
      - Small JSON objects (manifests) are always read back and compared byte for byte.
    type: str
    choices: [checksum, size]
    default: checksum
  name:
    description:
      - O(state=fetched), the backup to fetch (C(mlflow-sqlite-<time>.db)); by default the newest complete set.
    type: str
notes:
  - Uses the S3 family for the offsite bucket. With O(state=present) it needs the backend store family's
    O(backend_store_uri) to know which backups are this store's (their manifests record the store identity); with
    O(state=fetched) it is optional and, when set, only this store's sets are fetched. The tracking family is
    accepted for C(module_defaults) and ignored.
  - Already offsite means the manifest object matches the local manifest byte for byte and every data object has
    the recorded size; a second run reads only the listing and the small JSON objects.
  - Pruning deletes exactly the keys a set's manifest names, manifest first; never by key prefix.
  - A set whose upload fails verification leaves no manifest offsite; the task fails and nothing is pruned.
attributes:
  check_mode:
    support: full
    description: Lists and reads offsite, and reports what would be uploaded, pruned or fetched, writing nothing.
  diff_mode:
    support: none
    description: No diff is shown.
seealso:
  - module: mlflowops.maintenance.db_backup
  - module: mlflowops.maintenance.db_restore
  - module: mlflowops.maintenance.backup_info
"""

EXAMPLES = r"""
- name: Push this host's backup sets offsite, keeping 7 daily and 4 weekly there
  mlflowops.maintenance.backup_offsite:
    path: /var/backups/mlflow/{{ inventory_hostname }}
    bucket: mlflow-offsite
    prefix: backups
    namespace: "{{ inventory_hostname }}"
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    retention:
      keep_daily: 7
      keep_weekly: 4

- name: Fetch the newest offsite set and restore it
  block:
    - name: Fetch
      mlflowops.maintenance.backup_offsite:
        state: fetched
        path: /var/backups/mlflow/{{ inventory_hostname }}
        bucket: mlflow-offsite
        prefix: backups
        namespace: "{{ inventory_hostname }}"
        backend_store_uri: sqlite:////srv/mlflow/mlflow.db
      register: offsite

    - name: Restore
      mlflowops.maintenance.db_restore:
        src: "{{ offsite.fetched.path }}"
        backend_store_uri: sqlite:////srv/mlflow/mlflow.db
        force: true
"""

RETURN = r"""
msg:
  description: One line about what was done.
  returned: always
  type: str
offsite_url:
  description: The host's offsite location, C(s3://<bucket>/<prefix>/<namespace>/).
  returned: always
  type: str
uploaded:
  description: Sets uploaded (or, in check mode, to upload), newest first; at most 100.
  returned: O(state=present)
  type: list
  elements: str
uploaded_truncated:
  description: Whether RV(uploaded) was cut.
  returned: O(state=present)
  type: bool
uploaded_bytes:
  description: Bytes uploaded (or to upload).
  returned: O(state=present)
  type: int
verified:
  description: How uploads were verified (O(verify)).
  returned: O(state=present)
  type: str
pruned:
  description: Offsite sets removed by retention (or to remove, in check mode); at most 100.
  returned: O(state=present)
  type: list
  elements: str
pruned_truncated:
  description: Whether RV(pruned) was cut.
  returned: O(state=present)
  type: bool
deleted_objects_count:
  description: Objects deleted by pruning.
  returned: O(state=present)
  type: int
kept:
  description: Sets retention keeps (offsite after this run), newest first; at most 100.
  returned: O(state=present)
  type: list
  elements: str
kept_truncated:
  description: Whether RV(kept) was cut.
  returned: O(state=present)
  type: bool
unchanged_count:
  description: Kept local sets that were already offsite.
  returned: O(state=present)
  type: int
incomplete_offsite:
  description: This host's offsite sets whose data is missing or has the wrong size (repaired when still local).
  returned: O(state=present)
  type: list
  elements: str
ignored_count:
  description: Offsite sets under the namespace that are not this store's (left alone).
  returned: O(state=present)
  type: int
fetched:
  description: The set fetched (or, already there, matched).
  returned: O(state=fetched)
  type: dict
  contains:
    name:
      description: Backup name.
      type: str
    path:
      description: Local path of the backup, for M(mlflowops.maintenance.db_restore)'s O(mlflowops.maintenance.db_restore#module:src).
      type: str
    created_at:
      description: UTC creation time from the manifest.
      type: str
    engine:
      description: Store engine.
      type: str
    size_bytes:
      description: Size from the manifest.
      type: int
    sha256:
      description: sha256 from the manifest.
      type: str
    url:
      description: Offsite location of the backup.
      type: str
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backup_offsite as offsite_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3util
from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule, one_line
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import retention_argument_spec, retention_policy
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module


def run(module):
    params = module.params
    try:
        policy = retention_policy(params["retention"])
    except ValueError as exc:
        raise MaintenanceError(str(exc))
    base = offsite_utils.host_base(params["prefix"], params["namespace"])
    backup_prefix = backups.validate_prefix(params["backup_prefix"])
    if params["name"]:
        offsite_utils.check_entry_name(params["name"])
    identity = None
    if params["backend_store_uri"]:
        identity = backups.store_identity(backend_store_from_module(module), prefix=backup_prefix)
    s3util.require_boto3()
    client = s3util.build_client(params, deadline=module.deadline)
    s3util.check_bucket(client, params["bucket"], "backup_offsite")
    offsite = offsite_utils.Offsite(client, params["bucket"], base, s3util.transfer_config(params),
                                    deadline=module.deadline)
    if params["state"] == "fetched":
        return offsite_utils.fetch(offsite, params["path"], params["name"], identity, backup_prefix,
                                   check_mode=module.check_mode)
    return offsite_utils.push(offsite, params["path"], identity, backup_prefix, policy, verify=params["verify"],
                              check_mode=module.check_mode)


def describe(exc):
    if s3util.error_code(exc) is not None or (s3util.botocore is not None and isinstance(exc, s3util.botocore.exceptions.BotoCoreError)):
        return s3util.describe_error(exc, "backup_offsite")
    return "backup_offsite failed: %s: %s" % (type(exc).__name__, one_line(exc))


def main():
    argument_spec = dict(
        state=dict(type="str", choices=["present", "fetched"], default="present"),
        path=dict(type="path", required=True),
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="mlflow-backups"),
        namespace=dict(type="str", required=True),
        backup_prefix=dict(type="str", default="mlflow"),
        retention=retention_argument_spec(),
        verify=dict(type="str", choices=["checksum", "size"], default="checksum"),
        name=dict(type="str"),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec)
    if module.params["state"] == "present":
        module.require("store")  # the store identity decides which backups are ours
    module.run(run, module, describe=describe)


if __name__ == "__main__":
    main()
