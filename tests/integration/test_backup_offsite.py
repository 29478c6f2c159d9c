# -*- coding: utf-8 -*-
"""backup_offsite against moto's S3 server through ansible-playbook: push, verify, retention offsite, fetch and
restore; and the backup and restore roles with offsite copies on."""

import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import stat

import pytest

from harness.backup_tools import make_blob_sqlite, run_tasks
from harness.runner import REPO_ROOT, run_module, run_playbook

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups

PREFIX = "offsite/test"


def count_runs(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def keys(client, bucket, prefix):
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def fabricate(directory, source, days_back, location=None):
    """A copy of backup ``source`` as if written ``days_back`` days earlier (optionally of another store)."""
    with open(backups.manifest_path_for(os.path.join(directory, source))) as handle:
        manifest = json.load(handle)
    created = backups.parse_iso(manifest["created_at"]) - datetime.timedelta(days=days_back)
    name = backups.backup_name("mlflow", manifest["engine"], created, source.split(".", 1)[1])
    shutil.copyfile(os.path.join(directory, source), os.path.join(directory, name))
    manifest.update(file=name, created_at=backups.iso(created))
    if location:
        manifest["store"] = dict(manifest["store"], location=location)
    with open(backups.manifest_path_for(os.path.join(directory, name)), "w") as handle:
        json.dump(manifest, handle)
    return name


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small SQLite store with 5 runs and one real db_backup of it (plus two older copies of that backup)."""
    root = tmp_path_factory.mktemp("offsite")
    path = make_blob_sqlite(str(root / "mlflow.db"), 1)
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO runs VALUES (?)", [("run-%d" % i,) for i in range(5)])
    conn.commit()
    conn.close()
    dest = str(root / "backups")
    result, run = run_module("db_backup", dict(dest=dest, backend_store_uri="sqlite:///" + path))
    assert result["_status"] == "ok", run.stdout
    newest = os.path.basename(result["backup"]["path"])
    older = [fabricate(dest, newest, 2), fabricate(dest, newest, 1)]
    return dict(path=path, uri="sqlite:///" + path, backups=dest, names=older + [newest])


@pytest.fixture(scope="module")
def s3(moto_s3):
    bucket = moto_s3.create_bucket()
    conn = dict(bucket=bucket, prefix=PREFIX, endpoint_url=moto_s3.endpoint_url, aws_access_key=moto_s3.access_key,
                aws_secret_key=moto_s3.secret_key, region=moto_s3.region)
    return dict(conn=conn, bucket=bucket, client=moto_s3.client(), moto=moto_s3)


def host_copy(store, tmp_path, host):
    path = str(tmp_path / host)
    shutil.copytree(store["backups"], path)
    return path


def test_push_check_mode_second_run_and_retention_only_of_this_hosts_sets(store, s3, tmp_path):
    client, bucket = s3["client"], s3["bucket"]
    local = host_copy(store, tmp_path, "web1")
    old, mid, new = store["names"]
    # Another host whose name starts like this one's, holding sets of the very same store: never listed nor pruned.
    with open(os.path.join(local, old), "rb") as handle:
        client.put_object(Bucket=bucket, Key="%s/web10/%s" % (PREFIX, old), Body=handle.read())
    with open(backups.manifest_path_for(os.path.join(local, old)), "rb") as handle:
        client.put_object(Bucket=bucket, Key="%s/web10/%s.manifest.json" % (PREFIX, old), Body=handle.read())
    # In this host's namespace, an older set of another store: not ours, never pruned.
    foreign = fabricate(local, old, 3, location="sqlite:////elsewhere/mlflow.db")
    for name in (foreign, foreign + ".manifest.json"):
        with open(os.path.join(local, name), "rb") as handle:
            client.put_object(Bucket=bucket, Key="%s/web1/%s" % (PREFIX, name), Body=handle.read())
    # A set manifest and artifact snapshot manifest go with the newest set.
    artifacts_manifest = tmp_path / "snap-manifest.json"
    artifacts_manifest.write_text(json.dumps({"files": {"a.txt": "x"}}))
    with open(os.path.join(local, new + ".set.json"), "w") as handle:
        json.dump({"format": 1, "artifacts": {"manifest": str(artifacts_manifest)}}, handle)
    before = keys(client, bucket, PREFIX + "/")

    args = dict(s3["conn"], path=local, namespace="web1", backend_store_uri=store["uri"], retention={"keep_last": 2})
    results, run = run_tasks([("check", "backup_offsite", args, {"check_mode": True}),
                              ("push", "backup_offsite", args), ("again", "backup_offsite", args)])
    check, push, again = results["check"], results["push"], results["again"]
    assert push["_status"] == "ok", run.stdout
    assert check["changed"] is True and check["uploaded"] == [new, mid]
    assert push["changed"] is True and push["uploaded"] == [new, mid] and push["verified"] == "checksum"
    assert again["changed"] is False and again["uploaded"] == [] and again["unchanged_count"] == 2, again
    after = keys(client, bucket, PREFIX + "/")
    base = "%s/web1/" % PREFIX
    for name in (new, mid):
        with open(os.path.join(local, name), "rb") as handle:
            assert after[base + name] == handle.read()
        with open(backups.manifest_path_for(os.path.join(local, name)), "rb") as handle:
            assert after[base + name + ".manifest.json"] == handle.read()
    assert after[base + new + ".artifacts.json"] == artifacts_manifest.read_bytes()
    assert json.loads(after[base + new + ".set.json"])["artifacts"]["manifest"] == str(artifacts_manifest)
    assert base + old not in after and base + old + ".manifest.json" not in after  # retention: not uploaded at all
    assert set(before) <= set(after) and all(after[k] == v for k, v in before.items())

    # A newer backup: check mode predicts the upload and the prune and changes nothing; then the real run does it.
    newer = fabricate(local, new, -1)
    snapshot = keys(client, bucket, PREFIX + "/")
    results, run = run_tasks([("check", "backup_offsite", args, {"check_mode": True})])
    assert results["check"]["uploaded"] == [newer] and results["check"]["pruned"] == [mid], run.stdout
    assert keys(client, bucket, PREFIX + "/") == snapshot
    result, run = run_module("backup_offsite", args)
    assert result["changed"] is True and result["pruned"] == [mid] and result["deleted_objects_count"] == 2, run.stdout
    final = keys(client, bucket, PREFIX + "/")
    assert base + newer + ".manifest.json" in final and base + new + ".manifest.json" in final
    assert base + mid not in final and base + mid + ".manifest.json" not in final
    # The other host's objects and the other store's set are untouched.
    assert all(final[k] == v for k, v in before.items())


def test_a_corrupted_upload_fails_verification_and_leaves_no_manifest_offsite(store, s3, tmp_path):
    local = host_copy(store, tmp_path, "web3")
    new = store["names"][-1]
    path = os.path.join(local, new)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:  # same size, other bytes: the local listing still says complete
        handle.seek(size // 2)
        handle.write(b"\0" * 64)
    args = dict(s3["conn"], path=local, namespace="web3", backend_store_uri=store["uri"])
    result, run = run_module("backup_offsite", args)
    assert result["_status"] == "failed", run.stdout
    assert "does not match its manifest" in result["msg"] and new in result["msg"], result["msg"]
    assert "Traceback" not in run.stdout
    found = keys(s3["client"], s3["bucket"], "%s/web3/" % PREFIX)
    assert "%s/web3/%s.manifest.json" % (PREFIX, new) not in found
    assert "%s/web3/%s" % (PREFIX, new) not in found  # the bad copy was removed again


def test_fetch_checks_every_byte_then_db_restore_restores_the_runs(store, s3, tmp_path):
    client, bucket = s3["client"], s3["bucket"]
    local = host_copy(store, tmp_path, "web4")
    args = dict(s3["conn"], path=local, namespace="web4", backend_store_uri=store["uri"])
    result, run = run_module("backup_offsite", args)
    assert result["_status"] == "ok" and len(result["uploaded"]) == 3, run.stdout
    old, mid, new = store["names"]
    # Bit rot offsite in the newest set (same size): fetching it must fail and leave nothing behind.
    key = "%s/web4/%s" % (PREFIX, new)
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    conn = sqlite3.connect(store["path"])
    conn.execute("DELETE FROM runs")
    conn.commit()
    conn.close()

    dest = str(tmp_path / "restore-from-offsite")
    fetch = dict(s3["conn"], state="fetched", path=dest, namespace="web4", backend_store_uri=store["uri"])
    results, run = run_tasks([
        ("corrupt", "backup_offsite", fetch),
        ("check", "backup_offsite", dict(fetch, name=mid), {"check_mode": True}),
        ("fetch", "backup_offsite", dict(fetch, name=mid)),
        ("again", "backup_offsite", dict(fetch, name=mid)),
        ("restore", "db_restore", dict(src=os.path.join(dest, mid), backend_store_uri=store["uri"], force=True)),
    ])
    corrupt = results["corrupt"]
    assert corrupt["_status"] == "failed" and "is corrupt" in corrupt["msg"] and new in corrupt["msg"], corrupt
    assert results["check"]["changed"] is True and results["check"]["fetched"]["name"] == mid
    assert results["fetch"]["changed"] is True and results["again"]["changed"] is False, run.stdout
    assert results["restore"]["_status"] == "ok", results["restore"]
    assert sorted(os.listdir(dest)) == [mid, mid + ".manifest.json"]  # nothing of the corrupt set, no partial
    for name in os.listdir(dest):
        assert stat.S_IMODE(os.stat(os.path.join(dest, name)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    assert count_runs(store["path"]) == 5


def test_backup_role_pushes_offsite_and_restore_role_restores_from_there(s3, tmp_path):
    moto = s3["moto"]
    db = make_blob_sqlite(str(tmp_path / "mlflow.db"), 1)
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO runs VALUES (?)", [("run-%d" % i,) for i in range(3)])
    conn.commit()
    conn.close()
    common = {"mlflow_backend_store_uri": "sqlite:///" + db, "mlflow_hosts": "localhost",
              "mlflow_s3_endpoint_url": moto.endpoint_url, "mlflow_s3_access_key": moto.access_key,
              "mlflow_s3_secret_key": moto.secret_key, "mlflow_s3_region": moto.region}
    backup_vars = dict(common, backup_dest=str(tmp_path / "backups"), backup_offsite_bucket=s3["bucket"],
                       backup_offsite_prefix="roles", backup_offsite_retention={"keep_last": 1})
    playbook = os.path.join(REPO_ROOT, "playbooks", "backup.yml")
    first = run_playbook(playbook, extra_vars=backup_vars)
    assert first.rc == 0, first.stdout + first.stderr
    pushed = first.task(action="backup_offsite")["result"]
    assert pushed["changed"] is True and len(pushed["uploaded"]) == 1, pushed
    second = run_playbook(playbook, extra_vars=backup_vars)
    assert second.rc == 0, second.stdout + second.stderr
    assert second.task(action="backup_offsite")["result"]["changed"] is False
    objects = keys(s3["client"], s3["bucket"], "roles/localhost/")
    assert "roles/localhost/%s.manifest.json" % pushed["uploaded"][0] in objects
    # The fleet report compares the host's backups with what is offsite (check mode) and shows it.
    report_dir = str(tmp_path / "reports")
    reported = run_playbook(os.path.join(REPO_ROOT, "playbooks", "report.yml"),
                            extra_vars=dict(backup_vars, report_dest=report_dir, report_count_runs=False))
    assert reported.rc == 0, reported.stdout + reported.stderr
    assert reported.task(action="backup_offsite")["result"]["changed"] is False
    with open(os.path.join(report_dir, "report.json")) as handle:
        row = json.load(handle)["hosts"][0]
    assert row["offsite"] == dict(url="s3://%s/roles/localhost/" % s3["bucket"], newest=pushed["uploaded"][0], sets=1,
                                  pending=0, incomplete=0, ok=True), row
    assert keys(s3["client"], s3["bucket"], "roles/localhost/") == objects

    os.unlink(db)  # the disk is gone: the store and the local backups
    shutil.rmtree(str(tmp_path / "backups"))
    make_blob_sqlite(db, 0)
    log = str(tmp_path / "service.log")
    restore_vars = dict(
        common, restore_src=str(tmp_path / "restore"), restore_offsite_bucket=s3["bucket"],
        restore_offsite_prefix="roles", restore_force=True, mlflow_service_manager="command",
        mlflow_service_stop_command="sh -c 'echo stop >> %s'" % log,
        mlflow_service_start_command="sh -c 'echo start >> %s'" % log)
    planned = run_playbook(os.path.join(REPO_ROOT, "playbooks", "restore.yml"), extra_vars=restore_vars, check=True)
    assert planned.rc == 0, planned.stdout + planned.stderr
    assert "would fetch %s" % pushed["uploaded"][0] in planned.stdout
    assert not os.path.exists(str(tmp_path / "restore")) and not os.path.exists(log)
    restored = run_playbook(os.path.join(REPO_ROOT, "playbooks", "restore.yml"), extra_vars=restore_vars)
    assert restored.rc == 0, restored.stdout + restored.stderr
    assert restored.task(action="backup_offsite")["result"]["fetched"]["name"] == pushed["uploaded"][0]
    assert count_runs(db) == 3
    with open(log) as handle:
        assert handle.read().split() == ["stop", "start"]
