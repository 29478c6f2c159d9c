# -*- coding: utf-8 -*-
"""db_tools.require_driver: the one missing-library message for a store's Python driver, before any side effect."""

import platform

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools, mysql_tools, postgres_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


@pytest.mark.parametrize("uri, module, attribute, library", [
    ("postgresql://u:secret@db/mlflow", postgres_tools, "psycopg2", "psycopg2"),
    ("mysql+pymysql://u:secret@db/mlflow", mysql_tools, "pymysql", "PyMySQL"),
])
def test_missing_driver_names_the_library_and_the_host(monkeypatch, uri, module, attribute, library):
    store = parse_backend_store_uri(uri)
    db_tools.require_driver(store)  # installed here: no error
    monkeypatch.setattr(module, attribute, None)
    with pytest.raises(MaintenanceError) as info:
        db_tools.require_driver(store)
    assert str(info.value).startswith("Failed to import the required Python library (%s) on %s's Python" % (
        library, platform.node()))
    assert "secret" not in str(info.value)


def test_sqlite_needs_no_driver(tmp_path):
    assert db_tools.require_driver(parse_backend_store_uri("sqlite:///%s" % (tmp_path / "mlflow.db"))) is None
