# -*- coding: utf-8 -*-
"""When the PostgreSQL exact fingerprint scan runs: O(1) skip, before the dump (it decides), or alongside it."""

from ansible_collections.mlflowops.maintenance.plugins.module_utils.postgres_snapshot import (
    EXACT_METHOD,
    activity_digest,
    scan_plan,
)

QUICK = "quick-digest"


def test_same_snapshot_is_unchanged_without_a_scan():
    previous = dict(method=EXACT_METHOD, value="v", snapshot=QUICK)
    assert scan_plan(previous, QUICK) == "snapshot"


def test_an_exact_value_to_compare_with_means_the_scan_decides_before_the_dump():
    previous = dict(method=EXACT_METHOD, value="v", snapshot="another")
    assert scan_plan(previous, QUICK) == "scan-first"
    assert scan_plan(dict(method=EXACT_METHOD, value="v"), QUICK) == "scan-first"


def test_nothing_to_compare_with_runs_the_scan_alongside_the_dump():
    assert scan_plan(None, QUICK) == "scan-during-dump"  # first backup, or force
    assert scan_plan({}, QUICK) == "scan-during-dump"
    assert scan_plan(dict(method="sqlite-something", value="v"), QUICK) == "scan-during-dump"
    assert scan_plan(dict(method=EXACT_METHOD, value=None, snapshot="another"), QUICK) == "scan-during-dump"


def test_a_missing_quick_value_never_matches():
    assert scan_plan(dict(method=EXACT_METHOD, value="v", snapshot=None), None) == "scan-first"
    assert scan_plan(dict(snapshot=None), None) == "scan-during-dump"


def test_moved_write_counters_skip_the_deciding_scan_but_never_claim_unchanged():
    previous = dict(method=EXACT_METHOD, value="v", snapshot="another", activity="a1")
    assert scan_plan(previous, QUICK, "a2") == "scan-during-dump"  # back up; the scan only records its value
    assert scan_plan(previous, QUICK, "a1") == "scan-first"  # counters as they were: the scan decides
    assert scan_plan(previous, "another", "a2") == "snapshot"  # nothing was written anywhere since
    assert scan_plan(dict(method=EXACT_METHOD, value="v", snapshot="another"), QUICK, "a2") == "scan-first"
    assert scan_plan(previous, QUICK, None) == "scan-first"


def test_activity_digest_is_pure_and_sensitive():
    rows = [("public", "runs", 10, 2, 1), ("public", "metrics", 100, 0, 0)]
    base = activity_digest(rows, "2026-01-01 00:00:00+00")
    assert base == activity_digest(list(reversed(rows)), "2026-01-01 00:00:00+00")
    assert base != activity_digest([("public", "runs", 10, 2, 2), ("public", "metrics", 100, 0, 0)], "2026-01-01 00:00:00+00")
    assert base != activity_digest([("public", "runs", 10, 3, 1), ("public", "metrics", 100, 0, 0)], "2026-01-01 00:00:00+00")
    assert base != activity_digest([("public", "runs", 11, 2, 1), ("public", "metrics", 100, 0, 0)], "2026-01-01 00:00:00+00")
    assert base != activity_digest(rows, None)
    assert base != activity_digest(rows[:1], "2026-01-01 00:00:00+00")
