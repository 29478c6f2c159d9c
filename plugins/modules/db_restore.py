#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: db_restore
short_description: Restore an MLflow backend store from a db_backup backup
version_added: 0.1.0
description:
  - Restores a backup written by M(mlflowops.maintenance.db_backup) into the backend store O(backend_store_uri).
  - Before anything else, the backup's manifest is read and its sha256 checked; an incomplete backup (no valid
    manifest) or a corrupt one (size or checksum mismatch) is refused with an error naming the file.
  - B(SQLite) is restored into a temporary file next to the target, checked with C(PRAGMA integrity_check), then
    renamed over the target atomically. The replaced file (and its WAL) is kept as
    C(<name>.pre-restore-<timestamp>) unless O(keep_previous=false).
  - B(PostgreSQL) is restored with C(pg_restore --clean --if-exists) (with O(jobs)), or C(psql) for plain dumps,
    into the store's database or into O(target_database), which is created when missing. The restored tables'
    row counts must equal those recorded at dump time.
  - A target that already holds tables is only replaced with O(force=true).
  - Stop the tracking server first (the C(restore) role does).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.backend_store
options:
  src:
    description:
      - A backup file (or directory-format backup), its C(.manifest.json), or a directory of backups, meaning the
        newest complete backup of the store's engine in it.
    type: path
    required: true
  force:
    description:
      - Replace a target that is not empty.
    type: bool
    default: false
  keep_previous:
    description:
      - SQLite only. Keep the replaced database file as C(<name>.pre-restore-<timestamp>).
    type: bool
    default: true
  target_database:
    description:
      - PostgreSQL only. Restore into this database instead of the one in O(backend_store_uri); it is created when
        missing (the role needs C(CREATEDB)).
    type: str
  jobs:
    description:
      - Parallel C(pg_restore) jobs (custom and directory formats).
    type: int
    default: 1
  timeout:
    description:
      - Seconds any one external command (C(pg_restore), C(psql), C(zstd)) may run.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
    description: Validates the backup (manifest, checksum, engine) and the target, and restores nothing.
  diff_mode:
    support: none
    description: A database restore has no meaningful text diff.
requirements:
  - psycopg2, pg_restore and psql (PostgreSQL stores)
notes:
  - The task always reports C(changed) when it restores.
seealso:
  - module: mlflowops.maintenance.db_backup
  - module: mlflowops.maintenance.backup_info
"""

EXAMPLES = r"""
- name: Restore the newest complete backup over a SQLite store (server stopped)
  mlflowops.maintenance.db_restore:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    src: /var/backups/mlflow
    force: true

- name: Restore one PostgreSQL backup into a new database, to inspect it
  mlflowops.maintenance.db_restore:
    backend_store_uri: postgresql://mlflow@db.example.com/mlflow
    db_password: "{{ vault_mlflow_db_password }}"
    src: /var/backups/mlflow/mlflow-postgresql-20260101T020000000000Z.dump.zst
    target_database: mlflow_restored
    jobs: 4

- name: Only validate the newest backup
  mlflowops.maintenance.db_restore:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    src: /var/backups/mlflow
    force: true
  check_mode: true
"""

RETURN = r"""
restored:
  description: The backup restored (or, in check mode, validated).
  returned: success
  type: dict
  contains:
    path:
      description: Backup file or directory.
      type: str
    manifest:
      description: Its manifest.
      type: str
    engine:
      description: C(sqlite) or C(postgresql).
      type: str
    format:
      description: Backup format.
      type: str
    created_at:
      description: When the backup was taken (UTC).
      type: str
    sha256:
      description: Its verified sha256.
      type: str
    schema_revision:
      description: MLflow schema revision in the backup.
      type: str
target:
  description: The target store's URI, without its password.
  returned: success
  type: str
  sample: sqlite:////srv/mlflow/mlflow.db
target_database:
  description: PostgreSQL database restored into.
  returned: when the store is PostgreSQL
  type: str
created_database:
  description: Whether O(target_database) was (or would be) created.
  returned: when the store is PostgreSQL
  type: bool
previous:
  description: SQLite only. Where the replaced database file was kept, or null.
  returned: success
  type: str
  sample: /srv/mlflow/mlflow.db.pre-restore-20260101T020000000000Z
duration_s:
  description: Seconds the restore took.
  returned: success
  type: float
msg:
  description: What happened, in one line.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import run_restore
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import (
    backend_store_argument_spec,
    backend_store_from_module,
)


def main():
    argument_spec = backend_store_argument_spec()
    argument_spec.update(
        src=dict(type="path", required=True),
        force=dict(type="bool", default=False),
        keep_previous=dict(type="bool", default=True),
        target_database=dict(type="str"),
        jobs=dict(type="int", default=1),
        timeout=dict(type="int", default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        if params["jobs"] < 1:
            raise MaintenanceError("jobs must be at least 1")
        store = backend_store_from_module(module)
        if params["target_database"] and not store.is_postgresql:
            raise MaintenanceError("target_database applies to PostgreSQL stores only")
        result = run_restore(store, params["src"], force=params["force"], keep_previous=params["keep_previous"],
                             target_database=params["target_database"], jobs=params["jobs"],
                             timeout=params["timeout"], connect_timeout=params["connect_timeout"],
                             check_mode=module.check_mode)
    except MaintenanceError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg="db_restore failed: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
