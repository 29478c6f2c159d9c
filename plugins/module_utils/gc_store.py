# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Permanent deletion of soft-deleted MLflow runs and experiments, straight in the backend store.

Faster than ``mlflow gc``: run rows are purged many runs per transaction (every table whose foreign
key references ``runs.run_uuid`` is found by reflection, plus the run's dataset inputs), and the
artifacts of a batch are deleted concurrently before its rows go. Run ids are streamed in batches
with keyset paging, so memory stays bounded on any store size. A run whose artifacts cannot be
deleted keeps its rows (a rerun retries it) and is reported; the others carry on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import traceback

from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    MaintenanceError,
    bounded_parallel_map,
)

SQLALCHEMY_IMPORT_ERROR = None
try:
    import sqlalchemy
except ImportError:
    sqlalchemy = None
    SQLALCHEMY_IMPORT_ERROR = traceback.format_exc()

DELETED = "deleted"
MLFLOW_ARTIFACTS_SCHEME = "mlflow-artifacts"


# ---------------------------------------------------------------------------------------------
# Pure decisions


def classify_deleted_time(deleted_time, cutoff, include_undated):
    """``purge``, ``young`` (deleted too recently) or ``undated`` (NULL deletion time, kept)."""
    if deleted_time is None:
        return "purge" if include_undated else "undated"
    if cutoff is not None and deleted_time > cutoff:
        return "young"
    return "purge"


def mlflow_artifacts_path(uri):
    """The path part of a proxied ``mlflow-artifacts:`` URI (``mlflow-artifacts://host:port/a/b`` -> ``a/b``)."""
    rest = uri[len(MLFLOW_ARTIFACTS_SCHEME) + 1:]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest.split("/", 1)[1] if "/" in rest else ""
    return rest.strip("/")


def resolve_artifact_location(artifact_uri, artifacts_destination=None):
    """Where a run's artifacts live: ``("local", path)``, ``("s3", (bucket, prefix))``, ``("mlflow", uri)``
    (anything MLflow's own artifact repositories must handle) or ``("none", None)``.

    ``mlflow-artifacts:`` URIs are mapped onto ``artifacts_destination`` when it is given.
    """
    uri = (artifact_uri or "").strip()
    if not uri:
        return "none", None
    if uri.startswith(MLFLOW_ARTIFACTS_SCHEME + ":"):
        if not artifacts_destination:
            return "mlflow", uri
        destination = artifacts_destination.rstrip("/")
        path = mlflow_artifacts_path(uri)
        uri = destination + ("/" + path if path else "")
    if uri.startswith("s3://"):
        bucket, _sep, key = uri[len("s3://"):].partition("/")
        key = key.strip("/")
        return "s3", (bucket, key + "/" if key else "")
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        return "local", unquote(parts.path)
    if uri.startswith("/"):
        return "local", uri
    return "mlflow", uri


def batched(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Artifacts


def local_tree_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class ArtifactDeleter:
    """Deletes one run's artifacts; returns bytes freed (None when unknown)."""

    def __init__(self, artifacts_destination=None, tracking_uri=None, s3_client_factory=None):
        self.artifacts_destination = artifacts_destination
        self.tracking_uri = tracking_uri
        self._s3_client_factory = s3_client_factory
        self._s3 = None

    def s3(self):
        if self._s3 is None:
            if self._s3_client_factory is not None:
                self._s3 = self._s3_client_factory()
            else:
                import boto3  # pylint: disable=import-outside-toplevel
                from botocore.config import Config  # pylint: disable=import-outside-toplevel
                verify = os.environ.get("MLFLOW_S3_IGNORE_TLS", "").lower() not in ("true", "1")
                self._s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
                                        verify=verify, config=Config(max_pool_connections=64,
                                                                     retries={"max_attempts": 5}))
        return self._s3

    def delete(self, artifact_uri, run_id=None):
        kind, where = resolve_artifact_location(artifact_uri, self.artifacts_destination)
        if kind == "none":
            return 0
        if kind == "local":
            size = 0
            if os.path.isdir(where) and not os.path.islink(where):
                size = local_tree_size(where)
                shutil.rmtree(where)
            elif os.path.lexists(where):
                size = os.lstat(where).st_size
                os.remove(where)
            self._remove_empty_run_dir(where, run_id)
            return size
        if kind == "s3":
            return self._delete_s3(*where)
        return self._delete_with_mlflow(where)

    @staticmethod
    def _remove_empty_run_dir(where, run_id):
        """``<run_id>/artifacts`` leaves ``<run_id>/`` behind: remove it when empty."""
        parent = os.path.dirname(where.rstrip("/"))
        if run_id and os.path.basename(parent) == run_id:
            try:
                os.rmdir(parent)
            except OSError:
                pass

    def _delete_s3(self, bucket, prefix):
        if not prefix:
            raise MaintenanceError("refusing to delete the whole bucket %s" % bucket)
        client = self.s3()
        freed = 0
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            contents = page.get("Contents") or []
            if not contents:
                continue
            response = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": item["Key"]} for item in contents], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                raise MaintenanceError("S3 refused to delete %d objects under s3://%s/%s (first: %s %s)"
                                       % (len(errors), bucket, prefix, errors[0].get("Code"), errors[0].get("Message")))
            freed += sum(int(item.get("Size") or 0) for item in contents)
        return freed

    def _delete_with_mlflow(self, uri):
        if uri.startswith(MLFLOW_ARTIFACTS_SCHEME + ":") and not self.tracking_uri and not os.environ.get(
                "MLFLOW_TRACKING_URI"):
            raise MaintenanceError("cannot resolve %s: set artifacts_destination (or tracking_uri)" % uri)
        from mlflow.store.artifact.artifact_repository_registry import (  # pylint: disable=import-outside-toplevel
            get_artifact_repository,
        )
        if self.tracking_uri:
            import mlflow  # pylint: disable=import-outside-toplevel
            mlflow.set_tracking_uri(self.tracking_uri)
        get_artifact_repository(uri).delete_artifacts()
        return None


# ---------------------------------------------------------------------------------------------
# Database


class GcStore:
    """The backend store's tables as gc needs them, reflected from the live database."""

    def __init__(self, url, connect_timeout=10):
        if sqlalchemy is None:
            from ansible.module_utils.basic import missing_required_lib  # pylint: disable=import-outside-toplevel
            raise MaintenanceError(missing_required_lib("sqlalchemy"), exception=SQLALCHEMY_IMPORT_ERROR)
        self.url = url
        connect_args = {}
        if url.startswith("postgresql"):
            connect_args["connect_timeout"] = int(connect_timeout)
        elif url.startswith("sqlite"):
            connect_args["timeout"] = max(30, int(connect_timeout))
        self.engine = sqlalchemy.create_engine(url, connect_args=connect_args)
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

    def _run_conditions(self, experiment_ids=None, run_ids=None):
        runs = self.runs
        conditions = [runs.c.lifecycle_stage == DELETED]
        if experiment_ids:
            conditions.append(runs.c.experiment_id.in_([int(e) for e in experiment_ids]))
        if run_ids:
            conditions.append(runs.c.run_uuid.in_(list(run_ids)))
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

    def _keyset(self, conditions, page_size):
        runs = self.runs
        last = None
        while True:
            query = sqlalchemy.select(runs.c.run_uuid, runs.c.artifact_uri, runs.c.experiment_id).where(*conditions)
            if last is not None:
                query = query.where(runs.c.run_uuid > last)
            query = query.order_by(runs.c.run_uuid).limit(page_size)
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


def hard_delete_experiment(url, experiment_id, store_cache):
    """Remove an experiment (no runs left) with MLflow's own store code, which knows its many child tables."""
    if "store" not in store_cache:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # pylint: disable=import-outside-toplevel
        store_cache["store"] = SqlAlchemyStore(url, "/nonexistent-artifact-root-for-gc")
    store_cache["store"]._hard_delete_experiment(experiment_id)  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# The whole job


class GcReport:
    def __init__(self, run_ids_limit=1000, failures_limit=100):
        self.purged_runs = 0
        self.purged_experiments = []
        self.failures = []
        self.failed = 0
        self.bytes_freed = 0
        self.bytes_known = True
        self.run_ids = []
        self.run_ids_limit = run_ids_limit
        self.failures_limit = failures_limit

    def fail(self, kind, ident, error):
        self.failed += 1
        if len(self.failures) < self.failures_limit:
            self.failures.append({kind: ident, "error": error})

    def purged(self, run_id):
        self.purged_runs += 1
        if self.run_ids_limit < 0 or len(self.run_ids) < self.run_ids_limit:
            self.run_ids.append(run_id)


def _error_text(exc):
    text = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    return "%s: %s" % (exc.__class__.__name__, text.strip().splitlines()[0][:300] if text.strip() else "")


def purge_batch(store, deleter, batch, report, concurrency, check_mode):
    """Artifacts of a batch concurrently, then the rows of the runs whose artifacts are gone."""
    if check_mode:
        for run_id, _uri, _exp in batch:
            report.purged(run_id)
        return
    ok = []
    for row, freed, error in bounded_parallel_map(lambda row: deleter.delete(row[1], row[0]), batch, concurrency):
        if error is not None:
            report.fail("run_id", row[0], "artifacts: %s" % _error_text(error))
            continue
        if freed is None:
            report.bytes_known = False
        else:
            report.bytes_freed += freed
        ok.append(row[0])
    if not ok:
        return
    try:
        store.purge_runs(ok)
        for run_id in ok:
            report.purged(run_id)
    except Exception as exc:  # pylint: disable=broad-except
        # One bad run must not sink its batch: retry the batch one run at a time.
        for run_id in ok:
            try:
                store.purge_runs([run_id])
                report.purged(run_id)
            except Exception as single:  # pylint: disable=broad-except
                report.fail("run_id", run_id, "rows: %s" % _error_text(single))
        del exc


def run_gc(store, deleter, cutoff=None, include_undated=False, experiment_ids=None, run_ids=None,
           batch_size=500, concurrency=16, check_mode=False, run_ids_limit=1000, purge_experiments=True):
    """Purge deleted runs (and deleted experiments); returns a result dict for exit_json."""
    report = GcReport(run_ids_limit)
    if run_ids:
        stages = store.run_stages(run_ids)
        missing = [run_id for run_id in run_ids if run_id not in stages]
        active = [run_id for run_id in run_ids if stages.get(run_id) not in (None, DELETED)]
        if missing or active:
            raise MaintenanceError(
                "gc purges only runs in the deleted stage; nothing was changed. %s%s" % (
                    "Unknown runs: %s. " % ", ".join(missing[:20]) if missing else "",
                    "Active runs: %s." % ", ".join(active[:20]) if active else ""))
    if experiment_ids:
        stages = store.experiment_stages(experiment_ids)
        missing = [e for e in experiment_ids if str(e) not in stages]
        if missing:
            raise MaintenanceError("unknown experiment(s): %s; nothing was changed" % ", ".join(missing))

    undated_count, undated_ids = (0, [])
    if not include_undated:
        undated_count, undated_ids = store.undated_runs(experiment_ids, run_ids)

    for batch in batched(store.stream_deleted_runs(cutoff, include_undated, experiment_ids, run_ids,
                                                   page_size=batch_size), batch_size):
        purge_batch(store, deleter, batch, report, concurrency, check_mode)

    experiments = []
    if purge_experiments and not run_ids:
        experiments = store.deleted_experiments(cutoff, include_undated, experiment_ids)
        store_cache = {}
        for experiment_id, name in experiments:
            before = report.failed
            # Runs of a deleted experiment go with it, whatever their own deletion time.
            rows = store.stream_experiment_runs(experiment_id, cutoff, include_undated, page_size=batch_size)
            for batch in batched(rows, batch_size):
                purge_batch(store, deleter, batch, report, concurrency, check_mode)
            if report.failed > before:
                report.fail("experiment_id", experiment_id, "some of its runs could not be purged; experiment kept")
                continue
            if check_mode:
                report.purged_experiments.append(dict(experiment_id=experiment_id, name=name))
                continue
            try:
                hard_delete_experiment(store.url, experiment_id, store_cache)
                report.purged_experiments.append(dict(experiment_id=experiment_id, name=name))
            except Exception as exc:  # pylint: disable=broad-except
                report.fail("experiment_id", experiment_id, _error_text(exc))

    return dict(
        changed=bool(report.purged_runs or report.purged_experiments),
        purged_runs=report.purged_runs,
        purged_experiments=len(report.purged_experiments),
        experiments=report.purged_experiments[:run_ids_limit] if run_ids_limit >= 0 else report.purged_experiments,
        run_ids=report.run_ids,
        run_ids_truncated=run_ids_limit >= 0 and report.purged_runs > len(report.run_ids),
        failures=report.failures,
        failed=report.failed,
        bytes_freed=(report.bytes_freed if report.bytes_known else None) if not check_mode else None,
        undated_runs=undated_count,
        undated_run_ids=undated_ids,
    )
