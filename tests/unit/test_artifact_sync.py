# -*- coding: utf-8 -*-
"""Pure decisions of artifact_sync and artifact_audit, plus local-only runs of the executor."""

import hashlib
import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit as audit
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

MB = 1024 * 1024


def entries(*keys):
    return [sync.Entry(key, 1, 0) for key in keys]


def test_merge_listings_joins_sorted_streams():
    joined = list(sync.merge_listings(iter(entries("a", "b/c", "d")), iter(entries("b/c", "c", "d"))))
    assert [(key, s is not None, d is not None) for key, s, d in joined] == [
        ("a", True, False), ("b/c", True, True), ("c", False, True), ("d", True, True)]


def test_merge_listings_refuses_out_of_order_input():
    with pytest.raises(MaintenanceError, match="not in key order"):
        list(sync.merge_listings(iter(entries("b", "a")), iter([])))


def test_local_listing_is_in_s3_byte_order(tmp_path):
    names = ["a-b/x", "a/b", "a/c/d", "a0", "B", "a.txt", "\u00e9t\u00e9/f"]
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"1")
    (tmp_path / ".mlflowops-manifest.json").write_text("{}")
    (tmp_path / "a" / ".mlflowops-tmp-x.1").write_text("partial")
    listed = [entry.key for entry in sync.LocalStore(str(tmp_path)).list()]
    assert listed == sorted(names, key=lambda key: key.encode("utf-8"))


def test_local_store_refuses_traversal_keys(tmp_path):
    with pytest.raises(MaintenanceError):
        sync.LocalStore(str(tmp_path)).path("../etc/passwd")


@pytest.mark.parametrize("src,dst,kinds,compare,expected", [
    (sync.Entry("k", 5, 10, "e1"), None, ("s3", "s3"), "auto", "missing"),
    (sync.Entry("k", 5, 10, "e1"), sync.Entry("k", 6, 10, "e1"), ("s3", "s3"), "auto", "differ"),
    (sync.Entry("k", 5, 10, "e1"), sync.Entry("k", 5, 99, "e1"), ("s3", "s3"), "auto", "same"),
    (sync.Entry("k", 5, 10, "e1"), sync.Entry("k", 5, 10, "e2"), ("s3", "s3"), "auto", "differ"),
    (sync.Entry("k", 5, 10, "e1-2"), sync.Entry("k", 5, 10, "e2-3"), ("s3", "s3"), "auto", "deep"),
    (sync.Entry("k", 5, 10.7), sync.Entry("k", 5, 10.2), ("local", "local"), "auto", "same"),
    (sync.Entry("k", 5, 10), sync.Entry("k", 5, 11), ("local", "local"), "auto", "differ"),
    (sync.Entry("k", 5, 10, "e"), sync.Entry("k", 5, 10), ("s3", "local"), "auto", "same"),
    (sync.Entry("k", 5, 10, "e"), sync.Entry("k", 5, 12), ("s3", "local"), "auto", "deep"),
    (sync.Entry("k", 5, 10), sync.Entry("k", 5, 12, "e"), ("local", "s3"), "auto", "same"),
    (sync.Entry("k", 5, 12), sync.Entry("k", 5, 10, "e"), ("local", "s3"), "auto", "deep"),
    (sync.Entry("k", 5, 10), sync.Entry("k", 5, 10), ("local", "local"), "checksum", "deep"),
    (sync.Entry("k", 5, 10), sync.Entry("k", 5, 99), ("local", "local"), "size", "same"),
])
def test_quick_compare(src, dst, kinds, compare, expected):
    assert sync.quick_compare(src, dst, kinds[0], kinds[1], compare) == expected


def test_file_etag_plain_and_multipart(tmp_path):
    data = os.urandom(11 * MB + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sync.file_etag(str(path), 64 * MB) == hashlib.md5(data).hexdigest()
    parts = [data[i:i + 5 * MB] for i in range(0, len(data), 5 * MB)]
    expected = "%s-%d" % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))
    assert sync.file_etag(str(path), 5 * MB) == expected
    # The part size is inferred from the part count when it is not the preferred one.
    assert sync.etag_matches_file(str(path), len(data), '"%s"' % expected, 8 * MB)
    assert sync.etag_matches_file(str(path), len(data), hashlib.md5(data).hexdigest(), 8 * MB)
    assert not sync.etag_matches_file(str(path), len(data), "0" * 32 + "-3", 8 * MB)


def test_multipart_part_sizes_only_those_giving_the_part_count():
    sizes = sync.multipart_part_sizes(20 * MB, 3, 8 * MB)
    assert sizes[0] == 8 * MB
    assert all(-(-20 * MB // size) == 3 for size in sizes)


def test_snapshot_names_sort_and_parse():
    import datetime
    when = datetime.datetime(2026, 11, 28, 4, 30, tzinfo=datetime.timezone.utc)
    name = sync.snapshot_name(when)
    assert name == "20261128T043000Z"
    assert sync.snapshot_name(when, existing={name}) == name + "-2"
    assert sync.snapshot_time(name + "-2") == when
    assert sync.snapshot_time("latest") is None


def test_retention_plan_uses_restic_rules():
    names = ["20261101T000000Z", "20261120T000000Z", "20261127T000000Z", "20261128T000000Z"]
    kept, removed = sync.retention_plan(names, {"keep_last": 2})
    assert sorted(kept) == names[2:] and sorted(removed) == names[:2]
    assert sync.retention_plan(names, {})[1] == []


def test_inside():
    assert sync.inside("a/b", "a") and sync.inside("a", "a") and sync.inside("x", "")
    assert not sync.inside("ab", "a")


class LocalParams(dict):
    def __init__(self):
        super().__init__(multipart_chunksize_mb=8, multipart_threshold_mb=8)


def test_local_mirror_and_snapshot_end_to_end(tmp_path):
    src = tmp_path / "src"
    for index in range(5):
        path = src / str(index) / "f.txt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * index)
    transfer = sync.Transfer(LocalParams(), retries=0)
    result, rows = sync.sync(sync.LocalStore(str(src)), sync.LocalStore(str(tmp_path / "dst")), transfer)
    assert result.copied == 5 and result.bytes_copied == 10 and len(rows) == 5
    result, _rows = sync.sync(sync.LocalStore(str(src)), sync.LocalStore(str(tmp_path / "dst")), transfer)
    assert result.copied == 0 and result.skipped == 5
    repo = str(tmp_path / "repo")
    first, info = sync.local_snapshot(sync.LocalStore(str(src)), repo, transfer, {})
    assert first.copied == 5 and info["created"]
    (src / "1" / "f.txt").write_bytes(b"changed")
    second, info2 = sync.local_snapshot(sync.LocalStore(str(src)), repo, transfer, {})
    assert second.copied == 1 and second.linked == 4
    a = os.path.join(repo, info["snapshot"], "2", "f.txt")
    b = os.path.join(repo, info2["snapshot"], "2", "f.txt")
    assert os.stat(a).st_ino == os.stat(b).st_ino


def test_audit_run_folder_mapping():
    assert audit.run_folder("mlflow-artifacts:/1/%s/artifacts" % ("a" * 32), "s3://b/p") == "1/" + "a" * 32
    assert audit.run_folder("mlflow-artifacts://host:5000/1/abc/artifacts", "/x") == "1/abc"
    assert audit.run_folder("s3://b/p/2/abc/artifacts", "s3://b/p") == "2/abc"
    assert audit.run_folder("file:///srv/a/3/abc/artifacts", "/srv/a") == "3/abc"
    assert audit.run_folder("s3://other/2/abc/artifacts", "s3://b/p") is None


def test_audit_classify():
    run_a, run_b, run_c, orphan = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    stats = audit.FolderStats()
    stats.add("1/%s/artifacts/x" % run_a, 10)
    stats.add("1/%s/artifacts/x" % run_c, 5)
    stats.add("1/%s/artifacts/y" % orphan, 7)
    stats.add("1/models/m-1/artifacts/z", 3)
    runs = [dict(run_id=run_a, experiment_id="1", lifecycle_stage="active", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % run_a),
            dict(run_id=run_b, experiment_id="1", lifecycle_stage="active", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % run_b),
            dict(run_id=run_c, experiment_id="1", lifecycle_stage="deleted", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % run_c),
            dict(run_id="e" * 32, experiment_id="1", lifecycle_stage="active", artifact_uri="s3://elsewhere/x/artifacts")]
    verdict = audit.classify(runs, stats, "s3://b/mlflow")
    assert [m["run_id"] for m in verdict["missing"]] == [run_b]
    assert [o["folder"] for o in verdict["orphans"]] == ["1/" + orphan]
    assert [g["run_id"] for g in verdict["awaiting_gc"]] == [run_c]
    assert verdict["unmapped"] == ["e" * 32]
    assert stats.other_objects == 1 and stats.experiments["1"] == [4, 25]
