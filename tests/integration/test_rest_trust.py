# -*- coding: utf-8 -*-
"""REST-bound modules and live data (issue 9, items 6, 11, 12 and 15): deadlines against a trickling
server, fail-fast against a dead one, options refused before any side effect, and artifacts_audit
remove_orphans that deletes nothing live however the destination or the runs' locations are spelled.

Outcomes are checked on disk and in the backend store, not only in the module's report.
"""

import os
import sqlite3
import time
import uuid

from harness import datagen
from harness.faults import ErrorServer, TrickleServer, refused_url
from harness.lifecycle import StoreReader
from harness.plays import play

DAY = datagen.DAY_MS
FILES = {"model/weights.bin": b"w" * 300, "metrics.json": b"{}"}


# ---------------------------------------------------------------- deadline (item 11)


def test_trickling_server_stops_every_rest_module_at_its_deadline(tmp_path):
    """timeout 3, retries 0, deadline 10: a server answering one byte a second never trips the per-read
    timeout; each module must still end near its deadline with a message saying what was done."""
    store = tmp_path / "artifacts"
    orphan = store / "1" / uuid.uuid4().hex / "artifacts"
    orphan.mkdir(parents=True)
    (orphan / "f.txt").write_text("x")
    with TrickleServer(mode="all") as headers_trickle, TrickleServer(mode="body") as body_trickle:
        common = {"timeout": 3, "retries": 0, "deadline": 10}
        started = time.monotonic()
        results, run = play(
            ("cleanup", "runs_cleanup", dict(common, tracking_uri=headers_trickle.url, older_than="30d")),
            ("audit", "artifacts_audit", dict(common, tracking_uri=body_trickle.url, artifacts_destination=str(store),
                                              remove_orphans=True)),
            ("info", "server_info", dict(common, tracking_uri=headers_trickle.url, check_resources=False)),
            ("info at deadline", "server_info", dict(common, tracking_uri=body_trickle.url, timeout=60, deadline=5,
                                                     check_resources=False)),
        )
        elapsed = time.monotonic() - started
        assert headers_trickle.bytes_sent > 5 and body_trickle.bytes_sent > 5, "the servers did trickle"
    assert elapsed < 10 + 10 + 3 + 5 + 30, "the whole play (4 tasks and ansible's start-up) took %.0fs" % elapsed

    cleanup = results["cleanup"]
    assert cleanup["_status"] == "failed"
    assert 9 <= cleanup["duration_s"] < 10 + 3, cleanup
    assert "runs_cleanup stopped at its deadline" in cleanup["msg"] and "nothing was changed" in cleanup["msg"]
    assert "deadline of 10s" in cleanup["msg"]

    audit = results["audit"]
    assert audit["_status"] == "failed"
    assert 9 <= audit["duration_s"] < 10 + 3, audit
    assert "artifacts_audit stopped while reading the experiments" in audit["msg"], audit["msg"]
    assert "nothing was removed" in audit["msg"] and "deadline of 10s" in audit["msg"]
    assert (orphan / "f.txt").exists(), "nothing removed when the runs could not be read"

    info = results["info"]
    assert info["_status"] == "ok" and info["healthy"] is False
    assert info["duration_s"] < 3 + 3
    reachable = [check for check in info["checks"] if check["name"] == "reachable"][0]
    assert "no complete answer within the timeout of 3s" in reachable["msg"], reachable

    at_deadline = results["info at deadline"]
    assert at_deadline["healthy"] is False and at_deadline["duration_s"] < 5 + 3
    reachable = [check for check in at_deadline["checks"] if check["name"] == "reachable"][0]
    assert "deadline of 5s" in reachable["msg"], reachable
    assert "Traceback" not in run.stdout


def test_artifacts_audit_on_a_trickling_s3_endpoint_stops_at_its_deadline(mlflow_sqlite):
    """The tracking server answers; the S3 store trickles one byte a second, which never trips botocore's
    per-read timeout. The audit must still end at its deadline, with nothing removed."""
    with TrickleServer(mode="body") as s3_trickle:
        started = time.monotonic()
        results, run = play(("audit", "artifacts_audit", dict(
            tracking_uri=mlflow_sqlite.url, artifacts_destination="s3://bucket/mlflow", endpoint_url=s3_trickle.url,
            aws_access_key="AKIAEXAMPLE", aws_secret_key="not-a-real-secret", region="us-east-1",
            s3_read_timeout=60, s3_retries=0, deadline=8, remove_orphans=True)))
        elapsed = time.monotonic() - started
        assert s3_trickle.bytes_sent > 3, "the endpoint did trickle"
    audit = results["audit"]
    assert audit["_status"] == "failed", run.stdout
    assert "deadline of 8s" in audit["msg"], audit["msg"]
    assert audit["duration_s"] < 8 + 3, audit
    assert elapsed < 8 + 30, elapsed
    assert "Traceback" not in run.stdout


# ---------------------------------------------------------------- fail fast (item 12)


def test_dead_or_failing_server_fails_fast_with_what_was_done(tmp_path):
    store = tmp_path / "artifacts"
    store.mkdir()
    with ErrorServer(status=503) as failing:
        started = time.monotonic()
        results, _run = play(
            ("cleanup 503", "runs_cleanup", {"tracking_uri": failing.url, "retries": 1, "older_than": "1d"}),
            ("audit refused", "artifacts_audit", {"tracking_uri": refused_url(), "retries": 1,
                                                  "artifacts_destination": str(store)}),
        )
        elapsed = time.monotonic() - started
        connections = failing.connections
    assert elapsed < 40
    cleanup = results["cleanup 503"]
    assert cleanup["_status"] == "failed" and cleanup["duration_s"] < 10
    assert "HTTP 503" in cleanup["msg"] and "nothing was changed" in cleanup["msg"], cleanup["msg"]
    assert connections == 2, "one request, one retry, then the job stops"
    audit = results["audit refused"]
    assert audit["_status"] == "failed" and audit["duration_s"] < 10
    assert "connection refused" in audit["msg"] and "nothing was removed" in audit["msg"], audit["msg"]


# ---------------------------------------------------------------- validation first (item 15)


def test_negative_counts_are_refused_before_any_side_effect(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, "trust-negative-%s" % uuid.uuid4().hex[:8])
    datagen.add_runs(server.url, server.backend_store_uri, exp,
                     [datagen.RunSpec(start_time=datagen.now_ms() - 40 * DAY) for _index in range(5)])
    orphan = os.path.join(server.artifacts_destination, exp, uuid.uuid4().hex, "artifacts")
    os.makedirs(orphan)
    with open(os.path.join(orphan, "f.txt"), "w") as handle:
        handle.write("x")
    cleanup = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d"}
    audit = {"tracking_uri": server.url, "artifacts_destination": server.artifacts_destination,
             "experiment_ids": [exp], "remove_orphans": True}
    results, _run = play(
        ("max_delete -5", "runs_cleanup", dict(cleanup, max_delete=-5)),
        ("concurrency 0", "runs_cleanup", dict(cleanup, concurrency=0)),
        ("run_ids_limit -2", "runs_cleanup", dict(cleanup, run_ids_limit=-2)),
        ("max_remove -5", "artifacts_audit", dict(audit, max_remove=-5)),
        ("audit concurrency -1", "artifacts_audit", dict(audit, concurrency=-1)),
    )
    expected = {"max_delete -5": "max_delete must be at least 0, or -1 for no limit, got -5",
                "concurrency 0": "concurrency must be at least 1, got 0",
                "run_ids_limit -2": "run_ids_limit must be at least 0, got -2",
                "max_remove -5": "max_remove must be at least 0, or -1 for no limit, got -5",
                "audit concurrency -1": "concurrency must be at least 1, got -1"}
    for name, message in expected.items():
        assert results[name]["_status"] == "failed", name
        assert message in results[name]["msg"], (name, results[name]["msg"])
    assert reader.rows("SELECT lifecycle_stage, count(*) FROM runs WHERE experiment_id = %s GROUP BY 1" % exp) \
        == [("active", 5)]
    assert os.path.exists(os.path.join(orphan, "f.txt"))


# ---------------------------------------------------------------- remove_orphans (item 6)


def _set_artifact_uri(server, run_id, uri):
    connection = sqlite3.connect(server.sqlite_path, timeout=60)
    try:
        with connection:
            connection.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (uri, run_id))
    finally:
        connection.close()


def _write(folder, files=None):
    for path, data in (files or FILES).items():
        target = os.path.join(folder, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)


def _tree(root):
    """{relative file path: bytes} below root."""
    found = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def test_remove_orphans_deletes_nothing_live_whatever_the_spelling(mlflow_sqlite, tmp_path):
    """A symlinked destination, differently spelled ones, experiments with custom artifact locations spelled
    through a symlink and with ``//`` and ``/./``, and a folder of a run outside experiment_ids: only the true
    orphans go, and every live run folder keeps its files."""
    server = mlflow_sqlite
    dest = os.path.realpath(server.artifacts_destination)
    tag = uuid.uuid4().hex[:8]
    link = str(tmp_path / "artifacts-link")
    os.symlink(dest, link)

    # Default layout: mlflow-artifacts:/<exp>/<run>/artifacts.
    exp_default = datagen.create_experiment(server.url, "trust-default-%s" % tag)
    default_runs = datagen.add_runs(server.url, server.backend_store_uri, exp_default,
                                    [datagen.RunSpec() for _index in range(3)]
                                    + [datagen.RunSpec(lifecycle_stage="deleted", deleted_time=datagen.now_ms())])
    datagen.write_artifacts(dest, exp_default, default_runs, FILES)

    # Custom artifact_location inside the store, spelled through the symlink.
    custom_x = "custom-x-%s" % tag
    created = datagen.api(server.url, "experiments/create",
                          {"name": "trust-link-%s" % tag, "artifact_location": "%s/%s" % (link, custom_x)})
    exp_link = created["experiment_id"]
    link_runs = datagen.add_runs(server.url, server.backend_store_uri, exp_link, [datagen.RunSpec() for _index in range(2)])
    # Custom location spelled with // and /./ and a trailing slash, as a file: URI; one run with a deleted stage.
    custom_y = "custom-y-%s" % tag
    created = datagen.api(server.url, "experiments/create",
                          {"name": "trust-odd-%s" % tag, "artifact_location": "file://%s//./%s/" % (dest, custom_y)})
    exp_odd = created["experiment_id"]
    odd_runs = datagen.add_runs(server.url, server.backend_store_uri, exp_odd,
                                [datagen.RunSpec(), datagen.RunSpec(lifecycle_stage="deleted", deleted_time=datagen.now_ms())])
    # Whatever MLflow made of those locations, the runs' own URIs are spelled oddly on purpose.
    for run_id in link_runs:
        _set_artifact_uri(server, run_id, "%s/%s/%s/artifacts" % (link, custom_x, run_id))
    for run_id in odd_runs:
        _set_artifact_uri(server, run_id, "file://%s//./%s//%s/artifacts/" % (dest, custom_y, run_id))
    live = {}
    for run_id in link_runs:
        live[run_id] = os.path.join(dest, custom_x, run_id)
    for run_id in odd_runs:
        live[run_id] = os.path.join(dest, custom_y, run_id)
    for run_id in default_runs:
        live[run_id] = os.path.join(dest, exp_default, run_id)
    for run_id in link_runs + odd_runs:
        _write(os.path.join(live[run_id], "artifacts"))

    # A run of an experiment the audit does not read, whose folder sits in the audited experiment's folder:
    # the server's runs/get claims it.
    exp_outside = datagen.create_experiment(server.url, "trust-outside-%s" % tag)
    outside_run = datagen.add_runs(server.url, server.backend_store_uri, exp_outside, [datagen.RunSpec()])[0]
    claimed = os.path.join(dest, exp_default, outside_run)
    _write(os.path.join(claimed, "artifacts"))

    # True orphans: a run folder in the default layout and one in a custom location.
    orphan_default = os.path.join(dest, exp_default, uuid.uuid4().hex)
    orphan_custom = os.path.join(dest, custom_y, uuid.uuid4().hex)
    _write(os.path.join(orphan_default, "artifacts"), {"stray.txt": b"s" * 10})
    _write(os.path.join(orphan_custom, "artifacts"), {"stray.txt": b"t" * 7})
    expected_orphans = sorted([os.path.relpath(orphan_default, dest), os.path.relpath(orphan_custom, dest)])

    before = dict((run_id, _tree(folder)) for run_id, folder in live.items())
    assert all(tree for tree in before.values())
    experiment_ids = [exp_default, exp_link, exp_odd]
    base = {"tracking_uri": server.url, "experiment_ids": experiment_ids, "remove_orphans": True}
    spellings = [link, link + "/", dest + "/./", "/" + dest, dest + "//", "file://" + link]
    tasks = [("predict %s" % spelling, "artifacts_audit", dict(base, artifacts_destination=spelling), {"check_mode": True})
             for spelling in spellings]
    tasks.append(("capped", "artifacts_audit", dict(base, artifacts_destination=link, max_remove=1)))
    tasks.append(("remove", "artifacts_audit", dict(base, artifacts_destination=link)))
    tasks.append(("again", "artifacts_audit", dict(base, artifacts_destination=dest + "/./")))
    results, run = play(*tasks)

    for spelling in spellings:
        predicted = results["predict %s" % spelling]
        assert predicted["_status"] == "ok", (spelling, predicted.get("msg"), run.stdout[-3000:])
        assert sorted(predicted["removed_folders"]) == expected_orphans, (spelling, predicted)
        assert predicted["claimed_folders"] == ["%s/%s" % (exp_default, outside_run)], (spelling, predicted)
        assert predicted["unmapped_runs"] == 0 and predicted["missing_count"] == 0, (spelling, predicted["missing"])
        assert predicted["changed"] is True and predicted["removed"] == 2
    capped = results["capped"]
    assert capped["_status"] == "failed"
    assert "more than max_remove=1; nothing was removed" in capped["msg"], capped["msg"]
    assert capped["removed"] == 0 and capped["removed_folders"] == []
    # The cap deleted nothing: the next task still finds (and removes) both orphans, below.

    removed = results["remove"]
    assert removed["_status"] == "ok", removed.get("msg")
    assert removed["changed"] is True and sorted(removed["removed_folders"]) == expected_orphans
    assert removed["removed"] == 2
    # On disk: the orphans are gone; every live run folder (and the claimed one) still holds its files.
    assert not os.path.exists(orphan_default) and not os.path.exists(orphan_custom)
    for run_id, folder in live.items():
        assert _tree(folder) == before[run_id], run_id
    assert _tree(claimed) == {os.path.join("artifacts", path): data for path, data in FILES.items()}
    again = results["again"]
    assert again["_status"] == "ok" and again["changed"] is False and again["removed"] == 0
    assert again["removed_folders"] == []


def test_remove_orphans_refuses_when_a_run_cannot_be_mapped(mlflow_sqlite):
    server = mlflow_sqlite
    dest = server.artifacts_destination
    tag = uuid.uuid4().hex[:8]
    exp = datagen.create_experiment(server.url, "trust-unmapped-%s" % tag)
    run_ids = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec() for _index in range(3)])
    datagen.write_artifacts(dest, exp, run_ids[:2], FILES)
    _set_artifact_uri(server, run_ids[2], "relative/mlruns/%s/artifacts" % run_ids[2])
    orphan = os.path.join(dest, exp, uuid.uuid4().hex)
    _write(os.path.join(orphan, "artifacts"), {"stray.txt": b"s"})
    args = {"tracking_uri": server.url, "artifacts_destination": dest, "experiment_ids": [exp], "remove_orphans": True}
    results, _run = play(("predict", "artifacts_audit", args, {"check_mode": True}), ("remove", "artifacts_audit", args))
    for name in ("predict", "remove"):
        result = results[name]
        assert result["_status"] == "failed", result
        assert "refusing to remove orphans: 1 run(s)" in result["msg"] and run_ids[2] in result["msg"], result["msg"]
        assert [item["run_id"] for item in result["unmapped"]] == [run_ids[2]]
        assert result["orphan_count"] == 1 and result["removed"] == 0
    assert os.path.isdir(orphan)
    for run_id in run_ids[:2]:
        assert os.path.isfile(os.path.join(dest, exp, run_id, "artifacts", "metrics.json"))
