# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of every module that opens the backend store (database) directly.
    DOCUMENTATION = r"""
options:
  backend_store_uri:
    description:
      - The tracking server's backend store, as given to C(mlflow server --backend-store-uri).
      - C(sqlite:////absolute/path/mlflow.db), C(postgresql://user:password@host:5432/mlflow),
        C(postgresql+psycopg2://...) and C(postgresql+psycopg://...) are accepted.
      - A password inside the URI is never shown in results, logs or process arguments.
      - If not set, the value of the E(MLFLOW_BACKEND_STORE_URI) environment variable is used.
    type: str
    required: true
  db_password:
    description:
      - PostgreSQL password; overrides one given inside O(backend_store_uri).
      - Handed to PostgreSQL tools through a temporary 0600 C(PGPASSFILE), never on the command line.
      - If not set, the value of the E(PGPASSWORD) environment variable is used.
    type: str
  connect_timeout:
    description:
      - Seconds to wait for a PostgreSQL connection.
    type: int
    default: 10
"""
