# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``runs_cleanup method=database``: the REST path's cleanup, run directly in the backend store.

Same options, same decisions: the selection is the REST search filter evaluated as SQL (ages on
``start_time``/``end_time``, statuses excluded exactly as the search filter excludes them, experiments
by name or id, ``filter`` translated by ``run_filter`` or refused), then the very functions the REST
path calls classify it (``run_selection.plan_deletions``/``plan_restores``, ``protection_reason``,
``check_cap``). The changes are the ones MLflow's ``SqlAlchemyStore`` makes:

- delete: ``lifecycle_stage = 'deleted'``, ``deleted_time = <now ms>`` (``_mark_run_deleted``);
- restore: ``lifecycle_stage = 'active'``, ``deleted_time = NULL`` (``restore_run``);
- reap: ``status = 'KILLED'``, ``end_time = <task start ms>`` (what the REST path's ``runs/update`` sends).

MLflow's ``delete_run`` also deletes assessments whose metadata names the run as their source; when a
selected run has such assessments the task refuses (``method: rest`` deletes them through the server).

The writes go in chunked transactions (``chunk_size`` runs each, guarded by the run's current state so a
concurrent change is never overwritten), so the tracking server keeps serving between them; the deadline
is checked between chunks, and a stop reports the partial progress. Only SQLAlchemy Core is used (no
engine-specific SQL except MySQL's case-sensitive string comparison, as MLflow does it).

Here: the selection reads and the chunked writes; the engine, the reflected tables and the filter's translation
are in runs_bulk_sql, the result keys (shared with the REST path) in runs_cleanup_result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_filter import parse_filter
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    ALL_STATUSES,
    build_filter,
    capped,
    check_cap,
    plan_deletions,
    plan_restores,
    registered_ids_of_version,
    resolve_experiments,
    validate_cleanup_options,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_bulk_sql import RunTables, first_line, sqlalchemy
from ansible_collections.mlflowops.maintenance.plugins.module_utils.sql_engine import make_engine
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_cleanup_result import count_key, plan_result, record_done, remaining_runs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import single_workspace

CHUNK_SIZE = 1000
SOURCE_RUN_KEY = "mlflow.assessment.sourceRunId"
DELETED_INTERNAL = "Deleted_Internal"


class BulkCleanup:
    """One ``runs_cleanup method=database`` invocation."""

    def __init__(self, engine, params, now, chunk_size=CHUNK_SIZE, deadline=None):
        self.engine = engine
        self.params = params
        self.now = now
        self.chunk_size = max(1, int(chunk_size))
        self.deadline = deadline
        self.tables = RunTables(engine)
        self.workspace = self._workspace()

    # -- experiments ----------------------------------------------------------------------------------------
    def _workspace(self):
        """The workspace the REST path would see: the ``workspace`` option, else ``default`` when the store has them."""
        name = single_workspace(self.params.get("workspace"))
        if "workspace" not in self.tables.experiments.c:
            if name and name != "default":
                raise MaintenanceError("workspace is set, but this backend store has no workspaces; nothing was changed")
            return None
        return name or "default"

    def _experiment_query(self, connection, condition):
        exps = self.tables.experiments
        query = sqlalchemy.select(exps.c.experiment_id, exps.c.name, exps.c.lifecycle_stage).where(condition)
        if self.workspace is not None:
            query = query.where(exps.c.workspace == self.workspace)
        row = connection.execute(query).first()
        return None if row is None else dict(experiment_id=str(row[0]), name=row[1], lifecycle_stage=row[2])

    def experiment_ids(self, connection):
        exps = self.tables.experiments
        requested = self.params.get("experiments")
        if requested:
            def by_id(text):
                return self._experiment_query(connection, exps.c.experiment_id == int(text))

            def by_name(text):
                return self._experiment_query(connection, exps.c.name == text)

            return resolve_experiments(requested, by_id, by_name)
        query = sqlalchemy.select(exps.c.experiment_id).where(exps.c.lifecycle_stage == "active")
        if self.workspace is not None:
            query = query.where(exps.c.workspace == self.workspace)
        return [str(row[0]) for row in connection.execute(query.order_by(exps.c.experiment_id))]

    # -- selection ------------------------------------------------------------------------------------------
    def _runs(self, connection, experiment_ids, conditions, lifecycle_stage):
        """Run dicts shaped like the REST search results (info + the keep tag), for the pure classifiers."""
        runs = self.tables.runs
        keep_tag = self.params.get("keep_tag")
        found = []
        ids = [int(experiment_id) for experiment_id in experiment_ids]
        for offset in range(0, len(ids), 500):
            query = sqlalchemy.select(runs.c.run_uuid, runs.c.status, runs.c.start_time, runs.c.end_time).where(
                runs.c.experiment_id.in_(ids[offset:offset + 500]), runs.c.lifecycle_stage == lifecycle_stage, *conditions)
            found.extend(connection.execute(query).fetchall())
        keep_values = self._keep_values(connection) if keep_tag else {}
        result = []
        for run_uuid, status, start_time, end_time in found:
            tags = [dict(key=keep_tag, value=keep_values[run_uuid])] if run_uuid in keep_values else []
            result.append(dict(info=dict(run_id=run_uuid, status=status, start_time=start_time, end_time=end_time),
                               data=dict(tags=tags)))
        return result

    def _keep_values(self, connection):
        tags = self.tables.tags
        keep_tag = self.params["keep_tag"]
        rows = connection.execute(sqlalchemy.select(tags.c.run_uuid, tags.c.key, tags.c.value).where(tags.c.key == keep_tag))
        return dict((run_uuid, value) for run_uuid, key, value in rows if key == keep_tag)

    def registered_run_ids(self, connection):
        """Run ids of every model version the registry lists (what the REST path's search_model_versions returns)."""
        table = self.tables.model_versions
        if table is None:
            return set()
        columns = [table.c.run_id] + ([table.c.source] if "source" in table.c else [])
        query = sqlalchemy.select(*columns)
        if "current_stage" in table.c:
            query = query.where(sqlalchemy.or_(table.c.current_stage.is_(None), table.c.current_stage != DELETED_INTERNAL))
        found = set()
        for row in connection.execute(query):
            found.update(registered_ids_of_version(dict(run_id=row[0], source=row[1] if len(row) > 1 else None)))
        return found

    def assessment_source_runs(self, connection, run_ids):
        """Selected runs that assessments name as their source (MLflow's delete_run deletes those assessments)."""
        table = self.tables.assessments
        if table is None or "assessment_metadata" not in table.c or not run_ids:
            return []
        wanted = set(run_ids)
        found = set()
        query = sqlalchemy.select(table.c.assessment_metadata).where(
            table.c.assessment_metadata.like("%" + SOURCE_RUN_KEY + "%"))
        for (metadata,) in connection.execute(query):
            try:
                source = json.loads(metadata).get(SOURCE_RUN_KEY) if metadata else None
            except (ValueError, AttributeError):
                source = None
            if source in wanted:
                found.add(source)
        return sorted(found)

    # -- the job --------------------------------------------------------------------------------------------
    def run(self, check_mode=False):
        params = self.params
        state = params["state"]
        options = validate_cleanup_options(params, self.now)
        statuses, cutoff, reap_cutoff = options["statuses"], options["cutoff"], options["reap_cutoff"]
        time_field = params["time_field"]
        search_filter = build_filter(cutoff, time_field, statuses, params["filter"])
        user_conditions = self.tables.filter_clauses(parse_filter(params.get("filter")))
        runs = self.tables.runs

        conditions = list(user_conditions)
        if cutoff is not None:
            conditions.append(runs.c[time_field] < int(cutoff))
        # Exactly the search filter's "attributes.status != ..." for every status not selected.
        conditions.extend(runs.c.status != status for status in ALL_STATUSES if status not in statuses)
        try:
            with self.engine.connect() as connection:
                experiment_ids = self.experiment_ids(connection)
                reap_candidates = []
                if reap_cutoff is not None and experiment_ids:
                    reap_conditions = [runs.c.status == "RUNNING", runs.c.start_time < int(reap_cutoff)] + user_conditions
                    reap_candidates = self._runs(connection, experiment_ids, reap_conditions, "active")
                if state == "deleted":
                    protected_ids = self.registered_run_ids(connection) if params["protect_registered"] else set()
                    candidates = self._runs(connection, experiment_ids, conditions, "active") if experiment_ids else []
                    plan = plan_deletions(candidates, protected_ids, params["keep_tag"], reap_candidates, cutoff,
                                          time_field, statuses, reap_time=self.now)
                    sourced = self.assessment_source_runs(connection, plan.act)
                else:
                    candidates = self._runs(connection, experiment_ids, conditions, "deleted") if experiment_ids else []
                    plan = plan_restores(candidates)
                    plan.reap = plan_deletions([], set(), None, reap_candidates, None).reap
                    sourced = []
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise MaintenanceError("cannot read the backend store: %s; nothing was changed" % first_line(exc),
                                   deleted=0, restored=0, reaped=0)
        if sourced:
            raise MaintenanceError(
                "%d selected runs are the source of assessments, which MLflow deletes with the run (first: %s); "
                "method=database does not delete assessments: use method=rest for them; nothing was changed"
                % (len(sourced), sourced[0]), deleted=0, restored=0, reaped=0)
        check_cap(len(plan.act), params["max_delete"], "delete" if state == "deleted" else "restore")

        limit = params["run_ids_limit"]
        result = plan_result(plan, limit, experiment_ids=experiment_ids, search_filter=search_filter, method="database",
                             transactions=0, failures=[], failure_count=0, failures_truncated=False)
        if check_mode:
            return record_done(result, state, plan.act, plan.reap, limit)

        reaped, done = [], []
        try:
            self._apply(plan.reap, self._reap_chunk, reaped, result)
            self._apply(plan.act, self._delete_chunk if state == "deleted" else self._restore_chunk, done, result)
        except MaintenanceError as exc:
            self._stopped(exc.msg, plan, state, reaped, done, result, limit)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            self._stopped("the backend store failed: %s" % first_line(exc), plan, state, reaped, done, result, limit)
        return record_done(result, state, done, reaped, limit)

    def _apply(self, run_ids, change, done, result):
        for offset in range(0, len(run_ids), self.chunk_size):
            if self.deadline is not None and self.deadline.expired():
                raise MaintenanceError("the task's deadline of %ss passed" % int(self.deadline.seconds))
            chunk = run_ids[offset:offset + self.chunk_size]
            with self.engine.begin() as connection:
                done.extend(change(connection, chunk))
            result["transactions"] += 1

    def _stopped(self, cause, plan, state, reaped, done, result, limit):
        record_done(result, state, done, reaped, limit)
        remaining, reap_remaining = remaining_runs(plan, done, reaped)
        raise MaintenanceError(
            "runs_cleanup stopped: %d of %d runs %s, %d remain; %d of %d stale runs reaped, %d remain (%s). "
            "Every finished transaction is committed: rerun the task to finish the job."
            % (len(done), len(plan.act), count_key(state), len(remaining), len(reaped), len(plan.reap), len(reap_remaining),
               cause), remaining=len(remaining) + len(reap_remaining), remaining_run_ids=capped(remaining, limit), **result)

    # -- one transaction each ---------------------------------------------------------------------------------
    def _changed_ids(self, connection, chunk, *conditions):
        runs = self.tables.runs
        query = sqlalchemy.select(runs.c.run_uuid).where(runs.c.run_uuid.in_(chunk), *conditions)
        changed = set(row[0] for row in connection.execute(query))
        return [run_id for run_id in chunk if run_id in changed]

    def _reap_chunk(self, connection, chunk):
        runs = self.tables.runs
        connection.execute(runs.update().where(runs.c.run_uuid.in_(chunk), runs.c.status == "RUNNING",
                                               runs.c.lifecycle_stage == "active")
                           .values(status="KILLED", end_time=int(self.now)))
        return self._changed_ids(connection, chunk, runs.c.status == "KILLED", runs.c.end_time == int(self.now))

    def _delete_chunk(self, connection, chunk):
        runs = self.tables.runs
        stamp = int(time.time() * 1000)
        connection.execute(runs.update().where(runs.c.run_uuid.in_(chunk), runs.c.lifecycle_stage == "active")
                           .values(lifecycle_stage="deleted", deleted_time=stamp))
        return self._changed_ids(connection, chunk, runs.c.lifecycle_stage == "deleted", runs.c.deleted_time == stamp)

    def _restore_chunk(self, connection, chunk):
        runs = self.tables.runs
        # The restored ids are read before the change (after it, nothing tells them from other active runs), under
        # the write lock that a no-op update takes first: SQLite cannot upgrade a read to a write under a writer.
        connection.execute(runs.update().where(runs.c.run_uuid.in_(chunk), runs.c.lifecycle_stage == "deleted")
                           .values(deleted_time=runs.c.deleted_time))
        restored = self._changed_ids(connection, chunk, runs.c.lifecycle_stage == "deleted")
        connection.execute(runs.update().where(runs.c.run_uuid.in_(restored), runs.c.lifecycle_stage == "deleted")
                           .values(lifecycle_stage="active", deleted_time=None))
        return restored


def run_cleanup_database(params, url, check_mode=False, deadline=None, now=None, chunk_size=CHUNK_SIZE,
                         connect_timeout=10):
    """The whole ``method=database`` job; returns the result dict or raises MaintenanceError (with partial progress)."""
    now = int(time.time() * 1000) if now is None else now
    # Every option, and the filter's translation, is checked before the first connection.
    validate_cleanup_options(params, now)
    parse_filter(params.get("filter"))
    single_workspace(params.get("workspace"))
    engine = make_engine(url, connect_timeout)
    try:
        return BulkCleanup(engine, params, now, chunk_size, deadline).run(check_mode)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise MaintenanceError("cannot use the backend store: %s; nothing was changed" % first_line(exc),
                               deleted=0, restored=0, reaped=0)
    finally:
        engine.dispose()
