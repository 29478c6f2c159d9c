# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table names MLflow's own schemas create, and which of a restore target's tables a forced restore may drop.

MLFLOW_TABLES holds every table of MLflow's tracking, model registry, basic-auth, jobs and workspace schemas up to
MLflow 3.17 (their SQLAlchemy models and alembic migrations), plus both alembic version tables. A newer MLflow may add
tables that are not listed: a forced restore leaves such a table alone (and reports it), so the worst case is a
restore that fails loudly on a foreign key, never a dropped table that was someone else's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

MLFLOW_TABLES = frozenset("""
alembic_version alembic_version_auth assessments budget_policies datasets endpoint_bindings endpoint_model_mappings endpoint_tags
endpoints entity_associations evaluation_dataset_records evaluation_dataset_tags evaluation_datasets
experiment_permissions experiment_tags experiments gateway_endpoint_permissions gateway_model_definition_permissions
gateway_secret_permissions guardrail_configs guardrails input_tags inputs issues job_locks jobs label_schemas
latest_metrics logged_model_metrics logged_model_params logged_model_tags logged_models mcp_access_endpoints
mcp_server_aliases mcp_server_tags mcp_server_version_tags mcp_server_versions mcp_servers metrics model_definitions
model_version_tags model_versions online_scoring_configs params registered_model_aliases
registered_model_permissions registered_model_tags registered_models review_queue_items review_queue_label_schemas
review_queue_users review_queues role_permissions roles runs scheduler_leases scorer_permissions scorer_versions
scorers secrets span_metrics spans sql_assessment_daily_rollups sql_span_cost_daily_rollups
sql_trace_metric_daily_rollups sql_trace_rollup_rebuild_queue tags trace_info trace_metrics trace_request_metadata
trace_tags user_role_assignments users webhook_events webhooks workspace_permissions workspaces
""".split())


class StoreKind(object):
    """One kind of MLflow database: where its alembic revision is (``version_tables``, the first that exists) and
    a table only it has (``marker_table``)."""

    def __init__(self, name, version_tables, marker_table, title):
        self.name = name
        self.version_tables = version_tables
        self.marker_table = marker_table
        self.title = title

    @property
    def version_table(self):
        """The version table's name, for messages."""
        return " or ".join(self.version_tables)

    def missing_tables(self, tables):
        """What of the kind's version table and marker table ``tables`` (names) lacks, for messages."""
        tables = set(tables)
        missing = [] if tables & set(self.version_tables) else [self.version_table]
        return missing + ([] if self.marker_table in tables else [self.marker_table])


TRACKING = StoreKind("tracking", ("alembic_version",), "runs", "an MLflow store")
# The basic-auth app's database (mlflow_auth_database_uri): users and permissions. MLflow 3.6 gave its migrations
# their own version table; an auth database of an older release keeps its revision in alembic_version.
AUTH = StoreKind("auth", ("alembic_version_auth", "alembic_version"), "users", "an MLflow auth database")
STORE_KINDS = dict((kind.name, kind) for kind in (TRACKING, AUTH))


def store_kind(name):
    """The StoreKind called ``name``; None or "" is the tracking store."""
    return STORE_KINDS[name or TRACKING.name]


def _split(name):
    """``schema.table`` -> (schema, table); a bare name has no schema (None)."""
    if "." in name:
        schema, table = name.split(".", 1)
        return schema, table
    return None, name


def extra_tables_plan(existing, recorded):
    """Of a restore target's tables ``existing`` (names as the backup's manifest records them: ``table`` in the
    default schema, else ``schema.table``), those the backup does not hold, split into ``(drop, keep)``.

    ``drop``: MLflow's own tables (by name) in a schema the backup has tables in, such as the ones a later migration
    created; a forced restore drops them so that the backup's schema is whole again. ``keep``: every other table,
    which is not provably MLflow's and is left alone. Nothing at all when the manifest records no table list."""
    if not recorded:
        return [], []
    recorded = set(recorded)
    schemas = set(_split(name)[0] for name in recorded)
    drop, keep = [], []
    for name in sorted(existing):
        if name in recorded:
            continue
        schema, table = _split(name)
        (drop if table in MLFLOW_TABLES and schema in schemas else keep).append(name)
    return drop, keep
