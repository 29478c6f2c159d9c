# -*- coding: utf-8 -*-
"""runs_cleanup through Ansible against real MLflow servers (SQLite + disk, PostgreSQL + S3).

Every test works in experiments of its own on the shared session servers (never the default scope:
other tests share those servers), and checks outcomes in the backend store itself.
"""

import threading
import time
import uuid

import pytest

from harness import datagen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_module
from harness.services import MlflowServer

DAY = datagen.DAY_MS
HOUR = 3600 * 1000


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def backend(request, name):
    server = request.getfixturevalue(name)
    postgres = request.getfixturevalue("postgres") if name == "mlflow_pg_s3" else None
    return server, StoreReader(server, postgres)


def stages(reader, experiment_id):
    """{run_uuid: (lifecycle_stage, status)} of an experiment, from the store."""
    return dict((row[0], (row[1], row[2])) for row in reader.rows(
        "SELECT run_uuid, lifecycle_stage, status FROM runs WHERE experiment_id = %s" % experiment_id))


@pytest.mark.parametrize("server_name", ["mlflow_sqlite", "mlflow_pg_s3"])
def test_exact_selection_with_protection_check_mode_and_idempotence(request, server_name, tmp_path):
    server, reader = backend(request, server_name)
    exp = datagen.create_experiment(server.url, unique("retention"))
    now = datagen.now_ms()
    # 3,000 runs with start times spread over 0-89 days, statuses rotating; shifted by half the spacing
    # (43 minutes) so that no run sits on the 30-day boundary while the test runs.
    times = [t - 20 * 60 * 1000 for t in datagen.spread_start_times(3000, 90, now)]
    statuses = ["FINISHED", "FAILED", "KILLED"]
    ids = datagen.add_runs(server.url, server.backend_store_uri, exp,
                           [datagen.RunSpec(start_time=t, status=statuses[i % 3]) for i, t in enumerate(times)])
    old = [now - 60 * DAY - i * HOUR for i in range(5)]
    registered = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec(start_time=t) for t in old])
    kept = datagen.add_runs(server.url, server.backend_store_uri, exp,
                            [datagen.RunSpec(start_time=t, tags={"mlflowops.keep": "true"}) for t in old])
    running = datagen.add_runs(server.url, server.backend_store_uri, exp,
                               [datagen.RunSpec(start_time=t, status="RUNNING") for t in old])
    model = unique("protected-model")
    for run_id in registered:
        datagen.register_model(server.url, model, run_id)
    args = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d", "concurrency": 16,
            "run_ids_limit": 5000}

    started = time.monotonic()
    planned, _run = run_module("runs_cleanup", args, check=True)
    cutoff = int(planned["search_filter"].split("attributes.start_time < ", 1)[1].split()[0])
    assert abs(cutoff - (now - 30 * DAY)) < 600 * 1000
    assert planned["_status"] == "ok", planned.get("msg")
    assert reader.scalar("SELECT count(*) FROM runs WHERE experiment_id = %s AND lifecycle_stage = 'deleted'" % exp) == 0
    # The eligible set, from the store itself (the module's cutoff is taken a few seconds after ours).
    eligible = reader.ids("SELECT run_uuid FROM runs WHERE experiment_id = %s AND start_time < %d AND status <> 'RUNNING'"
                          " AND run_uuid NOT IN %s" % (exp, cutoff, in_list(registered + kept)))
    assert len(eligible) >= 1980
    assert planned["changed"] is True and planned["deleted"] == len(eligible)
    assert set(planned["run_ids"]) == eligible
    assert planned["protected"] == 10
    assert planned["protected_reasons"] == {"registered_model": 5, "keep_tag": 5}

    check_took = time.monotonic() - started
    result, _run = run_module("runs_cleanup", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["changed"] is True and result["deleted"] == len(eligible)
    print("%s: check mode %.1fs, %d deletes in %.1fs (module)"
          % (server_name, check_took, len(eligible), result["duration_s"]))
    after = stages(reader, exp)
    deleted = set(run_id for run_id, (stage, _status) in after.items() if stage == "deleted")
    assert deleted == eligible
    for run_id in registered + kept + running:
        assert after[run_id][0] == "active"
    assert result["duration_s"] > 0

    # Second identical run: nothing left, and the module never imports mlflow.
    poison = tmp_path / "poison" / "mlflow"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('runs_cleanup imported mlflow')\n")
    again, _run = run_module("runs_cleanup", args, module_env={"PYTHONPATH": str(poison.parent)})
    assert again["_status"] == "ok", again.get("msg")
    assert again["changed"] is False and again["deleted"] == 0
    assert len(ids) == 3000


def test_reaping_then_undo_with_state_active(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    exp_name = unique("reap")
    exp = datagen.create_experiment(server.url, exp_name)
    now = datagen.now_ms()
    finished = datagen.add_runs(server.url, server.backend_store_uri, exp,
                                [datagen.RunSpec(start_time=now - (3 + i % 5) * DAY) for i in range(40)])
    stale = datagen.add_runs(server.url, server.backend_store_uri, exp,
                             [datagen.RunSpec(start_time=now - 3 * DAY, status="RUNNING") for _unused in range(3)])
    fresh = datagen.add_runs(server.url, server.backend_store_uri, exp,
                             [datagen.RunSpec(start_time=now - HOUR, status="RUNNING") for _unused in range(2)])
    recent = datagen.add_runs(server.url, server.backend_store_uri, exp, [datagen.RunSpec(start_time=now - HOUR)])
    args = {"tracking_uri": server.url, "experiments": [exp_name], "older_than": "2d", "reap_running_after": "1d"}

    planned, _run = run_module("runs_cleanup", args, check=True)
    assert planned["reaped"] == 3 and planned["deleted"] == 43
    assert set(planned["reaped_run_ids"]) == set(stale)
    assert all(status == "RUNNING" for _stage, status in (stages(reader, exp)[r] for r in stale))

    result, _run = run_module("runs_cleanup", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["reaped"] == 3 and result["deleted"] == 43 and result["changed"] is True
    after = stages(reader, exp)
    for run_id in stale:
        assert after[run_id] == ("deleted", "KILLED")
    end_times = reader.rows("SELECT end_time FROM runs WHERE run_uuid IN %s" % in_list(stale))
    assert all(row[0] and int(row[0]) >= now for row in end_times)
    for run_id in fresh:
        assert after[run_id] == ("active", "RUNNING")
    assert after[recent[0]][0] == "active"
    assert set(r for r in finished if after[r][0] == "deleted") == set(finished)

    again, _run = run_module("runs_cleanup", args)
    assert again["changed"] is False and again["reaped"] == 0 and again["deleted"] == 0

    undo = dict(args, state="active")
    undo.pop("reap_running_after")
    restored, _run = run_module("runs_cleanup", undo)
    assert restored["_status"] == "ok", restored.get("msg")
    assert restored["restored"] == 43 and restored["changed"] is True
    assert all(stage == "active" for stage, _status in stages(reader, exp).values())
    undo_again, _run = run_module("runs_cleanup", undo)
    assert undo_again["changed"] is False and undo_again["restored"] == 0


@pytest.fixture(scope="module")
def bad_input_experiment(mlflow_sqlite):
    """20 old runs (3 of them RUNNING) that every bad-input case must leave untouched."""
    server = mlflow_sqlite
    exp = datagen.create_experiment(server.url, unique("bad-input"))
    now = datagen.now_ms()
    datagen.add_runs(server.url, server.backend_store_uri, exp,
                     [datagen.RunSpec(start_time=now - 40 * DAY, status="RUNNING" if i < 3 else "FINISHED")
                      for i in range(20)])
    return server, exp


@pytest.mark.parametrize("overrides,message", [
    ({"older_than": "abc"}, "older_than: 'abc' is not a duration"),
    ({"older_than": "-5d"}, "cannot be negative"),
    ({"reap_running_after": "soon"}, "reap_running_after:"),
    ({"experiments": ["no-such-experiment-%s" % uuid.uuid4().hex[:6]]}, "unknown experiment(s): no-such-experiment"),
    ({"max_delete": 10}, "more than max_delete=10; nothing was changed"),
])
def test_bad_inputs_fail_before_anything_changes(bad_input_experiment, overrides, message):
    server, exp = bad_input_experiment
    reader = StoreReader(server)
    args = dict({"tracking_uri": server.url, "experiments": [exp], "older_than": "30d", "reap_running_after": "1d"},
                **overrides)
    result, _run = run_module("runs_cleanup", args)
    assert result["_status"] == "failed"
    assert message in result["msg"], result["msg"]
    assert "Traceback" not in result.get("module_stderr", "")
    rows = reader.rows("SELECT lifecycle_stage, status, count(*) FROM runs WHERE experiment_id = %s "
                       "GROUP BY lifecycle_stage, status ORDER BY status" % exp)
    assert rows == [("active", "FINISHED", 17), ("active", "RUNNING", 3)]


@pytest.fixture
def killable_server():
    server = MlflowServer().start()
    yield server
    server.stop()


def test_killed_server_gives_partial_progress_and_rerun_finishes(killable_server):
    server = killable_server
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("killed"))
    now = datagen.now_ms()
    ids = datagen.add_runs(server.url, server.backend_store_uri, exp,
                           [datagen.RunSpec(start_time=now - 40 * DAY - i) for i in range(400)])
    count_sql = "SELECT count(*) FROM runs WHERE experiment_id = %s AND lifecycle_stage = 'deleted'" % exp
    killed_at = {}

    def kill_after_some_deletes():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = reader.scalar(count_sql)
            if done >= 60:
                server.kill()
                killed_at["count"] = done
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_some_deletes, daemon=True)
    killer.start()
    args = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d", "concurrency": 2,
            "retries": 1, "timeout": 10}
    result, _run = run_module("runs_cleanup", args)
    killer.join(30)
    assert "count" in killed_at, "the server was never killed"
    assert result["_status"] == "failed"
    msg = result["msg"]
    assert "stopped answering midway" in msg and "Rerun the task" in msg, msg
    done_now = reader.scalar(count_sql)
    assert "%d of 400 runs deleted, %d remain" % (result["deleted"], 400 - result["deleted"]) in msg
    # Requests in flight when the server died may have committed without an answer.
    assert result["deleted"] <= done_now <= result["deleted"] + 2
    assert result["remaining"] == 400 - result["deleted"]

    server.start()
    rerun, _run = run_module("runs_cleanup", dict(args, concurrency=16, retries=3))
    assert rerun["_status"] == "ok", rerun.get("msg")
    assert rerun["deleted"] == 400 - done_now
    assert reader.scalar(count_sql) == len(ids)
