#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: db_schema
short_description: Report and migrate the schema revision of MLflow's tracking and auth databases
version_added: 0.1.0
description:
  - Reads the alembic revision of the tracking database (table C(alembic_version)) and, when
    O(auth_database_uri) is given, of the basic-auth database (table C(alembic_version_auth)), and the
    head revision of the MLflow installed for the Python interpreter that runs the module
    (C(mlflow/store/db_migrations) and C(mlflow/server/auth/db/migrations)).
  - O(state=current) only reports. O(state=upgraded) migrates each database that is behind through
    MLflow's own upgrade path (the function behind C(mlflow db upgrade), called in-process so that
    no password reaches a command line).
  - Refuses with a clear message when a database's revision is unknown to the installed MLflow,
    that is when the database is newer than the code.
  - Set O(python) to the tracking server's virtualenv (or run the module with it as
    C(ansible_python_interpreter)), so that the MLflow it reads is the one the server runs.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  state:
    description:
      - C(current) reports the revisions and the pending migrations.
      - C(upgraded) migrates the databases that are behind to the installed MLflow's head.
    type: str
    choices: [current, upgraded]
    default: current
  auth_database_uri:
    description:
      - The basic-auth app's database (C(database_uri) of its C(basic_auth.ini)), as a SQLite or PostgreSQL URI.
    type: str
  auth_db_password:
    description:
      - PostgreSQL password of O(auth_database_uri); overrides one inside it.
    type: str
  python:
    description:
      - The Python interpreter of the tracking server's virtualenv, for example C(/srv/mlflow/venv/bin/python).
        Its MLflow's migrations are read and run (in a child process that gets the parameters on stdin).
      - By default the interpreter that runs the module.
    type: path
attributes:
  check_mode:
    support: full
    description: Lists the revisions that O(state=upgraded) would apply, without migrating.
  diff_mode:
    support: none
    description: There is no before and after of one file to show.
requirements:
  - mlflow (in the interpreter that runs the module)
  - psycopg2 (PostgreSQL only)
  - PyMySQL (MySQL/MariaDB only)
notes:
  - "MySQL/MariaDB: MLflow's own basic-auth migration cannot create the auth database's tables there (two foreign
    keys named C(fk_user_id), U(https://github.com/mlflow/mlflow/issues/9642)); O(state=upgraded) then fails
    with MLflow's error (one line, no traceback)."
  - Uses the backend store family (O(artifacts_destination) excepted). The tracking and S3 families are accepted for
    C(module_defaults) and ignored.
  - MLflow's migrations are not guaranteed to be transactional. Take a backup first
    (M(mlflowops.maintenance.db_backup)) and stop the tracking servers that use the database;
    the C(upgrade) role does both, and restores the backup when a migration fails.
  - The task reports C(changed) only when a migration ran (or, in check mode, would run).
seealso:
  - name: mlflow db upgrade
    description: MLflow's command for the same migration.
    link: https://mlflow.org/docs/latest/cli.html#mlflow-db
"""

EXAMPLES = r"""
- name: Report the schema of the tracking database
  mlflowops.maintenance.db_schema:
    backend_store_uri: sqlite:////srv/mlflow/mlflow.db
  vars:
    ansible_python_interpreter: /srv/mlflow/venv/bin/python
  register: schema

- name: Migrate the tracking and auth databases to the installed MLflow's head
  mlflowops.maintenance.db_schema:
    backend_store_uri: postgresql://mlflow@db.example.com/mlflow
    db_password: "{{ mlflow_db_password }}"
    auth_database_uri: postgresql://mlflow@db.example.com/mlflow_auth
    auth_db_password: "{{ mlflow_db_password }}"
    state: upgraded
    python: /srv/mlflow/venv/bin/python
"""

RETURN = r"""
mlflow_version:
  description: Version of the MLflow whose migrations were read.
  returned: always
  type: str
  sample: 3.17.2
tracking:
  description: The tracking database before the run, and after it when it migrated.
  returned: always
  type: dict
  contains:
    database:
      description: C(tracking) or C(auth).
      type: str
    current_revision:
      description: The database's alembic revision.
      type: str
    head_revision:
      description: The installed MLflow's head revision.
      type: str
    at_head:
      description: Whether the database is at the head revision.
      type: bool
    pending:
      description: Revisions still to apply, oldest first.
      type: list
      elements: str
    pending_count:
      description: Number of pending revisions.
      type: int
  sample: {database: tracking, current_revision: 5b0e9adcef9c, head_revision: 9f5c3a2d1e7b, at_head: false,
           pending: [4465047574b1, 9f5c3a2d1e7b], pending_count: 2}
auth:
  description: The same for the auth database; null without O(auth_database_uri).
  returned: always
  type: dict
  sample: {database: auth, current_revision: 8606fa83a998, head_revision: 2ed73881770d, at_head: false}
before:
  description: The status of each database before migrating, keyed C(tracking) and C(auth).
  returned: always
  type: dict
migrated:
  description: The databases migrated (C(tracking), C(auth)); in check mode, those that would be.
  returned: always
  type: list
  elements: str
  sample: [tracking]
at_head:
  description: Whether every database is at head after the run (in check mode, whether it already was).
  returned: always
  type: bool
  sample: true
python:
  description: The interpreter whose MLflow was used.
  returned: always
  type: str
  sample: /srv/mlflow/venv/bin/python
migration_duration_s:
  description: Wall-clock seconds each migration took.
  returned: always
  type: dict
  sample: {tracking: 4.2}
store:
  description: The tracking store, with any password redacted.
  returned: always
  type: dict
"""

import os
import sys

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_schema import (
    run_in_interpreter,
    run_schema,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import backend_store_from_module


def main():
    argument_spec = dict(
        state=dict(type="str", default="current", choices=["current", "upgraded"]),
        auth_database_uri=dict(type="str"),
        auth_db_password=dict(type="str", no_log=True),
        python=dict(type="path"),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("store",))
    module.run(run, module)


def run(module):
    params = dict(module.params)
    python = params.pop("python")
    backend_store_from_module(module)
    if params["auth_database_uri"]:
        backend_store_from_module(module, "auth_database_uri", "auth_db_password")
    # A venv's python is a symlink to the base interpreter: compare the paths, not their targets.
    if python and os.path.normpath(os.path.abspath(python)) != os.path.normpath(sys.executable):
        return run_in_interpreter(python, params, module.check_mode, timeout=params["deadline"] or None)
    return run_schema(params, module.check_mode)


if __name__ == "__main__":
    main()
