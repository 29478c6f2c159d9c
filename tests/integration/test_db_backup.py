# -*- coding: utf-8 -*-
"""db_backup / db_restore / backup_info on SQLite, through Ansible, against a live MLflow server."""

import os
import secrets
import sqlite3
import subprocess
import threading
import time

import pytest

from harness.backup_tools import MetricWriter, kill_group, make_blob_sqlite, run_tasks, start_play
from harness.datagen import RunSpec, add_runs, create_experiment
from harness.services import api

from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_backup import BackupOptions, run_backup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri


def entries(directory):
    return sorted(name for name in os.listdir(directory) if not name.startswith(".")) if os.path.isdir(directory) else []


def integrity(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def query(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_backup_while_server_writes_then_restore_into_new_target(mlflow_sqlite, tmp_path):
    exp_id = create_experiment(mlflow_sqlite.url, "backup-%s" % secrets.token_hex(4))
    run_ids = add_runs(mlflow_sqlite.url, mlflow_sqlite.backend_store_uri, exp_id,
                       [RunSpec(metrics=5, steps=20) for _run in range(200)])
    writer_run = api(mlflow_sqlite.url, "runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    writer = MetricWriter(mlflow_sqlite.url, writer_run)
    writer.start()
    time.sleep(1.0)
    started = time.monotonic()
    dest = str(tmp_path / "backups")
    target = str(tmp_path / "restored" / "mlflow.db")
    os.makedirs(os.path.dirname(target))
    try:
        results, _run = run_tasks([
            ("backup", "db_backup", {"backend_store_uri": mlflow_sqlite.backend_store_uri, "dest": dest,
                                     "verify": "restore", "force": True}),
            ("restore", "db_restore", {"backend_store_uri": "sqlite:///" + target, "src": dest,
                                       "allow_other_store": True}),  # another path: another store
        ])
    finally:
        writer.stop()
    result, restored = results["backup"], results["restore"]
    assert result["_status"] == "ok", result
    assert result["changed"] is True and result["created"] is True
    assert result["verified"] == "restore"
    backup = result["backup"]
    assert backup["engine"] == "sqlite" and backup["compression"] == "zstd"
    assert backup["schema_revision"]
    assert os.path.exists(backup["manifest"])
    before = writer.committed_before(started)
    assert len(before) > 3, "the writer wrote too little before the backup: %s" % writer.errors[:3]
    assert restored["_status"] == "ok", restored
    assert restored["restored"]["path"] == backup["path"]
    assert restored["previous"] is None
    assert integrity(target) == [("ok",)]
    runs = set(r[0] for r in query(target, "SELECT run_uuid FROM runs WHERE experiment_id = ?", (int(exp_id),)))
    assert set(run_ids) | {writer_run} <= runs
    assert query(target, "SELECT count(*) FROM metrics WHERE run_uuid IN (%s)" % ",".join("?" * 50),
                 run_ids[:50])[0][0] == 50 * 5 * 20
    steps = set((k, s) for k, s in query(target, "SELECT key, step FROM metrics WHERE run_uuid = ?", (writer_run,)))
    assert before <= steps, "missing committed metrics: %s" % sorted(before - steps)[:5]


def test_idempotent_and_check_mode(mlflow_sqlite, tmp_path):
    dest = str(tmp_path / "d")
    untouched = str(tmp_path / "never-written")
    args = {"backend_store_uri": mlflow_sqlite.backend_store_uri, "dest": dest}
    results, _run = run_tasks([
        ("check_only", "db_backup", dict(args, dest=untouched), {"check_mode": True}),
        ("predicted", "db_backup", args, {"check_mode": True}),
        ("first", "db_backup", args),
        ("second", "db_backup", args),
        ("again", "db_backup", args, {"check_mode": True}),
    ])
    check_only, predicted = results["check_only"], results["predicted"]
    first, second, again = results["first"], results["second"], results["again"]
    assert check_only["_status"] == "ok", check_only
    assert check_only["changed"] is True and check_only["created"] is True
    assert check_only["backup"]["sha256"] is None
    assert not os.path.exists(untouched), "check mode created the destination"
    assert predicted["changed"] is True
    assert first["changed"] is True
    assert os.path.dirname(first["backup"]["path"]) == os.path.dirname(predicted["backup"]["path"])
    assert second["changed"] is False and second["unchanged"] is True, second
    assert second["backup"]["path"] == first["backup"]["path"]
    assert second["verified"] == "checksum"
    assert again["changed"] is False
    assert len(entries(dest)) == 2, "check mode wrote something: %s" % entries(dest)
    create_experiment(mlflow_sqlite.url, "idem-%s" % secrets.token_hex(4))
    results, _run = run_tasks([("changed_check", "db_backup", args, {"check_mode": True}),
                               ("third", "db_backup", args)])
    assert results["changed_check"]["changed"] is True
    third = results["third"]
    assert third["changed"] is True and third["backup"]["path"] != first["backup"]["path"]
    assert len(entries(dest)) == 4, "check mode wrote something: %s" % entries(dest)


# ---------------------------------------------------------------------------------------------------
# Standalone SQLite scenarios. Ansible's start-up costs seconds on a loaded machine, so the module
# tasks of all of them run in one playbook (a module-scoped fixture); each test asserts on its part.


def _mount_tmpfs(path, options):
    os.makedirs(path)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, check=False)
    return None if done.returncode == 0 else done.stderr.decode().strip() or "mount failed"


def _flip_byte(path):
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _crash_backup(root):
    """Start a backup of a 120 MB store through ansible-playbook and SIGKILL it mid-write."""
    source = make_blob_sqlite(os.path.join(root, "big.db"), 120)
    dest = os.path.join(root, "crash-dest")
    proc = start_play("db_backup", {"backend_store_uri": "sqlite:///" + source, "dest": dest, "verify": "none"})
    deadline = time.monotonic() + 120
    killed_mid_write = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(name.endswith(".partial") for name in entries(dest)):
                time.sleep(0.1)
                killed_mid_write = proc.poll() is None
                break
            time.sleep(0.005)
    finally:
        kill_group(proc)
    time.sleep(0.5)
    return source, dest, entries(dest), killed_mid_write


class _WalWriter(threading.Thread):
    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.committed = []
        self.stop_event = threading.Event()

    def run(self):
        writer = sqlite3.connect(self.path, timeout=30)
        i = 0
        while not self.stop_event.is_set():
            writer.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200,))
            writer.commit()
            i += 1
            self.committed.append((i, time.monotonic()))
            time.sleep(0.001)
        writer.close()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sqlite-batch"))
    out = dict(root=root, mount_error=None, mounts=[])
    # SIGKILL mid-backup (its own ansible-playbook, killed)
    out["crash_source"], out["crash_dest"], out["crash_leftovers"], out["crash_mid_write"] = _crash_backup(root)
    crash_uri = "sqlite:///" + out["crash_source"]
    # WAL store with a writer that keeps committing during the backup
    wal = os.path.join(root, "wal.db")
    conn = sqlite3.connect(wal)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('wal-test')")
    conn.commit()
    out["wal"] = wal
    # corruption: a backup with one flipped byte
    small = make_blob_sqlite(os.path.join(root, "small.db"), 2)
    flip_dest = os.path.join(root, "flip-dest")
    store = parse_backend_store_uri("sqlite:///" + small)
    out["flipped"] = run_backup(store, BackupOptions(flip_dest, compression="none"))["backup"]["path"]
    _flip_byte(out["flipped"])
    out["flip_target"] = os.path.join(root, "flip-target.db")
    # retention, restore over a non-empty target
    one = make_blob_sqlite(os.path.join(root, "one.db"), 1)
    out["one"] = one
    out["target"] = make_blob_sqlite(os.path.join(root, "target.db"), 1)
    out["missing"] = os.path.join(root, "nope.db")
    ret = dict(backend_store_uri="sqlite:///" + one, dest=os.path.join(root, "ret-dest"), force=True,
               retention={"keep_last": 2})
    restore_dest = os.path.join(root, "restore-dest")
    restore_args = {"backend_store_uri": "sqlite:///" + out["target"], "src": restore_dest, "allow_other_store": True}
    tasks = [
        ("wal", "db_backup", {"backend_store_uri": "sqlite:///" + wal, "dest": os.path.join(root, "wal-dest"),
                              "verify": "restore", "compression": "none"}),
        ("crash_info", "backup_info", {"path": out["crash_dest"]}),
        ("crash_restore_dir", "db_restore", {"backend_store_uri": "sqlite:///" + os.path.join(root, "x.db"),
                                             "src": out["crash_dest"]}),
        ("crash_restore_file", "db_restore", {"backend_store_uri": "sqlite:///" + os.path.join(root, "x.db"),
                                              "src": os.path.join(out["crash_dest"], (out["crash_leftovers"] or ["-"])[0])}),
        ("crash_kept", "db_backup", {"backend_store_uri": crash_uri, "dest": out["crash_dest"],
                                     "retention": {"keep_last": 1}, "compression": "none", "verify": "none"}),
        ("crash_cleaned", "db_backup", {"backend_store_uri": crash_uri, "dest": out["crash_dest"],
                                        "incomplete_grace": "0s", "compression": "none", "verify": "none"}),
        ("flip_refused", "db_restore", {"backend_store_uri": "sqlite:///" + out["flip_target"], "src": out["flipped"]}),
        ("flip_info", "backup_info", {"path": flip_dest, "verify_checksums": True}),
        ("flip_again", "db_backup", {"backend_store_uri": "sqlite:///" + small, "dest": flip_dest,
                                     "compression": "none"}),
        ("ret0", "db_backup", ret), ("ret1", "db_backup", ret), ("ret2", "db_backup", ret),
        ("ret_predicted", "db_backup", ret, {"check_mode": True}),
        ("ret_info", "backup_info", {"path": ret["dest"], "prefix": "mlflow"}),
        ("restore_backup", "db_backup", {"backend_store_uri": "sqlite:///" + one, "dest": restore_dest}),
        ("restore_refused", "db_restore", restore_args),
        ("restore_checked", "db_restore", dict(restore_args, force=True), {"check_mode": True}),
        ("restore_done", "db_restore", dict(restore_args, force=True)),
        ("missing", "db_backup", {"backend_store_uri": "sqlite:///" + out["missing"],
                                  "dest": os.path.join(root, "missing-dest")}),
    ]
    readonly, full = os.path.join(root, "ro"), os.path.join(root, "full")
    # Each mount that succeeded is recorded at once, so the finally below unmounts it even when the
    # next mount (or anything later) fails.
    for path, options in ((readonly, "ro,size=1m"), (full, "size=1m")):
        out["mount_error"] = _mount_tmpfs(path, options)
        if out["mount_error"]:
            break
        out["mounts"].append(path)
    try:
        return _run_batch(out, root, tasks, wal, conn, one, readonly, full)
    finally:
        for path in out["mounts"]:
            subprocess.run(["umount", "-l", path], check=False)


def _run_batch(out, root, tasks, wal, conn, one, readonly, full):
    if not out["mount_error"]:
        out["readonly"], out["full"] = readonly, full
        random_store = make_blob_sqlite(os.path.join(root, "random.db"), 4)  # random bytes: zstd cannot fit 1 MiB
        tasks += [
            ("ro_top", "db_backup", {"backend_store_uri": "sqlite:///" + one, "dest": readonly}),
            ("ro_below", "db_backup", {"backend_store_uri": "sqlite:///" + one, "dest": os.path.join(readonly, "s")}),
            ("full_none", "db_backup", {"backend_store_uri": "sqlite:///" + random_store, "dest": full,
                                        "compression": "none"}),
            ("full_zstd", "db_backup", {"backend_store_uri": "sqlite:///" + random_store, "dest": full,
                                        "compression": "zstd"}),
        ]
    writer = _WalWriter(wal)
    writer.start()
    time.sleep(0.5)
    out["wal_started"] = time.monotonic()
    try:
        out["results"], out["run"] = run_tasks(tasks)
    finally:
        writer.stop_event.set()
        writer.join(30)
        conn.close()
        out["wal_committed"] = writer.committed
        out["entries"] = dict((name, entries(os.path.join(root, name))) for name in os.listdir(root)
                              if os.path.isdir(os.path.join(root, name)))
    return out


def test_wal_mode_snapshot_is_consistent_while_writing(batch):
    result = batch["results"]["wal"]
    assert result["_status"] == "ok", result
    assert query(batch["wal"], "PRAGMA journal_mode")[0][0] == "wal"
    path = result["backup"]["path"]
    assert integrity(path) == [("ok",)]
    assert query(path, "PRAGMA journal_mode")[0][0] == "delete"
    assert not os.path.exists(path + "-wal")
    count = query(path, "SELECT count(*) FROM t")[0][0]
    before = max(i for i, when in batch["wal_committed"] if when < batch["wal_started"])
    assert count >= before
    assert query(path, "SELECT max(id) FROM t")[0][0] == count, "not a consistent snapshot"
    assert result["backup"]["schema_revision"] == "wal-test"


def test_sigkill_mid_backup_leaves_nothing_complete(batch):
    results, leftovers = batch["results"], batch["crash_leftovers"]
    assert batch["crash_mid_write"], "the backup finished before it could be killed"
    assert leftovers and not any(name.endswith(".manifest.json") for name in leftovers), leftovers
    info = results["crash_info"]
    assert info["counts"]["complete"] == 0 and info["counts"]["incomplete"] == len(leftovers), info["backups"]
    assert info["latest"] is None
    assert results["crash_restore_dir"]["_status"] == "failed"
    assert "no complete sqlite backup" in results["crash_restore_dir"]["msg"]
    assert results["crash_restore_file"]["_status"] == "failed"
    assert "incomplete" in results["crash_restore_file"]["msg"]
    # a later backup does not count the leftovers and, past the grace period, removes them
    kept = results["crash_kept"]
    assert kept["_status"] == "ok" and kept["removed_incomplete"] == [], kept
    assert [k["name"] for k in kept["kept"]] == [os.path.basename(kept["backup"]["path"])]
    cleaned = results["crash_cleaned"]
    assert sorted(i["name"] for i in cleaned["removed_incomplete"]) == sorted(leftovers)
    assert cleaned["changed"] is True and cleaned["unchanged"] is True
    assert len(batch["entries"]["crash-dest"]) == 2


def test_flipped_byte_is_refused_by_name(batch):
    results, path = batch["results"], batch["flipped"]
    refused = results["flip_refused"]
    assert refused["_status"] == "failed"
    assert path in refused["msg"] and "corrupt" in refused["msg"]
    assert not os.path.exists(batch["flip_target"])
    assert results["flip_info"]["backups"][0]["status"] == "corrupt"
    # the store is unchanged, but the newest backup is corrupt: a new one is taken
    again = results["flip_again"]
    assert again["changed"] is True and again["created"] is True
    assert any("corrupt" in warning for warning in again.get("warnings", [])), again


def test_retention_prunes_complete_backups_only(batch):
    results = batch["results"]
    names = [os.path.basename(results["ret%d" % i]["backup"]["path"]) for i in range(3)]
    assert [p["name"] for p in results["ret2"]["pruned"]] == [names[0]]
    assert [k["name"] for k in results["ret2"]["kept"]] == [names[2], names[1]]
    assert [p["name"] for p in results["ret_predicted"]["pruned"]] == [names[1]]
    info = results["ret_info"]
    assert [b["name"] for b in info["backups"]] == [names[2], names[1]]
    assert info["latest"]["name"] == names[2] and info["counts"] == {"complete": 2, "incomplete": 0, "corrupt": 0}


def test_restore_refuses_non_empty_target_and_keeps_previous(batch):
    results = batch["results"]
    refused, checked, done = results["restore_refused"], results["restore_checked"], results["restore_done"]
    assert refused["_status"] == "failed" and "not empty" in refused["msg"]
    assert checked["_status"] == "ok" and checked["changed"] is True
    assert done["_status"] == "ok", done
    previous = [n for n in os.listdir(batch["root"]) if ".pre-restore-" in n]
    assert previous == [os.path.basename(done["previous"])], "check mode kept a copy too: %s" % previous
    assert integrity(batch["target"]) == [("ok",)]
    assert query(batch["target"], "SELECT count(*) FROM blobs") == query(batch["one"], "SELECT count(*) FROM blobs")


def test_missing_sqlite_file_is_a_clear_error(batch):
    result = batch["results"]["missing"]
    assert result["_status"] == "failed"
    assert result["msg"] == "SQLite backend store %s does not exist" % batch["missing"]
    assert batch["entries"].get("missing-dest", []) == []
    assert not os.path.exists(batch["missing"])


def _skip_without_tmpfs(batch):
    if batch["mount_error"]:
        pytest.skip("ENVIRONMENT: cannot mount a tmpfs here (needs root and mount rights), so this test did NOT run: %s"
                    % batch["mount_error"])


def test_unwritable_dest_is_a_clear_error(batch):
    _skip_without_tmpfs(batch)
    top, below = batch["results"]["ro_top"], batch["results"]["ro_below"]
    assert top["_status"] == "failed"
    assert top["msg"] == "dest %s is not writable by this user" % batch["readonly"]
    assert below["_status"] == "failed" and "cannot create dest" in below["msg"]


def test_full_disk_is_a_clear_error_and_leaves_nothing(batch):
    _skip_without_tmpfs(batch)
    for name in ("full_none", "full_zstd"):
        result = batch["results"][name]
        assert result["_status"] == "failed"
        assert "no space left on device" in result["msg"], result["msg"]
    assert batch["entries"]["full"] == []
