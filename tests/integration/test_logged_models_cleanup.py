# -*- coding: utf-8 -*-
"""logged_models_cleanup through Ansible against a real MLflow 3 server; outcomes read from the store."""

import uuid

from harness import datagen, datagen_mlflow3 as gen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_module

DAY = datagen.DAY_MS
KEEP = "mlflowops.keep"


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def stages(reader, model_ids):
    return dict(reader.rows("SELECT model_id, lifecycle_stage FROM logged_models WHERE model_id IN %s"
                            % in_list(model_ids)))


def test_registered_and_keep_tagged_models_survive_check_mode_cap_and_second_run(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("lm"))
    old = [gen.create_logged_model(server.url, exp, "old-%d" % i)["model_id"] for i in range(6)]
    registered = [gen.create_logged_model(server.url, exp, "reg-%d" % i)["model_id"] for i in range(2)]
    kept = gen.create_logged_model(server.url, exp, "kept", tags={KEEP: "true"})["model_id"]
    keep_false = gen.create_logged_model(server.url, exp, "keep-false", tags={KEEP: "false"})["model_id"]
    new = [gen.create_logged_model(server.url, exp, "new-%d" % i)["model_id"] for i in range(3)]
    gen.set_logged_models(server.backend_store_uri, old + registered + [kept, keep_false], created=now - 40 * DAY)
    for index, model_id in enumerate(registered):
        gen.register_logged_model(server.url, unique("reg-model-%d" % index), model_id)
    everything = old + registered + [kept, keep_false] + new
    doomed = set(old + [keep_false])
    args = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d", "concurrency": 4}

    checked, _run = run_module("logged_models_cleanup", args, check=True)
    assert checked["_status"] == "ok", checked.get("msg")
    assert checked["changed"] is True and checked["deleted"] == len(doomed)
    assert set(checked["model_ids"]) == doomed
    assert checked["protected_reasons"] == {"registered_model": 2, "keep_tag": 1}
    assert set(stages(reader, everything).values()) == {"active"}

    capped, _run = run_module("logged_models_cleanup", dict(args, max_delete=len(doomed) - 1))
    assert capped["_status"] == "failed" and "max_delete" in capped["msg"]
    assert set(stages(reader, everything).values()) == {"active"}

    result, _run = run_module("logged_models_cleanup", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["deleted"] == len(doomed) and result["deleted_per_experiment"] == {exp: len(doomed)}
    after = stages(reader, everything)
    assert set(m for m, stage in after.items() if stage == "deleted") == doomed
    assert all(after[m] == "active" for m in registered + [kept] + new)

    again, _run = run_module("logged_models_cleanup", args)
    assert again["_status"] == "ok" and again["changed"] is False and again["deleted"] == 0


def test_bad_inputs_fail_before_any_change(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    exp = datagen.create_experiment(server.url, unique("lm-bad"))
    ids = [gen.create_logged_model(server.url, exp, "m-%d" % i)["model_id"] for i in range(3)]
    gen.set_logged_models(server.backend_store_uri, ids, created=datagen.now_ms() - 40 * DAY)
    base = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d"}
    for args, expected in [
        (dict(base, older_than="abc"), "not a duration"),
        (dict(base, experiments=[unique("no-such")]), "unknown experiment"),
        (dict(base, concurrency=0), "concurrency"),
        (dict(base, max_delete=2), "max_delete=2"),
        (dict(base, workspace=["a", "b"]), "does not have workspaces enabled"),
    ]:
        result, _run = run_module("logged_models_cleanup", args)
        assert result["_status"] == "failed", args
        assert expected in result["msg"], result["msg"]
        assert set(stages(reader, ids).values()) == {"active"}
