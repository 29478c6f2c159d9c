# -*- coding: utf-8 -*-
"""MySQL change fingerprint: the O(1) catalog value (when it can prove anything) and when the exact scan runs."""

from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt

ENGINES = {"runs": "InnoDB", "metrics": "InnoDB"}
DEFS = {"runs": "CREATE TABLE `runs` (...) ENGINE=InnoDB AUTO_INCREMENT=7", "metrics": "CREATE TABLE `metrics` (...)"}
RUN = ["1", "db1", 1700000000]


def quick(**changes):
    args = dict(max_trx_id="1234", open_trx_ids=[], server_run=RUN, engines=ENGINES, definitions=DEFS, revision="r1")
    args.update(changes)
    return myt.quick_fingerprint(**args)


def test_quick_value_is_stable_and_ignores_the_auto_increment_counter():
    assert quick() == quick()
    assert quick() == quick(definitions=dict(DEFS, runs=DEFS["runs"].replace("=7", "=9")))


def test_quick_value_moves_with_every_write_signal():
    base = quick()
    for changed in (dict(max_trx_id="1235"), dict(open_trx_ids=[1200]), dict(server_run=["1", "db1", 1700000001]),
                    dict(server_run=["2", "db1", 1700000000]), dict(revision="r2"),
                    dict(engines=dict(ENGINES, tags="InnoDB")),
                    dict(definitions=dict(DEFS, metrics="CREATE TABLE `metrics` (x INT)"))):
        assert quick(**changed) != base, changed


def test_no_quick_value_when_in_doubt():
    assert quick(max_trx_id=None) is None  # Oracle MySQL: no Innodb_max_trx_id
    assert quick(open_trx_ids=None) is None  # innodb_trx not readable (no PROCESS privilege)
    assert quick(server_run=None) is None
    assert quick(engines=dict(ENGINES, legacy="MyISAM")) is None  # writes without transaction ids
    assert quick(engines=dict(ENGINES, odd=None)) is None


def test_scan_plan():
    exact = dict(method=myt.EXACT_METHOD, value="v", quick="q")
    assert myt.scan_plan(exact, "q") == "snapshot"
    assert myt.scan_plan(exact, "other") == "scan-first"
    assert myt.scan_plan(exact, None) == "scan-first"
    assert myt.scan_plan(dict(method=myt.EXACT_METHOD, value="v"), "q") == "scan-first"  # older manifests
    assert myt.scan_plan(dict(quick=None), None) == "scan-during-dump"  # None never matches
    assert myt.scan_plan(None, "q") == "scan-during-dump"  # first backup, or force
    assert myt.scan_plan({}, "q") == "scan-during-dump"
    assert myt.scan_plan(dict(method="postgresql-count-xmin", value="v", snapshot="q"), "q") == "scan-during-dump"
    assert myt.scan_plan(dict(method=myt.EXACT_METHOD, value=None, quick="x"), "q") == "scan-during-dump"
