#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: db_backup
short_description: Back up an MLflow backend store (SQLite, PostgreSQL, MySQL) with a manifest, verification and retention
version_added: 0.1.0
description:
  - Writes one backup of the tracking server's backend store into the directory O(dest), while the
    server keeps running.
  - B(SQLite) is copied with the C(sqlite3) online backup API in one step, a consistent snapshot also in
    WAL mode; the raw database file is never copied.
  - B(PostgreSQL) is dumped with C(pg_dump) (custom format by default) from a snapshot exported by a
    REPEATABLE READ transaction that also counts the rows of every table, so the counts in the manifest are
    those of the dump. The password travels in a temporary 0600 C(PGPASSFILE), never in process arguments.
    C(pg_dump) runs with C(--lock-wait-timeout); its exit status and stderr are checked.
  - B(MySQL and MariaDB) (C(mysql://), C(mysql+pymysql://), C(mysql+mysqldb://)) are dumped with C(mariadb-dump)
    (or C(mysqldump)) C(--single-transaction --quick --routines --triggers --hex-blob --no-tablespaces) into a plain
    SQL file, streamed through the compression; one consistent InnoDB snapshot, no table locks. The password
    reaches the dump only through a temporary 0600 option file (C(--defaults-extra-file)), never its arguments or
    environment. The dump's exit status and stderr are checked. O(format) and O(jobs) do not apply.
  - The backup is written under a C(.partial) name, fsynced and renamed; a JSON manifest
    (C(<backup>.manifest.json)) is written last, also atomically. A backup without a valid manifest is
    incomplete; M(mlflowops.maintenance.db_restore) never uses it and retention never counts it.
  - When the store has not changed since the newest complete backup, no backup is written and the task
    reports C(changed=false). SQLite tells this from the database and WAL files' sizes, modification times
    and header fields (file change counter, schema cookie, WAL salts); PostgreSQL from C(count(*)) and
    C(sum(xmin)) of every table in the dump's snapshot. See the notes.
  - After a successful (or unchanged) run, O(retention) prunes complete backups, and incomplete leftovers older
    than O(incomplete_grace) are removed; both are reported.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
  - mlflowops.maintenance.retention
options:
  dest:
    description:
      - Directory that holds the backups; created when missing.
      - It needs room for one more backup (SQLite with compression also for the uncompressed copy).
    type: path
    required: true
  format:
    description:
      - C(pg_dump) output format (PostgreSQL only; SQLite backups are database files).
      - C(custom) is one file that C(pg_restore) can restore in parallel; C(directory) dumps in parallel
        with O(jobs); C(plain) is an SQL script (restored with C(psql)).
    type: str
    choices: [custom, directory, plain]
    default: custom
  jobs:
    description:
      - Parallel C(pg_dump) jobs with O(format=directory), and parallel C(pg_restore) jobs of O(verify=restore).
    type: int
    default: 1
  compression:
    description:
      - C(auto) is C(zstd) when the C(zstandard) Python library or the C(zstd) command is available, else C(gzip).
      - PostgreSQL custom and directory formats use C(pg_dump)'s own gzip for C(gzip); C(pg_dump) before 16
        cannot write zstd in directory format, so gzip is used there (with a warning).
    type: str
    choices: [auto, zstd, gzip, none]
    default: auto
  verify:
    description:
      - C(checksum) re-reads the written backup and checks its sha256. A SQLite file copy without compression is
        hashed in the copy's own pass, on a second thread, from the very buffers that are written, and only its size
        is checked afterwards (a re-read would come from the page cache the copy just filled).
      - C(restore) also restores it into a scratch target that is dropped afterwards. SQLite, a temporary file
        that must pass C(PRAGMA integrity_check). PostgreSQL, a scratch database (the role needs C(CREATEDB))
        whose table row counts must equal the source's as of the dump. MySQL, a scratch database
        C(<database>_verify_<random>) on the same server (the user needs the C(CREATE) and C(DROP) privileges on
        it) that must restore without an error and hold every table; its row counts are recorded in the manifest
        and M(mlflowops.maintenance.db_restore) checks them after a restore.
      - A backup that fails verification is removed and the task fails.
    type: str
    choices: [none, checksum, restore]
    default: checksum
  incomplete_grace:
    description:
      - Incomplete leftovers (C(.partial) entries, backups without a manifest) older than this are removed.
      - A duration like C(mlflow gc --older-than) takes it, C(1h), C(30m), C(2d); a bare number is seconds.
    type: str
    default: 1h
  force:
    description:
      - Write a new backup even when the store has not changed.
    type: bool
    default: false
  prefix:
    description:
      - Backup names start with C(<prefix>-<engine>-). One file-name component; letters, digits, C(.), C(_),
        C(+) and C(-), starting with a letter or digit, no C(..).
      - Every manifest records the store's identity (engine, location without credentials, and this prefix).
        Retention and the unchanged check only consider complete backups of exactly this store and prefix, so
        several stores (or prefixes such as C(mlflow) and C(mlflow-prod)) can share O(dest) and each keeps its
        full retention set. Backups of other stores, and old backups whose manifest records no identity, are
        never pruned; they are listed in RV(ignored).
    type: str
    default: mlflow
  mode:
    description:
      - Permissions of the backup files and manifests, as an octal string such as C('0640').
      - By default C(0600); directories this module creates (O(dest), a directory-format dump) get C(0700), or
        the search bits that go with O(mode)'s read bits. An existing O(dest) keeps its own mode.
    type: raw
  store_kind:
    description:
      - Which MLflow database O(backend_store_uri) names. C(tracking) is the tracking server's backend store.
        C(auth) is the basic-auth app's database (its C(database_uri), as in C(mlflow_auth_database_uri)), with
        users and permissions. It has a C(users) table instead of C(runs), and keeps its revision in
        C(alembic_version_auth) (before MLflow 3.6, in C(alembic_version)); the manifest records that revision.
      - A database without the kind's revision or without its C(users) or C(runs) table is refused.
      - The kind is part of the backup's identity, so backups of an auth database are never pruned by, never
        counted as unchanged against, and never restored as, backups of a tracking store, even in one O(dest).
    type: str
    choices: [tracking, auth]
    default: tracking
  lock_wait_timeout:
    description:
      - Seconds C(pg_dump) (and the counting transaction) wait for a table lock before failing; for SQLite,
        the busy timeout of the snapshot.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    description: Computes the same plan (new backup or unchanged, what retention prunes) and writes nothing.
  diff_mode:
    support: none
    description: The backup is a new file; there is no before and after of one file to show.
requirements:
  - psycopg2 (PostgreSQL stores)
  - PyMySQL, and mariadb-dump or mysqldump plus the mariadb or mysql client (MySQL/MariaDB stores)
  - pg_dump, pg_restore and psql (PostgreSQL stores)
  - zstandard or the zstd command (for zstd compression)
notes:
  - Uses the backend store family (O(artifacts_destination) excepted). The tracking and S3 families are accepted for
    C(module_defaults) and ignored.
  - Only one backup runs at a time in a O(dest) (an C(flock) on C(.<prefix>-backup.lock)).
  - SQLite unchanged detection compares the database and WAL files' state. A checkpoint without new commits can
    make it take one extra backup; it never misses a committed change. The fingerprint is taken before the
    snapshot, so writes during a backup make the next run back up again.
  - PostgreSQL unchanged detection takes constant time when nothing in the cluster wrote since the newest backup (the dump
    snapshot's transaction ids). Otherwise, when this database's write counters (C(pg_stat_user_tables)) are
    as they were, one sequential scan of each table (C(count) and C(sum(xmin)), in the dump's snapshot)
    decides before any dump; when there is nothing to compare with (first backup, O(force)) or the counters
    moved, the store is backed up and that scan runs alongside C(pg_dump), in the same snapshot, only to be
    recorded for the next run. Counters that arrive late (a session flushes them up to about 10 s after a
    write) can make it take one extra backup; the counters alone never make it skip one.
  - MySQL/MariaDB unchanged detection does not trust C(information_schema.tables.UPDATE_TIME) (InnoDB forgets it
    on a restart). It takes constant time when nothing on the server wrote since the newest backup, that is when, in one
    consistent snapshot taken before the dump, InnoDB's transaction counter (C(Innodb_max_trx_id), moved by every
    write and every commit), the open read-write transactions (C(information_schema.innodb_trx), PROCESS
    privilege), the server's start time, the tables with their engines and C(SHOW CREATE TABLE) and the alembic
    revision are as they were.
  - Otherwise (a non-InnoDB table, Oracle MySQL without that counter, no PROCESS privilege, any write on the
    server) an exact hash decides, over the table list, each table's C(SHOW CREATE TABLE) (without the
    C(AUTO_INCREMENT) counter), C(COUNT(*)), C(CHECKSUM TABLE) (every row's content) and the alembic revision,
    read in that same snapshot while the dump runs. When it equals the newest backup's, the new dump is discarded
    and the store reported unchanged (check mode reads it before deciding). Any committed insert, update or
    delete makes a new backup; a table whose checksum cannot be read disables skipping (when in doubt, back up).
    Writes between the fingerprint and the dump only make the next run back up again.
  - When the store is unchanged and O(verify) is not C(none), the newest backup's checksum is checked; a corrupt
    newest backup makes the module take a new one.
seealso:
  - module: mlflowops.maintenance.db_restore
  - module: mlflowops.maintenance.backup_info
"""

EXAMPLES = r"""
- name: Back up a SQLite store, keep a week of dailies and four weeklies
  mlflowops.maintenance.db_backup:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    dest: /var/backups/mlflow
    retention:
      keep_last: 3
      keep_daily: 7
      keep_weekly: 4
  register: backup

- name: Parallel PostgreSQL dump, verified by a restore into a scratch database
  mlflowops.maintenance.db_backup:
    backend_store_uri: postgresql://mlflow@db.example.com:5432/mlflow
    db_password: "{{ vault_mlflow_db_password }}"
    dest: /var/backups/mlflow
    format: directory
    jobs: 4
    verify: restore

- name: What would be written and pruned
  mlflowops.maintenance.db_backup:
    backend_store_uri: "{{ mlflow_backend_store_uri }}"
    dest: /var/backups/mlflow
    retention:
      keep_monthly: 12
  check_mode: true
"""

RETURN = r"""
backup:
  description:
    - The backup written, or (when the store is unchanged) the newest complete backup; in check mode the one that
      would be written (C(size_bytes) and C(sha256) are null).
  returned: always
  type: dict
  contains:
    path:
      description: Backup file (or directory for the directory format).
      type: str
    manifest:
      description: Its manifest file.
      type: str
    size_bytes:
      description: Size on disk.
      type: int
    sha256:
      description: sha256 of the file; for a directory, over its files' sha256 sums.
      type: str
    engine:
      description: C(sqlite), C(postgresql) or C(mysql).
      type: str
    format:
      description: C(sqlite), C(custom), C(directory) or C(plain).
      type: str
    compression:
      description: C(zstd), C(gzip) or C(none).
      type: str
    duration_s:
      description: Seconds the backup took.
      type: float
    schema_revision:
      description: MLflow's alembic schema revision in the store.
      type: str
    created_at:
      description: UTC creation time (ISO 8601).
      type: str
  sample:
    path: /var/backups/mlflow/mlflow-sqlite-20260101T020000000000Z.db.zst
    manifest: /var/backups/mlflow/mlflow-sqlite-20260101T020000000000Z.db.zst.manifest.json
    size_bytes: 1048576
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    engine: sqlite
    format: sqlite
    compression: zstd
    duration_s: 1.2
    schema_revision: 1b5f0d9ad7c1
    created_at: "2026-01-01T02:00:00.000000Z"
created:
  description: Whether a new backup was (or in check mode would be) written.
  returned: always
  type: bool
unchanged:
  description: Whether the store was unchanged since the newest complete backup, so none was written.
  returned: always
  type: bool
verified:
  description: C(checksum) or C(restore) when that verification passed, else null.
  returned: always
  type: str
pruned:
  description: Complete backups removed (in check mode, that would be removed) by O(retention).
  returned: always
  type: list
  elements: dict
  sample:
    - name: mlflow-sqlite-20251201T020000000000Z.db.zst
      path: /var/backups/mlflow/mlflow-sqlite-20251201T020000000000Z.db.zst
      created_at: "2025-12-01T02:00:00.000000Z"
      reason: not matched by any rule
kept:
  description: Complete backups kept, with the rules that keep each.
  returned: always
  type: list
  elements: dict
  sample: [{name: mlflow-sqlite-20260101T020000000000Z.db.zst, reasons: [keep_last 3, keep_daily 2026-1-1]}]
store:
  description: The identity recorded in the manifest of every backup of this store.
  returned: always
  type: dict
  sample: {engine: sqlite, location: "sqlite:////srv/mlflow/mlflow.db", prefix: mlflow}
ignored:
  description:
    - Complete backups with this O(prefix) in O(dest) that belong to another store, or record no identity (written
      by an older version); retention leaves them alone.
  returned: always
  type: list
  elements: dict
  sample: [{name: mlflow-sqlite-20251201T020000000000Z.db.zst, reason: "backup of an unknown store (no identity in its manifest)"}]
removed_incomplete:
  description:
    - Incomplete leftovers older than O(incomplete_grace) that were (or would be) removed, including hidden
      C(.verify-*.partial) files of a killed O(verify=restore).
  returned: always
  type: list
  elements: dict
  sample:
    - name: mlflow-sqlite-20251231T020000000000Z.db.zst.partial
      path: /var/backups/mlflow/mlflow-sqlite-20251231T020000000000Z.db.zst.partial
      reason: partial write (interrupted or in progress)
msg:
  description: What happened, in one line.
  returned: always
  type: str
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.backups import check_jobs, grace_seconds
from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import BackupOptions, run_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import retention_argument_spec, retention_policy
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module


def main():
    argument_spec = dict(
        dest=dict(type="path", required=True),
        format=dict(type="str", choices=["custom", "directory", "plain"], default="custom"),
        jobs=dict(type="int", default=1),
        compression=dict(type="str", choices=["auto", "zstd", "gzip", "none"], default="auto"),
        verify=dict(type="str", choices=["none", "checksum", "restore"], default="checksum"),
        retention=retention_argument_spec(),
        incomplete_grace=dict(type="str", default="1h"),
        force=dict(type="bool", default=False),
        prefix=dict(type="str", default="mlflow"),
        lock_wait_timeout=dict(type="int", default=60),
        mode=dict(type="raw"),
        store_kind=dict(type="str", choices=["tracking", "auth"], default="tracking"),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("store",))
    module.run(run, module)


def run(module):
    params = module.params
    check_jobs(params["jobs"])
    try:
        policy = retention_policy(params["retention"])
    except ValueError as exc:
        raise MaintenanceError(str(exc))
    grace = grace_seconds(params["incomplete_grace"])
    store = backend_store_from_module(module)
    db_tools.require_driver(store)
    opts = BackupOptions(params["dest"], fmt=params["format"], jobs=params["jobs"],
                         compression=params["compression"], verify=params["verify"],
                         retention=policy, incomplete_grace=grace, force=params["force"],
                         prefix=params["prefix"], lock_wait_timeout=params["lock_wait_timeout"],
                         deadline=params["deadline"] or None, db_connect_timeout=params["db_connect_timeout"],
                         mode=params["mode"], store_kind=params["store_kind"])
    result = run_backup(store, opts, check_mode=module.check_mode, warn=module.warn)
    result["changed"] = bool(result["created"] or result["pruned"] or result["removed_incomplete"])
    return result


if __name__ == "__main__":
    main()
