# -*- coding: utf-8 -*-
"""Pure decisions of artifact_sync (artifact_audit: test_artifact_audit.py), plus local-only runs of the executor."""

import hashlib
import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_snapshots as snapshots
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_compare as compare_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names as names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_stores as stores
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_transfer as transfer_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, DeadlineExceeded, MaintenanceError

MB = 1024 * 1024


def entries(*keys):
    return [localfs.Entry(key, 1, 0) for key in keys]


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
    listed = [entry.key for entry in stores.LocalStore(str(tmp_path)).list()]
    assert listed == sorted(names, key=lambda key: key.encode("utf-8"))


def test_managed_listing_skips_own_files_and_unescapes_user_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"1")
    (tmp_path / ".mlflowops-manifest.json").write_text("{}")
    (tmp_path / "a" / (".mlflowops-tmp-" + "0" * 32)).write_text("partial")
    (tmp_path / ".mlflowops-esc-manifest.json").write_text("user data")
    (tmp_path / "a" / ".mlflowops-esc-tmp-notes.txt").write_text("user data")
    store = stores.LocalStore(str(tmp_path), managed=True)
    assert [entry.key for entry in store.list()] == [".mlflowops-manifest.json", "a/.mlflowops-tmp-notes.txt", "a/f"]
    assert store.path("a/.mlflowops-tmp-notes.txt") == str(tmp_path / "a" / ".mlflowops-esc-tmp-notes.txt")
    # Not written by the collection (no marker): every name is the user's.
    raw = [entry.key for entry in stores.LocalStore(str(tmp_path)).list()]
    assert ".mlflowops-esc-manifest.json" in raw and "a/.mlflowops-tmp-" + "0" * 32 in raw


def test_local_store_refuses_traversal_keys(tmp_path):
    with pytest.raises(MaintenanceError):
        stores.LocalStore(str(tmp_path)).path("../etc/passwd")


@pytest.mark.parametrize("src,dst,kinds,compare,expected", [
    (localfs.Entry("k", 5, 10, "e1"), None, ("s3", "s3"), "auto", "missing"),
    (localfs.Entry("k", 5, 10, "e1"), localfs.Entry("k", 6, 10, "e1"), ("s3", "s3"), "auto", "differ"),
    (localfs.Entry("k", 5, 10, "e1"), localfs.Entry("k", 5, 99, "e1"), ("s3", "s3"), "auto", "same"),
    (localfs.Entry("k", 5, 10, "e1"), localfs.Entry("k", 5, 10, "e2"), ("s3", "s3"), "auto", "differ"),
    (localfs.Entry("k", 5, 10, "e1-2"), localfs.Entry("k", 5, 10, "e2-3"), ("s3", "s3"), "auto", "deep"),
    (localfs.Entry("k", 5, 10.7), localfs.Entry("k", 5, 10.2), ("local", "local"), "auto", "same"),
    (localfs.Entry("k", 5, 10), localfs.Entry("k", 5, 11), ("local", "local"), "auto", "differ"),
    (localfs.Entry("k", 5, 10, "e"), localfs.Entry("k", 5, 10), ("s3", "local"), "auto", "same"),
    (localfs.Entry("k", 5, 10, "e"), localfs.Entry("k", 5, 12), ("s3", "local"), "auto", "deep"),
    (localfs.Entry("k", 5, 10), localfs.Entry("k", 5, 12, "e"), ("local", "s3"), "auto", "same"),
    (localfs.Entry("k", 5, 12), localfs.Entry("k", 5, 10, "e"), ("local", "s3"), "auto", "deep"),
    (localfs.Entry("k", 5, 10), localfs.Entry("k", 5, 10), ("local", "local"), "checksum", "deep"),
    (localfs.Entry("k", 5, 10), localfs.Entry("k", 5, 99), ("local", "local"), "size", "same"),
])
def test_quick_compare(src, dst, kinds, compare, expected):
    assert compare_utils.quick_compare(src, dst, kinds[0], kinds[1], compare) == expected


def test_file_etag_plain_and_multipart(tmp_path):
    data = os.urandom(11 * MB + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert compare_utils.file_etag(str(path), 64 * MB) == hashlib.md5(data).hexdigest()
    parts = [data[i:i + 5 * MB] for i in range(0, len(data), 5 * MB)]
    expected = "%s-%d" % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))
    assert compare_utils.file_etag(str(path), 5 * MB) == expected
    # The part size is inferred from the part count when it is not the preferred one.
    assert compare_utils.etag_matches_file(str(path), len(data), '"%s"' % expected, 8 * MB)
    assert compare_utils.etag_matches_file(str(path), len(data), hashlib.md5(data).hexdigest(), 8 * MB)
    assert not compare_utils.etag_matches_file(str(path), len(data), "0" * 32 + "-3", 8 * MB)


def test_multipart_part_sizes_only_those_giving_the_part_count():
    sizes = compare_utils.multipart_part_sizes(20 * MB, 3, 8 * MB)
    assert sizes[0] == 8 * MB
    assert all(-(-20 * MB // size) == 3 for size in sizes)


def test_snapshot_names_sort_and_parse():
    import datetime
    when = datetime.datetime(2026, 11, 28, 4, 30, tzinfo=datetime.timezone.utc)
    name = names.snapshot_name(when)
    assert name == "20261128T043000Z"
    assert names.snapshot_name(when, existing={name}) == name + "-2"
    assert names.snapshot_time(name + "-2") == when
    assert names.snapshot_time("latest") is None


def test_retention_plan_uses_restic_rules():
    names = ["20261101T000000Z", "20261120T000000Z", "20261127T000000Z", "20261128T000000Z"]
    kept, removed = snapshots.retention_plan(names, {"keep_last": 2})
    assert sorted(kept) == names[2:] and sorted(removed) == names[:2]
    assert snapshots.retention_plan(names, {})[1] == []


def test_inside():
    assert compare_utils.inside("a/b", "a") and compare_utils.inside("a", "a") and compare_utils.inside("x", "")
    assert not compare_utils.inside("ab", "a")


class LocalParams(dict):
    def __init__(self):
        super().__init__(multipart_chunksize_mb=8, multipart_threshold_mb=8)


def test_local_mirror_and_snapshot_end_to_end(tmp_path):
    src = tmp_path / "src"
    for index in range(5):
        path = src / str(index) / "f.txt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * index)
    transfer = transfer_utils.Transfer(LocalParams(), retries=0)
    result, rows = sync.sync(stores.LocalStore(str(src)), stores.LocalStore(str(tmp_path / "dst")), transfer)
    assert result.copied == 5 and result.copied_bytes == 10 and len(rows) == 5
    result, _rows = sync.sync(stores.LocalStore(str(src)), stores.LocalStore(str(tmp_path / "dst")), transfer)
    assert result.copied == 0 and result.unchanged == 5
    repo = str(tmp_path / "repo")
    first, info = snapshots.local_snapshot(stores.LocalStore(str(src)), repo, transfer, {})
    assert first.copied == 5 and info["created"]
    (src / "1" / "f.txt").write_bytes(b"changed")
    second, info2 = snapshots.local_snapshot(stores.LocalStore(str(src)), repo, transfer, {})
    assert second.copied == 1 and second.linked == 4
    a = os.path.join(repo, info["snapshot"], "2", "f.txt")
    b = os.path.join(repo, info2["snapshot"], "2", "f.txt")
    assert os.stat(a).st_ino == os.stat(b).st_ino


# ---------------------------------------------------------------- issue 9: trust (names, symlinks, breaker, deadline)


@pytest.mark.parametrize("name", [".mlflowops-manifest.json", ".mlflowops-tmp-" + "a" * 32, ".mlflowops-esc-x",
                                  ".mlflowops-store.json", ".mlflowops-", "plain", ".mlflowops-partial-1"])
def test_escaping_round_trips_every_user_name(name):
    disk = names.escape_name(name)
    assert names.classify_disk_name(disk, True) == ("user", name)
    assert names.classify_disk_name(disk, False) == ("user", name)


def test_own_names_are_recognised_only_where_the_collection_writes_them():
    assert names.classify_disk_name(".mlflowops-manifest.json", True) == ("own", "manifest")
    assert names.classify_disk_name(".mlflowops-manifest.json", False) == ("foreign", None)
    assert names.classify_disk_name(".mlflowops-tmp-" + "f" * 32, False) == ("own", "temp")
    assert names.classify_disk_name(".mlflowops-tmp-notes.txt", False) == ("foreign", None)


@pytest.mark.parametrize("prefix,ok", [("a/b", "a/b"), ("a/b/", "a/b"), ("", ""), ("/x", None), ("a//b", None),
                                       ("a/../b", None), ("./a", None), ("..", None)])
def test_check_s3_prefix(prefix, ok):
    if ok is None:
        with pytest.raises(MaintenanceError):
            names.check_s3_prefix(prefix, "dest")
    else:
        assert names.check_s3_prefix(prefix, "dest") == ok


def test_symlink_decision():
    assert names.symlink_decision("skip", "/src/a", "/src", False, False)[0] is False
    assert names.symlink_decision("follow_within", "/src/a", "/src", False, False) == (True, None)
    assert names.symlink_decision("follow_within", "/srcx/a", "/src", False, False)[0] is False
    assert names.symlink_decision("follow", "/etc/passwd", "/src", False, False) == (True, None)
    assert names.symlink_decision("follow", None, "/src", True, False) == (False, "dangling link")
    assert names.symlink_decision("follow", "/src", "/src", False, True) == (False, "link cycle")


def valid_params(**changes):
    params = dict(src="/a", dest="/b", concurrency=16, copy_multipart_threshold_mb=5120, multipart_threshold_mb=8,
                  multipart_chunksize_mb=8, s3_connect_timeout=10.0, s3_read_timeout=60.0, s3_retries=3, deadline=3600,
                  symlinks="skip", src_snapshot=None, max_consecutive_failures=5)
    params.update(changes)
    return params


@pytest.mark.parametrize("changes,words", [
    (dict(concurrency=0), "concurrency"),
    (dict(dest="s3://b/../x"), "'..'"), (dict(src="s3:///x"), "names no bucket"), (dict(src_snapshot="../x"), "src_snapshot"),
    (dict(copy_multipart_threshold_mb=6000), "copy_multipart"), (dict(max_consecutive_failures=0), "max_consecutive"),
    (dict(deadline=-1), "deadline"), (dict(dest=""), "dest"),
])
def test_validate_params_refuses(changes, words):
    with pytest.raises(MaintenanceError, match=words):
        names.validate_params(valid_params(**changes))


def test_validate_params_accepts_defaults_and_multi_level_prefix():
    assert names.validate_params(valid_params(dest="s3://bucket/a/b/", src_snapshot="latest"))


def test_failure_breaker_trips_on_consecutive_failures_only():
    breaker = names.FailureBreaker(3)
    breaker.failure("x")
    breaker.failure("x")
    breaker.success()
    assert not breaker.failure("x") and not breaker.failure("y")
    assert breaker.failure("z") and breaker.tripped and breaker.last_error == "z"


def test_transfer_stops_retrying_once_the_endpoint_is_down():
    transfer = transfer_utils.Transfer(LocalParams(), retries=5, breaker=names.FailureBreaker(2))
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionRefusedError("refused")
    with pytest.raises(ConnectionRefusedError):
        transfer.guarded(refused)
    assert len(calls) == 2 and transfer.breaker.tripped
    with pytest.raises(transfer_utils.EndpointDown):
        transfer.guarded(refused)
    assert len(calls) == 2


def test_parallel_map_stops_at_the_deadline_even_when_calls_hang():
    import threading
    import time
    hang = threading.Event()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        list(transfer_utils.parallel_map(lambda item: hang.wait(30), range(10), 2, Deadline(1)))
    assert time.monotonic() - started < 5
    hang.set()


def test_run_with_deadline_returns_and_raises_with_progress():
    import threading
    assert transfer_utils.run_with_deadline(lambda: 42, Deadline(5)) == 42
    hang = threading.Event()
    with pytest.raises(DeadlineExceeded) as caught:
        transfer_utils.run_with_deadline(lambda: hang.wait(30), Deadline(1), progress=lambda: dict(copied=7, copied_bytes=70))
    hang.set()
    assert "deadline of 1s" in caught.value.msg and "7 file(s)" in caught.value.msg
    assert caught.value.details["copied"] == 7


def test_write_file_refuses_a_symlinked_directory_and_writes_private_files(tmp_path):
    root, outside = tmp_path / "dest", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), str(root / "sub"))
    with pytest.raises(localfs.UnsafePath, match="symlink"):
        localfs.write_file(str(root), ["sub", "f"], lambda handle: handle.write(b"data"))
    assert os.listdir(str(outside)) == []
    previous = os.umask(0o022)
    try:
        localfs.write_file(str(root), ["new", "deeper", "f"], lambda handle: handle.write(b"data"))
    finally:
        os.umask(previous)
    assert oct(os.stat(str(root / "new")).st_mode & 0o777) == oct(0o700)
    assert oct(os.stat(str(root / "new" / "deeper" / "f")).st_mode & 0o777) == oct(0o600)
    # A file symlink where the file belongs is replaced, never written through.
    (outside / "victim").write_bytes(b"original")
    os.symlink(str(outside / "victim"), str(root / "link"))
    localfs.write_file(str(root), ["link"], lambda handle: handle.write(b"new"))
    assert (outside / "victim").read_bytes() == b"original" and not os.path.islink(str(root / "link"))


def test_source_listing_reports_links_and_survives_cycles(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"1")
    os.symlink(str(src), str(src / "d" / "loop"))
    os.symlink(str(src / "d"), str(src / "alias"))
    os.symlink("/nonexistent/x", str(src / "dangling"))
    store = stores.LocalStore(str(src), symlinks="follow_within")
    assert [entry.key for entry in store.list()] == ["alias/f", "d/f"]
    reasons = dict((item["path"], item["reason"]) for item in store.skipped_symlinks.items)
    assert reasons == {"alias/loop": "link cycle", "d/loop": "link cycle", "dangling": "dangling link"}
    skipping = stores.LocalStore(str(src))
    assert [entry.key for entry in skipping.list()] == ["d/f"] and skipping.skipped_symlinks.count == 3


def test_mirror_keeps_manifest_until_first_change(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"1")
    dst = stores.LocalStore(str(tmp_path / "dst"), managed=True, role="dest")
    transfer = transfer_utils.Transfer(LocalParams(), retries=0)
    calls = []
    sync.sync(stores.LocalStore(str(src)), dst, transfer, before_change=lambda: calls.append(1))
    assert calls == [1]
    sync.sync(stores.LocalStore(str(src)), dst, transfer, before_change=lambda: calls.append(1))
    assert calls == [1]


def test_write_file_can_read_back_what_it_wrote(tmp_path):
    # Large downloads hash the temporary file after boto3 wrote it: the handle must be readable too.
    def fill(handle):
        handle.write(b"abc" * 1000)
        handle.flush()
        handle.seek(0)
        return localfs.sha256_fileobj(handle)
    sha = localfs.write_file(str(tmp_path), ["f"], fill)
    assert sha == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_concurrent_first_writes_create_the_destination_once(tmp_path):
    # Many workers start at once on a destination that does not exist yet: none may fail on the race.
    src = tmp_path / "src"
    for index in range(64):
        (src / str(index)).mkdir(parents=True)
        (src / str(index) / "f").write_bytes(b"x")
    for attempt in range(5):
        result, _rows = sync.sync(stores.LocalStore(str(src)), stores.LocalStore(str(tmp_path / ("dst%d" % attempt) / "deep")),
                                  transfer_utils.Transfer(LocalParams(), retries=0), concurrency=32)
        assert result.failures.count == 0 and result.copied == 64


def test_snapshot_removes_only_stale_partial_snapshots(tmp_path):
    import time
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"1")
    repo = tmp_path / "repo"
    stale, young = repo / ".mlflowops-partial-20200101T000000Z", repo / ".mlflowops-partial-20990101T000000Z"
    for path in (stale, young):
        (path / "x").mkdir(parents=True)
    old = time.time() - 7200
    os.utime(str(stale), (old, old))
    result, info = snapshots.local_snapshot(stores.LocalStore(str(src)), str(repo), transfer_utils.Transfer(LocalParams(), retries=0), {})
    assert info["created"] and result.stale_temps_removed == 1
    assert not stale.exists() and young.exists()
    assert sorted(os.listdir(str(repo))) == sorted([young.name, info["snapshot"]])
