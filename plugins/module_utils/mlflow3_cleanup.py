# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared parts of the MLflow 3 cleanups (traces_cleanup, logged_models_cleanup): pure helpers and REST edges.

Option checks, the keep-tag rule, experiment resolution, the "server is gone" rule and the failure list are
the same for both modules, so both behave the same on bad input and on a server that dies midway.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.mlflowops.maintenance.plugins.module_utils import common
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import (
    check_count,
    cutoff_ms,
    resolve_experiments,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

DEFAULT_KEEP_TAG = "mlflowops.keep"
FAILURES_LISTED = 50
_FALSE_TAG_VALUES = ("false", "0", "no", "off")
ALL_WORKSPACES = "all"


def keep_value_protects(tags, keep_tag):
    """True when ``tags`` ({key: value}) carry ``keep_tag`` with any value but an explicit false."""
    if not keep_tag or keep_tag not in (tags or {}):
        return False
    return str(tags[keep_tag]).strip().lower() not in _FALSE_TAG_VALUES


def user_filter(text, option="filter"):
    """The user's extra search filter, stripped; MLflow's trace and model filters support only AND."""
    text = (text or "").strip()
    if re.search(r"\bOR\b", text, re.IGNORECASE):
        raise MaintenanceError("%s %r: MLflow search filters support only AND; nothing was changed" % (option, text))
    return text


def and_filters(parts):
    return " AND ".join(part for part in parts if part)


def validate_common(params, now_ms, batch_option=None, batch_max=None):
    """Checks shared by both cleanups, before the first request; returns the cutoff (epoch ms) or None."""
    check_count(params.get("max_delete"), "max_delete", 0, unlimited=-1)
    if params.get("concurrency") is not None:
        check_count(params.get("concurrency"), "concurrency", 1)
    if batch_option:
        value = params.get(batch_option)
        check_count(value, batch_option, 1)
        if batch_max is not None and value > batch_max:
            raise MaintenanceError("%s must be at most %d, got %d; nothing was changed" % (batch_option, batch_max, value))
    user_filter(params.get("filter"))
    if params.get("older_than") in (None, ""):
        return None
    return cutoff_ms(params["older_than"], now_ms)


def check_cap(count, max_delete, noun):
    """Fail before changing anything when the selection is over the cap."""
    if max_delete is not None and max_delete >= 0 and count > max_delete:
        raise MaintenanceError(
            "the selection holds %d %s to delete, more than max_delete=%d; nothing was changed. "
            "Narrow the selection or raise max_delete." % (count, noun, max_delete), selected=count)


def experiment_ids_for(client, requested):
    """Ids of the requested experiments (names or ids; all unknown ones fail together), or every active one."""
    if requested:
        return resolve_experiments(requested, client.get_experiment, client.get_experiment_by_name)
    return [experiment["experiment_id"] for experiment in client.search_experiments("ACTIVE_ONLY")]


def is_server_gone(exc):
    """A failure that ends the job: the server is unreachable or unwell, or the deadline passed."""
    return isinstance(exc, TrackingError) and (exc.kind in ("deadline", "connection", "timeout", "gone", "tls")
                                               or exc.status in (502, 503, 504))


def error_text(exc):
    return getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__


class Failures(common.Failures):
    """Failures as a short list of {id, msg} plus their count (the collection's result-key contract)."""

    def __init__(self, limit=FAILURES_LISTED):
        super(Failures, self).__init__(limit=limit)


def cleanup_argument_spec(max_delete, **extra):
    """The selection options shared by the REST cleanup modules (traces_cleanup, logged_models_cleanup)."""
    spec = dict(
        older_than=dict(type="str"),
        experiments=dict(type="list", elements="str"),
        filter=dict(type="str"),
        keep_tag=dict(type="str", default=DEFAULT_KEEP_TAG, no_log=False),
        max_delete=dict(type="int", default=max_delete),
    )
    spec.update(extra)
    return spec


def selection_failed(module_name, exc, what, **details):
    """A failure while selecting: nothing was changed yet; say so, with what stopped it."""
    msg = getattr(exc, "msg", str(exc))
    if isinstance(exc, TrackingError) and exc.kind == "deadline":
        return MaintenanceError("%s stopped at its deadline while %s; nothing was changed (%s)" % (module_name, what, msg),
                                **details)
    if "nothing was changed" not in msg:
        msg = "%s while %s; nothing was changed" % (msg, what)
    merged = dict(getattr(exc, "details", {}) or {})
    merged.update(details)
    return MaintenanceError(msg, **merged)


def normalise_workspaces(value):
    """The workspace option as a list: [] (none given), [names...] or [ALL_WORKSPACES]."""
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    if ALL_WORKSPACES in names and len(names) > 1:
        raise MaintenanceError("workspace: %r cannot be combined with workspace names; nothing was changed"
                               % ALL_WORKSPACES)
    return names


WORKSPACES_PATH = "/api/3.0/mlflow/workspaces"


def list_workspaces(client):
    """Names of the server's workspaces; a clear MaintenanceError on a server without workspaces.

    One attempt, no retry: a server without workspaces answers this endpoint with HTTP 503 (or 404 before
    MLflow 3.x had workspaces), which the client would otherwise retry as an unwell server.
    """
    response, _seconds = client.timed_request("GET", WORKSPACES_PATH)
    text = response.text or ""
    if response.status_code in (404, 501) or (response.status_code == 503 and "workspace" in text.lower()):
        raise MaintenanceError("workspace is set, but the tracking server %s does not have workspaces enabled "
                               "(start it with --enable-workspaces, or leave workspace unset); nothing was changed"
                               % client.base_url)
    if response.status_code >= 400:
        raise MaintenanceError("listing the workspaces failed: GET %s returned HTTP %s; nothing was changed"
                               % (client.url(WORKSPACES_PATH), response.status_code))
    try:
        answer = response.json()
    except ValueError:
        raise MaintenanceError("GET %s did not answer with JSON; nothing was changed" % client.url(WORKSPACES_PATH))
    return [item.get("name") for item in answer.get("workspaces") or [] if item.get("name")]


def select_workspaces(requested, available):
    """The workspaces to act in: every one for ``all``, else the requested ones (all unknown ones fail together)."""
    if requested == [ALL_WORKSPACES]:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise MaintenanceError("unknown workspace(s): %s (the server has: %s); nothing was changed"
                               % (", ".join(unknown), ", ".join(available) or "none"))
    return list(requested)


def tracking_targets(module, client_factory, **client_kwargs):
    """[(workspace or None, client)] for the module's ``workspace`` option (a name, a list, or ``all``).

    Without the option: one client, no workspace header. With it: the server's workspaces are listed first
    (a server without workspaces fails clearly), then one client per selected workspace, each sending
    ``X-MLFLOW-WORKSPACE``.
    """
    requested = normalise_workspaces(module.params.get("workspace"))
    if not requested:
        return [(None, client_factory(module, workspace=None, **client_kwargs))]
    probe = client_factory(module, workspace=None, **client_kwargs)
    names = select_workspaces(requested, list_workspaces(probe))
    return [(name, client_factory(module, workspace=name, **client_kwargs)) for name in names]
