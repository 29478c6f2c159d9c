# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restic-style retention as pure functions, for any kind of snapshot (database backups, artifact snapshots).

Input: a list of ``(id, datetime)`` and a policy dict with any of ``keep_last``, ``keep_hourly``,
``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly`` (non-negative ints; unset, None
or 0 means the rule is off). Output: one decision a snapshot, with the reasons it is kept.

Semantics (as restic's ``forget``):
- snapshots are walked newest first;
- ``keep_last N`` keeps the N newest;
- ``keep_daily N`` keeps the newest snapshot of each of the N most recent days *that hold a snapshot*
  (calendar periods without a snapshot are not counted); likewise hourly, weekly (ISO weeks),
  monthly and yearly;
- a snapshot matching any rule is kept;
- an empty policy keeps everything, and the newest snapshot is always kept.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def retention_argument_spec():
    """The ``retention`` option shared by db_backup and artifacts_backup (documented by doc fragment ``retention``)."""
    return dict(type="dict", default={}, options=dict((rule, dict(type="int")) for rule in RULES))


def retention_policy(value, name="retention"):
    """The active rules of a ``retention`` option value; ValueError (naming the option) on a bad rule."""
    try:
        return normalize_policy(value)
    except ValueError as exc:
        raise ValueError("%s: %s" % (name, exc))


def _bucket(rule, when):
    if rule == "keep_hourly":
        return (when.year, when.month, when.day, when.hour)
    if rule == "keep_daily":
        return (when.year, when.month, when.day)
    if rule == "keep_weekly":
        iso = when.isocalendar()
        return (iso[0], iso[1])
    if rule == "keep_monthly":
        return (when.year, when.month)
    if rule == "keep_yearly":
        return (when.year,)
    raise ValueError("unknown retention rule %r" % rule)


def normalize_policy(policy):
    """The active rules of ``policy`` as {rule: int}; raises ValueError on unknown keys or negative counts."""
    active = {}
    for key, value in (policy or {}).items():
        if key not in RULES:
            raise ValueError("unknown retention rule %r; use %s" % (key, ", ".join(RULES)))
        if value is None:
            continue
        if isinstance(value, bool) or int(value) != value or int(value) < 0:
            raise ValueError("retention rule %s must be a non-negative integer, got %r" % (key, value))
        if int(value) > 0:
            active[key] = int(value)
    return active


def apply_retention(snapshots, policy):
    """Decide which snapshots to keep.

    ``snapshots``: iterable of ``(id, datetime)``; ids must be unique. Datetimes should share one
    timezone convention (all UTC, or all naive).
    Returns a list, newest first, of dicts ``{"id", "time", "keep": bool, "reasons": [str]}``; a
    removed snapshot has ``reasons == ["not matched by any rule"]``.
    """
    active = normalize_policy(policy)
    ordered = sorted(snapshots, key=lambda item: (item[1], str(item[0])), reverse=True)
    decisions = [dict(id=ident, time=when, keep=False, reasons=[]) for ident, when in ordered]
    if not active:
        for decision in decisions:
            decision["keep"] = True
            decision["reasons"].append("no retention policy")
        return decisions
    for rule, count in active.items():
        if rule == "keep_last":
            for decision in decisions[:count]:
                decision["reasons"].append("keep_last %d" % count)
            continue
        seen = []
        for decision in decisions:
            if len(seen) >= count:
                break
            bucket = _bucket(rule, decision["time"])
            if bucket in seen:
                continue
            seen.append(bucket)
            decision["reasons"].append("%s %s" % (rule, "-".join(str(part) for part in bucket)))
    if decisions and not decisions[0]["reasons"]:
        decisions[0]["reasons"].append("newest")
    for decision in decisions:
        decision["keep"] = bool(decision["reasons"])
        if not decision["keep"]:
            decision["reasons"] = ["not matched by any rule"]
    return decisions


def split_decisions(decisions):
    """``(kept_ids, removed_ids)`` from :func:`apply_retention`'s output, newest first."""
    kept = [d["id"] for d in decisions if d["keep"]]
    removed = [d["id"] for d in decisions if not d["keep"]]
    return kept, removed
