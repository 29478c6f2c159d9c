# -*- coding: utf-8 -*-
"""Which of a restore target's tables a forced restore drops first (mlflow_tables.extra_tables_plan): MLflow's own
tables that the backup does not hold, never anybody else's."""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_tables import (
    MLFLOW_TABLES,
    extra_tables_plan,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.postgres_tools import table_key

EXISTING = ["alembic_version", "runs", "logged_models", "audit.runs", "billing", "trace_info"]


def test_mlflow_tables_a_later_migration_added_are_dropped_and_foreign_ones_kept():
    drop, keep = extra_tables_plan(EXISTING, ["alembic_version", "runs"])
    assert drop == ["logged_models", "trace_info"]
    assert keep == ["audit.runs", "billing"]


def test_mlflow_names_in_another_schema_than_the_backups_are_kept():
    # The backup lives in schema "mlflow" (search_path): its newer tables there go, public's same names stay.
    drop, keep = extra_tables_plan(["mlflow.runs", "mlflow.logged_models", "logged_models"], ["mlflow.runs"])
    assert drop == ["mlflow.logged_models"] and keep == ["logged_models"]


def test_a_manifest_without_a_table_list_drops_nothing():
    assert extra_tables_plan(EXISTING, []) == ([], [])
    assert extra_tables_plan(EXISTING, None) == ([], [])


def test_nothing_to_drop_when_the_target_holds_only_the_backups_tables():
    assert extra_tables_plan(["runs", "audit.runs"], ["runs", "audit.runs", "metrics"]) == ([], [])


def test_postgres_names_match_the_manifests_spelling():
    assert table_key("public", "runs") == "runs" and table_key("audit", "runs") == "audit.runs"


def test_the_list_holds_mlflows_core_tables():
    assert {"alembic_version", "experiments", "runs", "metrics", "logged_models", "spans", "users"} <= MLFLOW_TABLES
