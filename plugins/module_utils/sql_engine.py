# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection opens a backend store through SQLAlchemy (gc, the bulk cleanup path).

Connect timeouts go to the driver (``timeout`` for SQLite's busy wait, ``connect_timeout`` for libpq and
PyMySQL). The URL carries the password: never log it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

SQLALCHEMY_IMPORT_ERROR = None
try:
    import sqlalchemy
    from sqlalchemy.pool import NullPool
except ImportError:
    sqlalchemy = None
    NullPool = None
    SQLALCHEMY_IMPORT_ERROR = traceback.format_exc()


def make_engine(url, connect_timeout=10, pooled=False):
    """A SQLAlchemy engine for ``url``; pool-less unless ``pooled`` (one job reusing its connections)."""
    if sqlalchemy is None:
        raise MaintenanceError(missing_required_lib("sqlalchemy"), exception=SQLALCHEMY_IMPORT_ERROR)
    connect_args = {}
    if url.startswith("sqlite"):
        connect_args["timeout"] = max(30, int(connect_timeout or 0))
    elif connect_timeout:
        connect_args["connect_timeout"] = int(connect_timeout)
    kwargs = {} if pooled else dict(poolclass=NullPool)
    return sqlalchemy.create_engine(url, connect_args=connect_args, **kwargs)
