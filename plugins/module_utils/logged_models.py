# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logged_models_cleanup job: soft-delete MLflow 3 logged models over REST, without importing mlflow.

Selection: ``POST /api/2.0/mlflow/logged-models/search`` (every page) with ``creation_timestamp < <cutoff>``
ANDed with the user's filter. A model that any registered model version points to (its ``model_id``, or a
``source`` of ``models:/<id>`` or inside the model's artifact location) or that carries the keep tag is never
deleted. The whole selection is counted first (``max_delete`` fails before any change, check mode counts
exactly), then ``DELETE /api/2.0/mlflow/logged-models/<id>`` runs with bounded concurrency. MLflow has no
restore for logged models: a soft-deleted model stays in the store (invisible to searches) until
``mlflowops.maintenance.gc`` purges it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.module_utils.six.moves.urllib.parse import quote

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    Failures,
    and_filters,
    check_cap,
    error_text,
    experiment_ids_for,
    is_server_gone,
    keep_value_protects,
    selection_failed,
    user_filter,
    validate_common,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import capped
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

SEARCH_PATH = "logged-models/search"
SEARCH_PAGE_SIZE = 1000
EXPERIMENTS_PER_SEARCH = 100


# -- pure decisions ------------------------------------------------------------------------------

def build_model_filter(cutoff, extra_filter=None):
    parts = []
    if cutoff is not None:
        parts.append("creation_timestamp < %d" % int(cutoff))
    parts.append(user_filter(extra_filter))
    return and_filters(parts)


def model_info(model):
    return model.get("info") or model


def model_tags(model):
    tags = model_info(model).get("tags") or []
    if isinstance(tags, dict):
        return dict(tags)
    return dict((tag.get("key"), tag.get("value")) for tag in tags)


def registered_references(versions):
    """(model ids, other sources) that registered model versions point to.

    The REST search of model versions returns a version's ``source`` (``models:/<model_id>`` for a version made
    from a logged model) and, on some servers, its ``model_id``; both count. Other sources are kept to match
    versions registered from inside a logged model's artifact location.
    """
    model_ids, sources = set(), set()
    for version in versions:
        if version.get("model_id"):
            model_ids.add(version["model_id"])
        source = str(version.get("source") or "").rstrip("/")
        if source.startswith("models:/"):
            model_ids.add(source[len("models:/"):].partition("/")[0])
        elif source:
            sources.add(source)
    return model_ids, sources


def _under(source, location):
    location = (location or "").rstrip("/")
    return bool(location) and (source == location or source.startswith(location + "/"))


def registered_reason(model, model_ids, sources):
    """Whether a registered version points to the model: by model_id, ``models:/<id>`` or its artifact location."""
    info = model_info(model)
    if info.get("model_id") in model_ids:
        return True
    artifact_uri = info.get("artifact_uri") or info.get("artifact_location")
    return any(_under(source, artifact_uri) for source in sources)


class ModelPlan:
    def __init__(self):
        self.delete = []  # (model_id, experiment_id, workspace)
        self.protected = {}  # model_id -> reason
        self.seen = set()


def plan_models(models, registered, keep_tag, workspace=None, plan=None):
    """Classify searched models: delete, or protected (``registered_model`` / ``keep_tag``)."""
    plan = plan or ModelPlan()
    model_ids, sources = registered
    for model in models:
        info = model_info(model)
        model_id = info.get("model_id")
        if not model_id or (workspace, model_id) in plan.seen:
            continue
        plan.seen.add((workspace, model_id))
        if registered_reason(model, model_ids, sources):
            plan.protected[model_id] = "registered_model"
        elif keep_value_protects(model_tags(model), keep_tag):
            plan.protected[model_id] = "keep_tag"
        else:
            plan.delete.append((model_id, str(info.get("experiment_id")), workspace))
    return plan


# -- the job -------------------------------------------------------------------------------------

def search_models(client, experiment_ids, filter_string):
    for offset in range(0, len(experiment_ids), EXPERIMENTS_PER_SEARCH):
        body = {"experiment_ids": [str(e) for e in experiment_ids[offset:offset + EXPERIMENTS_PER_SEARCH]]}
        if filter_string:
            body["filter"] = filter_string
        yield from client.paged(SEARCH_PATH, body, "models", page_size=SEARCH_PAGE_SIZE)


def registered_versions(client):
    return client.search_model_versions()


def run_logged_models_cleanup(params, targets, check_mode=False, deadline=None, now=None):
    """The whole job over ``targets`` ([(workspace or None, TrackingClient)]); returns the result dict."""
    now = int(time.time() * 1000) if now is None else now
    cutoff = validate_common(params, now)
    limit = params.get("model_ids_limit", 1000)
    search_filter = build_model_filter(cutoff, params.get("filter"))
    plan = ModelPlan()
    clients = {}
    for workspace, client in targets:
        clients[workspace] = client
        what = "resolving the experiments"
        try:
            experiment_ids = experiment_ids_for(client, params.get("experiments"))
            what = "reading the registered model versions"
            registered = registered_references(registered_versions(client)) if params.get("protect_registered", True) \
                else (set(), set())
            what = "searching the logged models"
            if experiment_ids:
                plan_models(search_models(client, experiment_ids, search_filter), registered, params.get("keep_tag"),
                            workspace, plan)
        except TrackingError as exc:
            where = " in workspace %s" % workspace if workspace else ""
            raise selection_failed("logged_models_cleanup", exc, what + where, deleted=0)
    check_cap(len(plan.delete), params.get("max_delete"), "logged models")

    reasons = {}
    for reason in plan.protected.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    failures = Failures()
    result = dict(changed=bool(plan.delete), deleted=0, selected=len(plan.delete), protected=len(plan.protected),
                  protected_reasons=reasons, protected_model_ids=capped(sorted(plan.protected), limit),
                  model_ids_truncated=limit is not None and 0 <= limit < max(len(plan.delete), len(plan.protected)),
                  search_filter=search_filter, **failures.as_result())
    if check_mode:
        result.update(deleted=len(plan.delete), model_ids=capped([m[0] for m in plan.delete], limit),
                      deleted_per_experiment=per_experiment(plan.delete))
        return result

    state = dict(fatal=None)
    done = []

    def delete(entry):
        return clients[entry[2]].call("DELETE", "logged-models/%s" % quote(entry[0], safe=""))

    def until_fatal():
        for entry in plan.delete:
            if state["fatal"] is None and deadline is not None and deadline.expired():
                state["fatal"] = TrackingError("the task's deadline of %ss passed" % int(deadline.seconds), "deadline")
            if state["fatal"] is not None:
                return
            yield entry

    concurrency = params.get("concurrency") or 8
    any_client = targets[0][1]
    for entry, _answer, error in any_client.map_concurrently(delete, until_fatal(), concurrency):
        if error is None:
            done.append(entry)
        elif isinstance(error, TrackingError) and error.status == 404:
            continue  # gone already (deleted meanwhile)
        elif is_server_gone(error):
            state["fatal"] = state["fatal"] or error
        else:
            failures.add(entry[0], error_text(error))

    result.update(changed=bool(done), deleted=len(done), model_ids=capped([m[0] for m in done], limit),
                  deleted_per_experiment=per_experiment(done), **failures.as_result())
    if state["fatal"] is not None:
        fatal = state["fatal"]
        remaining = len(plan.delete) - len(done)
        cause = ("stopped at its deadline" if getattr(fatal, "kind", None) == "deadline"
                 else "stopped: the tracking server stopped answering midway")
        raise MaintenanceError(
            "logged_models_cleanup %s: %d of %d logged models deleted, %d remain (%s). Rerun the task to finish the job."
            % (cause, len(done), len(plan.delete), remaining, error_text(fatal)), remaining=remaining, **result)
    if failures.count:
        raise MaintenanceError("%d logged models could not be deleted (first: %s); %d deleted"
                               % (failures.count, failures.items[0]["msg"], len(done)), **result)
    return result


def per_experiment(entries):
    counts = {}
    for _model_id, experiment_id, workspace in entries:
        key = "%s/%s" % (workspace, experiment_id) if workspace else experiment_id
        counts[key] = counts.get(key, 0) + 1
    return counts
