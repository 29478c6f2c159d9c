# -*- coding: utf-8 -*-
"""The backup and restore roles through their playbooks: with the service step's command stand-in, and
against a real MLflow server that the role stops and starts."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from harness import datagen
from harness.backup_tools import make_blob_sqlite
from harness.runner import REPO_ROOT, run_playbook
from harness.services import api, free_port, http_get


def count(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    finally:
        conn.close()


def test_backup_then_restore_playbooks_stop_and_start_the_server(tmp_path):
    store = make_blob_sqlite(str(tmp_path / "mlflow.db"), 1)
    dest = str(tmp_path / "backups")
    log = str(tmp_path / "service.log")
    common = {"mlflow_backend_store_uri": "sqlite:///" + store, "mlflow_hosts": "localhost"}
    backup = run_playbook(os.path.join(REPO_ROOT, "playbooks", "backup.yml"),
                          extra_vars=dict(common, backup_dest=dest, backup_retention={"keep_last": 2}))
    assert backup.rc == 0, backup.stdout + backup.stderr
    result = backup.task(action="db_backup")["result"]
    assert result["changed"] is True and result["verified"] == "checksum"
    assert "1 complete backups" in backup.stdout
    rows = count(store)

    conn = sqlite3.connect(store)
    conn.execute("DELETE FROM blobs WHERE id > 3")
    conn.commit()
    conn.close()
    service = dict(mlflow_service_manager="command",
                   mlflow_service_stop_command="sh -c 'echo stop >> %s'" % log,
                   mlflow_service_start_command="sh -c 'echo start >> %s'" % log)
    refused = run_playbook(os.path.join(REPO_ROOT, "playbooks", "restore.yml"),
                           extra_vars=dict(common, restore_src=dest, **service))
    assert refused.rc != 0
    assert "not empty" in refused.stdout
    assert not os.path.exists(log), "the server was stopped although validation failed"

    restored = run_playbook(os.path.join(REPO_ROOT, "playbooks", "restore.yml"),
                            extra_vars=dict(common, restore_src=dest, restore_force=True, **service))
    assert restored.rc == 0, restored.stdout + restored.stderr
    with open(log) as handle:
        assert handle.read().split() == ["stop", "start"]
    assert count(store) == rows
    previous = restored.task(action="db_restore")["result"]["previous"]
    assert os.path.exists(previous) and count(previous) == 3


# ---------------------------------------------------------------------------------------------------
# The restore role against a real MLflow server, stopped and started by the role's real service step
# (mlflow_service_manager: command, with scripts/mlflow_service.py), which must come back up serving
# the restored runs and artifacts through its REST API.

SERVICE_SCRIPT = os.path.join(REPO_ROOT, "scripts", "mlflow_service.py")


def _service(action, directory, port=None):
    argv = [sys.executable, SERVICE_SCRIPT, action, "--dir", directory]
    if port:
        argv += ["--port", str(port)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _active_run_ids(url, experiment_id):
    """Active runs of the experiment, as the server itself serves them (all pages)."""
    found, token = [], None
    while True:
        payload = {"experiment_ids": [experiment_id], "max_results": 1000, "run_view_type": "ACTIVE_ONLY"}
        if token:
            payload["page_token"] = token
        answer = api(url, "runs/search", payload)
        found.extend(run["info"]["run_id"] for run in answer.get("runs", []))
        token = answer.get("next_page_token")
        if not token:
            return sorted(found)


def _artifact_paths(url, run_id):
    answer = api(url, "artifacts/list?run_id=%s" % run_id)
    return sorted(item["path"] for item in answer.get("files", []))


def test_restore_role_stops_and_starts_a_real_mlflow_server_that_serves_the_restored_runs(tmp_path):
    directory = str(tmp_path / "server")
    port = free_port()
    state = _service("start", directory, port)
    try:
        url, store = state["url"], state["backend_store_uri"]
        artifacts = state["artifacts_destination"]
        experiment = datagen.create_experiment(url, "restore-role")
        kept = datagen.add_runs(url, store, experiment, [datagen.RunSpec(metrics=3, steps=5) for _i in range(30)])
        datagen.write_artifacts(artifacts, experiment, kept, {"model/model.bin": b"weights" * 100})
        assert _active_run_ids(url, experiment) == sorted(kept)
        common = {"mlflow_backend_store_uri": store, "mlflow_artifacts_destination": artifacts,
                  "mlflow_hosts": "localhost"}
        backups, artifact_backups = str(tmp_path / "backups"), str(tmp_path / "artifact-backups")
        backup = run_playbook(os.path.join(REPO_ROOT, "playbooks", "backup.yml"),
                              extra_vars=dict(common, backup_dest=backups, backup_artifacts_src=artifacts,
                                              backup_artifacts_dest=artifact_backups))
        assert backup.rc == 0, backup.stdout[-3000:] + backup.stderr[-3000:]

        # After the backup: runs deleted (one of them with its artifacts), new runs added, through the server.
        for run_id in kept[:5]:
            api(url, "runs/delete", {"run_id": run_id})
        shutil.rmtree(os.path.join(artifacts, experiment, kept[0]))
        added = datagen.add_runs(url, store, experiment, [datagen.RunSpec() for _i in range(4)])
        assert _active_run_ids(url, experiment) == sorted(kept[5:] + added)
        assert _artifact_paths(url, kept[0]) == []
        old_pid = state["pid"]

        service = dict(mlflow_service_manager="command",
                       mlflow_service_stop_command=" ".join([sys.executable, SERVICE_SCRIPT, "stop", "--dir", directory]),
                       mlflow_service_start_command=" ".join([sys.executable, SERVICE_SCRIPT, "start", "--dir",
                                                              directory, "--port", str(port)]))
        restored = run_playbook(os.path.join(REPO_ROOT, "playbooks", "restore.yml"),
                                extra_vars=dict(common, restore_src=backups, restore_force=True,
                                                restore_artifacts_src=artifact_backups, **service))
        assert restored.rc == 0, restored.stdout[-3000:] + restored.stderr[-3000:]

        # The server was really stopped and started again: a new process, and the old one is gone.
        with open(os.path.join(directory, "state.json")) as handle:
            new_state = json.load(handle)
        assert new_state["pid"] != old_pid and new_state["url"] == url
        assert not os.path.exists("/proc/%d" % old_pid) or _is_zombie(old_pid)
        assert http_get(url + "/health")[1].strip() == "OK"
        # It serves exactly the runs of the backup, the deleted ones active again, the later ones gone,
        # and the removed artifact is back.
        assert _active_run_ids(url, experiment) == sorted(kept)
        for run_id in added:
            with pytest.raises(RuntimeError, match="RESOURCE_DOES_NOT_EXIST"):
                api(url, "runs/get?run_id=%s" % run_id)
        info = api(url, "runs/get?run_id=%s" % kept[0])["run"]
        assert info["info"]["lifecycle_stage"] == "active"
        assert len(info["data"]["metrics"]) == 3
        assert _artifact_paths(url, kept[0]) == ["model"]
        previous = restored.task(action="db_restore")["result"]["previous"]
        assert os.path.exists(previous)
    finally:
        _service("stop", directory)


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
