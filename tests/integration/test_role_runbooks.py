# -*- coding: utf-8 -*-
"""The roles as runbooks: the order of their steps, and the shared connection variables of the
mlflowops.maintenance.mlflow role reaching every module through module_defaults."""

import os
import sys

from harness.backup_tools import make_blob_sqlite
from harness.runner import REPO_ROOT, run_playbook
from harness.services import FrontProxy

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")


def _backed_up_store_with_artifacts(tmp_path):
    """A SQLite store and one artifact file, both backed up by the backup playbook; then the artifact is lost."""
    store = make_blob_sqlite(str(tmp_path / "mlflow.db"), 1)
    artifacts = tmp_path / "artifacts"
    model = artifacts / "1" / "0123456789abcdef" / "artifacts" / "model.bin"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights" * 100)
    common = {"mlflow_backend_store_uri": "sqlite:///" + store, "mlflow_artifacts_destination": str(artifacts),
              "mlflow_hosts": "localhost"}
    backup = run_playbook(os.path.join(PLAYBOOKS, "backup.yml"),
                          extra_vars=dict(common, backup_dest=str(tmp_path / "backups"),
                                          backup_artifacts_src=str(artifacts),
                                          backup_artifacts_dest=str(tmp_path / "artifact-backups")))
    assert backup.rc == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
    model.unlink()
    return common, model


def _service_recording_artifacts(tmp_path, model):
    """The command service step; the start command records whether the artifact is in place at that moment."""
    log = tmp_path / "service.log"
    start = "sh -c 'if test -f %s; then echo start-with-artifacts; else echo start-without-artifacts; fi >> %s'" % (
        model, log)
    return log, dict(mlflow_service_manager="command", mlflow_service_stop_command="sh -c 'echo stop >> %s'" % log,
                     mlflow_service_start_command=start)


def _restore(tmp_path, common, service, artifacts_src, check=False):
    return run_playbook(os.path.join(PLAYBOOKS, "restore.yml"), check=check,
                        extra_vars=dict(common, restore_src=str(tmp_path / "backups"), restore_force=True,
                                        restore_artifacts_src=str(artifacts_src), **service))


def test_restore_role_starts_the_server_only_after_the_artifacts_are_restored(tmp_path):
    common, model = _backed_up_store_with_artifacts(tmp_path)
    log, service = _service_recording_artifacts(tmp_path, model)
    restored = _restore(tmp_path, common, service, tmp_path / "artifact-backups")
    assert restored.rc == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert log.read_text().split() == ["stop", "start-with-artifacts"]
    assert model.read_bytes() == b"weights" * 100


def test_restore_role_starts_the_server_again_when_the_artifact_restore_fails(tmp_path):
    common, model = _backed_up_store_with_artifacts(tmp_path)
    log, service = _service_recording_artifacts(tmp_path, model)
    restored = _restore(tmp_path, common, service, tmp_path / "no-such-backup")
    assert restored.rc != 0
    failure = restored.task(action="artifacts_backup")
    assert failure["status"] == "failed" and "no-such-backup" in failure["result"]["msg"], failure
    assert log.read_text().split() == ["stop", "start-without-artifacts"]


def test_restore_role_in_check_mode_plans_database_and_artifacts_and_touches_nothing(tmp_path):
    common, model = _backed_up_store_with_artifacts(tmp_path)
    log, service = _service_recording_artifacts(tmp_path, model)
    store = common["mlflow_backend_store_uri"][len("sqlite:///"):]
    with open(store, "rb") as handle:
        before = handle.read()
    planned = _restore(tmp_path, common, service, tmp_path / "artifact-backups", check=True)
    assert planned.rc == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    artifacts = planned.task(action="artifacts_backup")["result"]
    assert artifacts["changed"] is True and artifacts["copied"] == 1
    assert not log.exists(), "check mode stopped or started the server"
    assert not model.exists()
    with open(store, "rb") as handle:
        assert handle.read() == before


def _role_task(run, name):
    """The last record of the role task ``name`` (records carry the role prefix)."""
    return [record for record in run.records if record["task"].endswith(" : " + name)][-1]


def test_upgrade_preflight_reaches_a_server_behind_a_private_ca_with_mlflow_ca_path(mlflow_sqlite, tmp_path):
    """The upgrade role's health checks take mlflow_ca_path (through module_defaults) like every other role."""
    proxy = FrontProxy(mlflow_sqlite.url, tls=True).start()
    try:
        # Check mode: the pre-flight runs for real (probe, installed packages, schema), nothing changes.
        extra = dict(upgrade_mlflow_version="99.0.0", upgrade_venv=os.path.dirname(os.path.dirname(sys.executable)),
                     upgrade_backup_dir=str(tmp_path / "backups"), mlflow_tracking_uri=proxy.url,
                     mlflow_backend_store_uri=mlflow_sqlite.backend_store_uri, mlflow_service_manager="command",
                     mlflow_service_stop_command="false", mlflow_service_start_command="false")
        untrusted = run_playbook(os.path.join(PLAYBOOKS, "upgrade.yml"), extra_vars=extra, check=True)
        assert untrusted.rc != 0
        assert "unhealthy before the upgrade" in untrusted.stdout and "TLS" in untrusted.stdout

        trusted = run_playbook(os.path.join(PLAYBOOKS, "upgrade.yml"), check=True,
                               extra_vars=dict(extra, mlflow_ca_path=proxy.cert_path))
        assert trusted.rc == 0, trusted.stdout[-3000:] + trusted.stderr[-3000:]
        probe = _role_task(trusted, "Pre-flight | probe the server")["result"]
        assert probe["healthy"] is True and probe["server"]["api_ok"] is True
        plan = _role_task(trusted, "Pre-flight | plan")["result"]["msg"]
        assert "-> 99.0.0" in plan and "server healthy" in plan, plan
        assert not os.path.exists(str(tmp_path / "backups"))
    finally:
        proxy.stop()
