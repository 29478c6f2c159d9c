# -*- coding: utf-8 -*-
"""Golden cases for restic-style retention over synthetic timestamps."""

import datetime

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import (
    apply_retention,
    normalize_policy,
    split_decisions,
)

UTC = datetime.timezone.utc


def at(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def snaps(*texts):
    return [(text, at(text)) for text in texts]


def kept(decisions):
    return split_decisions(decisions)[0]


def test_empty_policy_keeps_everything():
    items = snaps("2026-01-01 00:00", "2026-01-02 00:00", "2026-01-03 00:00")
    decisions = apply_retention(items, {})
    assert all(d["keep"] for d in decisions)
    assert decisions[0]["reasons"] == ["no retention policy"]
    assert all(d["keep"] for d in apply_retention(items, {"keep_last": None, "keep_daily": 0}))


def test_empty_input():
    assert apply_retention([], {"keep_last": 3}) == []


def test_keep_last():
    items = snaps("2026-01-01 00:00", "2026-01-02 00:00", "2026-01-03 00:00", "2026-01-04 00:00")
    decisions = apply_retention(items, {"keep_last": 2})
    assert kept(decisions) == ["2026-01-04 00:00", "2026-01-03 00:00"]
    assert [d["reasons"] for d in decisions if not d["keep"]] == [["not matched by any rule"]] * 2


def test_keep_daily_takes_newest_of_each_day_and_skips_empty_days():
    # Jan 5 has three backups, Jan 3 and Jan 4 none: daily 3 keeps Jan 5's newest, Jan 2's, Jan 1's.
    items = snaps("2026-01-05 23:00", "2026-01-05 12:00", "2026-01-05 01:00", "2026-01-02 10:00",
                  "2026-01-02 09:00", "2026-01-01 08:00", "2025-12-31 08:00")
    decisions = apply_retention(items, {"keep_daily": 3})
    assert kept(decisions) == ["2026-01-05 23:00", "2026-01-02 10:00", "2026-01-01 08:00"]
    assert decisions[0]["reasons"] == ["keep_daily 2026-1-5"]


def test_keep_weekly_uses_iso_weeks():
    # 2026-01-04 is a Sunday (ISO week 1 of 2026); 2026-01-05 is Monday (week 2).
    items = snaps("2026-01-05 00:00", "2026-01-04 23:00", "2026-01-01 00:00", "2025-12-28 00:00")
    assert kept(apply_retention(items, {"keep_weekly": 2})) == ["2026-01-05 00:00", "2026-01-04 23:00"]
    assert kept(apply_retention(items, {"keep_weekly": 3})) == ["2026-01-05 00:00", "2026-01-04 23:00",
                                                                "2025-12-28 00:00"]


def test_keep_monthly_counts_only_months_with_backups():
    items = snaps("2026-06-10 00:00", "2026-06-01 00:00", "2026-03-15 00:00", "2025-11-30 00:00", "2025-11-01 00:00")
    assert kept(apply_retention(items, {"keep_monthly": 3})) == ["2026-06-10 00:00", "2026-03-15 00:00",
                                                                 "2025-11-30 00:00"]


def test_rules_combine_with_union_and_reasons():
    items = snaps(*["2026-01-%02d 02:00" % day for day in range(1, 31)])
    decisions = apply_retention(items, {"keep_last": 2, "keep_daily": 3, "keep_weekly": 2, "keep_monthly": 2})
    by_id = dict((d["id"], d) for d in decisions)
    assert kept(decisions) == ["2026-01-30 02:00", "2026-01-29 02:00", "2026-01-28 02:00", "2026-01-25 02:00"]
    assert by_id["2026-01-30 02:00"]["reasons"] == ["keep_last 2", "keep_daily 2026-1-30", "keep_weekly 2026-5",
                                                    "keep_monthly 2026-1"]
    # 2026-01-25 is the Sunday ending ISO week 4
    assert by_id["2026-01-25 02:00"]["reasons"] == ["keep_weekly 2026-4"]


def test_newest_is_always_kept():
    items = snaps("2026-01-02 00:00", "2026-01-01 00:00")
    # keep_hourly 1 matches the newest anyway; a policy that matches nothing still keeps the newest
    decisions = apply_retention(items, {"keep_yearly": 1})
    assert kept(decisions) == ["2026-01-02 00:00"]


def test_input_order_does_not_matter():
    items = snaps("2026-01-01 00:00", "2026-01-03 00:00", "2026-01-02 00:00")
    assert kept(apply_retention(items, {"keep_last": 1})) == ["2026-01-03 00:00"]
    assert kept(apply_retention(list(reversed(items)), {"keep_last": 1})) == ["2026-01-03 00:00"]


@pytest.mark.parametrize("policy", [{"keep_last": -1}, {"keep_forever": 1}, {"keep_daily": 1.5}, {"keep_last": True}])
def test_bad_policies_raise(policy):
    with pytest.raises(ValueError):
        normalize_policy(policy)


def test_generic_ids_work_for_other_snapshot_kinds():
    items = [({"snapshot": n}["snapshot"], at("2026-02-%02d 00:00" % n)) for n in range(1, 6)]
    assert kept(apply_retention(items, {"keep_last": 2})) == [5, 4]


def test_retention_option_spec_and_policy_are_shared():
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import (
        RULES, retention_argument_spec, retention_policy)
    spec = retention_argument_spec()
    assert spec["type"] == "dict" and sorted(spec["options"]) == sorted(RULES)
    assert retention_argument_spec() is not spec  # each module gets its own copy
    assert retention_policy({"keep_last": 2, "keep_daily": 0, "keep_weekly": None}) == {"keep_last": 2}
    with pytest.raises(ValueError, match=r"^retention: .*keep_yearly"):
        retention_policy({"keep_yearly": -1})
