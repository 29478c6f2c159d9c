# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracking-server side of artifacts_audit: reading logged models and traces (every page), asking the
server whether an orphan candidate's entity exists (in every audited workspace), and the workspace targets.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_classify import model_record, trace_record
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_layout import MODEL, RUN, TRACE
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, bounded_parallel_map
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    WORKSPACES_PATH,
    list_workspaces,
    normalise_workspaces,
    select_workspaces,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

TRACE_GET_PATH = "/api/3.0/mlflow/traces/%s"
TRACE_SEARCH_PATH = "/api/3.0/mlflow/traces/search"
MODEL_SEARCH_PATH = "logged-models/search"
EXPERIMENTS_PER_SEARCH = 100
TRACE_PAGE_SIZE = 500  # the server refuses more


def entity_exists(client, kind, ident):
    """Whether the tracking server knows the entity (deleted ones included); True/False, or raises."""
    try:
        if kind == MODEL:
            client.get("logged-models/%s" % ident, allow_deleted="true")
        elif kind == TRACE:
            client.get(TRACE_GET_PATH % ident)
        else:
            client.get("runs/get", run_id=ident)
    except TrackingError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def confirm_orphans(clients, candidates, concurrency):
    """Ask the server about each candidate's id, in every audited workspace: ``(confirmed, claimed)``.

    An entity any of them knows is never an orphan; a candidate is confirmed only on a 404 from each.
    """
    clients = clients if isinstance(clients, (list, tuple)) else [clients]
    confirmed, claimed = [], []

    def ask(item):
        ident = item["folder"].rstrip("/").split("/")[-1]
        return any(entity_exists(client, item.get("kind", RUN), ident) for client in clients)

    for item, exists, error in bounded_parallel_map(ask, candidates, concurrency):
        if error is not None:
            raise error
        (claimed if exists else confirmed).append(item)
    confirmed.sort(key=lambda item: item["folder"])
    return confirmed, claimed


def read_models(client, experiment_ids, deleted_experiments=()):
    """Active logged models of the experiments (every page), as model_record dicts; None when the server has no
    logged-models API (it answers the search with 404)."""
    models = []
    try:
        for offset in range(0, len(experiment_ids), EXPERIMENTS_PER_SEARCH):
            body = {"experiment_ids": [str(ident) for ident in experiment_ids[offset:offset + EXPERIMENTS_PER_SEARCH]]}
            for model in client.paged(MODEL_SEARCH_PATH, body, "models"):
                info = model.get("info") or model
                stage = "deleted" if str(info.get("experiment_id")) in deleted_experiments else "active"
                models.append(model_record(info, stage))
    except TrackingError as exc:
        if exc.status == 404 and not models:
            return None
        raise
    return models


def read_traces(client, experiment_ids, deleted_experiments=()):
    """Every trace of the experiments (every page of the v3 search), as trace_record dicts; None when the server
    has no v3 traces API. Traces of deleted experiments await gc (it purges the experiment with its folders)."""
    traces = []
    try:
        for offset in range(0, len(experiment_ids), EXPERIMENTS_PER_SEARCH):
            chunk = experiment_ids[offset:offset + EXPERIMENTS_PER_SEARCH]
            body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": str(ident)}}
                                  for ident in chunk], "max_results": TRACE_PAGE_SIZE}
            while True:
                page = client.post(TRACE_SEARCH_PATH, body)
                for trace in page.get("traces") or []:
                    record = trace_record(trace)
                    if record["experiment_id"] in deleted_experiments:
                        record["lifecycle_stage"] = "deleted"
                    traces.append(record)
                token = page.get("next_page_token")
                if not token:
                    break
                body["page_token"] = token
    except TrackingError as exc:
        if exc.status == 404 and not traces:
            return None
        raise
    return traces


def unowned_model_ids(stats, models):
    """Ids of the logged-model folders of the listing that no model read (the active ones) carries."""
    known = set(model["model_id"] for model in models)
    return sorted(set(folder.rsplit("/", 1)[-1] for folder, kind in stats.kinds.items() if kind == MODEL) - known)


def read_deleted_models(targets, model_ids, audited, concurrency):
    """The logged models behind folders the active search did not return, asked one by one
    (``logged-models/<id>?allow_deleted=true`` in each workspace until one knows it). A model of an audited
    experiment that the search did not return is soft-deleted (awaiting gc); one of another experiment is
    live there. Unknown ids (404 everywhere) are left for the orphans."""
    found = []

    def ask(model_id):
        for workspace, client in targets:
            try:
                answer = client.get("logged-models/%s" % model_id, allow_deleted="true")
            except TrackingError as exc:
                if exc.status == 404:
                    continue
                raise
            info = (answer.get("model") or {}).get("info") or {}
            stage = "deleted" if str(info.get("experiment_id")) in audited.get(workspace, ()) else "active"
            return model_record(info, stage)
        return None

    for _model_id, record, error in bounded_parallel_map(ask, model_ids, concurrency):
        if error is not None:
            raise error
        if record is not None and record.get("model_id"):
            found.append(record)
    return found


def workspaces_enabled(client):
    """Whether the tracking server has workspaces (``GET /api/3.0/mlflow/workspaces`` answers); one attempt."""
    response, _seconds = client.timed_request("GET", WORKSPACES_PATH)
    if response.status_code == 200:
        return True
    if response.status_code in (404, 501, 503):
        return False
    raise MaintenanceError("cannot tell whether the tracking server has workspaces: GET %s returned HTTP %s; "
                           "nothing was removed" % (client.url(WORKSPACES_PATH), response.status_code))


def audit_targets(module, factory, **client_kwargs):
    """``(targets, scope)`` for the ``workspace`` option: [(workspace or None, client)] and what they cover."""
    requested = normalise_workspaces(module.params.get("workspace"))
    if not requested:
        return [(None, factory(module, workspace=None, **client_kwargs))], dict(enabled=None, selected=None, complete=False)
    available = list_workspaces(factory(module, workspace=None, **client_kwargs))
    names = select_workspaces(requested, available)
    targets = [(name, factory(module, workspace=name, **client_kwargs)) for name in names]
    return targets, dict(enabled=True, selected=names, complete=set(names) >= set(available))
