#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: db_optimize
short_description: Reclaim space and refresh planner statistics in an MLflow backend store
version_added: 0.1.0
description:
  - "SQLite: checkpoints the WAL, runs C(VACUUM) on its own autocommit connection, then C(ANALYZE);
    optionally runs C(PRAGMA quick_check) or C(PRAGMA integrity_check) first, and reports the journal mode."
  - "PostgreSQL: runs C(VACUUM (ANALYZE)) in autocommit mode on the tables of O(schema) (MLflow's tables),
    with C(lock_timeout) and C(statement_timeout) set; optionally C(VACUUM FULL) and C(REINDEX TABLE)."
  - "MySQL and MariaDB: C(OPTIMIZE TABLE) on the tables whose reclaimable space (C(DATA_FREE) in
    C(information_schema.tables)) is at least O(min_free_mb) (and never below 8 MiB, which InnoDB keeps free in
    a rebuilt table) and O(min_free_ratio) of the table's space; C(ANALYZE TABLE) (with O(analyze)) on the other
    tables whose InnoDB statistics are stale (more than 10% of the rows modified since they were computed, from
    C(information_schema.INNODB_SYS_TABLESTATS); needs the C(PROCESS) privilege, else only optimised tables are
    analysed). On InnoDB, OPTIMIZE TABLE rebuilds the table online (C(ALTER TABLE ... FORCE)): reads and writes
    go on during the rebuild, but it takes an exclusive metadata lock briefly at its start and end, waiting at
    most O(lock_timeout_ms) (rounded up to seconds, C(lock_wait_timeout)) and blocking new queries of the table
    while it waits; it needs free disk space for a copy of the table."
  - The heavy step runs only when enough space is reclaimable, so a second run reports C(changed=false).
    SQLite measures the share of free pages (C(PRAGMA freelist_count) over C(PRAGMA page_count));
    PostgreSQL counts dead tuples per table (C(n_dead_tup) in C(pg_stat_user_tables)).
  - SQLite VACUUM is refused with a clear error when the database's filesystem (and SQLite's temporary
    directory, when it is another filesystem) has less free space than the database, its WAL and
    O(vacuum_margin_mb).
  - The database must exist; a missing SQLite file is an error and is never created.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  min_free_ratio:
    description:
      - SQLite. Run C(VACUUM) only when free pages are at least this share (0 to 1) of all pages.
      - MySQL. Run C(OPTIMIZE TABLE) only on tables whose C(DATA_FREE) is at least this share of their space.
    type: float
    default: 0.1
  min_free_mb:
    description:
      - SQLite. Run C(VACUUM) only when at least this many megabytes are reclaimable.
      - MySQL. Run C(OPTIMIZE TABLE) only on tables with at least this many megabytes of C(DATA_FREE).
    type: float
    default: 1
  vacuum_margin_mb:
    description:
      - SQLite. Free space demanded beyond the database's own size before C(VACUUM) starts.
    type: int
    default: 64
  analyze:
    description:
      - Refresh planner statistics. SQLite runs C(ANALYZE) after a C(VACUUM), or when the database has
        never been analyzed; PostgreSQL adds C(ANALYZE) to each C(VACUUM); MySQL runs C(ANALYZE TABLE) on tables
        with stale statistics (C(OPTIMIZE TABLE) recomputes them anyway).
    type: bool
    default: true
  analysis_limit:
    description:
      - SQLite. C(PRAGMA analysis_limit) for C(ANALYZE) (rows examined per index); 0 examines every row.
    type: int
    default: 1000
  integrity_check:
    description:
      - SQLite. Check the database before optimising; the module fails and changes nothing when the
        check reports problems. C(quick) is C(PRAGMA quick_check), C(full) is C(PRAGMA integrity_check).
    type: str
    choices: [none, quick, full]
    default: none
  busy_timeout:
    description:
      - SQLite. Seconds to wait for a lock held by the server.
    type: int
    default: 30
  schema:
    description:
      - PostgreSQL. The schema holding MLflow's tables.
    type: str
    default: public
  tables:
    description:
      - PostgreSQL and MySQL. Limit the work to these tables (of O(schema) for PostgreSQL). By default every table.
    type: list
    elements: str
  min_dead_tuples:
    description:
      - PostgreSQL. A table is vacuumed when it has at least this many dead tuples and at least
        O(min_dead_ratio) of its tuples are dead.
    type: int
    default: 1000
  min_dead_ratio:
    description:
      - PostgreSQL. Share (0 to 1) of a table's tuples that must be dead before it is vacuumed.
    type: float
    default: 0.1
  vacuum_full:
    description:
      - PostgreSQL. Use C(VACUUM FULL), which rewrites each table and returns space to the operating system.
      - It takes an C(ACCESS EXCLUSIVE) lock on each table for the whole rewrite, blocking the tracking
        server's reads and writes of that table, and needs free disk space for a copy of the table.
    type: bool
    default: false
  reindex:
    description:
      - PostgreSQL. Run C(REINDEX TABLE) on each vacuumed table.
      - It blocks writes to the table and reads that use its indexes while each index is rebuilt.
    type: bool
    default: false
  force:
    description:
      - Run the heavy step whatever the thresholds say.
    type: bool
    default: false
  allow_non_mlflow:
    description:
      - SQLite. Optimise a database that is not an MLflow store (no C(alembic_version) revision or no C(runs)
        table). By default such a file is refused, so a wrong O(backend_store_uri) changes nothing.
      - A missing or empty (0-byte) file is always refused; the module never creates a database.
    type: bool
    default: false
  lock_timeout_ms:
    description:
      - PostgreSQL. C(lock_timeout) in milliseconds; a statement that waits longer for its lock fails
        instead of queueing the server's queries behind it.
      - MySQL. C(lock_wait_timeout) of the session (rounded up to whole seconds) for the metadata locks of
        C(OPTIMIZE TABLE).
    type: int
    default: 5000
  statement_timeout_ms:
    description:
      - PostgreSQL. C(statement_timeout) in milliseconds; 0 means no limit.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Measures and decides exactly as a real run and reports the plan; writes nothing.
  diff_mode:
    support: none
    description: There is no before and after of one file to show.
requirements:
  - psycopg2 (PostgreSQL only)
  - PyMySQL (MySQL/MariaDB only)
notes:
  - Uses the backend store family (O(artifacts_destination) excepted). The tracking and S3 families are accepted for
    C(module_defaults) and ignored.
  - Run it while the tracking server is quiet. SQLite C(VACUUM) holds a write lock for its duration;
    the server's writes wait up to their busy timeout.
  - Plain PostgreSQL C(VACUUM) makes space reusable inside the tables but rarely shrinks the files, so
    RV(reclaimed_bytes) is usually 0 unless O(vacuum_full=true).
seealso:
  - name: SQLite VACUUM
    description: What VACUUM does and the space it needs.
    link: https://www.sqlite.org/lang_vacuum.html
  - name: PostgreSQL VACUUM
    description: VACUUM options and their locks.
    link: https://www.postgresql.org/docs/current/sql-vacuum.html
"""

EXAMPLES = r"""
- name: Reclaim space in a SQLite store after a gc
  mlflowops.maintenance.db_optimize:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
    integrity_check: quick
  register: optimized

- name: Vacuum MLflow's tables on PostgreSQL with a short lock timeout
  mlflowops.maintenance.db_optimize:
    backend_store_uri: postgresql://mlflow@db.example.com:5432/mlflow
    db_password: "{{ mlflow_db_password }}"
    lock_timeout_ms: 2000

- name: Rewrite the largest tables during a maintenance window (ACCESS EXCLUSIVE locks)
  mlflowops.maintenance.db_optimize:
    backend_store_uri: postgresql+psycopg2://mlflow@db.example.com/mlflow
    tables: [metrics, latest_metrics, params, tags]
    vacuum_full: true
    reindex: true
    statement_timeout_ms: 3600000
"""

RETURN = r"""
engine:
  description: C(sqlite), C(postgresql) or C(mysql).
  returned: always
  type: str
  sample: sqlite
size_before_bytes:
  description: Database size in bytes before (SQLite file plus WAL; PostgreSQL C(pg_database_size)).
  returned: always
  type: int
  sample: 1073741824
size_after_bytes:
  description: Database size in bytes afterwards; in check mode, the predicted size.
  returned: always
  type: int
  sample: 429496729
reclaimed_bytes:
  description: RV(size_before_bytes) minus RV(size_after_bytes), at least 0.
  returned: always
  type: int
  sample: 644245095
actions:
  description: What ran, in order (for example C(quick_check), C(wal_checkpoint), C(vacuum), C(analyze), C(vacuum metrics)).
  returned: always
  type: list
  elements: str
  sample: [wal_checkpoint, vacuum, analyze]
plan:
  description:
    - The decision. SQLite - C(vacuum), C(analyze), C(reclaimable_bytes), C(free_ratio), C(reason).
      PostgreSQL - C(tables) to vacuum, C(vacuum_full), C(reindex), C(analyze), C(reason).
  returned: always
  type: dict
  sample: {vacuum: true, analyze: true, reclaimable_bytes: 644245095, free_ratio: 0.6, reason: "60.0% of pages are free"}
tables:
  description:
    - Per-table figures. SQLite - C(name), C(rows_estimate) (from C(sqlite_stat1), null before the first ANALYZE).
      PostgreSQL - C(name), C(vacuumed), C(n_live_tup), C(n_dead_tup_before), C(n_dead_tup_after),
      C(size_before_bytes), C(size_after_bytes).
  returned: always
  type: list
  elements: dict
  sample: [{name: metrics, rows_estimate: 400000}]
journal_mode:
  description: SQLite journal mode (C(delete), C(wal), ...).
  returned: when engine is sqlite
  type: str
  sample: delete
page_size:
  description: SQLite page size in bytes.
  returned: when engine is sqlite
  type: int
  sample: 4096
page_count:
  description: SQLite pages after the run.
  returned: when engine is sqlite
  type: int
  sample: 104857
freelist_count:
  description: SQLite free pages after the run.
  returned: when engine is sqlite
  type: int
  sample: 0
integrity:
  description: Result of O(integrity_check) - C(kind), C(ok), C(messages); null when not run.
  returned: when engine is sqlite
  type: dict
  sample: {kind: quick, ok: true, messages: [ok]}
store:
  description: The backend store, with any password redacted.
  returned: always
  type: dict
  sample: {engine: sqlite, uri: "sqlite:////srv/mlflow/mlflow.db", path: /srv/mlflow/mlflow.db}
"""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_mysql import optimize_mysql
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_postgres import PSYCOPG2_IMPORT_ERROR, optimize_postgres
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_optimize_sqlite import optimize_sqlite
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module


def main():
    argument_spec = dict(
        min_free_ratio=dict(type="float", default=0.1),
        min_free_mb=dict(type="float", default=1.0),
        vacuum_margin_mb=dict(type="int", default=64),
        analyze=dict(type="bool", default=True),
        analysis_limit=dict(type="int", default=1000),
        integrity_check=dict(type="str", default="none", choices=["none", "quick", "full"]),
        busy_timeout=dict(type="int", default=30),
        schema=dict(type="str", default="public"),
        tables=dict(type="list", elements="str"),
        min_dead_tuples=dict(type="int", default=1000),
        min_dead_ratio=dict(type="float", default=0.1),
        vacuum_full=dict(type="bool", default=False),
        reindex=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        lock_timeout_ms=dict(type="int", default=5000),
        statement_timeout_ms=dict(type="int", default=0),
        allow_non_mlflow=dict(type="bool", default=False),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("store",))
    module.run(run, module)


def run(module):
    params = module.params
    store = backend_store_from_module(module)
    for name in ("min_free_ratio", "min_dead_ratio"):
        if not 0 <= params[name] <= 1:
            raise MaintenanceError("%s must be between 0 and 1, got %s" % (name, params[name]))
    if store.is_sqlite:
        result = optimize_sqlite(
            store.path, check_mode=module.check_mode, min_free_ratio=params["min_free_ratio"],
            min_free_bytes=int(params["min_free_mb"] * 1024 * 1024), force=params["force"],
            analyze=params["analyze"], analysis_limit=params["analysis_limit"],
            integrity_check=params["integrity_check"], margin_bytes=params["vacuum_margin_mb"] * 1024 * 1024,
            busy_timeout=params["busy_timeout"], require_mlflow=not params["allow_non_mlflow"])
    elif store.is_mysql:
        result = optimize_mysql(
            store, check_mode=module.check_mode, tables=params["tables"], min_free_ratio=params["min_free_ratio"],
            min_free_bytes=int(params["min_free_mb"] * 1024 * 1024), force=params["force"], analyze=params["analyze"],
            lock_timeout_ms=params["lock_timeout_ms"], connect_timeout=params["db_connect_timeout"])
    else:
        module.require_lib("psycopg2", PSYCOPG2_IMPORT_ERROR)
        result = optimize_postgres(
            store, check_mode=module.check_mode, schema=params["schema"], tables=params["tables"],
            min_dead_tuples=params["min_dead_tuples"], min_dead_ratio=params["min_dead_ratio"],
            force=params["force"], vacuum_full=params["vacuum_full"], reindex=params["reindex"],
            analyze=params["analyze"], lock_timeout_ms=params["lock_timeout_ms"],
            statement_timeout_ms=params["statement_timeout_ms"], connect_timeout=params["db_connect_timeout"])
    result["store"] = store.to_result()
    return result


if __name__ == "__main__":
    main()
