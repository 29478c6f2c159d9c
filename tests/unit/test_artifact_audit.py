# -*- coding: utf-8 -*-
"""artifact_audit: mapping runs onto the store by identity, ownership, refusal, and removal safety."""

import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit as audit
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

RUN_A, RUN_B, RUN_C, ORPHAN, RUN_E = ("a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32)


def fake_realpath(links):
    """A realpath that resolves the given {link: target} prefixes, then normalises."""
    def resolve(path):
        path = os.path.normpath(path)
        for link, target in links.items():
            if path == link or path.startswith(link + "/"):
                path = target + path[len(link):]
        return path
    return resolve


def test_normalize_relative():
    assert audit.normalize_relative("a//b/./c/") == "a/b/c"
    assert audit.normalize_relative("/a/../b") == "b"
    assert audit.normalize_relative("../x") is None
    assert audit.normalize_relative("") == ""


def test_store_identity_resolves_spellings_and_refuses_other_schemes():
    resolve = fake_realpath({"/link": "/real"})
    for spelling in ("/real", "/real/", "/real/./", "//real", "file:///real", "file://localhost/real/", "/link/"):
        assert audit.store_identity(spelling, resolve).root == "/real", spelling
    s3 = audit.store_identity("s3://bucket//mlflow/./", resolve)
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "bucket", "mlflow")
    for bad in ("gs://bucket/x", "http://host/x", "file://otherhost/x"):
        with pytest.raises(MaintenanceError):
            audit.store_identity(bad, resolve)


def test_locate_local_uris_by_real_path():
    resolve = fake_realpath({"/link": "/real", "/elsewhere-link": "/real/custom"})
    local = audit.store_identity("/link", resolve)
    assert audit.locate("mlflow-artifacts:/1/%s/artifacts" % RUN_A, local, resolve) == ("store", "1/%s/artifacts" % RUN_A)
    assert audit.locate("mlflow-artifacts://host:5000/1/x/artifacts", local, resolve) == ("store", "1/x/artifacts")
    assert audit.locate("file:///real/./7//r/artifacts", local, resolve) == ("store", "7/r/artifacts")
    assert audit.locate("/link/custom/r/artifacts/", local, resolve) == ("store", "custom/r/artifacts")
    assert audit.locate("/elsewhere-link/r/artifacts", local, resolve) == ("store", "custom/r/artifacts")
    assert audit.locate("/realistic/r/artifacts", local, resolve) == ("elsewhere", None), "a name prefix is not a parent"
    assert audit.locate("/other/r/artifacts", local, resolve) == ("elsewhere", None)
    assert audit.locate("s3://bucket/r/artifacts", local, resolve) == ("elsewhere", None)
    for unmappable in ("", None, "relative/path/artifacts", "gs://b/r", "file://host2/real/r", "mlflow-artifacts:/../x"):
        assert audit.locate(unmappable, local, resolve)[0] == "unmapped", unmappable


def test_locate_s3_uris_by_bucket_and_normalised_key():
    s3 = audit.store_identity("s3://bucket/mlflow/")
    assert audit.locate("s3://bucket/mlflow//3/r/artifacts", s3) == ("store", "3/r/artifacts")
    assert audit.locate("s3://bucket/mlflow-other/3/r", s3) == ("elsewhere", None)
    assert audit.locate("s3://other/mlflow/3/r", s3) == ("elsewhere", None)
    assert audit.locate("/srv/x/r/artifacts", s3) == ("elsewhere", None)
    assert audit.locate("mlflow-artifacts:/3/r/artifacts", s3) == ("store", "3/r/artifacts")


def test_folder_of_key_and_ownership():
    assert audit.folder_of_key("1/%s/artifacts/x" % RUN_A) == "1/" + RUN_A
    assert audit.folder_of_key("custom/deep/%s/artifacts/x" % RUN_A) == "custom/deep/" + RUN_A
    assert audit.folder_of_key("1/models/m-1/artifacts/z") is None
    owners = audit.Ownership()
    owners.add("custom/%s/artifacts" % RUN_A)
    assert owners.owns("custom/" + RUN_A)            # the run's root is below the folder
    assert owners.owns("custom/%s/artifacts/x" % RUN_A)  # the folder is inside the run's root
    assert not owners.owns("custom/" + RUN_B)
    everything = audit.Ownership()
    everything.add("")
    assert everything.owns("1/" + RUN_B)


def classify_fixture():
    stats = audit.FolderStats()
    stats.add("1/%s/artifacts/x" % RUN_A, 10)
    stats.add("1/%s/artifacts/x" % RUN_C, 5)
    stats.add("1/%s/artifacts/y" % ORPHAN, 7)
    stats.add("custom/%s/artifacts/y" % RUN_E, 2)
    stats.add("9/%s/artifacts/y" % RUN_B, 1)  # folder of a known run in a strange place
    stats.add("1/models/m-1/artifacts/z", 3)
    runs = [dict(run_id=RUN_A, experiment_id="1", lifecycle_stage="active", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % RUN_A),
            dict(run_id=RUN_B, experiment_id="1", lifecycle_stage="active", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % RUN_B),
            dict(run_id=RUN_C, experiment_id="1", lifecycle_stage="deleted", artifact_uri="file:///link//1/%s/artifacts" % RUN_C),
            dict(run_id=RUN_E, experiment_id="2", lifecycle_stage="active", artifact_uri="/link/./custom/%s/artifacts/" % RUN_E),
            dict(run_id="f" * 32, experiment_id="1", lifecycle_stage="active", artifact_uri="s3://elsewhere/x/artifacts")]
    return runs, stats


def test_classify_by_identity():
    resolve = fake_realpath({"/link": "/real"})
    runs, stats = classify_fixture()
    verdict = audit.classify(runs, stats, audit.store_identity("/real/", resolve), resolve)
    assert [m["run_id"] for m in verdict["missing"]] == [RUN_B]
    assert [o["folder"] for o in verdict["orphans"]] == ["1/" + ORPHAN]
    assert [g["run_id"] for g in verdict["awaiting_gc"]] == [RUN_C]
    assert verdict["unmapped"] == [] and verdict["external"] == 1
    assert stats.other_objects == 1 and stats.experiments["1"] == [4, 25]


def test_unmapped_runs_refuse_removal_and_are_named():
    runs, stats = classify_fixture()
    runs.append(dict(run_id="9" * 32, experiment_id="3", lifecycle_stage="deleted", artifact_uri="hdfs://nn/x"))
    verdict = audit.classify(runs, stats, audit.store_identity("s3://b/p"))
    assert [item["run_id"] for item in verdict["unmapped"]] == ["9" * 32]
    message = audit.removal_refusal(verdict["unmapped"], verdict["orphans"], -1)
    assert "1 run(s)" in message and "9" * 32 in message and "hdfs://nn/x" in message and "nothing was removed" in message


def test_cap_and_count_validation():
    orphans = [dict(folder="1/%032x" % index) for index in range(5)]
    assert audit.removal_refusal([], orphans, 5) is None
    assert audit.removal_refusal([], orphans, -1) is None
    assert "more than max_remove=4" in audit.removal_refusal([], orphans, 4)
    base = dict(artifacts_destination="/tmp", concurrency=1, max_remove=0)
    audit.validate_options(base)
    audit.validate_options(dict(base, max_remove=-1))
    for bad, message in ((dict(max_remove=-5), "max_remove must be at least 0, or -1"),
                         (dict(concurrency=0), "concurrency must be at least 1"),
                         (dict(experiment_ids=["../1"]), "not an experiment id"),
                         (dict(artifacts_destination="gs://x/y"), "local directory or s3")):
        with pytest.raises(MaintenanceError) as info:
            audit.validate_options(dict(base, **bad))
        assert message in info.value.msg


def test_remove_folder_never_goes_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    outside = tmp_path / "outside" / ORPHAN
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("precious")
    (real / "1").mkdir(parents=True)
    os.symlink(str(outside), str(real / "1" / ORPHAN))
    (real / "1" / RUN_A / "artifacts").mkdir(parents=True)
    (real / "1" / RUN_A / "artifacts" / "f").write_text("x")
    os.symlink(str(real), str(tmp_path / "link"))
    identity = audit.store_identity(str(tmp_path / "link"))
    store = sync.LocalStore(str(tmp_path / "link"))
    with pytest.raises(MaintenanceError):
        audit.remove_folder(store, identity, "1/" + ORPHAN)
    assert (outside / "keep.txt").read_text() == "precious"
    progress = audit.remove_folders(store, identity, ["1/" + ORPHAN, "1/" + RUN_A], 1)
    assert progress["removed_folders"] == ["1/" + RUN_A] and progress["removed_objects"] == 1
    assert len(progress["failures"]) == 1 and not (real / "1" / RUN_A).exists()


def test_removal_stops_after_consecutive_failures(tmp_path):
    identity = audit.store_identity(str(tmp_path))
    store = sync.LocalStore(str(tmp_path))
    folders = ["1/%032x" % index for index in range(10)]  # none exists: every removal fails
    progress = audit.remove_folders(store, identity, folders, 1)
    assert len(progress["failures"]) == audit.FAIL_FAST_AFTER
    assert "failed in a row" in progress["stopped"]
