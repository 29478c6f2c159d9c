# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backend store's run and experiment tables as gc needs them, reflected from the live database.

Every table whose foreign key references ``runs.run_uuid`` is found by reflection (plus the run's dataset
inputs), so rows go in one transaction per batch whatever the MLflow version added. Run ids are streamed
with keyset paging, so memory stays bounded on any store size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.sql_engine import make_engine, sqlalchemy

DELETED = "deleted"


def batched(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class GcStore:
    """The backend store's tables as gc needs them, reflected from the live database."""

    def __init__(self, url, connect_timeout=10):
        self.url = url
        self.engine = make_engine(url, connect_timeout, pooled=True)
        self.metadata = sqlalchemy.MetaData()
        try:
            self.metadata.reflect(self.engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise MaintenanceError("cannot read the backend store: %s" % str(exc).splitlines()[0])
        tables = self.metadata.tables
        for required in ("runs", "experiments"):
            if required not in tables:
                raise MaintenanceError("the backend store has no %s table: is it an MLflow database?" % required)
        self.runs = tables["runs"]
        self.experiments = tables["experiments"]
        self.inputs = tables.get("inputs")
        self.input_tags = tables.get("input_tags")
        self.run_children = self._referencing("runs", "run_uuid")
        # MLflow 3: logged models (their child tables found the same way) and job records.
        self.logged_models = tables.get("logged_models")
        self.model_children = self._referencing("logged_models", "model_id") if self.logged_models is not None else []
        self.entity_associations = tables.get("entity_associations")
        self.jobs = tables.get("jobs")
        self.workspace_column = "workspace" in self.experiments.c

    def _referencing(self, table_name, column_name):
        """[(table, column, ondelete)] of every foreign key pointing at ``table_name.column_name``."""
        found = []
        for table in self.metadata.sorted_tables:
            for fk in table.foreign_keys:
                if fk.column.table.name == table_name and fk.column.name == column_name:
                    found.append((table, fk.parent, (fk.ondelete or "").upper()))
        return found

    def close(self):
        self.engine.dispose()

    # -- selection ------------------------------------------------------------------------------

    # -- workspaces -----------------------------------------------------------------------------

    def workspace_names(self):
        """Workspaces of the store (from ``experiments.workspace``); MaintenanceError when it has none."""
        if not self.workspace_column:
            raise MaintenanceError("workspace is set, but this backend store has no workspaces (MLflow before 3.x "
                                   "workspaces); nothing was changed")
        names = set()
        with self.engine.connect() as connection:
            names.update(row[0] for row in connection.execute(sqlalchemy.select(self.experiments.c.workspace).distinct()))
            table = self.metadata.tables.get("workspaces")
            if table is not None and "name" in table.c:
                names.update(row[0] for row in connection.execute(sqlalchemy.select(table.c.name)))
        return sorted(name for name in names if name)

    def experiment_workspace(self, experiment_id):
        """The experiment's workspace when the store has workspaces in use (any experiment outside ``default``), else None."""
        if not self.workspace_column:
            return None
        exps = self.experiments
        with self.engine.connect() as connection:
            in_use = connection.execute(sqlalchemy.select(exps.c.experiment_id).where(exps.c.workspace != "default")
                                        .limit(1)).first() is not None
            if not in_use:
                return None
            return connection.execute(sqlalchemy.select(exps.c.workspace)
                                      .where(exps.c.experiment_id == int(experiment_id))).scalar()

    def set_workspaces(self, names):
        """Restrict every selection to experiments (and jobs) of these workspaces; None means the whole store."""
        self.workspaces = list(names) if names is not None else None

    workspaces = None

    def _experiment_scope(self, column):
        """A condition on an ``experiment_id`` column limiting it to the selected workspaces, or None."""
        if self.workspaces is None:
            return None
        exps = self.experiments
        return column.in_(sqlalchemy.select(exps.c.experiment_id).where(exps.c.workspace.in_(self.workspaces)))

    def _run_conditions(self, experiment_ids=None, run_ids=None):
        runs = self.runs
        conditions = [runs.c.lifecycle_stage == DELETED]
        if experiment_ids:
            conditions.append(runs.c.experiment_id.in_([int(e) for e in experiment_ids]))
        if run_ids:
            conditions.append(runs.c.run_uuid.in_(list(run_ids)))
        scope = self._experiment_scope(runs.c.experiment_id)
        if scope is not None:
            conditions.append(scope)
        return conditions

    def _purgeable(self, cutoff=None, include_undated=False, experiment_ids=None, run_ids=None):
        runs = self.runs
        conditions = self._run_conditions(experiment_ids, run_ids)
        age = [runs.c.deleted_time <= cutoff] if cutoff is not None else [runs.c.deleted_time.isnot(None)]
        if include_undated:
            age.append(runs.c.deleted_time.is_(None))
        conditions.append(sqlalchemy.or_(*age))
        return sqlalchemy.and_(*conditions)

    def stream_deleted_runs(self, cutoff=None, include_undated=False, experiment_ids=None, run_ids=None,
                            page_size=1000):
        """Yield ``(run_uuid, artifact_uri, experiment_id)`` of purgeable deleted runs, keyset-paged."""
        yield from self._keyset([self._purgeable(cutoff, include_undated, experiment_ids, run_ids)], page_size)

    def stream_experiment_runs(self, experiment_id, cutoff=None, include_undated=False, page_size=1000):
        """Every run (any stage) of an experiment being purged, except those the run selection already took."""
        conditions = [self.runs.c.experiment_id == int(experiment_id),
                      sqlalchemy.not_(self._purgeable(cutoff, include_undated, [experiment_id]))]
        yield from self._keyset(conditions, page_size)

    def _keyset(self, conditions, page_size, columns=None):
        """Rows ``(id, artifact location, experiment_id)`` matching ``conditions``, paged by id (keyset)."""
        columns = columns or (self.runs.c.run_uuid, self.runs.c.artifact_uri, self.runs.c.experiment_id)
        key = columns[0]
        last = None
        while True:
            query = sqlalchemy.select(*columns).where(*conditions)
            if last is not None:
                query = query.where(key > last)
            query = query.order_by(key).limit(page_size)
            with self.engine.connect() as connection:
                rows = [tuple(row) for row in connection.execute(query)]
            yield from rows
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def undated_runs(self, experiment_ids=None, run_ids=None, limit=100):
        """(count, first ids) of deleted runs without a deletion time."""
        runs = self.runs
        conditions = self._run_conditions(experiment_ids, run_ids) + [runs.c.deleted_time.is_(None)]
        with self.engine.connect() as connection:
            count = connection.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(runs)
                                       .where(*conditions)).scalar()
            ids = [row[0] for row in connection.execute(
                sqlalchemy.select(runs.c.run_uuid).where(*conditions).order_by(runs.c.run_uuid).limit(limit))]
        return int(count or 0), ids

    def run_stages(self, run_ids):
        """{run_id: lifecycle_stage} of the given runs that exist."""
        found = {}
        for batch in batched(run_ids, 500):
            with self.engine.connect() as connection:
                for run_uuid, stage in connection.execute(
                        sqlalchemy.select(self.runs.c.run_uuid, self.runs.c.lifecycle_stage)
                        .where(self.runs.c.run_uuid.in_(batch))):
                    found[run_uuid] = stage
        return found

    def deleted_experiments(self, cutoff=None, include_undated=False, experiment_ids=None):
        """[(experiment_id, name)] of experiments in the deleted stage, old enough."""
        exps = self.experiments
        conditions = [exps.c.lifecycle_stage == DELETED]
        if experiment_ids:
            conditions.append(exps.c.experiment_id.in_([int(e) for e in experiment_ids]))
        if self.workspaces is not None:
            conditions.append(exps.c.workspace.in_(self.workspaces))
        if cutoff is not None:
            age = [exps.c.last_update_time <= cutoff]
            if include_undated:
                age.append(exps.c.last_update_time.is_(None))
            conditions.append(sqlalchemy.or_(*age))
        with self.engine.connect() as connection:
            return [(str(row[0]), row[1]) for row in connection.execute(
                sqlalchemy.select(exps.c.experiment_id, exps.c.name).where(*conditions)
                .order_by(exps.c.experiment_id))]

    def experiment_stages(self, experiment_ids):
        exps = self.experiments
        with self.engine.connect() as connection:
            return dict((str(row[0]), row[1]) for row in connection.execute(
                sqlalchemy.select(exps.c.experiment_id, exps.c.lifecycle_stage)
                .where(exps.c.experiment_id.in_([int(e) for e in experiment_ids]))))

    # -- deletion -------------------------------------------------------------------------------

    def purge_runs(self, run_ids):
        """Delete the rows of ``run_ids`` from every run table, in one transaction."""
        run_ids = list(run_ids)
        if not run_ids:
            return 0
        with self.engine.begin() as connection:
            if self.inputs is not None:
                inputs = self.inputs
                owned = sqlalchemy.or_(
                    sqlalchemy.and_(inputs.c.destination_type == "RUN", inputs.c.destination_id.in_(run_ids)),
                    sqlalchemy.and_(inputs.c.source_type == "RUN_OUTPUT", inputs.c.source_id.in_(run_ids)),
                )
                if self.input_tags is not None:
                    input_uuids = sqlalchemy.select(inputs.c.input_uuid).where(owned)
                    connection.execute(self.input_tags.delete().where(self.input_tags.c.input_uuid.in_(input_uuids)))
                connection.execute(inputs.delete().where(owned))
            for table, column, ondelete in self.run_children:
                if ondelete == "SET NULL":
                    connection.execute(table.update().where(column.in_(run_ids)).values({column.name: None}))
                else:
                    connection.execute(table.delete().where(column.in_(run_ids)))
            result = connection.execute(self.runs.delete().where(self.runs.c.run_uuid.in_(run_ids)))
            return result.rowcount

    # -- logged models (MLflow 3) ----------------------------------------------------------------

    def _model_conditions(self, cutoff=None, experiment_ids=None, model_ids=None):
        """Deleted logged models, last updated at or before ``cutoff`` (``mlflow gc``'s rule)."""
        models = self.logged_models
        conditions = [models.c.lifecycle_stage == DELETED]
        if cutoff is not None:
            conditions.append(models.c.last_updated_timestamp_ms <= cutoff)
        if experiment_ids:
            conditions.append(models.c.experiment_id.in_([int(e) for e in experiment_ids]))
        if model_ids:
            conditions.append(models.c.model_id.in_(list(model_ids)))
        scope = self._experiment_scope(models.c.experiment_id)
        if scope is not None:
            conditions.append(scope)
        return conditions

    def stream_deleted_models(self, cutoff=None, experiment_ids=None, model_ids=None, page_size=1000):
        """Yield ``(model_id, artifact_location, experiment_id)`` of purgeable logged models, keyset-paged."""
        if self.logged_models is None:
            return
        yield from self._model_keyset(self._model_conditions(cutoff, experiment_ids, model_ids), page_size)

    def stream_experiment_models(self, experiment_id, cutoff=None, skip_selected=True, page_size=1000):
        """Every logged model (any stage) of an experiment being purged, except those the model selection took."""
        if self.logged_models is None:
            return
        conditions = [self.logged_models.c.experiment_id == int(experiment_id)]
        if skip_selected:
            conditions.append(sqlalchemy.not_(sqlalchemy.and_(*self._model_conditions(cutoff, [experiment_id]))))
        yield from self._model_keyset(conditions, page_size)

    def _model_keyset(self, conditions, page_size):
        models = self.logged_models
        return self._keyset(conditions, page_size, (models.c.model_id, models.c.artifact_location, models.c.experiment_id))

    def model_stages(self, model_ids):
        """{model_id: lifecycle_stage} of the given logged models that exist."""
        found = {}
        if self.logged_models is None:
            return found
        models = self.logged_models
        for batch in batched(model_ids, 500):
            with self.engine.connect() as connection:
                for model_id, stage in connection.execute(
                        sqlalchemy.select(models.c.model_id, models.c.lifecycle_stage).where(models.c.model_id.in_(batch))):
                    found[model_id] = stage
        return found

    def purge_models(self, model_ids):
        """Delete the rows of ``model_ids`` from every table referencing them, then the models, in one transaction.

        Child tables come from the live schema's foreign keys (deleted explicitly, whatever their ON DELETE says, so
        MySQL-style missing cascades cannot block it), plus the model's dataset inputs/outputs and entity
        associations, which reference it without a foreign key.
        """
        model_ids = list(model_ids)
        if not model_ids:
            return 0
        with self.engine.begin() as connection:
            if self.inputs is not None:
                inputs = self.inputs
                owned = sqlalchemy.and_(inputs.c.destination_type.in_(["MODEL_INPUT", "MODEL_OUTPUT"]),
                                        inputs.c.destination_id.in_(model_ids))
                if self.input_tags is not None:
                    input_uuids = sqlalchemy.select(inputs.c.input_uuid).where(owned)
                    connection.execute(self.input_tags.delete().where(self.input_tags.c.input_uuid.in_(input_uuids)))
                connection.execute(inputs.delete().where(owned))
            if self.entity_associations is not None:
                assoc = self.entity_associations
                connection.execute(assoc.delete().where(sqlalchemy.or_(
                    sqlalchemy.and_(assoc.c.source_type == "model", assoc.c.source_id.in_(model_ids)),
                    sqlalchemy.and_(assoc.c.destination_type == "model", assoc.c.destination_id.in_(model_ids)))))
            for table, column, ondelete in self.model_children:
                if ondelete == "SET NULL":
                    connection.execute(table.update().where(column.in_(model_ids)).values({column.name: None}))
                else:
                    connection.execute(table.delete().where(column.in_(model_ids)))
            result = connection.execute(self.logged_models.delete().where(self.logged_models.c.model_id.in_(model_ids)))
            return result.rowcount

    # -- job records (MLflow 3) ------------------------------------------------------------------

    FINALIZED_JOB_STATUSES = (2, 3, 4, 5)  # SUCCEEDED, FAILED, TIMEOUT, CANCELED (mlflow.entities JobStatus)

    def _job_conditions(self, cutoff=None, job_ids=None):
        jobs = self.jobs
        conditions = [jobs.c.status.in_(self.FINALIZED_JOB_STATUSES)]
        if job_ids:
            conditions.append(jobs.c.id.in_(list(job_ids)))
        if cutoff is not None:
            conditions.append(jobs.c.creation_time < cutoff)
        if self.workspaces is not None and "workspace" in jobs.c:
            conditions.append(jobs.c.workspace.in_(self.workspaces))
        return conditions

    def job_ids(self, cutoff=None, job_ids=None, limit=None):
        """Ids of finalized job records ``mlflow gc --jobs`` would delete."""
        if self.jobs is None:
            return []
        query = sqlalchemy.select(self.jobs.c.id).where(*self._job_conditions(cutoff, job_ids)).order_by(self.jobs.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(query)]

    def purge_jobs(self, job_ids):
        """Delete these job records (still finalized at deletion time), in one transaction; the count deleted."""
        job_ids = list(job_ids)
        if not job_ids or self.jobs is None:
            return 0
        with self.engine.begin() as connection:
            result = connection.execute(self.jobs.delete().where(self.jobs.c.id.in_(job_ids),
                                                                 self.jobs.c.status.in_(self.FINALIZED_JOB_STATUSES)))
            return result.rowcount
