# -*- coding: utf-8 -*-
"""The basic-auth app's database, made by MLflow's own auth store (of any installed release) in a child process."""

import os
import subprocess

from harness.standin import sqlite_column

# MLflow's auth store creates (or migrates) the database the way the basic-auth app does, then adds users.
INIT_AUTH = """
import os, sys
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
store = SqlAlchemyStore()
store.init_db(os.environ["AUTH_URI"])
for name in sys.argv[1:]:
    store.create_user(name, name + "-password-1")
"""


def init_auth(python, uri, users):
    """Create or migrate the auth database at ``uri`` with the MLflow of ``python``, adding ``users``."""
    env = dict(os.environ, AUTH_URI=uri)
    env.pop("PYTHONPATH", None)
    subprocess.run([python, "-c", INIT_AUTH] + list(users), env=env, check=True, capture_output=True, text=True,
                   timeout=600)


def sqlite_users(path):
    """The user names in a SQLite auth database, sorted."""
    return sqlite_column(path, "SELECT username FROM users")
