# -*- coding: utf-8 -*-
"""The backup and restore roles through their playbooks, with the service step's command stand-in."""

import os
import sqlite3

from harness.backup_tools import make_blob_sqlite
from harness.runner import REPO_ROOT, run_playbook


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
