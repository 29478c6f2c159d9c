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
    into the store's database or into O(target_database), which is created when missing. With O(force=true)
    MLflow's tables that the backup does not hold (created after it, for example by a schema migration) are
    dropped first, with what depends on them (C(--clean) drops only the backup's own objects), and listed in
    RV(dropped_tables). The restored tables' row counts must equal those recorded at dump time.
  - B(MySQL/MariaDB) is restored by replaying the plain SQL dump with the C(mariadb) (or C(mysql)) client, which
    stops at the first error, into the store's database or into O(target_database) (created when missing; the
    user needs the C(CREATE) privilege). With O(force=true) the backup's tables and MLflow's tables that the
    backup does not hold (created after it, for example by a migration, as MySQL DDL is not transactional) are
    dropped first, so the schema is the backup's again; the latter are listed in RV(dropped_tables).
    The password reaches the client only through a temporary 0600
    option file (C(--defaults-extra-file)). When the backup was verified by restoring it (C(verify=restore) of
    db_backup), the restored row counts must equal the recorded ones; otherwise every table of the backup must
    exist afterwards.
  - A target that already holds tables is only replaced with O(force=true).
  - A forced restore only drops tables that are the backup's or MLflow's own (by name, in the backup's schemas,
    every table MLflow's schemas create up to 3.17). Any other table of the target is left as it is and listed in
    RV(kept_tables).
  - Only a backup of the same store is restored (the identity db_backup records in the manifest; for SQLite the
    resolved real path of the database file, for PostgreSQL host, port and database). A backup of another store,
    or an old one whose manifest records no store, needs O(allow_other_store=true).
  - The backup's content is checked before the target is touched. An empty backup, or one without MLflow's
    C(alembic_version) revision and C(runs) table, is refused unless O(allow_non_mlflow=true). SQLite backups
    are decompressed into a private temporary copy next to the target and must also pass C(PRAGMA integrity_check);
    PostgreSQL backups are judged by their manifest (row counts and schema revision of the dump).
  - A SQLite target keeps its owner, group and permissions (the new file gets them before it is renamed over the
    old one); O(owner), O(group) and O(mode) set them instead. A new target gets the current user and C(0600).
    A target path that is a symlink is followed; the file it points to is replaced, the link stays.
  - Hidden temporary files of an earlier, killed SQLite restore (C(.<name>.restore-<time>.partial) next to the
    target) older than O(incomplete_grace) are removed and reported in RV(removed_partials).
  - Stop the tracking server first (the C(restore) role does).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  src:
    description:
      - A backup file (or directory-format backup), its C(.manifest.json), or a directory of backups, meaning the
        newest complete backup of this same store in it (with O(allow_other_store=true), the newest complete backup
        of the store's engine, whatever store it came from).
    type: path
    required: true
  allow_other_store:
    description:
      - Restore a backup whose manifest records another store, or no store at all (written before db_backup
        recorded identities), for example to move a store to a new path or host.
    type: bool
    default: false
  allow_non_mlflow:
    description:
      - Restore a backup that is empty or is not an MLflow store (no C(alembic_version) revision or no C(runs)
        table; for O(store_kind=auth) no C(alembic_version_auth) revision or no C(users) table). Never needed for
        backups of a working MLflow database.
    type: bool
    default: false
  store_kind:
    description:
      - Which MLflow database O(backend_store_uri) names, as for M(mlflowops.maintenance.db_backup). C(auth) is
        the basic-auth app's database (users and permissions, C(mlflow_auth_database_uri)).
      - Only a backup written with the same O(store_kind) is restored; a backup of an auth database is never
        restored into a tracking store, nor the other way round, whatever O(allow_other_store) says.
    type: str
    choices: [tracking, auth]
    default: tracking
  owner:
    description:
      - SQLite only. Owner (name or uid) of the restored database file; by default the replaced file's owner.
      - Changing the owner needs root (C(become)).
    type: str
  group:
    description:
      - SQLite only. Group (name or gid) of the restored database file; by default the replaced file's group.
    type: str
  mode:
    description:
      - SQLite only. Permissions of the restored database file, as an octal string such as C('0600'); by default
        the replaced file's, or C(0600) for a new file.
    type: raw
  incomplete_grace:
    description:
      - SQLite only. Temporary files of killed restores of this target older than this are removed.
      - A duration like C(mlflow gc --older-than) takes it, C(1h), C(30m), C(2d); a bare number is seconds.
    type: str
    default: 1h
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
      - PostgreSQL and MySQL only. Restore into this database instead of the one in O(backend_store_uri); it is
        created when missing (the role needs C(CREATEDB); the MySQL user the C(CREATE) privilege).
    type: str
  jobs:
    description:
      - Parallel C(pg_restore) jobs (custom and directory formats).
    type: int
    default: 1
attributes:
  check_mode:
    support: full
    description:
      - Validates the backup (manifest, checksum, engine, store identity, content) and the target, and restores
        nothing. SQLite backups are decompressed into a hidden temporary file next to the target for the content
        checks; it is removed before the task ends.
  diff_mode:
    support: none
    description: A database restore has no meaningful text diff.
requirements:
  - psycopg2, pg_restore and psql (PostgreSQL stores)
notes:
  - Uses the backend store family (O(artifacts_destination) excepted). The tracking and S3 families are accepted for
    C(module_defaults) and ignored.
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
      description: C(sqlite), C(postgresql) or C(mysql).
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
other_store:
  description: Whether the backup came from another store (or records none); only with O(allow_other_store=true).
  returned: success
  type: bool
owner:
  description: SQLite only. The owner, group and mode the restored file was (or would be) given.
  returned: when the store is SQLite
  type: dict
  sample: {uid: 65534, gid: 65534, mode: "0600"}
dropped_tables:
  description: MLflow's tables of the target that the backup does not hold, dropped (or in check mode to be
    dropped) with O(force=true) (PostgreSQL, with what depends on them).
  returned: when the store is MySQL or PostgreSQL
  type: list
  elements: str
kept_tables:
  description: Tables of the target that the backup does not hold and that are not MLflow's, left alone.
  returned: when the store is MySQL or PostgreSQL
  type: list
  elements: str
row_counts:
  description: MySQL only. Rows per table of the restored database.
  returned: when the store is MySQL and not in check mode
  type: dict
removed_partials:
  description: SQLite only. Stale temporary files of killed restores that were (or in check mode would be) removed.
  returned: when the store is SQLite
  type: list
  elements: str
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

from ansible_collections.mlflowops.maintenance.plugins.module_utils.backups import check_jobs, grace_seconds
from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_restore import run_restore
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module


def main():
    argument_spec = dict(
        src=dict(type="path", required=True),
        force=dict(type="bool", default=False),
        keep_previous=dict(type="bool", default=True),
        target_database=dict(type="str"),
        jobs=dict(type="int", default=1),
        allow_other_store=dict(type="bool", default=False),
        allow_non_mlflow=dict(type="bool", default=False),
        owner=dict(type="str"),
        group=dict(type="str"),
        mode=dict(type="raw"),
        incomplete_grace=dict(type="str", default="1h"),
        store_kind=dict(type="str", choices=["tracking", "auth"], default="tracking"),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("store",))
    module.run(run, module)


def run(module):
    params = module.params
    check_jobs(params["jobs"])
    store = backend_store_from_module(module)
    if params["target_database"] and store.is_sqlite:
        raise MaintenanceError("target_database applies to PostgreSQL and MySQL stores only")
    grace = grace_seconds(params["incomplete_grace"])
    return run_restore(store, params["src"], force=params["force"], keep_previous=params["keep_previous"],
                       target_database=params["target_database"], jobs=params["jobs"],
                       deadline=params["deadline"] or None, db_connect_timeout=params["db_connect_timeout"],
                       check_mode=module.check_mode, allow_other_store=params["allow_other_store"],
                       allow_non_mlflow=params["allow_non_mlflow"], owner=params["owner"], group=params["group"],
                       mode=params["mode"], incomplete_grace=grace, store_kind=params["store_kind"])


if __name__ == "__main__":
    main()
