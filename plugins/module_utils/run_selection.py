# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which runs a retention cleanup deletes, keeps, reaps or restores: pure functions, no I/O.

The server does the filtering (``attributes.start_time < <ms>``, ``attributes.status IN (...)``,
ANDed with the user's filter); these functions build that filter and then classify each run the
search returned (registered-model and keep-tag protection, the RUNNING rule, reaping).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, parse_duration

TIME_FIELDS = ("start_time", "end_time")
DELETABLE_STATUSES = ("FINISHED", "FAILED", "KILLED")
ALL_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
DEFAULT_STATUSES = ["FINISHED", "FAILED", "KILLED"]
DEFAULT_KEEP_TAG = "mlflowops.keep"

_FALSE_TAG_VALUES = ("false", "0", "no", "off")


def duration_ms(value, option):
    """Milliseconds in ``value`` (mlflow gc syntax); MaintenanceError naming ``option`` otherwise."""
    try:
        return int(round(parse_duration(value) * 1000))
    except ValueError as exc:
        raise MaintenanceError("%s: %s" % (option, exc))


def cutoff_ms(older_than, now_ms, option="older_than"):
    """The epoch-ms instant before which a time counts as older than ``older_than``."""
    return int(now_ms) - duration_ms(older_than, option)


def quote_filter_value(value):
    """A single-quoted MLflow filter literal."""
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def validate_statuses(statuses):
    statuses = [str(status).upper() for status in (statuses or [])]
    if not statuses:
        raise MaintenanceError("statuses must name at least one of %s" % ", ".join(DELETABLE_STATUSES))
    bad = [status for status in statuses if status not in DELETABLE_STATUSES]
    if bad:
        raise MaintenanceError("statuses %s cannot be selected: only %s runs are deleted (RUNNING runs never are)"
                               % (", ".join(bad), ", ".join(DELETABLE_STATUSES)))
    return sorted(set(statuses), key=DELETABLE_STATUSES.index)


def _and(parts):
    return " AND ".join(part for part in parts if part)


def _user_filter(extra_filter):
    text = (extra_filter or "").strip()
    if re.search(r"\bOR\b", text, re.IGNORECASE):
        raise MaintenanceError("filter %r: MLflow run filters support only AND" % text)
    return text


def build_filter(cutoff, time_field="start_time", statuses=None, extra_filter=None):
    """The server-side search filter of the runs a cleanup may touch."""
    if time_field not in TIME_FIELDS:
        raise MaintenanceError("time_field must be one of %s, got %r" % (", ".join(TIME_FIELDS), time_field))
    parts = []
    if cutoff is not None:
        parts.append("attributes.%s < %d" % (time_field, int(cutoff)))
    if statuses:
        # MLflow accepts IN only for run_id: exclude every other status with != instead.
        parts.extend("attributes.status != %s" % quote_filter_value(status)
                     for status in ALL_STATUSES if status not in statuses)
    parts.append(_user_filter(extra_filter))
    return _and(parts)


def build_reap_filter(reap_cutoff, extra_filter=None):
    """The server-side filter of RUNNING runs that started before ``reap_cutoff``."""
    return _and(["attributes.status = 'RUNNING'", "attributes.start_time < %d" % int(reap_cutoff),
                 _user_filter(extra_filter)])


def run_tags(run):
    """{key: value} of a run as the REST API returns it."""
    return dict((tag.get("key"), tag.get("value")) for tag in (run.get("data") or {}).get("tags") or [])


def has_keep_tag(run, keep_tag):
    """True when the run carries ``keep_tag`` with any value but an explicit false."""
    if not keep_tag:
        return False
    tags = run_tags(run)
    if keep_tag not in tags:
        return False
    return str(tags[keep_tag]).strip().lower() not in _FALSE_TAG_VALUES


def run_id_of(run):
    info = run.get("info") or {}
    return info.get("run_id") or info.get("run_uuid")


_RUNS_SOURCE = re.compile(r"^runs:/([0-9A-Za-z_\-]+)(?:/|$)")


def registered_ids_of_version(version):
    """The run ids a model version needs: its ``run_id`` and the run of a ``runs:/<run_id>/...`` source."""
    ids = set()
    if version.get("run_id"):
        ids.add(version["run_id"])
    match = _RUNS_SOURCE.match(version.get("source") or "")
    if match:
        ids.add(match.group(1))
    return ids


def protection_reason(run, registered_run_ids, keep_tag):
    """Why a run must not be deleted: ``registered_model``, ``keep_tag``, ``running`` or None."""
    info = run.get("info") or {}
    if info.get("status") == "RUNNING":
        return "running"
    if run_id_of(run) in registered_run_ids:
        return "registered_model"
    if has_keep_tag(run, keep_tag):
        return "keep_tag"
    return None


def _time_value(run, time_field):
    value = (run.get("info") or {}).get(time_field)
    return int(value) if value not in (None, "") else None


def eligible_after_reap(run, cutoff, time_field, statuses, reap_time):
    """Whether a run the reaper is about to mark KILLED (end time ``reap_time``) then matches the selection."""
    if "KILLED" not in statuses:
        return False
    if cutoff is None:
        return True
    value = reap_time if time_field == "end_time" else _time_value(run, "start_time")
    return value is not None and value < cutoff


class Plan:
    """The outcome of classifying search results: ids to delete (or restore), reap, and protected."""

    def __init__(self):
        self.act = []
        self.reap = []
        self.protected = {}
        self._seen = set()

    @property
    def protected_count(self):
        return len(self.protected)

    def add_action(self, run_id):
        if run_id not in self._seen:
            self._seen.add(run_id)
            self.act.append(run_id)


def plan_deletions(candidates, registered_run_ids, keep_tag, reap_candidates=(), cutoff=None,
                   time_field="start_time", statuses=DELETABLE_STATUSES, reap_time=None):
    """Classify searched runs for ``state: deleted``.

    ``candidates``: runs matching the deletion filter; ``reap_candidates``: RUNNING runs past the
    reaping age. A reaped run joins the deletions when, once KILLED, it matches the selection, so
    that a second identical invocation has nothing left to do.
    """
    plan = Plan()
    for run in reap_candidates:
        run_id = run_id_of(run)
        if run_id in plan.reap:
            continue
        plan.reap.append(run_id)
        if eligible_after_reap(run, cutoff, time_field, statuses, reap_time):
            reason = protection_reason(dict(run, info=dict(run.get("info") or {}, status="KILLED")),
                                       registered_run_ids, keep_tag)
            if reason:
                plan.protected[run_id] = reason
            else:
                plan.add_action(run_id)
    for run in candidates:
        run_id = run_id_of(run)
        reason = protection_reason(run, registered_run_ids, keep_tag)
        if reason:
            plan.protected[run_id] = reason
        else:
            plan.add_action(run_id)
    return plan


def plan_restores(candidates):
    """``state: active``: every deleted run matching the selection is restored."""
    plan = Plan()
    for run in candidates:
        plan.add_action(run_id_of(run))
    return plan


def check_cap(count, max_delete, verb="delete"):
    """Fail before changing anything when the selection is over the cap."""
    if max_delete is not None and max_delete >= 0 and count > max_delete:
        raise MaintenanceError(
            "the selection holds %d runs to %s, more than max_delete=%d; nothing was changed. "
            "Narrow the selection or raise max_delete." % (count, verb, max_delete), selected=count)


def resolve_experiments(requested, lookup_by_id, lookup_by_name):
    """Experiment ids for the names or ids in ``requested``; all unknown ones fail together.

    ``lookup_by_id(id)`` and ``lookup_by_name(name)`` return an experiment dict or None.
    A purely numeric entry is tried as an id first, then as a name.
    """
    resolved = []
    unknown = []
    for entry in requested:
        text = str(entry).strip()
        experiment = None
        if text.isdigit():
            experiment = lookup_by_id(text)
        if experiment is None:
            experiment = lookup_by_name(text)
        if experiment is None:
            unknown.append(text)
            continue
        if experiment.get("experiment_id") not in resolved:
            resolved.append(experiment.get("experiment_id"))
    if unknown:
        raise MaintenanceError("unknown experiment(s): %s; nothing was changed" % ", ".join(unknown))
    return resolved


def check_count(value, option, minimum=0, unlimited=None):
    """Refuse a count option below ``minimum`` (``unlimited`` is the one value that means "no limit")."""
    if value is None or (unlimited is not None and value == unlimited):
        return value
    if value < minimum:
        allowed = "at least %d" % minimum
        if unlimited is not None:
            allowed += ", or %d for no limit" % unlimited
        raise MaintenanceError("%s must be %s, got %d; nothing was changed" % (option, allowed, value))
    return value


def validate_cleanup_options(params, now_ms):
    """Every runs_cleanup option checked before the first request: statuses, ages, counts.

    Returns ``statuses`` (normalised), ``cutoff`` and ``reap_cutoff`` (epoch ms or None).
    """
    check_count(params.get("max_delete"), "max_delete", 0, unlimited=-1)
    check_count(params.get("concurrency"), "concurrency", 1)
    check_count(params.get("run_ids_limit"), "run_ids_limit", 0)
    statuses = validate_statuses(params.get("statuses"))
    cutoff = None
    if params.get("older_than") not in (None, ""):
        cutoff = cutoff_ms(params["older_than"], now_ms)
    reap_cutoff = None
    if params.get("reap_running_after") not in (None, ""):
        reap_cutoff = cutoff_ms(params["reap_running_after"], now_ms, "reap_running_after")
    if params.get("time_field", "start_time") not in TIME_FIELDS:
        raise MaintenanceError("time_field must be one of %s, got %r" % (", ".join(TIME_FIELDS), params.get("time_field")))
    _user_filter(params.get("filter"))
    return dict(statuses=statuses, cutoff=cutoff, reap_cutoff=reap_cutoff)


def capped(items, limit):
    items = list(items)
    return items[:limit] if limit is not None and limit >= 0 else items
