# -*- coding: utf-8 -*-
"""Backup listing, manifests, compression round trips and statuses (pure file I/O in a temp dir)."""

import json
import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

NAME = "mlflow-sqlite-20260101T020000000000Z.db"


def write_backup(directory, name=NAME, data=b"x" * 1000, created="2026-01-01T02:00:00.000000Z"):
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(data)
    manifest = dict(format_version=1, file=name, engine="sqlite", format="sqlite", compression="none",
                    size_bytes=len(data), sha256=backups.file_sha256(path), created_at=created)
    backups.write_json_atomic(backups.manifest_path_for(path), manifest)
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
        sink = backups.HashingWriter(out)
        backups.compress_stream(src, sink, method)
    assert sink.size == packed.stat().st_size
    assert sink.sha256.hexdigest() == backups.file_sha256(str(packed))
    unpacked = tmp_path / "unpacked"
    with open(str(packed), "rb") as src, open(str(unpacked), "wb") as out:
        backups.decompress_stream(src, out, method)
    assert unpacked.read_bytes() == data


def test_zstd_cli_fallback(tmp_path, monkeypatch):
    if not backups.zstd_cli():
        pytest.skip("zstd command not installed")
    monkeypatch.setattr(backups, "HAS_ZSTANDARD", False)
    source = tmp_path / "in"
    source.write_bytes(b"hello " * 100000)
    packed = tmp_path / "packed"
    with open(str(source), "rb") as src, open(str(packed), "wb") as out:
        backups.compress_stream(src, backups.HashingWriter(out), "zstd", timeout=60)
    out_path = tmp_path / "out"
    with open(str(packed), "rb") as src, open(str(out_path), "wb") as out:
        backups.decompress_stream(src, out, "zstd", timeout=60)
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
    assert backups.resolve_compression("auto") in ("zstd", "gzip")
    assert backups.resolve_compression("none") == "none"
