# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gc job: permanent deletion of soft-deleted runs and experiments.

Faster than ``mlflow gc``: the artifacts of a batch are deleted concurrently before its rows go, and the rows
of many runs go in one transaction. A run whose artifacts cannot be deleted keeps its rows (a rerun retries
it) and is reported; the others carry on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    Deadline,
    Failures,
    MaintenanceError,
    bounded_parallel_map,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.gc_store import DELETED, batched
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_compat import hard_delete_experiment


class GcReport:
    """What gc did so far; ``as_details()`` is also what a stopped run reports."""

    def __init__(self, run_ids_limit=1000, failures_limit=100):
        self.purged_runs = 0
        self.purged_experiments = []
        self.failures = Failures(limit=failures_limit)
        self.freed_bytes = 0
        self.bytes_known = True
        self.run_ids = []
        self.run_ids_limit = run_ids_limit
        self.purged_models = 0
        self.model_ids = []
        self.purged_jobs = 0

    def fail(self, kind, ident, error):
        self.failures.add(ident, error, kind=kind)

    def purged(self, run_id):
        self.purged_runs += 1
        if self.run_ids_limit < 0 or len(self.run_ids) < self.run_ids_limit:
            self.run_ids.append(run_id)

    def purged_model(self, model_id):
        self.purged_models += 1
        if self.run_ids_limit < 0 or len(self.model_ids) < self.run_ids_limit:
            self.model_ids.append(model_id)

    def as_details(self):
        return dict(purged_runs=self.purged_runs, purged_experiments=len(self.purged_experiments),
                    purged_logged_models=self.purged_models, purged_jobs=self.purged_jobs,
                    **self.failures.as_result())


def _error_text(exc):
    text = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    return "%s: %s" % (exc.__class__.__name__, text.strip().splitlines()[0][:300] if text.strip() else "")


def _purge_items(kind, purge_rows, purged, deleter, batch, report, concurrency, check_mode):
    """Artifacts of a batch concurrently, then the rows of the items whose artifacts are gone.

    ``batch``: ``(id, artifact_uri, experiment_id)`` rows; ``purge_rows(ids)`` deletes rows; ``purged(id)`` counts."""
    if check_mode:
        for ident, _uri, _exp in batch:
            purged(ident)
        return
    ok = []
    for row, freed, error in bounded_parallel_map(lambda row: deleter.delete(row[1], row[0]), batch, concurrency):
        if error is not None:
            report.fail(kind, row[0], "artifacts: %s" % _error_text(error))
            continue
        if freed is None:
            report.bytes_known = False
        else:
            report.freed_bytes += freed
        ok.append(row[0])
    if not ok:
        return
    try:
        purge_rows(ok)
        for ident in ok:
            purged(ident)
    except Exception:  # pylint: disable=broad-except
        # One bad row must not sink its batch: retry the batch one item at a time.
        for ident in ok:
            try:
                purge_rows([ident])
                purged(ident)
            except Exception as single:  # pylint: disable=broad-except
                report.fail(kind, ident, "rows: %s" % _error_text(single))


def purge_batch(store, deleter, batch, report, concurrency, check_mode):
    """Runs: artifacts of a batch concurrently, then the rows of the runs whose artifacts are gone."""
    _purge_items("run", store.purge_runs, report.purged, deleter, batch, report, concurrency, check_mode)


def purge_model_batch(store, deleter, batch, report, concurrency, check_mode):
    """Logged models: artifacts of a batch concurrently, then the rows of the models whose artifacts are gone."""
    _purge_items("logged_model", store.purge_models, report.purged_model, deleter, batch, report, concurrency,
                 check_mode)


def check_model_ids(store, logged_model_ids):
    """Named logged models must exist and be in the deleted stage, or nothing is changed."""
    if store.logged_models is None:
        raise MaintenanceError("logged_model_ids is set, but this backend store has no logged_models table "
                               "(MLflow before 3.0); nothing was changed")
    stages = store.model_stages(logged_model_ids)
    missing = [m for m in logged_model_ids if m not in stages]
    active = [m for m in logged_model_ids if stages.get(m) not in (None, DELETED)]
    if missing or active:
        raise MaintenanceError("gc purges only logged models in the deleted stage; nothing was changed. %s%s" % (
            "Unknown logged models: %s. " % ", ".join(missing[:20]) if missing else "",
            "Active logged models: %s." % ", ".join(active[:20]) if active else ""))


def purge_jobs(store, cutoff, job_ids, batch_size, report, check_mode, deadline):
    """Finalized job records (``mlflow gc --jobs``): older than the cutoff (by creation time), or the named ones."""
    ids = store.job_ids(cutoff, job_ids)
    if check_mode:
        report.purged_jobs = len(ids)
        return
    for batch in batched(ids, batch_size):
        deadline.check("gc", **report.as_details())
        report.purged_jobs += store.purge_jobs(batch)


def run_gc(store, deleter, cutoff=None, include_undated=False, experiment_ids=None, run_ids=None,
           batch_size=500, concurrency=16, check_mode=False, run_ids_limit=1000, purge_experiments=True,
           deadline=None, logged_model_ids=None, purge_logged_models=True, jobs=False, job_ids=None):
    """Purge deleted runs, logged models and experiments, and finished job records; returns a result dict.

    Covers what ``mlflow gc`` 3.17 covers: runs, logged models (rows and artifacts), experiments (with their runs
    and logged models), and with ``jobs``/``job_ids`` the finalized job records. With ``run_ids`` or
    ``logged_model_ids`` only the named entities are purged.
    ``deadline`` (common.Deadline) is checked between batches: a stopped run raises with what was purged,
    and a rerun carries on, since purged rows are gone and the rest are still selected.
    """
    deadline = deadline or Deadline(None)
    report = GcReport(run_ids_limit)
    if logged_model_ids:
        check_model_ids(store, logged_model_ids)
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

    named_only = bool(run_ids or logged_model_ids)
    if run_ids or not named_only:
        for batch in batched(store.stream_deleted_runs(cutoff, include_undated, experiment_ids, run_ids,
                                                       page_size=batch_size), batch_size):
            deadline.check("gc", **report.as_details())
            purge_batch(store, deleter, batch, report, concurrency, check_mode)

    if logged_model_ids or (purge_logged_models and not named_only):
        for batch in batched(store.stream_deleted_models(cutoff, experiment_ids, logged_model_ids,
                                                         page_size=batch_size), batch_size):
            deadline.check("gc", **report.as_details())
            purge_model_batch(store, deleter, batch, report, concurrency, check_mode)

    experiments = []
    if purge_experiments and not named_only:
        experiments = store.deleted_experiments(cutoff, include_undated, experiment_ids)
        store_cache = {}
        for experiment_id, name in experiments:
            deadline.check("gc", **report.as_details())
            before = report.failures.count
            # Runs of a deleted experiment go with it, whatever their own deletion time.
            rows = store.stream_experiment_runs(experiment_id, cutoff, include_undated, page_size=batch_size)
            for batch in batched(rows, batch_size):
                purge_batch(store, deleter, batch, report, concurrency, check_mode)
            # Its logged models (any stage) go with it too, artifacts first; the rows would only cascade.
            models = store.stream_experiment_models(experiment_id, cutoff, skip_selected=purge_logged_models,
                                                    page_size=batch_size)
            for batch in batched(models, batch_size):
                purge_model_batch(store, deleter, batch, report, concurrency, check_mode)
            if report.failures.count > before:
                report.fail("experiment", experiment_id, "some of its runs could not be purged; experiment kept")
                continue
            if check_mode:
                report.purged_experiments.append(dict(experiment_id=experiment_id, name=name))
                continue
            try:
                hard_delete_experiment(store.url, experiment_id, store_cache, store.experiment_workspace(experiment_id))
                report.purged_experiments.append(dict(experiment_id=experiment_id, name=name))
            except Exception as exc:  # pylint: disable=broad-except
                report.fail("experiment", experiment_id, _error_text(exc))

    if jobs or job_ids:
        purge_jobs(store, cutoff, job_ids, batch_size, report, check_mode, deadline)

    return dict(
        changed=bool(report.purged_runs or report.purged_experiments or report.purged_models or report.purged_jobs),
        purged_runs=report.purged_runs,
        purged_logged_models=report.purged_models,
        logged_model_ids=report.model_ids,
        logged_model_ids_truncated=run_ids_limit >= 0 and report.purged_models > len(report.model_ids),
        purged_jobs=report.purged_jobs,
        purged_experiments=len(report.purged_experiments),
        experiments=report.purged_experiments[:run_ids_limit] if run_ids_limit >= 0 else report.purged_experiments,
        run_ids=report.run_ids,
        run_ids_truncated=run_ids_limit >= 0 and report.purged_runs > len(report.run_ids),
        freed_bytes=(report.freed_bytes if report.bytes_known else None) if not check_mode else None,
        undated_runs=undated_count,
        undated_run_ids=undated_ids,
        undated_run_ids_truncated=undated_count > len(undated_ids),
        **report.failures.as_result()
    )
