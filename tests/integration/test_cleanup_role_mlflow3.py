# -*- coding: utf-8 -*-
"""The cleanup role's MLflow 3 retention: traces and logged models, applied before gc, on a live server."""

import json
import os
import uuid

from harness import datagen, datagen_mlflow3 as gen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_playbook
from harness.services import MlflowServer

DAY = datagen.DAY_MS


def test_cleanup_role_retains_traces_and_logged_models_before_gc(tmp_path):
    server = MlflowServer().start()  # its own server: gc acts on the whole store
    try:
        reader = StoreReader(server)
        uri = server.backend_store_uri
        now = datagen.now_ms()
        experiment = datagen.create_experiment(server.url, "role3-%s" % uuid.uuid4().hex[:6])
        old_traces = gen.add_traces(uri, experiment, [now - 40 * DAY - i for i in range(20)])
        new_traces = gen.add_traces(uri, experiment, [now - DAY - i for i in range(5)])
        kept_traces = gen.add_traces(uri, experiment, [now - 40 * DAY] * 2, tags={"mlflowops.keep": "true"})
        infos = [gen.create_logged_model(server.url, experiment, "m%d" % i) for i in range(7)]
        dirs = [gen.write_model_artifacts(server.artifacts_destination, info, {"MLmodel": b"x" * 9}) for info in infos]
        ids = [info["model_id"] for info in infos]
        old, recent, registered, deleted_long_ago = ids[:3], ids[3], ids[4], ids[5:]
        gen.set_logged_models(uri, old + [registered] + deleted_long_ago, created=now - 45 * DAY,
                              last_updated=now - 45 * DAY)
        gen.set_logged_models(uri, deleted_long_ago, deleted=True)
        gen.register_logged_model(server.url, "role3-%s" % uuid.uuid4().hex[:6], registered)
        playbook = tmp_path / "play.json"
        playbook.write_text(json.dumps([{
            "hosts": "localhost", "gather_facts": False,
            "vars": {"mlflow_tracking_uri": server.url, "mlflow_backend_store_uri": uri,
                     "mlflow_artifacts_destination": server.artifacts_destination},
            # gc with no grace period: the models soft-deleted by this very run are purged too, which they can
            # only be if logged-model retention runs before gc.
            "roles": [{"role": "mlflowops.maintenance.cleanup", "cleanup_experiments": [experiment],
                       "cleanup_traces_older_than": "30d", "cleanup_logged_models_older_than": "30d",
                       "cleanup_gc_older_than": "0s"}]}]))
        first = run_playbook(str(playbook))
        assert first.rc == 0, first.stdout[-3000:]
        traces = first.task(action="traces_cleanup")["result"]
        assert traces["deleted"] == 20 and traces["changed"] is True
        left = reader.ids("SELECT request_id FROM trace_info WHERE experiment_id = %s" % experiment)
        assert left == set(new_traces + kept_traces) and not left & set(old_traces)
        stages = dict(reader.rows("SELECT model_id, lifecycle_stage FROM logged_models WHERE model_id IN %s" % in_list(ids)))
        assert stages == {recent: "active", registered: "active"}, stages
        assert [os.path.isdir(path) for path in dirs] == [False] * 3 + [True, True] + [False] * 2

        second = run_playbook(str(playbook))
        assert second.rc == 0, second.stdout[-3000:]
        changed = [r["task"] for r in second.records if r["result"].get("changed")]
        assert changed == [], changed
    finally:
        server.stop()
