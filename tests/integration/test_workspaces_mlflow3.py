# -*- coding: utf-8 -*-
"""The workspace option on a server started with --enable-workspaces, with two workspaces besides the default."""

import json
import os
import urllib.request
import uuid

import pytest

from harness import datagen, datagen_mlflow3 as gen
from harness.lifecycle import StoreReader, in_list
from harness.plays import play, write_file as write
from harness.runner import run_module
from harness.services import MlflowServer, http_get, wait_until

DAY = datagen.DAY_MS


class WorkspaceServer(MlflowServer):
    def start(self, timeout=240):
        argv = [self.python, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                "--artifacts-destination", self.artifacts_destination, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1", "--enable-workspaces"]
        self._spawn(argv, env=self.env())
        wait_until(lambda: http_get(self.url + "/health")[1].strip() == "OK", timeout, "mlflow server",
                   self.process, self.log_path)
        return self


def call(url, path, payload=None, workspace=None, method=None, version="2.0"):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request("%s/api/%s/mlflow/%s" % (url, version, path), data=data,
                                     method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    if workspace:
        request.add_header("X-MLFLOW-WORKSPACE", workspace)
    with urllib.request.urlopen(request, timeout=30) as response:  # nosec - loopback test service
        body = response.read()
    return json.loads(body) if body else {}


@pytest.fixture(scope="module")
def ws_server():
    server = WorkspaceServer().start()
    for name in ("team-a", "team-b"):
        call(server.url, "workspaces", {"name": name}, version="3.0")
    yield server
    server.stop()


def test_cleanups_and_gc_act_in_the_selected_workspaces(ws_server):
    server = ws_server
    reader = StoreReader(server)
    uri = server.backend_store_uri
    now = datagen.now_ms()
    exps, old_traces, new_traces, models = {}, {}, {}, {}
    for ws in ("team-a", "team-b", "default"):
        exp = call(server.url, "experiments/create", {"name": "ws-%s" % uuid.uuid4().hex[:6]}, ws)["experiment_id"]
        exps[ws] = exp
        old_traces[ws] = gen.add_traces(uri, exp, [now - 40 * DAY - i for i in range(30)])
        new_traces[ws] = gen.add_traces(uri, exp, [now - DAY - i for i in range(5)])
        models[ws] = [call(server.url, "logged-models", {"experiment_id": exp, "name": "m%d" % i}, ws)["model"]["info"]
                      ["model_id"] for i in range(3)]
        gen.set_logged_models(uri, models[ws], created=now - 40 * DAY)

    def traces_left(ws):
        return reader.ids("SELECT request_id FROM trace_info WHERE experiment_id = %s" % exps[ws])

    unknown, _run = run_module("traces_cleanup", {"tracking_uri": server.url, "older_than": "30d",
                                                  "workspace": ["team-a", "team-zz"]})
    assert unknown["_status"] == "failed" and "unknown workspace(s): team-zz" in unknown["msg"]
    assert all(len(traces_left(ws)) == 35 for ws in exps)

    checked, _run = run_module("traces_cleanup", {"tracking_uri": server.url, "older_than": "30d", "workspace": "all"},
                               check=True)
    assert checked["_status"] == "ok", checked.get("msg")
    for ws in exps:
        assert checked["deleted_per_experiment"]["%s/%s" % (ws, exps[ws])] == 30

    result, _run = run_module("traces_cleanup", {"tracking_uri": server.url, "older_than": "30d",
                                                 "experiments": None, "workspace": "all"})
    assert result["_status"] == "ok", result.get("msg")
    for ws in exps:
        assert result["deleted_per_experiment"]["%s/%s" % (ws, exps[ws])] == 30
        assert traces_left(ws) == set(new_traces[ws])

    lm, _run = run_module("logged_models_cleanup", {"tracking_uri": server.url, "older_than": "30d",
                                                    "workspace": ["team-a", "team-b"]})
    assert lm["_status"] == "ok", lm.get("msg")
    assert lm["deleted"] == 6
    stages = dict(reader.rows("SELECT model_id, lifecycle_stage FROM logged_models WHERE model_id IN %s"
                              % in_list(sum(models.values(), []))))
    assert all(stages[m] == "deleted" for m in models["team-a"] + models["team-b"])
    assert all(stages[m] == "active" for m in models["default"])

    # A deleted experiment in each of team-a and team-b: gc in team-a purges only team-a's.
    gone = {}
    for ws in ("team-a", "team-b"):
        gone[ws] = call(server.url, "experiments/create", {"name": "gone-%s" % uuid.uuid4().hex[:6]}, ws)["experiment_id"]
        call(server.url, "experiments/delete", {"experiment_id": gone[ws]}, ws)
    gc_args = {"backend_store_uri": uri, "artifacts_destination": server.artifacts_destination, "workspace": "team-a"}
    purged, _run = run_module("gc", gc_args)
    assert purged["_status"] == "ok", purged.get("msg")
    assert set(purged["logged_model_ids"]) == set(models["team-a"])
    assert [e["experiment_id"] for e in purged["experiments"]] == [gone["team-a"]], purged["failures"]
    assert set(str(e) for e in reader.ids("SELECT experiment_id FROM experiments WHERE experiment_id IN (%s, %s)"
                                          % (gone["team-a"], gone["team-b"]))) == {gone["team-b"]}
    left = reader.ids("SELECT model_id FROM logged_models WHERE model_id IN %s" % in_list(sum(models.values(), [])))
    assert left == set(models["team-b"] + models["default"])


def test_audit_and_runs_cleanup_in_workspaces(ws_server, mlflow_sqlite):
    """artifacts_audit and runs_cleanup take a list of workspaces or all; orphan removal on a workspace server needs
    every workspace audited; a server without workspaces fails clearly."""
    server = ws_server
    root = server.artifacts_destination
    now = datagen.now_ms()
    run_dirs, run_ids = [], {}
    for ws in ("team-a", "team-b"):
        exp = call(server.url, "experiments/create", {"name": "wsa-%s" % uuid.uuid4().hex[:6]}, ws)["experiment_id"]
        info = call(server.url, "runs/create", {"experiment_id": exp, "start_time": now - 40 * DAY}, ws)["run"]["info"]
        call(server.url, "runs/update", {"run_id": info["run_id"], "status": "FINISHED", "end_time": now - 40 * DAY}, ws)
        run_ids[ws] = info["run_id"]
        path = os.path.join(root, info["artifact_uri"][len("mlflow-artifacts:/"):], "f.txt")
        write(path, b"a" * 3)
        run_dirs.append(os.path.dirname(path))
        if ws == "team-a":
            orphan = "workspaces/team-a/%s/%s" % (exp, uuid.uuid4().hex)
            write(os.path.join(root, orphan, "artifacts", "stray.txt"), b"s")
    audit = {"tracking_uri": server.url, "artifacts_destination": root, "remove_orphans": True}
    cleanup = {"tracking_uri": server.url, "older_than": "30d", "workspace": "all"}
    results, run = play(
        ("unset", "artifacts_audit", audit),
        ("one workspace, whole store", "artifacts_audit", dict(audit, workspace=["team-a"])),
        ("predict", "artifacts_audit", dict(audit, workspace="all"), {"check_mode": True}),
        ("remove", "artifacts_audit", dict(audit, workspace="all")),
        ("plain server", "artifacts_audit", {"tracking_uri": mlflow_sqlite.url, "workspace": "team-a",
                                             "artifacts_destination": mlflow_sqlite.artifacts_destination}),
        ("runs over cap", "runs_cleanup", dict(cleanup, max_delete=1)),
        ("runs predict", "runs_cleanup", cleanup, {"check_mode": True}),
        ("runs", "runs_cleanup", cleanup),
        ("runs again", "runs_cleanup", cleanup),
        ("runs plain server", "runs_cleanup", {"tracking_uri": mlflow_sqlite.url, "workspace": "all", "older_than": "30d"}))
    assert "workspace is not set" in results["unset"]["msg"], run.stdout
    assert "set workspace: all" in results["one workspace, whole store"]["msg"]
    predict = results["predict"]
    assert predict["_status"] == "ok", predict.get("msg")
    assert orphan in predict["removed_folders"] and predict["workspaces"] == ["default", "team-a", "team-b"]
    assert not any(folder in run_dir for folder in predict["removed_folders"] for run_dir in run_dirs)
    assert orphan in results["remove"]["removed_folders"]
    assert not os.path.exists(os.path.join(root, orphan)) and all(os.path.isdir(path) for path in run_dirs)
    for name in ("plain server", "runs plain server"):
        assert results[name]["_status"] == "failed" and "does not have workspaces enabled" in results[name]["msg"], name

    assert "more than max_delete=1" in results["runs over cap"]["msg"]
    assert results["runs predict"]["deleted"] == 2 and results["runs predict"]["changed"] is True
    done = results["runs"]
    assert done["_status"] == "ok", done.get("msg")
    assert done["deleted"] == 2 and done["per_workspace"]["team-a"]["deleted"] == 1
    for ws, run_id in run_ids.items():
        stage = call(server.url, "runs/get?run_id=%s" % run_id, workspace=ws)["run"]["info"]["lifecycle_stage"]
        assert stage == "deleted", ws
    assert results["runs again"]["changed"] is False and results["runs again"]["deleted"] == 0
