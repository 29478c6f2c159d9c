# -*- coding: utf-8 -*-
"""db_restore's decision of which target tables a forced PostgreSQL restore drops first (tables_not_in_backup)."""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_restore import tables_not_in_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.postgres_tools import table_key

EXISTING = [("public", "alembic_version"), ("public", "runs"), ("public", "logged_models"), ("audit", "runs")]


def test_tables_a_later_migration_added_are_the_ones_dropped():
    manifest = {"row_counts": {"alembic_version": 1, "runs": 20}}
    assert tables_not_in_backup(EXISTING, manifest, table_key) == [("audit", "runs"), ("public", "logged_models")]


def test_schema_qualified_names_are_matched_as_the_manifest_records_them():
    manifest = {"tables": ["alembic_version", "runs", "audit.runs"]}
    assert tables_not_in_backup(EXISTING, manifest, table_key) == [("public", "logged_models")]


def test_a_manifest_without_a_table_list_drops_nothing():
    assert tables_not_in_backup(EXISTING, {}, table_key) == []
    assert tables_not_in_backup(EXISTING, {"row_counts": {}}, table_key) == []


def test_nothing_to_drop_when_the_target_holds_only_the_backups_tables():
    manifest = {"row_counts": {"alembic_version": 1, "runs": 20, "logged_models": 0, "audit.runs": 0}}
    assert tables_not_in_backup(EXISTING, manifest, table_key) == []
