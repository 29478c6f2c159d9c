# -*- coding: utf-8 -*-
"""backup_offsite's pure decisions: keys, what to upload, what to prune offsite, what to fetch."""

import datetime
import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backup_offsite as bo
from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

OURS = dict(engine="sqlite", location="sqlite:////srv/mlflow.db", prefix="mlflow")
OTHER = dict(engine="sqlite", location="sqlite:////srv/other.db", prefix="mlflow")


def when(day):
    return datetime.datetime(2026, 1, day, 2, 0, tzinfo=datetime.timezone.utc)


def name(day):
    return "mlflow-sqlite-202601%02dT020000000000Z.db" % day


def manifest(day, identity="ours", size=10, **extra):
    identity = OURS if identity == "ours" else identity
    data = dict(format_version=1, file=name(day), engine="sqlite", format="sqlite", compression="none",
                size_bytes=size, sha256="a" * 64, created_at=backups.iso(when(day)), store=identity)
    data.update(extra)
    return data


def remote(days, identity="ours", missing=()):
    listing, manifests = {}, {}
    for day in days:
        manifests[name(day)] = manifest(day, identity)
        listing[name(day) + ".manifest.json"] = 300
        if day not in missing:
            listing[name(day)] = 10
    return listing, manifests


# ---------------------------------------------------------------- keys

def test_host_base_is_one_component_with_a_trailing_slash():
    assert bo.host_base("backups/", "web1") == "backups/web1/"
    assert bo.host_base("", "web1") == "web1/"
    assert bo.host_base("/a/b/", "h.example.com") == "a/b/h.example.com/"
    for bad in ("", ".", "..", "a/b", "a b"):
        with pytest.raises(MaintenanceError):
            bo.host_base("x", bad)
    with pytest.raises(MaintenanceError):
        bo.host_base("a/../b", "web1")


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "", "a\\b", "a\x00b"])
def test_safe_relpath_refuses_paths_out_of_the_destination(rel):
    with pytest.raises(MaintenanceError):
        bo.safe_relpath(rel)


def test_safe_relpath_keeps_plain_relative_paths():
    assert bo.safe_relpath("toc.dat") == "toc.dat"
    assert bo.safe_relpath("a/b.dat.gz") == "a/b.dat.gz"


def test_set_objects_orders_data_then_sidecars_and_refuses_unsafe_names():
    objs = bo.set_objects(name(1), manifest(1), [(".set.json", "s" * 64, 5)])
    assert [(o["rel"], o["kind"]) for o in objs] == [(name(1), "data"), (name(1) + ".set.json", "meta")]
    directory = manifest(1, format="directory", files={"toc.dat": "b" * 64, "3001.dat.gz": "c" * 64})
    assert [o["rel"] for o in bo.set_objects(name(1), directory)] == [name(1) + "/3001.dat.gz", name(1) + "/toc.dat"]
    with pytest.raises(MaintenanceError):
        bo.set_objects(name(1), manifest(1, format="directory", files={"../../etc/cron.d/x": "b" * 64}))
    for bad in ("../x", ".hidden", "a/b", "notabackup"):
        with pytest.raises(MaintenanceError):
            bo.set_objects(bad, manifest(1))


# ---------------------------------------------------------------- what is offsite

def test_offsite_sets_status_and_ownership():
    listing, manifests = remote([1, 2, 3], missing=(2,))
    manifests[name(4)] = manifest(4, OTHER)
    listing[name(4)] = 10
    manifests[name(5)] = "manifest unreadable"
    manifests[name(6)] = manifest(6, None)
    listing[name(6)] = 10
    sets = dict((s["name"], s) for s in bo.offsite_sets(listing, manifests, OURS, "mlflow"))
    assert sets[name(1)]["complete"] and sets[name(1)]["ours"]
    assert not sets[name(2)]["complete"] and sets[name(2)]["ours"]
    assert sets[name(4)]["complete"] and not sets[name(4)]["ours"]
    assert not sets[name(5)]["ours"] and sets[name(5)]["manifest"] is None
    assert not sets[name(6)]["ours"]  # no identity recorded: never ours
    listing[name(3)] = 9
    assert not dict((s["name"], s) for s in bo.offsite_sets(listing, manifests, OURS))[name(3)]["complete"]


def test_manifest_names_only_directly_under_the_host_base():
    listing = {name(1) + ".manifest.json": 1, "sub/" + name(2) + ".manifest.json": 1, name(3): 1}
    assert bo.manifest_names(listing) == [name(1)]


def test_objects_to_upload_skips_what_is_there_and_sends_the_manifest_last_when_data_moves():
    objs = bo.set_objects(name(1), manifest(1), [(".set.json", "s" * 64, 5)])
    objs.append(dict(rel=name(1) + ".manifest.json", kind="manifest", sha256="m" * 64, size=300))
    listing = {name(1): 10, name(1) + ".set.json": 5, name(1) + ".manifest.json": 300}
    shas = {name(1) + ".set.json": "s" * 64, name(1) + ".manifest.json": "m" * 64}
    assert bo.objects_to_upload(objs, listing, shas) == []
    assert [o["kind"] for o in bo.objects_to_upload(objs, {}, {})] == ["data", "meta", "manifest"]
    # A changed set manifest alone goes up alone; a short data object takes the manifest with it.
    assert [o["kind"] for o in bo.objects_to_upload(objs, listing, dict(shas, **{name(1) + ".set.json": "x"}))] == ["meta"]
    assert [o["kind"] for o in bo.objects_to_upload(objs, dict(listing, **{name(1): 9}), shas)] == ["data", "manifest"]


# ---------------------------------------------------------------- push plan

def local(days):
    return [dict(name=name(day), created_at=when(day)) for day in days]


def plan(local_days, remote_days, policy, identity="ours", missing=()):
    listing, manifests = remote(remote_days, identity, missing)
    return bo.plan_push(local(local_days), bo.offsite_sets(listing, manifests, OURS), policy)


def test_plan_uploads_only_what_retention_keeps_so_the_next_run_is_unchanged():
    first = plan([1, 2, 3, 4], [], {"keep_last": 2})
    assert first["upload"] == [name(4), name(3)] and first["prune"] == []
    second = plan([1, 2, 3, 4], [3, 4], {"keep_last": 2})
    assert second["prune"] == [] and set(second["upload"]) == {name(3), name(4)}


def test_plan_prunes_only_complete_sets_of_this_store():
    result = plan([5], [1, 2, 3], {"keep_last": 1})
    assert result["upload"] == [name(5)] and result["prune"] == [name(3), name(2), name(1)]
    assert plan([5], [1, 2, 3], {"keep_last": 1}, identity=OTHER)["prune"] == []
    assert plan([5], [1, 2, 3], {"keep_last": 1}, missing=(1,))["prune"] == [name(3), name(2)]


def test_plan_never_prunes_the_newest_complete_offsite_set():
    result = plan([], [1, 2], {"keep_last": 1})
    assert result["prune"] == [name(1)]
    # An empty policy keeps everything.
    assert plan([3], [1, 2], {})["prune"] == []


def test_plan_keeps_the_newest_offsite_set_when_older_local_sets_win_a_period():
    result = plan([1], [2], {"keep_last": 1})
    assert result["prune"] == [] and result["upload"] == []


# ---------------------------------------------------------------- fetch choice

def test_choose_fetch_newest_complete_of_this_store_or_the_named_one():
    listing, manifests = remote([1, 2, 3], missing=(3,))
    manifests[name(4)] = manifest(4, OTHER)
    listing[name(4)] = 10
    sets = bo.offsite_sets(listing, manifests, OURS)
    assert bo.choose_fetch(sets, identity=OURS)["name"] == name(2)
    assert bo.choose_fetch(sets)["name"] == name(4)
    assert bo.choose_fetch(sets, name(1), OURS)["name"] == name(1)
    for bad in (name(3), name(4), name(9)):
        with pytest.raises(MaintenanceError):
            bo.choose_fetch(sets, bad, OURS)
    with pytest.raises(MaintenanceError, match="no complete offsite set"):
        bo.choose_fetch([], identity=OURS)


def test_prune_keys_manifest_first_and_only_keys_the_manifest_names():
    listing = {name(1) + ".manifest.json": 1, name(1): 10, name(1) + ".set.json": 3, name(1) + "-extra": 1}
    assert bo.prune_keys(name(1), manifest(1), listing) == [name(1) + ".manifest.json", name(1), name(1) + ".set.json"]


def test_listing_claims_the_set_and_artifact_manifests_of_a_backup(tmp_path):
    path = os.path.join(str(tmp_path), name(1))
    with open(path, "wb") as handle:
        handle.write(b"x" * 10)
    data = manifest(1, sha256=fsutil.file_sha256(path))
    fsutil.write_json_atomic(backups.manifest_path_for(path), data)
    for suffix in backups.SIDECAR_SUFFIXES:
        fsutil.write_bytes_atomic(path + suffix, b"{}")
    items = backups.list_backups(str(tmp_path), "mlflow")
    assert [(i["name"], i["status"]) for i in items] == [(name(1), "complete")]
