# -*- coding: utf-8 -*-
"""artifact_audit: mapping runs onto the store by identity, ownership, refusal, and removal safety."""

import os

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit_classify as audit_classify
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit_layout as audit_layout
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit_rest as audit_rest
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_audit_store as audit_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_stores as stores
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingError

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
    assert audit_layout.normalize_relative("a//b/./c/") == "a/b/c"
    assert audit_layout.normalize_relative("/a/../b") == "b"
    assert audit_layout.normalize_relative("../x") is None
    assert audit_layout.normalize_relative("") == ""


def test_store_identity_resolves_spellings_and_refuses_other_schemes():
    resolve = fake_realpath({"/link": "/real"})
    for spelling in ("/real", "/real/", "/real/./", "//real", "file:///real", "file://localhost/real/", "/link/"):
        assert audit_layout.store_identity(spelling, resolve).root == "/real", spelling
    s3 = audit_layout.store_identity("s3://bucket//mlflow/./", resolve)
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "bucket", "mlflow")
    for bad in ("gs://bucket/x", "http://host/x", "file://otherhost/x"):
        with pytest.raises(MaintenanceError):
            audit_layout.store_identity(bad, resolve)


def test_locate_local_uris_by_real_path():
    resolve = fake_realpath({"/link": "/real", "/elsewhere-link": "/real/custom"})
    local = audit_layout.store_identity("/link", resolve)
    assert audit_layout.locate("mlflow-artifacts:/1/%s/artifacts" % RUN_A, local, resolve) == ("store", "1/%s/artifacts" % RUN_A)
    assert audit_layout.locate("mlflow-artifacts://host:5000/1/x/artifacts", local, resolve) == ("store", "1/x/artifacts")
    assert audit_layout.locate("file:///real/./7//r/artifacts", local, resolve) == ("store", "7/r/artifacts")
    assert audit_layout.locate("/link/custom/r/artifacts/", local, resolve) == ("store", "custom/r/artifacts")
    assert audit_layout.locate("/elsewhere-link/r/artifacts", local, resolve) == ("store", "custom/r/artifacts")
    assert audit_layout.locate("/realistic/r/artifacts", local, resolve) == ("elsewhere", None), "a name prefix is not a parent"
    assert audit_layout.locate("/other/r/artifacts", local, resolve) == ("elsewhere", None)
    assert audit_layout.locate("s3://bucket/r/artifacts", local, resolve) == ("elsewhere", None)
    for unmappable in ("", None, "relative/path/artifacts", "gs://b/r", "file://host2/real/r", "mlflow-artifacts:/../x"):
        assert audit_layout.locate(unmappable, local, resolve)[0] == "unmapped", unmappable


def test_locate_s3_uris_by_bucket_and_normalised_key():
    s3 = audit_layout.store_identity("s3://bucket/mlflow/")
    assert audit_layout.locate("s3://bucket/mlflow//3/r/artifacts", s3) == ("store", "3/r/artifacts")
    assert audit_layout.locate("s3://bucket/mlflow-other/3/r", s3) == ("elsewhere", None)
    assert audit_layout.locate("s3://other/mlflow/3/r", s3) == ("elsewhere", None)
    assert audit_layout.locate("/srv/x/r/artifacts", s3) == ("elsewhere", None)
    assert audit_layout.locate("mlflow-artifacts:/3/r/artifacts", s3) == ("store", "3/r/artifacts")


def test_folder_of_key_and_ownership():
    assert audit_layout.folder_of_key("1/%s/artifacts/x" % RUN_A) == "1/" + RUN_A
    assert audit_layout.folder_of_key("custom/deep/%s/artifacts/x" % RUN_A) == "custom/deep/" + RUN_A
    assert audit_layout.folder_of_key("1/models/m-1/artifacts/z") is None
    owners = audit_layout.Ownership()
    owners.add("custom/%s/artifacts" % RUN_A)
    assert owners.owns("custom/" + RUN_A)            # the run's root is below the folder
    assert owners.owns("custom/%s/artifacts/x" % RUN_A)  # the folder is inside the run's root
    assert not owners.owns("custom/" + RUN_B)
    everything = audit_layout.Ownership()
    everything.add("")
    assert everything.owns("1/" + RUN_B)


def classify_fixture():
    stats = audit_layout.FolderStats()
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
    verdict = audit_classify.classify(runs, stats, audit_layout.store_identity("/real/", resolve), resolve)
    assert [m["run_id"] for m in verdict["missing"]] == [RUN_B]
    assert [o["folder"] for o in verdict["orphans"]] == ["1/" + ORPHAN]
    assert [g["run_id"] for g in verdict["awaiting_gc"]] == [RUN_C]
    assert verdict["unmapped"] == [] and verdict["external"] == {"run": 1, "logged_model": 0, "trace": 0}
    assert stats.other_objects == 1 and stats.experiments["1"] == [4, 25]


def test_unmapped_runs_refuse_removal_and_are_named():
    runs, stats = classify_fixture()
    runs.append(dict(run_id="9" * 32, experiment_id="3", lifecycle_stage="deleted", artifact_uri="hdfs://nn/x"))
    verdict = audit_classify.classify(runs, stats, audit_layout.store_identity("s3://b/p"))
    assert [item["run_id"] for item in verdict["unmapped"]] == ["9" * 32]
    message = audit_classify.removal_refusal(verdict["unmapped"], verdict["orphans"], -1)
    assert "1 run(s), logged model(s) or trace(s)" in message and "run " + "9" * 32 in message and "hdfs://nn/x" in message and "nothing was removed" in message


def test_cap_and_count_validation():
    orphans = [dict(folder="1/%032x" % index) for index in range(5)]
    assert audit_classify.removal_refusal([], orphans, 5) is None
    assert audit_classify.removal_refusal([], orphans, -1) is None
    assert "more than max_remove=4" in audit_classify.removal_refusal([], orphans, 4)
    base = dict(artifacts_destination="/tmp", concurrency=1, max_remove=0)
    audit_classify.validate_options(base)
    audit_classify.validate_options(dict(base, max_remove=-1))
    for bad, message in ((dict(max_remove=-5), "max_remove must be at least 0, or -1"),
                         (dict(concurrency=0), "concurrency must be at least 1"),
                         (dict(experiment_ids=["../1"]), "not an experiment id"),
                         (dict(artifacts_destination="gs://x/y"), "local directory or s3")):
        with pytest.raises(MaintenanceError) as info:
            audit_classify.validate_options(dict(base, **bad))
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
    identity = audit_layout.store_identity(str(tmp_path / "link"))
    store = stores.LocalStore(str(tmp_path / "link"))
    with pytest.raises(MaintenanceError):
        audit_store.remove_folder(store, identity, "1/" + ORPHAN)
    assert (outside / "keep.txt").read_text() == "precious"
    progress = audit_store.remove_folders(store, identity, ["1/" + ORPHAN, "1/" + RUN_A], 1)
    assert progress["removed_folders"] == ["1/" + RUN_A] and progress["removed_objects"] == 1
    assert progress["failures"].count == 1 and not (real / "1" / RUN_A).exists()


def test_removal_stops_after_consecutive_failures(tmp_path):
    identity = audit_layout.store_identity(str(tmp_path))
    store = stores.LocalStore(str(tmp_path))
    folders = ["1/%032x" % index for index in range(10)]  # none exists: every removal fails
    progress = audit_store.remove_folders(store, identity, folders, 1)
    assert progress["failures"].count == audit_store.FAIL_FAST_AFTER
    assert "failed in a row" in progress["stopped"]


MODEL_A, MODEL_GONE, MODEL_DEL = ("m-" + "1" * 32, "m-" + "2" * 32, "m-" + "3" * 32)
TRACE_A, TRACE_ARCH, TRACE_GONE = ("tr-" + "4" * 32, "tr-" + "5" * 32, "tr-" + "6" * 32)


def test_entity_folders_of_keys():
    assert audit_layout.entity_folder_of_key("1/models/%s/artifacts/MLmodel" % MODEL_A) == ("logged_model", "1/models/" + MODEL_A)
    assert audit_layout.entity_folder_of_key("workspaces/a/2/traces/%s/artifacts/traces.pb" % TRACE_A) == \
        ("trace", "workspaces/a/2/traces/" + TRACE_A)
    # A run's artifacts holding a models/ folder stay the run's; an id in the wrong directory is nothing.
    assert audit_layout.entity_folder_of_key("1/%s/artifacts/models/%s/x" % (RUN_A, MODEL_A)) == ("run", "1/" + RUN_A)
    assert audit_layout.entity_folder_of_key("1/traces/%s/x" % MODEL_A) == (None, None)
    assert audit_layout.entity_folder_of_key("1/models/%s" % MODEL_A) == (None, None), "a file named like an id is no folder"
    stats = audit_layout.FolderStats({"workspaces/a/2": "2"})
    stats.add("workspaces/a/2/traces/%s/artifacts/t" % TRACE_A, 4)
    stats.add("3/x", 1)
    assert stats.experiments == {"2": [1, 4], "3": [1, 1]}


def mlflow3_fixture():
    stats = audit_layout.FolderStats()
    for key, size in (("1/models/%s/artifacts/MLmodel" % MODEL_A, 10), ("1/models/%s/artifacts/MLmodel" % MODEL_GONE, 20),
                      ("1/models/%s/artifacts/MLmodel" % MODEL_DEL, 30), ("1/traces/%s/artifacts/traces.json" % TRACE_A, 1),
                      ("1/traces/%s/artifacts/traces.json" % TRACE_GONE, 2), ("1/%s/artifacts/f" % RUN_A, 5)):
        stats.add(key, size)
    runs = [dict(run_id=RUN_A, experiment_id="1", lifecycle_stage="active", artifact_uri="mlflow-artifacts:/1/%s/artifacts" % RUN_A)]
    models = [audit_classify.model_record(dict(model_id=MODEL_A, experiment_id="1", status="LOGGED_MODEL_READY",
                                               artifact_uri="mlflow-artifacts:/1/models/%s/artifacts" % MODEL_A)),
              audit_classify.model_record(dict(model_id=MODEL_DEL, experiment_id="1", status="LOGGED_MODEL_READY",
                                               artifact_uri="mlflow-artifacts:/1/models/%s/artifacts" % MODEL_DEL), "deleted"),
              audit_classify.model_record(dict(model_id="m-" + "7" * 32, experiment_id="1", status="LOGGED_MODEL_READY",
                                               artifact_uri="mlflow-artifacts:/1/models/m-%s/artifacts" % ("7" * 32))),
              audit_classify.model_record(dict(model_id="m-" + "8" * 32, experiment_id="1", status="LOGGED_MODEL_PENDING",
                                               artifact_uri="mlflow-artifacts:/1/models/m-%s/artifacts" % ("8" * 32)))]
    traces = [audit_classify.trace_record(dict(trace_id=TRACE_A, trace_location=dict(mlflow_experiment=dict(experiment_id="1")),
                                               tags={"mlflow.artifactLocation": "mlflow-artifacts:/1/traces/%s/artifacts" % TRACE_A,
                                                     "mlflow.trace.spansLocation": "TRACKING_STORE"})),
              audit_classify.trace_record(dict(trace_id=TRACE_ARCH, trace_location=dict(mlflow_experiment=dict(experiment_id="1")),
                                               tags=[{"key": "mlflow.trace.archiveLocation",
                                                      "value": "mlflow-artifacts:/1/traces/%s/artifacts" % TRACE_ARCH},
                                                     {"key": "mlflow.trace.spansLocation", "value": "ARCHIVE_REPO"}]))]
    return runs, models, traces, stats


def test_classify_logged_models_and_traces():
    runs, models, traces, stats = mlflow3_fixture()
    identity = audit_layout.store_identity("s3://b/p")
    verdict = audit_classify.classify(runs, stats, identity, models=models, traces=traces)
    assert sorted((o["kind"], o["folder"]) for o in verdict["orphans"]) == [
        ("logged_model", "1/models/" + MODEL_GONE), ("trace", "1/traces/" + TRACE_GONE)]
    # A READY model without its folder and an archived trace without its payload are missing; a pending model is not.
    assert sorted((m["kind"], m.get("model_id") or m.get("trace_id")) for m in verdict["missing"]) == [
        ("logged_model", "m-" + "7" * 32), ("trace", TRACE_ARCH)]
    assert [(g["kind"], g["model_id"], g["bytes"]) for g in verdict["awaiting_gc"]] == [("logged_model", MODEL_DEL, 30)]
    totals = verdict["by_kind"]
    assert totals["logged_model"]["orphan_bytes"] == 20 and totals["trace"]["orphans"] == 1
    assert totals["logged_model"]["awaiting_gc_bytes"] == 30 and totals["run"]["orphans"] == 0
    row = verdict["per_experiment"]["1"]
    assert row["logged_models"] == 4 and row["deleted_logged_models"] == 1 and row["traces"] == 2
    # A kind the server could not list is never judged: its folders are no orphans.
    unjudged = audit_classify.classify(runs, stats, identity, models=models, traces=[], judged=("run", "logged_model"))
    assert [o["kind"] for o in unjudged["orphans"]] == ["logged_model"] and unjudged["unjudged_objects"] == 2


def test_unmapped_models_and_traces_refuse_removal():
    runs, models, traces, stats = mlflow3_fixture()
    traces[0]["tags"]["mlflow.trace.archiveLocation"] = "dbfs:/archive/x"
    models[0]["artifact_uri"] = "relative/models/x"
    verdict = audit_classify.classify(runs, stats, audit_layout.store_identity("s3://b/p"), models=models, traces=traces)
    assert sorted(item["kind"] for item in verdict["unmapped"]) == ["logged_model", "trace"]
    message = audit_classify.removal_refusal(verdict["unmapped"], verdict["orphans"], -1)
    assert "logged model %s" % MODEL_A in message and "trace %s" % TRACE_A in message and "nothing was removed" in message


def test_workspace_refusal():
    assert audit_classify.workspace_refusal(dict(enabled=False, selected=None), True) is None
    assert "workspace is not set" in audit_classify.workspace_refusal(dict(enabled=True, selected=None), False)
    partial = dict(enabled=True, selected=["team-a"], complete=False)
    assert "workspace: all" in audit_classify.workspace_refusal(partial, True)
    assert audit_classify.workspace_refusal(partial, False) is None
    assert audit_classify.workspace_refusal(dict(enabled=True, selected=["a", "b"], complete=True), True) is None


class FakeClient(object):
    """Answers GETs from {path: answer or HTTP status}."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def get(self, path, **params):
        self.asked.append((path, params))
        answer = self.answers.get(path, 404)
        if isinstance(answer, int):
            raise TrackingError("HTTP %d" % answer, "http", answer)
        return answer


def test_confirmation_asks_every_workspace_and_the_right_endpoint():
    team_a = FakeClient({"runs/get": {"run": {}}})
    team_b = FakeClient({"/api/3.0/mlflow/traces/" + TRACE_GONE: {"trace": {}}})
    candidates = [dict(folder="1/" + ORPHAN, kind="run"), dict(folder="1/traces/" + TRACE_GONE, kind="trace"),
                  dict(folder="1/models/" + MODEL_GONE, kind="logged_model")]
    confirmed, claimed = audit_rest.confirm_orphans([FakeClient({}), team_b], candidates, 2)
    assert [item["folder"] for item in confirmed] == ["1/" + ORPHAN, "1/models/" + MODEL_GONE]
    assert [item["folder"] for item in claimed] == ["1/traces/" + TRACE_GONE]
    confirmed, claimed = audit_rest.confirm_orphans([team_a], candidates[:1], 1)
    assert confirmed == [] and team_a.asked == [("runs/get", {"run_id": ORPHAN})]
    failing = FakeClient({"logged-models/" + MODEL_GONE: 500})
    with pytest.raises(TrackingError):
        audit_rest.confirm_orphans([failing], candidates[2:], 1)
    assert failing.asked == [("logged-models/" + MODEL_GONE, {"allow_deleted": "true"})]


def test_deleted_models_behind_unknown_folders():
    runs, models, traces, stats = mlflow3_fixture()
    active = [m for m in models if m["lifecycle_stage"] == "active"]
    assert audit_rest.unowned_model_ids(stats, active) == [MODEL_GONE, MODEL_DEL]
    info = dict(model_id=MODEL_DEL, experiment_id="1", artifact_uri="mlflow-artifacts:/1/models/%s/artifacts" % MODEL_DEL)
    elsewhere = dict(info, model_id=MODEL_GONE, experiment_id="9")
    client = FakeClient({"logged-models/" + MODEL_DEL: {"model": {"info": info}},
                         "logged-models/" + MODEL_GONE: {"model": {"info": elsewhere}}})
    found = audit_rest.read_deleted_models([("ws", client)], [MODEL_GONE, MODEL_DEL], {"ws": {"1"}}, 2)
    stages = dict((m["model_id"], m["lifecycle_stage"]) for m in found)
    assert stages == {MODEL_DEL: "deleted", MODEL_GONE: "active"}, "a model of an experiment not audited is live there"
