# -*- coding: utf-8 -*-
"""artifacts_backup through Ansible against the real moto S3 server and local directories."""

import hashlib
import json
import os
import sys
import time
import uuid

import pytest

from harness import datagen
from harness.plays import module_play
from harness.runner import run_module
from harness.services import MotoS3, SilentListener, closed_port_url

OBJECTS = 2500
BIG = 9 * 1024 * 1024
MANIFEST = ".mlflowops-manifest.json"
# The module's own bookkeeping files at the root of a local destination (not copies of source files).
OWN_FILES = (MANIFEST, ".mlflowops-store.json")


def s3_args(moto):
    return dict(endpoint_url=moto.endpoint_url, aws_access_key=moto.access_key, aws_secret_key=moto.secret_key,
                region=moto.region)


def keys_under(client, bucket, prefix):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def sizes_under(client, bucket, prefix):
    """{key relative to prefix: size} of every object under the prefix (all pages)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix):]] = item["Size"]
    return found


def object_sha256(moto, bucket, key):
    """sha256 of an object's bytes, read back from the server.

    Response checksums are not validated by botocore here: moto keeps a multipart source's composite
    CRC32 on a single-part CopyObject result, which botocore rejects although the bytes are right;
    the sha256 compared by the test is the real check.
    """
    client = _READERS.get(moto.endpoint_url)
    if client is None:
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
        client = _READERS[moto.endpoint_url] = boto3.client(
            "s3", endpoint_url=moto.endpoint_url, aws_access_key_id=moto.access_key,
            aws_secret_access_key=moto.secret_key, region_name=moto.region,
            config=Config(response_checksum_validation="when_required"))
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


_READERS = {}


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_of(names, count=60):
    """A spread-out, deterministic sample of the sorted names, always with the largest first and last."""
    names = sorted(names)
    step = max(1, len(names) // count)
    return sorted(set(names[::step] + names[-1:]))


def local_files(root):
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


@pytest.fixture(scope="module")
def source_bucket(moto_s3):
    """2,500 artifacts under s3://<bucket>/mlflow laid out as MLflow does; one is a 9 MiB multipart upload."""
    from boto3.s3.transfer import TransferConfig
    client = moto_s3.client()
    bucket = moto_s3.create_bucket()
    run_ids = [uuid.uuid4().hex for _index in range(OBJECTS // 5)]
    files = dict(("file-%d.txt" % index, ("content %d " % index).encode() * 20) for index in range(5))
    written = datagen.write_artifacts("s3://%s/mlflow" % bucket, "7", run_ids, files, s3_client=client)
    assert written == OBJECTS
    big_key = "mlflow/" + datagen.artifact_key("7", run_ids[0], "file-0.txt")
    path = os.path.join(moto_s3.root, "big.bin")
    with open(path, "wb") as handle:
        handle.write(os.urandom(BIG))
    client.upload_file(path, bucket, big_key, Config=TransferConfig(multipart_threshold=5 * 2 ** 20,
                                                                    multipart_chunksize=5 * 2 ** 20))
    assert "-" in client.head_object(Bucket=bucket, Key=big_key)["ETag"]
    return bucket


play = module_play("artifacts_backup")


@pytest.fixture(scope="module")
def small_bucket(moto_s3):
    client = moto_s3.client()
    bucket = moto_s3.create_bucket()
    run_ids = [uuid.uuid4().hex for _index in range(10)]
    files = dict(("f%d.txt" % index, ("small %d " % index).encode() * 10) for index in range(4))
    datagen.write_artifacts("s3://%s/mlflow" % bucket, "3", run_ids, files, s3_client=client)
    return bucket


def test_s3_to_s3_copies_every_object_and_rerun_copies_nothing(moto_s3, source_bucket):
    client = moto_s3.client()
    dest_bucket = moto_s3.create_bucket()
    # The 9 MiB multipart object goes through the managed multipart copy (UploadPartCopy).
    args = dict(s3_args(moto_s3), src="s3://%s/mlflow" % source_bucket, dest="s3://%s/backup" % dest_bucket,
                copy_multipart_threshold_mb=8)
    results, run = play(("first", args), ("second", args))
    first, second = results["first"], results["second"]
    assert first["_status"] == "ok", run.stdout
    assert first["changed"] is True
    assert first["copied"] == OBJECTS
    assert first["failure_count"] == 0 and first["failures"] == []
    copied = keys_under(client, dest_bucket, "backup/")
    assert len(copied) == OBJECTS
    source = sorted(key[len("mlflow/"):] for key in keys_under(client, source_bucket, "mlflow/"))
    assert sorted(key[len("backup/"):] for key in copied) == source
    # The bytes, not just the names: every size matches the source, and the content of the 9 MiB
    # multipart object and of a spread-out sample hashes the same as the source object.
    source_sizes = sizes_under(client, source_bucket, "mlflow/")
    assert sizes_under(client, dest_bucket, "backup/") == source_sizes
    big = [key for key, size in source_sizes.items() if size == BIG]
    assert len(big) == 1
    for key in sample_of(source_sizes) + big:
        copied_sha = object_sha256(moto_s3, dest_bucket, "backup/" + key)
        assert copied_sha == object_sha256(moto_s3, source_bucket, "mlflow/" + key), key
    assert second["_status"] == "ok"
    assert second["changed"] is False
    assert second["copied"] == 0 and second["copied_bytes"] == 0
    assert second["unchanged_count"] == OBJECTS


def test_s3_to_local_copies_every_object_and_rerun_copies_nothing(moto_s3, source_bucket, tmp_path):
    dest = str(tmp_path / "mirror")
    args = dict(s3_args(moto_s3), src="s3://%s/mlflow" % source_bucket, dest=dest)
    results, run = play(("first", args), ("second", args))
    first, second = results["first"], results["second"]
    assert first["_status"] == "ok", run.stdout
    assert first["copied"] == OBJECTS
    files = [name for name in local_files(dest) if name not in OWN_FILES]
    assert len(files) == OBJECTS
    with open(os.path.join(dest, MANIFEST)) as handle:
        manifest = json.load(handle)
    assert manifest["file_count"] == OBJECTS
    # Every copied file has the source object's size; the 9 MiB multipart object and a sample hash
    # the same as the SOURCE objects (and the manifest agrees with them).
    client = moto_s3.client()
    source_sizes = sizes_under(client, source_bucket, "mlflow/")
    assert sorted(source_sizes) == files
    assert dict((name, os.path.getsize(os.path.join(dest, name))) for name in files) == source_sizes
    big = [key for key, size in source_sizes.items() if size == BIG]
    assert len(big) == 1
    for sample in sample_of(files) + big:
        expected = object_sha256(moto_s3, source_bucket, "mlflow/" + sample)
        assert file_sha256(os.path.join(dest, sample)) == expected, sample
        assert manifest["files"][sample]["sha256"] == expected
    assert second["_status"] == "ok"
    assert second["changed"] is False and second["copied"] == 0 and second["copied_bytes"] == 0


def test_checksum_catches_same_size_change_and_verify_reports_removed(moto_s3, small_bucket, tmp_path):
    dest = str(tmp_path / "mirror")
    args = dict(s3_args(moto_s3), src="s3://%s/mlflow" % small_bucket, dest=dest)
    results, run = play(("first", args))
    assert results["first"]["copied"] == 40, run.stdout
    files = [name for name in local_files(dest) if name not in OWN_FILES]

    # A same-size change behind the backup's back, mtime restored: only content comparison sees it.
    sample = files[17]
    victim = os.path.join(dest, sample)
    info = os.stat(victim)
    with open(victim, "rb") as handle:
        original = handle.read()
    with open(victim, "wb") as handle:
        handle.write(b"X" * len(original))
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))
    results, run = play(("default", args), ("checksum", dict(args, compare="checksum")))
    assert results["default"]["changed"] is False, run.stdout
    checksum = results["checksum"]
    assert checksum["changed"] is True
    assert checksum["copied"] == 1 and checksum["copied_keys"] == [sample]
    with open(victim, "rb") as handle:
        assert handle.read() == original

    # An object removed from the backup is reported by verification, which writes nothing.
    gone = files[30]
    os.unlink(os.path.join(dest, gone))
    before = os.stat(os.path.join(dest, MANIFEST)).st_mtime_ns
    results, run = play(("verify", dict(args, mode="verify")),
                        ("verify content", dict(args, mode="verify", compare="checksum")),
                        ("predict", args, {"check_mode": True}))
    for name in ("verify", "verify content"):
        verify = results[name]
        assert verify["_status"] == "ok", run.stdout
        assert verify["changed"] is False
        assert verify["verified"] is False
        assert verify["missing"] == [gone]
        assert verify["counts"] == {"missing": 1, "different": 0, "extraneous": 0}
    predicted = results["predict"]
    assert predicted["changed"] is True and predicted["copied"] == 1
    assert not os.path.exists(os.path.join(dest, gone))
    assert os.stat(os.path.join(dest, MANIFEST)).st_mtime_ns == before


def test_check_mode_writes_nothing(moto_s3, small_bucket, tmp_path):
    client = moto_s3.client()
    dest_bucket = moto_s3.create_bucket()
    local = str(tmp_path / "never")
    src = "s3://%s/mlflow" % small_bucket
    check = {"check_mode": True}
    results, run = play(("to s3", dict(s3_args(moto_s3), src=src, dest="s3://%s/b" % dest_bucket), check),
                        ("to local", dict(s3_args(moto_s3), src=src, dest=local), check),
                        ("snapshot", dict(s3_args(moto_s3), src=src, dest=local + "-snap", mode="snapshot"), check),
                        ("s3 snapshot", dict(s3_args(moto_s3), src=src, dest="s3://%s/s" % dest_bucket,
                                             mode="snapshot"), check))
    for result in results.values():
        assert result["_status"] == "ok", run.stdout
        assert result["changed"] is True
        assert result["copied_bytes"] > 0
    for name in ("to s3", "to local", "snapshot"):
        assert results[name]["copied"] == 40
    # Content-addressed by ETag: the 40 objects hold 4 distinct contents.
    assert results["s3 snapshot"]["copied"] == 4 and results["s3 snapshot"]["unchanged_count"] == 36
    assert keys_under(client, dest_bucket, "") == []
    assert not os.path.exists(local) and not os.path.exists(local + "-snap")


def make_tree(root, count=20, size=100):
    for index in range(count):
        path = os.path.join(root, str(index % 3), "run%02d" % index, "artifacts", "f.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(os.urandom(size))


def test_local_to_local_and_local_to_s3_mirror_with_deletion(moto_s3, tmp_path):
    src = str(tmp_path / "src")
    make_tree(src)
    dest = str(tmp_path / "dest")
    args = {"src": src, "dest": dest}
    results, run = play(("first", args), ("again", args))
    assert results["first"]["copied"] == 20 and results["first"]["changed"] is True, run.stdout
    assert [f for f in local_files(dest) if f not in OWN_FILES] == local_files(src)
    for name in local_files(src):
        assert file_sha256(os.path.join(dest, name)) == file_sha256(os.path.join(src, name)), name
    assert results["again"]["changed"] is False and results["again"]["copied"] == 0

    os.unlink(os.path.join(src, "0", "run00", "artifacts", "f.txt"))
    bucket = moto_s3.create_bucket()
    up_args = dict(s3_args(moto_s3), src=src, dest="s3://%s/up" % bucket)
    results, run = play(("kept", args), ("pruned", dict(args, delete_extraneous=True)), ("up", up_args),
                        ("up again", up_args))
    assert results["kept"]["deleted"] == 0 and results["kept"]["extraneous"] == ["0/run00/artifacts/f.txt"], run.stdout
    assert results["pruned"]["deleted"] == 1 and not os.path.exists(os.path.join(dest, "0", "run00"))
    assert results["up"]["copied"] == 19
    client = moto_s3.client()
    assert sorted(sizes_under(client, bucket, "up/")) == local_files(src)
    for name in local_files(src):
        assert object_sha256(moto_s3, bucket, "up/" + name) == file_sha256(os.path.join(src, name)), name
    meta = moto_s3.client().head_object(Bucket=bucket, Key="up/1/run01/artifacts/f.txt")["Metadata"]
    with open(os.path.join(src, "1", "run01", "artifacts", "f.txt"), "rb") as handle:
        assert meta["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert results["up again"]["changed"] is False and results["up again"]["copied"] == 0
    # A touched but identical file is settled by its ETag, not re-uploaded.
    os.utime(os.path.join(src, "1", "run01", "artifacts", "f.txt"), (time.time() + 60, time.time() + 60))
    results, run = play(("touched", up_args))
    assert results["touched"]["changed"] is False, run.stdout


def test_local_snapshots_share_inodes_and_retention(tmp_path):
    src = str(tmp_path / "src")
    make_tree(src, count=6)
    repo = str(tmp_path / "snapshots")
    args = {"src": src, "dest": repo, "mode": "snapshot", "retention": {"keep_last": 2}}
    results, run = play(("first", args), ("unchanged", args))
    first, unchanged = results["first"], results["unchanged"]
    assert first["changed"] is True and first["snapshot_created"] is True and first["copied"] == 6, run.stdout
    assert unchanged["changed"] is False and unchanged["snapshot"] == first["snapshot"]
    changed_file = os.path.join(src, "1", "run01", "artifacts", "f.txt")
    with open(changed_file, "wb") as handle:
        handle.write(b"new content")
    results, run = play(("second", args))
    second = results["second"]
    assert second["snapshot_created"] is True and second["copied"] == 1 and second["linked"] == 5, run.stdout
    a, b = first["snapshot"], second["snapshot"]
    same = os.path.join("2", "run02", "artifacts", "f.txt")
    assert os.stat(os.path.join(repo, a, same)).st_ino == os.stat(os.path.join(repo, b, same)).st_ino
    diff = os.path.join("1", "run01", "artifacts", "f.txt")
    assert os.stat(os.path.join(repo, a, diff)).st_ino != os.stat(os.path.join(repo, b, diff)).st_ino
    assert os.path.isfile(os.path.join(repo, b, MANIFEST))
    assert [f for f in local_files(os.path.join(repo, b)) if f not in OWN_FILES] == local_files(src)
    for name in local_files(src):
        assert file_sha256(os.path.join(repo, b, name)) == file_sha256(os.path.join(src, name)), name
    os.unlink(os.path.join(src, "0", "run00", "artifacts", "f.txt"))
    results, run = play(("third", args))
    third = results["third"]
    assert third["snapshot_created"] is True, run.stdout
    assert third["snapshots_removed"] == [a]
    assert sorted(os.listdir(repo)) == sorted([b, third["snapshot"]])
    # The snapshot still stands alone after its predecessor was removed.
    with open(os.path.join(repo, b, diff), "rb") as handle:
        assert handle.read() == b"new content"


def test_s3_snapshot_is_content_addressed_and_restores(moto_s3, tmp_path):
    src = str(tmp_path / "src")
    make_tree(src, count=8)
    bucket = moto_s3.create_bucket()
    args = dict(s3_args(moto_s3), src=src, dest="s3://%s/snaps" % bucket, mode="snapshot")
    results, run = play(("first", args))
    first = results["first"]
    assert first["copied"] == 8 and first["manifest"].endswith("/snapshots/%s.json" % first["snapshot"]), run.stdout
    with open(os.path.join(src, "2", "run02", "artifacts", "f.txt"), "wb") as handle:
        handle.write(b"changed")
    restored = str(tmp_path / "restored")
    results, run = play(("second", args),
                        ("restore", dict(s3_args(moto_s3), src="s3://%s/snaps" % bucket, src_snapshot="latest",
                                         dest=restored)))
    second = results["second"]
    assert second["snapshot_created"] is True and second["copied"] == 1 and second["unchanged_count"] == 7, run.stdout
    client = moto_s3.client()
    assert len(keys_under(client, bucket, "snaps/blobs/")) == 9
    assert len(keys_under(client, bucket, "snaps/snapshots/")) == 2
    back = results["restore"]
    assert back["_status"] == "ok" and back["copied"] == 8
    for name in local_files(src):
        with open(os.path.join(src, name), "rb") as a, open(os.path.join(restored, name), "rb") as b:
            assert a.read() == b.read()


class AuthMotoS3(MotoS3):
    """A moto server that checks credentials (none are valid)."""

    def start(self):
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
        self._spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], env=env)
        from harness.services import http_get, wait_until
        wait_until(lambda: http_get(self.endpoint_url + "/moto-api/")[0] == 200, 60, "moto server",
                   self.process, self.log_path)
        return self


def assert_failed_cleanly(result, run, words, dest=None):
    assert result["_status"] == "failed", run.stdout
    assert words in result["msg"], result["msg"]
    assert "Traceback" not in result.get("module_stderr", "") + result.get("msg", "")
    if dest:
        assert not os.path.exists(dest)


def test_bad_inputs_fail_clearly_and_write_nothing(moto_s3, source_bucket, tmp_path):
    dest = str(tmp_path / "never")
    base = s3_args(moto_s3)
    local_src = str(tmp_path / "src")
    make_tree(local_src, count=2)
    inner = os.path.join(local_src, "backup")
    listener = SilentListener().start()
    started = time.monotonic()
    try:
        results, run = play(
            ("missing src bucket", dict(base, src="s3://no-such-bucket-here/x", dest=dest)),
            ("missing dest bucket", dict(base, src=local_src, dest="s3://no-such-bucket-here/x")),
            ("dest inside src", {"src": local_src, "dest": inner}),
            ("s3 dest inside src", dict(base, src="s3://%s/mlflow" % source_bucket,
                                        dest="s3://%s/mlflow/copy" % source_bucket)),
            ("closed port", dict(base, endpoint_url=closed_port_url(), src="s3://b/x", dest=dest,
                                 s3_connect_timeout=2, s3_read_timeout=2, s3_retries=1)),
            ("silent endpoint", dict(base, endpoint_url=listener.url, src="s3://b/x", dest=dest,
                                     s3_connect_timeout=2, s3_read_timeout=2, s3_retries=0)),
            ("not a location", {"src": "ftp://example.com/x", "dest": dest}),
        )
    finally:
        listener.stop()
    assert time.monotonic() - started < 60
    expected = {
        "missing src bucket": "bucket 'no-such-bucket-here' does not exist",
        "missing dest bucket": "bucket 'no-such-bucket-here' does not exist",
        "dest inside src": "lies inside src",
        "s3 dest inside src": "lies inside src",
        "closed port": "cannot reach the S3 endpoint",
        "silent endpoint": "did not answer within s3_read_timeout",
        "not a location": "must be a local directory or s3://bucket/prefix",
    }
    for name, words in expected.items():
        assert_failed_cleanly(results[name], run, words, dest)
    assert not os.path.exists(inner)
    assert keys_under(moto_s3.client(), source_bucket, "mlflow/copy") == []


def test_wrong_credentials_fail_clearly_and_stay_secret(tmp_path):
    server = AuthMotoS3().start()
    try:
        dest = str(tmp_path / "never")
        result, run = run_module("artifacts_backup", {"src": "s3://any-bucket/mlflow", "dest": dest,
                                                      "endpoint_url": server.endpoint_url, "region": "us-east-1",
                                                      "aws_access_key": "AKIAWRONGKEY",
                                                      "aws_secret_key": "wrong-secret-value-123"}, verbosity=3)
    finally:
        server.stop()
    assert_failed_cleanly(result, run, "credentials were rejected", dest)
    assert "wrong-secret-value-123" not in run.stdout + run.stderr
