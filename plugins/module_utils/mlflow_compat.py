# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few private MLflow APIs the collection relies on, in one place.

MLflow does not promise these across releases; when one moves, only this file changes. Importing this
module does not import mlflow: each function imports it when called (modules that only talk to a tracking
server never pay for it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def hard_delete_experiment(url, experiment_id, store_cache, workspace=None):
    """Remove an experiment (no runs left) with MLflow's own store code, which knows its many child tables.

    ``workspace``: on a store with workspaces in use, MLflow's single-tenant store refuses to open; the
    workspace-aware store is used instead, inside that workspace's context.
    """
    if workspace is None:
        if "store" not in store_cache:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # pylint: disable=import-outside-toplevel
            store_cache["store"] = SqlAlchemyStore(url, "/nonexistent-artifact-root-for-gc")
        store_cache["store"]._hard_delete_experiment(experiment_id)  # pylint: disable=protected-access
        return
    import os  # pylint: disable=import-outside-toplevel
    from mlflow.utils.workspace_context import WorkspaceContext  # pylint: disable=import-outside-toplevel
    # As ``mlflow gc --workspace`` does: the store scopes queries to the context's workspace only when enabled.
    os.environ["MLFLOW_ENABLE_WORKSPACES"] = "true"
    if "workspace_store" not in store_cache:
        from mlflow.store.tracking.sqlalchemy_workspace_store import (  # pylint: disable=import-outside-toplevel
            WorkspaceAwareSqlAlchemyStore,
        )
        store_cache["workspace_store"] = WorkspaceAwareSqlAlchemyStore(url, "/nonexistent-artifact-root-for-gc")
    with WorkspaceContext(workspace):
        store_cache["workspace_store"]._hard_delete_experiment(experiment_id)  # pylint: disable=protected-access


def upgrade_db(engine):
    """Run MLflow's alembic migrations of the tracking database on ``engine``."""
    from mlflow.store.db.utils import _upgrade_db  # pylint: disable=import-outside-toplevel
    _upgrade_db(engine)
