# -*- coding: utf-8 -*-
"""runs_cleanup method=database: the filter translation and the chunked writes, on a small hand-made SQLite store."""
import sqlite3
import time

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_filter import parse_filter
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import registered_ids_of_version
from ansible_collections.mlflowops.maintenance.plugins.module_utils.runs_bulk import run_cleanup_database

NOW = 1800000000000
DAY = 86400000

SCHEMA = """
CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256) UNIQUE, lifecycle_stage VARCHAR(32));
CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, experiment_id INTEGER, status VARCHAR(9), start_time BIGINT,
                   end_time BIGINT, lifecycle_stage VARCHAR(20), deleted_time BIGINT, user_id VARCHAR(256),
                   artifact_uri VARCHAR(200));
CREATE TABLE tags (key VARCHAR(250), value VARCHAR(5000), run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE params (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE latest_metrics (key VARCHAR(250), value FLOAT, timestamp BIGINT, step BIGINT, is_nan BOOLEAN,
                             run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, run_id VARCHAR(32), source VARCHAR(500),
                             current_stage VARCHAR(20), PRIMARY KEY (name, version));
"""


def test_parse_filter_translates_simple_clauses():
    clauses = parse_filter("tags.team != 'vision' AND params.`lr` = \"0.1\" AND metrics.acc < 0.5 "
                           "and attributes.start_time >= 10 AND attribute.run_name LIKE 'x%' AND tags.mlflow.user = 'a'")
    assert [(c.kind, c.key, c.comparator, c.value) for c in clauses] == [
        ("tag", "team", "!=", "vision"), ("param", "lr", "=", "0.1"), ("metric", "acc", "<", 0.5),
        ("attribute", "start_time", ">=", 10), ("attribute", "run_name", "LIKE", "x%"), ("tag", "mlflow.user", "=", "a")]
    assert parse_filter("") == [] and parse_filter(None) == []


@pytest.mark.parametrize("text", [
    "tags.a = 'x' OR tags.b = 'y'", "attributes.run_id IN ('a', 'b')", "tags.a IS NULL", "datasets.name = 'd'",
    "metrics.acc < 'high'", "tags.a < 'x'", "attributes.start_time = 'x'", "attributes.lifecycle_stage = 'deleted'",
    "tags.a = 'it\\'s'", "tags.a = 'x' AND", "nonsense",
])
def test_parse_filter_refuses_what_it_cannot_translate(text):
    with pytest.raises(MaintenanceError, match="method=rest"):
        parse_filter(text)


def test_registered_ids_of_version_reads_run_id_and_runs_source():
    assert registered_ids_of_version({"run_id": "a", "source": "runs:/b/model"}) == {"a", "b"}
    assert registered_ids_of_version({"run_id": "", "source": "s3://bucket/x"}) == set()
    assert registered_ids_of_version({"source": "runs:/c"}) == {"c"}


def make_store(path, runs):
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    connection.execute("INSERT INTO experiments VALUES (1, 'one', 'active'), (2, 'two', 'active'), (3, 'gone', 'deleted')")
    for run_id, experiment, status, start, stage, tags in runs:
        connection.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, 'u', 'a')",
                           (run_id, experiment, status, start, None if status == "RUNNING" else start + 1, stage,
                            1 if stage == "deleted" else None))
        for key, value in tags.items():
            connection.execute("INSERT INTO tags VALUES (?, ?, ?)", (key, value, run_id))
    connection.execute("INSERT INTO model_versions VALUES ('m', 1, 'reg', 'runs:/reg/model', 'None')")
    connection.execute("INSERT INTO model_versions VALUES ('m', 2, NULL, 'runs:/src/model', 'None')")
    connection.execute("INSERT INTO model_versions VALUES ('m', 3, 'dead', 'runs:/dead/model', 'Deleted_Internal')")
    connection.commit()
    connection.close()


def params(**overrides):
    base = dict(state="deleted", older_than="30d", time_field="start_time", experiments=None,
                statuses=["FINISHED", "FAILED", "KILLED"], filter=None, keep_tag="mlflowops.keep",
                protect_registered=True, max_delete=10000, concurrency=8, reap_running_after=None, run_ids_limit=1000)
    base.update(overrides)
    return base


def rows(path):
    connection = sqlite3.connect(path)
    try:
        return dict((row[0], row[1:]) for row in connection.execute(
            "SELECT run_uuid, lifecycle_stage, deleted_time, status, end_time FROM runs"))
    finally:
        connection.close()


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "mlflow.db")
    old = NOW - 60 * DAY
    runs = [("old%03d" % i, 1, "FINISHED", old - i, "active", {}) for i in range(25)]
    runs += [("new", 1, "FINISHED", NOW - DAY, "active", {}), ("reg", 1, "FINISHED", old, "active", {}),
             ("src", 1, "FINISHED", old, "active", {}), ("dead", 1, "FINISHED", old, "active", {}),
             ("kept", 1, "FAILED", old, "active", {"mlflowops.keep": "yes"}),
             ("notkept", 1, "FAILED", old, "active", {"mlflowops.keep": "False"}),
             ("stale", 2, "RUNNING", old, "active", {}), ("other", 3, "FINISHED", old, "active", {}),
             ("before", 2, "KILLED", old, "deleted", {})]
    make_store(path, runs)
    return path


def test_bulk_cleanup_deletes_in_chunks_like_mlflow(store):
    url = "sqlite:///" + store
    planned = run_cleanup_database(params(reap_running_after="1d"), url, check_mode=True, now=NOW)
    assert rows(store)["old000"][0] == "active"
    before = int(time.time() * 1000)
    result = run_cleanup_database(params(reap_running_after="1d"), url, now=NOW, chunk_size=7)
    after_ms = int(time.time() * 1000)
    expected = set(["old%03d" % i for i in range(25)] + ["dead", "notkept", "stale"])
    assert set(result["run_ids"]) == set(planned["run_ids"]) == expected
    assert result["deleted"] == len(expected) and result["reaped"] == 1 and result["transactions"] == 4 + 1
    assert result["protected_reasons"] == {"registered_model": 2, "keep_tag": 1}
    after = rows(store)
    for run_id in expected:
        # deleted_time is the wall clock of the change, as MLflow's _mark_run_deleted sets it
        assert after[run_id][0] == "deleted" and before <= after[run_id][1] <= after_ms
    assert after["stale"][2:] == ("KILLED", NOW)
    for run_id in ("new", "reg", "src", "kept", "other"):
        assert after[run_id][:2] == ("active", None)
    assert after["before"][:2] == ("deleted", 1)
    again = run_cleanup_database(params(reap_running_after="1d"), url, now=NOW)
    assert again["changed"] is False and again["deleted"] == 0

    undo = run_cleanup_database(params(state="active"), url, now=NOW, chunk_size=4)
    assert set(undo["run_ids"]) == expected | {"before"} and undo["changed"] is True
    restored = rows(store)
    for run_id in expected | {"before"}:
        assert restored[run_id][:2] == ("active", None)


def test_bulk_cleanup_cap_filter_and_deadline(store):
    url = "sqlite:///" + store
    with pytest.raises(MaintenanceError, match="more than max_delete=3; nothing was changed"):
        run_cleanup_database(params(max_delete=3), url, now=NOW)
    assert all(row[0] == "active" for run_id, row in rows(store).items() if run_id != "before")
    with pytest.raises(MaintenanceError, match="method=rest"):
        run_cleanup_database(params(filter="tags.a IS NULL"), url, now=NOW)
    only = run_cleanup_database(params(experiments=["two"], filter="attributes.status = 'RUNNING'",
                                       reap_running_after="1d"), url, now=NOW, check_mode=True)
    assert only["reaped_run_ids"] == ["stale"] and only["experiment_ids"] == ["2"]
    with pytest.raises(MaintenanceError, match="unknown experiment"):
        run_cleanup_database(params(experiments=["nope"]), url, now=NOW)

    class Expiring:
        seconds = 5

        def __init__(self):
            self.calls = 0

        def expired(self):
            self.calls += 1
            return self.calls > 2

    with pytest.raises(MaintenanceError, match="10 of 27 runs deleted, 17 remain") as stopped:
        run_cleanup_database(params(), url, now=NOW, chunk_size=5, deadline=Expiring())
    assert stopped.value.details["remaining"] == 17 and stopped.value.details["changed"] is True
    assert sum(1 for row in rows(store).values() if row[0] == "deleted") == 10 + 1
