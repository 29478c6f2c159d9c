# -*- coding: utf-8 -*-
"""artifacts_backup trust regressions (issue 9): symlinks in dest and src, reserved names, crash leftovers,
validation before side effects, file modes, a dead S3 endpoint and a trickling one. Real files, real moto S3."""

import json
import os
import stat
import threading
import time

import pytest

from harness.faults import TrickleServer
from harness.plays import module_play
from harness.services import MotoS3

MANIFEST = ".mlflowops-manifest.json"
MARKER = ".mlflowops-store.json"


def s3_args(moto):
    return dict(endpoint_url=moto.endpoint_url, aws_access_key=moto.access_key, aws_secret_key=moto.secret_key,
                region=moto.region)


play = module_play("artifacts_backup")


def write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def tree(root):
    """{relative path: kind} of everything below root, links not followed."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            kind = "link" if os.path.islink(path) else ("dir" if os.path.isdir(path) else "file")
            found[os.path.relpath(path, root)] = kind
    return found


def keys_under(client, bucket, prefix=""):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


# ---------------------------------------------------------------- destination symlinks, crash leftovers


def test_symlinked_dest_directory_never_receives_data_and_old_manifest_goes(moto_s3, tmp_path):
    src, dest, outside = str(tmp_path / "src"), str(tmp_path / "dest"), str(tmp_path / "outside")
    write(os.path.join(src, "sub", "f"), b"secret-run-data")
    write(os.path.join(src, "keep", "g"), b"g")
    os.makedirs(outside)
    write(os.path.join(outside, "victim"), b"original")
    args = {"src": src, "dest": dest}
    results, run = play(("first", args))
    assert results["first"]["_status"] == "ok", run.stdout
    assert os.path.isfile(os.path.join(dest, MANIFEST))

    # Plant links in the destination: a directory link and a file link pointing outside it; change the source.
    import shutil
    shutil.rmtree(os.path.join(dest, "sub"))
    os.symlink(outside, os.path.join(dest, "sub"))
    os.symlink(os.path.join(outside, "victim"), os.path.join(dest, "keep", "h"))
    write(os.path.join(src, "keep", "h"), b"new file")
    write(os.path.join(src, "keep", "g"), b"changed g")
    bucket = moto_s3.create_bucket()
    client = moto_s3.client()
    client.put_object(Bucket=bucket, Key="m/sub/f", Body=b"from s3")
    s3_dest = str(tmp_path / "s3dest")
    os.makedirs(s3_dest)
    os.symlink(outside, os.path.join(s3_dest, "sub"))
    results, run = play(("planted", args), ("planted s3", dict(s3_args(moto_s3), src="s3://%s/m" % bucket, dest=s3_dest)),
                        ("verify", dict(args, mode="verify")))
    for name in ("planted", "planted s3"):
        planted = results[name]
        assert planted["_status"] == "failed", run.stdout
        assert "symlink" in planted["msg"] and "refusing to write through it" in planted["msg"], planted["msg"]
        assert "Traceback" not in planted["msg"]
    # Nothing was written outside dest: the victim is untouched, no file (not even a temporary one) appeared there.
    assert sorted(os.listdir(outside)) == ["victim"]
    assert read(os.path.join(outside, "victim")) == b"original"
    # The file link was replaced by a real file (not written through); the other changes went in.
    assert not os.path.islink(os.path.join(dest, "keep", "h"))
    assert read(os.path.join(dest, "keep", "h")) == b"new file"
    assert read(os.path.join(dest, "keep", "g")) == b"changed g"
    # The old manifest was removed before the first change and, the pass having failed, none replaced it.
    assert not os.path.exists(os.path.join(dest, MANIFEST))
    assert results["verify"]["verified"] is False and "sub/f" in results["verify"]["missing"]


def test_stale_temp_files_are_cleaned_and_fresh_ones_kept(tmp_path):
    src, dest = str(tmp_path / "src"), str(tmp_path / "dest")
    write(os.path.join(src, "a", "f"), b"f")
    results, run = play(("first", {"src": src, "dest": dest}))
    assert results["first"]["_status"] == "ok", run.stdout
    stale = os.path.join(dest, "a", ".mlflowops-tmp-" + "a" * 32)
    old_style = os.path.join(dest, ".mlflowops-tmp-f.0123abcd")
    fresh = os.path.join(dest, "a", ".mlflowops-tmp-" + "b" * 32)
    for path in (stale, old_style, fresh):
        write(path, b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    results, run = play(("check", {"src": src, "dest": dest}, {"check_mode": True}),
                        ("clean", {"src": src, "dest": dest}), ("again", {"src": src, "dest": dest}))
    assert os.path.exists(fresh)
    assert not os.path.exists(stale) and not os.path.exists(old_style)
    clean = results["clean"]
    assert clean["_status"] == "ok", run.stdout
    assert clean["changed"] is True and clean["stale_temps_removed"] == 2
    assert sorted(clean["stale_temp_files"]) == [".mlflowops-tmp-f.0123abcd", "a/.mlflowops-tmp-" + "a" * 32]
    assert results["check"]["stale_temp_files"] and results["check"]["stale_temps_removed"] == 0
    assert results["again"]["changed"] is False


# ---------------------------------------------------------------- source symlinks


def test_source_symlinks_are_not_followed_by_default_and_reported(moto_s3, tmp_path):
    src = str(tmp_path / "src")
    secret = str(tmp_path / "secret.txt")
    write(secret, b"root-only-secret")
    os.chmod(secret, 0o600)
    write(os.path.join(src, "real", "data.bin"), b"data")
    os.symlink(secret, os.path.join(src, "real", "outside-link"))
    os.symlink(os.path.join(src, "real", "data.bin"), os.path.join(src, "inside-link"))
    os.symlink(os.path.join(src, "real"), os.path.join(src, "dir-link"))
    os.symlink(str(tmp_path / "nowhere"), os.path.join(src, "dangling"))
    os.symlink(src, os.path.join(src, "real", "loop"))
    bucket = moto_s3.create_bucket()
    dests = dict((name, str(tmp_path / name)) for name in ("skip", "within", "follow"))
    started = time.monotonic()
    results, run = play(("skip", {"src": src, "dest": dests["skip"]}),
                        ("skip again", {"src": src, "dest": dests["skip"]}),
                        ("upload", dict(s3_args(moto_s3), src=src, dest="s3://%s/up" % bucket)),
                        ("within", {"src": src, "dest": dests["within"], "symlinks": "follow_within"}),
                        ("within again", {"src": src, "dest": dests["within"], "symlinks": "follow_within"}),
                        ("follow", {"src": src, "dest": dests["follow"], "symlinks": "follow"}))
    assert time.monotonic() - started < 120
    skip = results["skip"]
    assert skip["_status"] == "ok", run.stdout
    assert skip["copied"] == 1
    reasons = dict((item["path"], item["reason"]) for item in skip["skipped_symlinks"])
    assert sorted(reasons) == ["dangling", "dir-link", "inside-link", "real/loop", "real/outside-link"]
    assert reasons["dangling"] == "dangling link"
    assert skip["skipped_symlinks_count"] == 5 and skip["skipped_symlinks_truncated"] is False
    assert tree(dests["skip"]) == {"real": "dir", "real/data.bin": "file", MANIFEST: "file", MARKER: "file"}
    assert results["skip again"]["changed"] is False
    assert keys_under(moto_s3.client(), bucket) == ["up/real/data.bin"]

    within = results["within"]
    assert within["_status"] == "ok", run.stdout
    reasons = dict((item["path"], item["reason"]) for item in within["skipped_symlinks"])
    assert reasons["real/outside-link"].startswith("points outside src")
    assert reasons["dangling"] == "dangling link"
    assert "loop" in reasons["real/loop"] or "cycle" in reasons["real/loop"]
    files = tree(dests["within"])
    assert files["inside-link"] == "file" and files["dir-link/data.bin"] == "file"
    assert "real/outside-link" not in files
    assert read(os.path.join(dests["within"], "inside-link")) == b"data"
    assert results["within again"]["changed"] is False
    follow = results["follow"]
    assert follow["_status"] == "ok", run.stdout
    assert read(os.path.join(dests["follow"], "real", "outside-link")) == b"root-only-secret"
    assert not any("secret" in open(os.path.join(root, name), "rb").read().decode("latin-1")
                   for root, _dirs, names in os.walk(dests["skip"]) for name in names)


# ---------------------------------------------------------------- reserved names


def test_reserved_names_round_trip(moto_s3, tmp_path):
    client = moto_s3.client()
    bucket = moto_s3.create_bucket()
    objects = {"m/.mlflowops-manifest.json": b'{"user": "data"}', "m/.mlflowops-tmp-x": b"user tmp",
               "m/sub/.mlflowops-tmp-notes.txt": b"notes", "m/.mlflowops-esc-y": b"esc", "m/plain": b"plain"}
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    dest = str(tmp_path / "mirror")
    back = moto_s3.create_bucket()
    s3 = s3_args(moto_s3)
    args = dict(s3, src="s3://%s/m" % bucket, dest=dest)
    results, run = play(("first", args), ("second", args), ("verify", dict(args, mode="verify", compare="checksum")),
                        ("restore", dict(s3, src=dest, dest="s3://%s/r" % back)),
                        ("restore again", dict(s3, src=dest, dest="s3://%s/r" % back)))
    first = results["first"]
    assert first["_status"] == "ok", run.stdout
    assert first["copied"] == 5
    with open(os.path.join(dest, MANIFEST)) as handle:
        manifest = json.load(handle)
    assert manifest["tool"] == "mlflowops.maintenance.artifacts_backup"
    assert sorted(manifest["files"]) == sorted(key[2:] for key in objects)
    assert read(os.path.join(dest, ".mlflowops-esc-manifest.json")) == b'{"user": "data"}'
    assert results["second"]["changed"] is False and results["second"]["copied"] == 0
    assert results["verify"]["verified"] is True
    assert results["restore"]["copied"] == 5 and results["restore"]["changed"] is True
    restored = dict((key[2:], client.get_object(Bucket=back, Key=key)["Body"].read()) for key in keys_under(client, back))
    assert restored == dict((key[2:], body) for key, body in objects.items())
    assert results["restore again"]["changed"] is False

    # A local source with such names (not written by this module) is copied whole, and verify sees a loss.
    local_src = str(tmp_path / "local")
    write(os.path.join(local_src, ".mlflowops-tmp-notes.txt"), b"mine")
    write(os.path.join(local_src, "d", ".mlflowops-manifest.json"), b"mine too")
    local_dest = str(tmp_path / "local-mirror")
    largs = {"src": local_src, "dest": local_dest}
    results, run = play(("copy", largs), ("verify", dict(largs, mode="verify", compare="checksum")))
    assert results["copy"]["copied"] == 2, run.stdout
    assert results["verify"]["verified"] is True
    os.unlink(os.path.join(local_dest, ".mlflowops-esc-tmp-notes.txt"))
    results, run = play(("verify", dict(largs, mode="verify", compare="checksum")))
    assert results["verify"]["verified"] is False and results["verify"]["missing"] == [".mlflowops-tmp-notes.txt"]


# ---------------------------------------------------------------- validation, prefixes, modes


def test_invalid_options_fail_before_any_side_effect(moto_s3, tmp_path):
    src = str(tmp_path / "src")
    write(os.path.join(src, "f"), b"f")
    dest = str(tmp_path / "never")
    bucket = moto_s3.create_bucket()
    s3 = s3_args(moto_s3)
    cases = {
        "keep_last -1": ({"src": src, "dest": dest, "mode": "snapshot", "retention": {"keep_last": -1}}, "keep_last"),
        "keep_daily -2": ({"src": src, "dest": dest, "mode": "snapshot", "retention": {"keep_daily": -2}}, "keep_daily"),
        "concurrency 0": ({"src": src, "dest": dest, "concurrency": 0}, "concurrency"),
        "dotdot prefix": (dict(s3, src=src, dest="s3://%s/a/../x" % bucket), "'..'"),
        "empty component": (dict(s3, src=src, dest="s3://%s/a//x" % bucket), "empty"),
        "leading slash": (dict(s3, src=src, dest="s3://%s//x" % bucket), "must not start with '/'"),
        "bad snapshot name": ({"src": src, "dest": dest, "src_snapshot": "../etc"}, "src_snapshot"),
        "copy threshold": ({"src": src, "dest": dest, "copy_multipart_threshold_mb": 1}, "copy_multipart_threshold_mb"),
    }
    results, run = play(*[(name, args) for name, (args, _words) in cases.items()])
    for name, (_args, words) in cases.items():
        result = results[name]
        assert result["_status"] == "failed", (name, run.stdout)
        assert words in result["msg"], (name, result["msg"])
    assert not os.path.exists(dest)
    assert keys_under(moto_s3.client(), bucket) == []


def test_multi_level_prefix_and_private_modes(moto_s3, tmp_path):
    src = str(tmp_path / "src")
    write(os.path.join(src, "x", "y", "f.txt"), b"content")
    os.chmod(os.path.join(src, "x", "y", "f.txt"), 0o644)
    bucket = moto_s3.create_bucket()
    s3 = s3_args(moto_s3)
    back, snaps = str(tmp_path / "back"), str(tmp_path / "snaps")
    results, run = play(("up", dict(s3, src=src, dest="s3://%s/a/b/" % bucket)),
                        ("down", dict(s3, src="s3://%s/a/b" % bucket, dest=back)),
                        ("snapshot", {"src": src, "dest": snaps, "mode": "snapshot"}))
    assert results["up"]["_status"] == "ok" and results["down"]["_status"] == "ok", run.stdout
    assert keys_under(moto_s3.client(), bucket) == ["a/b/x/y/f.txt"]
    assert read(os.path.join(back, "x", "y", "f.txt")) == b"content"
    snapshot = os.path.join(snaps, results["snapshot"]["snapshot"])
    for root in (back, snaps, snapshot):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
    for root in (back, snapshot):
        for directory, dirs, files in os.walk(root):
            for name in dirs:
                assert stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode) == 0o700, name
            for name in files:
                assert stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(os.path.join(root, MANIFEST)).st_mode) == 0o600


# ---------------------------------------------------------------- dead and trickling endpoints


def test_dead_s3_endpoint_stops_fast_with_partial_progress(tmp_path):
    server = MotoS3().start()
    try:
        client = server.client()
        bucket = server.create_bucket()
        for index in range(300):
            client.put_object(Bucket=bucket, Key="m/%03d/f.bin" % index, Body=os.urandom(2048))
        dest = str(tmp_path / "mirror")
        killed = {}

        def killer():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if os.path.isdir(dest) and len(os.listdir(dest)) >= 30:
                    server.kill()
                    killed["at"] = time.monotonic()
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=killer, daemon=True)
        watcher.start()
        results, run = play(("mirror", dict(s3_args(server), src="s3://%s/m" % bucket, dest=dest, concurrency=2,
                                            s3_connect_timeout=2, s3_read_timeout=5)))
        ended = time.monotonic()
        watcher.join(5)
    finally:
        server.stop()
    assert "at" in killed, "the copy ended before the endpoint was killed: " + run.stdout[-2000:]
    result = results["mirror"]
    assert result["_status"] == "failed", run.stdout
    assert "consecutive" in result["msg"] and "copied" in result["msg"], result["msg"]
    assert 0 < result["copied"] < 300
    print("ended %.1fs after the kill" % (ended - killed["at"]))
    assert ended - killed["at"] < 20, ended - killed["at"]
    assert not os.path.exists(os.path.join(dest, MANIFEST))


@pytest.mark.parametrize("mode", ["all", "body"])
def test_trickling_s3_endpoint_stops_at_the_deadline(tmp_path, mode):
    server = TrickleServer(interval=1.0, mode=mode).start()
    try:
        started = time.monotonic()
        results, run = play(("trickle", {"src": "s3://bucket/prefix", "dest": str(tmp_path / "never"),
                                         "endpoint_url": server.url, "aws_access_key": "AKIAEXAMPLE",
                                         "aws_secret_key": "not-a-real-secret", "region": "us-east-1",
                                         "deadline": 6, "s3_read_timeout": 30, "s3_retries": 0}))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    result = results["trickle"]
    assert result["_status"] == "failed", run.stdout
    assert "deadline" in result["msg"], result["msg"]
    assert elapsed < 40, elapsed
    assert not os.path.exists(str(tmp_path / "never"))
