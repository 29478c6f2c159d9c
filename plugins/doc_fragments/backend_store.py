# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The stores family: the MLflow server's backend store and artifact root. Accepted by every module of the
    # mlflow action group, used by those that open the store directly (each module's notes say which).
    DOCUMENTATION = r"""
options:
  backend_store_uri:
    description:
      - The tracking server's backend store, as given to C(mlflow server --backend-store-uri).
      - C(sqlite:////absolute/path/mlflow.db), C(postgresql://user:password@host:5432/mlflow),
        C(postgresql+psycopg2://...) and C(postgresql+psycopg://...) are accepted, and for MySQL and MariaDB
        C(mysql://user:password@host:3306/mlflow), C(mysql+pymysql://...) and C(mysql+mysqldb://...) (query
        parameters C(unix_socket), C(charset), C(ssl_ca), C(ssl_cert), C(ssl_key), C(ssl_verify_cert),
        C(ssl_verify_identity), C(ssl_disabled), C(ssl_mode)); the modules talk to MySQL through PyMySQL.
      - Microsoft SQL Server (C(mssql://)) stores are not supported; every module says so and changes nothing.
      - The password may be written percent-encoded in the user information (C(user:p%23ss@host)) or as a
        C(?password=) query parameter; in every form it is never shown in results, logs, messages or
        process arguments.
      - Required by the modules that open the backend store; they fail before doing anything when it is unset.
      - If not set, the value of the E(MLFLOW_BACKEND_STORE_URI) environment variable is used.
    type: str
  db_password:
    description:
      - PostgreSQL or MySQL password; overrides one given inside O(backend_store_uri).
      - Handed to PostgreSQL tools through a temporary 0600 C(PGPASSFILE), and to the MySQL client tools through a
        temporary 0600 option file (C(--defaults-extra-file)), never on the command line or in their environment.
      - If not set, the value of the E(PGPASSWORD) environment variable is used.
    type: str
  db_connect_timeout:
    description:
      - Seconds to wait for a PostgreSQL or MySQL connection (C(0) waits as long as libpq does).
      - Formerly called C(connect_timeout).
    type: int
    default: 10
  artifacts_destination:
    description:
      - The tracking server's artifact root, as given to C(mlflow server --artifacts-destination), a local
        directory (or C(file://) URL) or C(s3://bucket/prefix).
    type: str
"""
