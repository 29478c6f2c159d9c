# -*- coding: utf-8 -*-
"""traces_cleanup and logged_models_cleanup when the server dies midway: partial progress, then a rerun finishes.

The server is killed by a proxy at a chosen delete request, so the point of death is exact.
"""

import uuid

import pytest

from harness import datagen, datagen_mlflow3 as gen
from harness.kill_proxy import KillProxy
from harness.lifecycle import StoreReader
from harness.runner import run_module
from harness.services import MlflowServer

DAY = datagen.DAY_MS


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def own_server():
    server = MlflowServer().start()
    yield server
    server.stop()


def test_traces_killed_server_partial_progress_then_rerun(own_server):
    server = own_server
    reader = StoreReader(server)
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("killed-traces"))
    gen.add_traces(server.backend_store_uri, exp, [now - 40 * DAY - i for i in range(500)])
    new = gen.add_traces(server.backend_store_uri, exp, [now - DAY - i for i in range(20)])
    count_sql = "SELECT count(*) FROM trace_info WHERE experiment_id = %s" % exp
    with KillProxy(server, "delete-traces", after=4) as proxy:
        result, _run = run_module("traces_cleanup", {"tracking_uri": proxy.url, "experiments": [exp],
                                                     "older_than": "30d", "batch_size": 50, "retries": 1})
    assert result["_status"] == "failed"
    msg = result["msg"]
    assert "stopped answering midway" in msg and "Rerun the task" in msg, msg
    assert result["deleted"] == 150 and "150 of 500 traces deleted, 350 remain" in msg
    assert result["remaining"] == 350

    server.start()
    assert reader.scalar(count_sql) == 520 - 150
    rerun, _run = run_module("traces_cleanup", {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d"})
    assert rerun["_status"] == "ok", rerun.get("msg")
    assert rerun["deleted"] == 350
    assert reader.ids("SELECT request_id FROM trace_info WHERE experiment_id = %s" % exp) == set(new)


def test_logged_models_killed_server_partial_progress_then_rerun(own_server):
    server = own_server
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("killed-lm"))
    ids = [gen.create_logged_model(server.url, exp, "m-%d" % i)["model_id"] for i in range(30)]
    gen.set_logged_models(server.backend_store_uri, ids, created=datagen.now_ms() - 40 * DAY)
    deleted_sql = ("SELECT count(*) FROM logged_models WHERE experiment_id = %s AND lifecycle_stage = 'deleted'"
                   % exp)
    with KillProxy(server, "DELETE /api/2.0/mlflow/logged-models/", after=11) as proxy:
        result, _run = run_module("logged_models_cleanup", {"tracking_uri": proxy.url, "experiments": [exp],
                                                            "older_than": "30d", "concurrency": 1, "retries": 1})
    assert result["_status"] == "failed"
    assert "stopped answering midway" in result["msg"] and "10 of 30 logged models deleted, 20 remain" in result["msg"]
    assert result["deleted"] == 10 and result["remaining"] == 20

    server.start()
    assert reader.scalar(deleted_sql) == 10
    rerun, _run = run_module("logged_models_cleanup", {"tracking_uri": server.url, "experiments": [exp],
                                                       "older_than": "30d"})
    assert rerun["_status"] == "ok", rerun.get("msg")
    assert rerun["deleted"] == 20 and reader.scalar(deleted_sql) == 30
