# -*- coding: utf-8 -*-
"""Backup listing, manifests, compression round trips and statuses (pure file I/O in a temp dir)."""

import json
import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

NAME = "mlflow-sqlite-20260101T020000000000Z.db"


def write_backup(directory, name=NAME, data=b"x" * 1000, created="2026-01-01T02:00:00.000000Z"):
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(data)
    manifest = dict(format_version=1, file=name, engine="sqlite", format="sqlite", compression="none",
                    size_bytes=len(data), sha256=fsutil.file_sha256(path), created_at=created)
    fsutil.write_json_atomic(backups.manifest_path_for(path), manifest)
    return path, manifest


def statuses(directory, **kwargs):
    return dict((i["name"], (i["status"], i["reason"])) for i in backups.list_backups(directory, **kwargs))


def test_complete_incomplete_and_corrupt(tmp_path):
    directory = str(tmp_path)
    write_backup(directory)
    write_backup(directory, "mlflow-sqlite-20260102T020000000000Z.db", created="2026-01-02T02:00:00.000000Z")
    missing = write_backup(directory, "mlflow-sqlite-20260103T020000000000Z.db", created="2026-01-03T02:00:00.000000Z")[0]
    os.unlink(missing)
    (tmp_path / "mlflow-sqlite-20260104T020000000000Z.db").write_bytes(b"no manifest")
    (tmp_path / "mlflow-sqlite-20260105T020000000000Z.db.zst.partial").write_bytes(b"half")
    (tmp_path / "mlflow-sqlite-20260106T020000000000Z.db.manifest.json").write_text("{not json")
    (tmp_path / "unrelated.txt").write_text("ignored")
    found = statuses(directory)
    assert found[NAME][0] == "complete"
    assert found["mlflow-sqlite-20260103T020000000000Z.db"][0] == "corrupt"
    assert found["mlflow-sqlite-20260104T020000000000Z.db"] == ("incomplete", "no manifest (interrupted before it was written)")
    assert found["mlflow-sqlite-20260105T020000000000Z.db.zst.partial"][0] == "incomplete"
    assert found["mlflow-sqlite-20260106T020000000000Z.db"][0] == "incomplete"
    assert "unrelated.txt" not in found
    items = backups.list_backups(directory)
    assert backups.newest_complete(items)["name"] == "mlflow-sqlite-20260102T020000000000Z.db"


def test_flipped_byte_is_corrupt_only_with_checksums(tmp_path):
    path, manifest = write_backup(str(tmp_path))
    with open(path, "r+b") as handle:
        handle.seek(500)
        handle.write(b"y")
    assert statuses(str(tmp_path))[NAME][0] == "complete"
    assert statuses(str(tmp_path), verify_checksums=True)[NAME][0] == "corrupt"
    with pytest.raises(MaintenanceError, match=NAME):
        backups.verify_checksum(path, manifest)


def test_manifest_naming_another_file_is_corrupt(tmp_path):
    path, manifest = write_backup(str(tmp_path))
    manifest["file"] = "other.db"
    with open(backups.manifest_path_for(path), "w") as handle:
        json.dump(manifest, handle)
    assert statuses(str(tmp_path))[NAME][0] == "corrupt"


def test_prefix_filter(tmp_path):
    write_backup(str(tmp_path))
    write_backup(str(tmp_path), "other-sqlite-20260101T020000000000Z.db")
    assert list(statuses(str(tmp_path), prefix="other")) == ["other-sqlite-20260101T020000000000Z.db"]


def test_stale_incomplete_respects_grace(tmp_path):
    old = tmp_path / "mlflow-sqlite-20260104T020000000000Z.db.partial"
    old.write_bytes(b"x")
    os.utime(str(old), (1000, 1000))
    (tmp_path / "mlflow-sqlite-20260105T020000000000Z.db.partial").write_bytes(b"x")
    stale = backups.stale_incomplete(backups.list_backups(str(tmp_path)), 3600)
    assert [item["name"] for item in stale] == [old.name]


@pytest.mark.parametrize("method", ["none", "gzip", "zstd"])
def test_compression_round_trip_and_hash(tmp_path, method):
    data = os.urandom(300000) + b"a" * 3000000
    source = tmp_path / "in"
    source.write_bytes(data)
    packed = tmp_path / "packed"
    with open(str(source), "rb") as src, open(str(packed), "wb") as out:
        sink = compress.HashingWriter(out)
        compress.compress_stream(src, sink, method)
    assert sink.size == packed.stat().st_size
    assert sink.sha256.hexdigest() == fsutil.file_sha256(str(packed))
    unpacked = tmp_path / "unpacked"
    with open(str(packed), "rb") as src, open(str(unpacked), "wb") as out:
        compress.decompress_stream(src, out, method)
    assert unpacked.read_bytes() == data


def test_zstd_cli_fallback(tmp_path, monkeypatch):
    if not compress.zstd_cli():
        pytest.skip("zstd command not installed")
    monkeypatch.setattr(compress, "HAS_ZSTANDARD", False)
    source = tmp_path / "in"
    source.write_bytes(b"hello " * 100000)
    packed = tmp_path / "packed"
    with open(str(source), "rb") as src, open(str(packed), "wb") as out:
        compress.compress_stream(src, compress.HashingWriter(out), "zstd", timeout=60)
    out_path = tmp_path / "out"
    with open(str(packed), "rb") as src, open(str(out_path), "wb") as out:
        compress.decompress_stream(src, out, "zstd", timeout=60)
    assert out_path.read_bytes() == source.read_bytes()


def test_directory_digest_and_verify(tmp_path):
    tree = tmp_path / "mlflow-postgresql-20260101T020000000000Z.dir"
    tree.mkdir()
    (tree / "toc.dat").write_bytes(b"toc")
    (tree / "3001.dat.gz").write_bytes(b"rows")
    hashes = backups.tree_hashes(str(tree))
    manifest = dict(size_bytes=7, sha256=backups.tree_digest(hashes), files=hashes)
    assert backups.verify_checksum(str(tree), manifest) == manifest["sha256"]
    (tree / "3001.dat.gz").write_bytes(b"rowz")
    with pytest.raises(MaintenanceError, match="3001.dat.gz"):
        backups.verify_checksum(str(tree), manifest)


def test_resolve_compression():
    assert compress.resolve_compression("auto") in ("zstd", "gzip")
    assert compress.resolve_compression("none") == "none"


# ---------------------------------------------------------------- issue 9: SQLite paths, identity, modes

import sqlite3  # noqa: E402
import stat  # noqa: E402
import types  # noqa: E402

from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_backup, db_restore, sqlite_store  # noqa: E402
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri  # noqa: E402

ODD_DIRS = ["q?x", "h#x", "p%41q", "sp ace", "un\u00efc\u00f6de", "a?b#c%2F d"]


def make_mlflow_sqlite(path, runs=3):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
    conn.execute("INSERT INTO alembic_version VALUES ('rev1')")
    conn.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO runs VALUES (?)", [("r%d" % i,) for i in range(runs)])
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("odd", ODD_DIRS)
def test_sqlite_open_helper_reads_the_exact_path_and_never_creates(tmp_path, odd):
    directory = tmp_path / odd
    directory.mkdir()
    path = str(directory / "mlflow.db")
    make_mlflow_sqlite(path)
    before = sorted(os.listdir(str(tmp_path)))
    conn = sqlite_store.connect(path, "ro")
    try:
        assert sqlite_store.schema_revision(conn) == "rev1"
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    finally:
        conn.close()
    assert sqlite_store.has_user_tables(path) is True
    assert sqlite_store.check_mlflow_file(path) is None
    sqlite_store.integrity_check(path)
    assert sqlite_store.row_counts(path)["runs"] == 3
    # nothing was created next to it (the old "file:%s?mode=ro" opened/created a truncated name)
    assert sorted(os.listdir(str(tmp_path))) == before
    assert sorted(os.listdir(str(directory))) == ["mlflow.db"]
    missing = str(directory / "absent.db")
    for mode in ("ro", "rw"):
        with pytest.raises(MaintenanceError, match="does not exist"):
            sqlite_store.connect(missing, mode)
    assert not os.path.exists(missing)


def test_sqlite_open_helper_refuses_empty_files_and_directories(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(MaintenanceError, match="empty"):
        sqlite_store.connect(str(empty), "rw")
    assert empty.stat().st_size == 0
    with pytest.raises(MaintenanceError, match="directory"):
        sqlite_store.connect(str(tmp_path), "ro")
    assert sqlite_store.check_mlflow_file(str(empty)) == "it is empty (0 bytes)"
    foreign = str(tmp_path / "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert "no alembic_version and no runs table" in sqlite_store.check_mlflow_file(foreign)
    assert sqlite_store.sqlite_uri("/a?b#c%41 d/x.db") == "file:/a%3Fb%23c%2541%20d/x.db?mode=ro"


def test_validate_prefix_parse_mode():
    for good in ("mlflow", "mlflow-prod", "team.a_1+x"):
        assert backups.validate_prefix(good) == good
    for bad in ("", "/../../x", "a/b", "..", ".hidden", "a..b", "-x", None, "x" * 101):
        with pytest.raises(MaintenanceError, match="prefix"):
            backups.validate_prefix(bad)
    assert fsutil.parse_mode(None) is None
    assert fsutil.parse_mode("0640") == 0o640 and fsutil.parse_mode("600") == 0o600
    assert fsutil.parse_mode(0o640) == 0o640
    for bad in ("rw-r--r--", "0999", True, "12345"):
        with pytest.raises(MaintenanceError, match="mode"):
            fsutil.parse_mode(bad)
    assert fsutil.dir_mode_for(0o600) == 0o700 and fsutil.dir_mode_for(0o640) == 0o750


def _store(path):
    return parse_backend_store_uri("sqlite:///" + path)


def test_store_identity_is_exact(tmp_path):
    real = make_mlflow_sqlite(str(tmp_path / "mlflow.db"))
    os.symlink(real, str(tmp_path / "link.db"))
    ident = backups.store_identity(_store(real), "mlflow")
    assert ident == dict(engine="sqlite", location="sqlite:///" + os.path.realpath(real), prefix="mlflow")
    assert backups.store_identity(_store(str(tmp_path / "link.db")), "mlflow") == ident
    pg_a = parse_backend_store_uri("postgresql://u:secret@DB.example:5432/mlflow")
    pg_b = parse_backend_store_uri("postgresql+psycopg2://other@db.example/mlflow")
    assert backups.store_identity(pg_a) == backups.store_identity(pg_b)
    assert "secret" not in str(backups.store_identity(pg_a))
    assert backups.same_store(dict(store=ident), ident)
    assert not backups.same_store(dict(store=dict(ident, prefix="mlflow-prod")), ident)
    assert backups.same_store(dict(store=dict(ident, prefix="mlflow-prod")), ident, match_prefix=False)
    assert not backups.same_store(dict(store=dict(ident, location="sqlite:///other.db")), ident, match_prefix=False)
    assert not backups.same_store({}, ident, match_prefix=False)  # no identity: never "ours"


def _backup(store_path, dest, prefix, **kwargs):
    return db_backup.run_backup(_store(store_path), db_backup.BackupOptions(
        dest, compression="none", prefix=prefix, force=True, **kwargs))


def test_two_stores_sharing_a_dest_keep_their_own_retention_sets(tmp_path):
    dest = str(tmp_path / "dest")
    one = make_mlflow_sqlite(str(tmp_path / "one.db"))
    prod = make_mlflow_sqlite(str(tmp_path / "prod.db"))
    prod_names = [os.path.basename(_backup(prod, dest, "mlflow-prod")["backup"]["path"]) for _i in range(2)]
    results = [_backup(one, dest, "mlflow", retention={"keep_last": 2}) for _i in range(3)]
    assert len(results[-1]["pruned"]) == 1
    assert [i["name"] for i in backups.list_backups(dest, "mlflow-prod")] == prod_names[::-1]
    assert len(backups.list_backups(dest, "mlflow")) == 2
    # the same prefix for another store: its backups are ignored, never pruned
    other = make_mlflow_sqlite(str(tmp_path / "other.db"))
    other_result = _backup(other, dest, "mlflow", retention={"keep_last": 1})
    assert other_result["pruned"] == []
    assert len(other_result["ignored"]) == 2
    assert len(backups.list_backups(dest, "mlflow")) == 3
    # a manifest without identity (older version): ignored by retention
    legacy = backups.list_backups(dest, "mlflow-prod")[0]
    manifest = dict(legacy["manifest"])
    manifest.pop("store")
    fsutil.write_json_atomic(legacy["manifest_path"], manifest)
    after = _backup(prod, dest, "mlflow-prod", retention={"keep_last": 1})
    assert legacy["name"] not in [p["name"] for p in after["pruned"]]
    assert os.path.exists(legacy["path"])
    assert any(i["name"] == legacy["name"] and i["store"] is None for i in after["ignored"])


def test_backup_files_are_private_even_in_a_0755_dest(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    os.chmod(str(dest), 0o755)
    store = make_mlflow_sqlite(str(tmp_path / "mlflow.db"))
    for method in ("none", "gzip"):
        result = db_backup.run_backup(_store(store), db_backup.BackupOptions(
            str(dest), compression=method, force=True, verify="restore"))
        assert stat.S_IMODE(os.stat(result["backup"]["path"]).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(result["backup"]["manifest"]).st_mode) == 0o600
    lock = str(dest / ".mlflow-backup.lock")
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
    created = str(tmp_path / "new" / "dest")
    result = db_backup.run_backup(_store(store), db_backup.BackupOptions(created, compression="none", mode="0640"))
    assert stat.S_IMODE(os.stat(created).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(result["backup"]["path"]).st_mode) == 0o640


def test_db_backup_refuses_non_mlflow_and_empty_files(tmp_path):
    foreign = str(tmp_path / "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    empty = str(tmp_path / "empty.db")
    open(empty, "wb").close()
    dest = str(tmp_path / "dest")
    for path, reason in ((foreign, "not an MLflow store: .*no MLflow schema revision"), (empty, "empty .0 bytes., not an MLflow store")):
        with pytest.raises(MaintenanceError, match=reason):
            db_backup.run_backup(_store(path), db_backup.BackupOptions(dest))
    assert not os.path.exists(dest)
    assert os.path.getsize(empty) == 0


def test_restore_decisions(tmp_path):
    old = types.SimpleNamespace(st_uid=65534, st_gid=65534, st_mode=0o100600)
    assert db_restore.final_ownership(old) == (65534, 65534, 0o600)
    assert db_restore.final_ownership(old, mode=0o640, gid=0) == (65534, 0, 0o640)
    assert db_restore.final_ownership(None)[2] == 0o600
    assert db_restore.resolve_owner("0", "nogroup")[0] == 0
    with pytest.raises(MaintenanceError, match="not a user"):
        db_restore.resolve_owner("no-such-user-h3", None)
    target = str(tmp_path / "mlflow.db")
    old_temp = tmp_path / ".mlflow.db.restore-20200101T000000000000Z.partial"
    new_temp = tmp_path / ".mlflow.db.restore-20990101T000000000000Z.partial"
    other = tmp_path / ".other.db.restore-20200101T000000000000Z.partial"
    for path in (old_temp, new_temp, other):
        path.write_bytes(b"x")
    os.utime(str(old_temp), (1, 1))
    os.utime(str(other), (1, 1))
    assert db_restore.stale_restore_temps(target, 3600) == [str(old_temp)]
