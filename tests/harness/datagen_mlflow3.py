# -*- coding: utf-8 -*-
"""MLflow 3 test data: traces and logged models in a live server.

A few traces are logged through the real MLflow client (a child process, so the test process keeps no
global mlflow state); the bulk is inserted into the server's own tables (reflected) with chosen timestamps
and tags, which takes well under a second for thousands of traces. Logged models are created through the
REST API, then back-dated (and optionally soft-deleted) in the database, and given artifacts where the server
keeps them.
"""

import json
import os
import subprocess
import sys
import uuid

from harness.datagen import _engine
from harness.services import api

_LOG_TRACES = r"""
import json, sys
import mlflow
from mlflow import MlflowClient
url, experiment_id, count, with_folders = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if with_folders:
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter
    MlflowV3SpanExporter._export_spans_incrementally = lambda self, spans: None
mlflow.set_tracking_uri(url)
mlflow.set_experiment(experiment_id=experiment_id)
ids = []
for index in range(count):
    with mlflow.start_span(name="call-%d" % index) as span:
        span.set_inputs({"question": index})
        span.set_outputs({"answer": index})
        ids.append(span.trace_id)
mlflow.flush_trace_async_logging()
print(json.dumps(ids))
"""


def log_traces_with_client(server_url, experiment_id, count, with_folders=False):
    """Trace ids of ``count`` traces logged by the MLflow client (fluent spans) into the experiment.

    The client also sends spans to the tracking store in the background; when they land before the trace
    is started, the server marks the spans' location as the tracking store and the client writes no
    ``traces.json``, so whether a trace gets an artifact folder is a race. ``with_folders`` turns that span
    logging off in the child, as against a store without span logging, so every trace gets its folder.
    """
    env = dict(os.environ, MLFLOW_TRACKING_URI=server_url)
    env.pop("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", None)
    out = subprocess.run([sys.executable, "-c", _LOG_TRACES, server_url, str(experiment_id), str(count),
                          "1" if with_folders else "0"],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_traces(backend_store_uri, experiment_id, timestamps, tags=None):
    """Insert one trace per timestamp (epoch ms); ``tags`` (dict) go on every one. Returns the trace ids."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = _engine(backend_store_uri)
    meta = sqlalchemy.MetaData()
    meta.reflect(engine, only=["trace_info", "trace_tags", "trace_request_metadata"])
    ids, infos, tag_rows, metadata_rows = [], [], [], []
    for timestamp in timestamps:
        trace_id = "tr-" + uuid.uuid4().hex
        ids.append(trace_id)
        infos.append(dict(request_id=trace_id, experiment_id=int(experiment_id), timestamp_ms=int(timestamp),
                          execution_time_ms=5, status="OK", request_preview='{"q": 1}', response_preview='{"a": 1}'))
        for key, value in dict({"mlflow.traceName": "bulk"}, **(tags or {})).items():
            tag_rows.append(dict(key=key, value=str(value), request_id=trace_id))
        metadata_rows.append(dict(key="mlflow.trace_schema.version", value="3", request_id=trace_id))
    try:
        with engine.begin() as connection:
            for offset in range(0, len(infos), 2000):
                connection.execute(meta.tables["trace_info"].insert(), infos[offset:offset + 2000])
            for offset in range(0, len(tag_rows), 2000):
                connection.execute(meta.tables["trace_tags"].insert(), tag_rows[offset:offset + 2000])
            for offset in range(0, len(metadata_rows), 2000):
                connection.execute(meta.tables["trace_request_metadata"].insert(), metadata_rows[offset:offset + 2000])
    finally:
        engine.dispose()
    return ids


def set_trace_times(backend_store_uri, trace_ids, timestamp):
    """Back-date traces (logged through the client) to ``timestamp`` (epoch ms)."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = _engine(backend_store_uri)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE trace_info SET timestamp_ms = :ts WHERE request_id = :id"),
                               [dict(ts=int(timestamp), id=trace_id) for trace_id in trace_ids])
    finally:
        engine.dispose()


def set_trace_tag(server_url, trace_id, key, value):
    """A tag set through the REST API (as users do)."""
    _rest3(server_url, "traces/%s/tags" % trace_id, {"key": key, "value": value}, method="PATCH")


def _rest3(server_url, path, payload, method="POST"):
    import urllib.request  # pylint: disable=import-outside-toplevel
    request = urllib.request.Request(server_url.rstrip("/") + "/api/3.0/mlflow/" + path,
                                     data=json.dumps(payload).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:  # nosec - loopback test service
        body = response.read()
    return json.loads(body) if body else {}


def create_logged_model(server_url, experiment_id, name="model", tags=None, source_run_id=None):
    """A logged model created through the REST API; returns its info dict (model_id, artifact_uri...)."""
    payload = {"experiment_id": str(experiment_id), "name": name,
               "tags": [{"key": key, "value": str(value)} for key, value in (tags or {}).items()]}
    if source_run_id:
        payload["source_run_id"] = source_run_id
    return api(server_url, "logged-models", payload)["model"]["info"]


def set_logged_models(backend_store_uri, model_ids, created=None, deleted=None, last_updated=None):
    """Back-date logged models' creation/update times; ``deleted=True`` puts them in the deleted stage."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = _engine(backend_store_uri)
    values = {}
    if created is not None:
        values["creation_timestamp_ms"] = int(created)
    if last_updated is not None:
        values["last_updated_timestamp_ms"] = int(last_updated)
    if deleted is not None:
        values["lifecycle_stage"] = "deleted" if deleted else "active"
    sets = ", ".join("%s = :%s" % (key, key) for key in values)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE logged_models SET %s WHERE model_id = :model_id" % sets),
                               [dict(values, model_id=model_id) for model_id in model_ids])
    finally:
        engine.dispose()


def register_logged_model(server_url, name, model_id):
    """A registered model version made from a logged model (source ``models:/<id>``, ``model_id`` set)."""
    try:
        api(server_url, "registered-models/create", {"name": name})
    except RuntimeError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    payload = {"name": name, "source": "models:/%s" % model_id, "model_id": model_id}
    return api(server_url, "model-versions/create", payload)["model_version"]


def model_artifact_dir(artifacts_destination, info):
    """The local directory of a logged model's artifacts (``mlflow-artifacts:/<exp>/models/<id>/artifacts``)."""
    uri = info["artifact_uri"]
    prefix = "mlflow-artifacts:/"
    assert uri.startswith(prefix), uri
    return os.path.join(artifacts_destination, uri[len(prefix):])


def write_model_artifacts(artifacts_destination, info, files):
    base = model_artifact_dir(artifacts_destination, info)
    for relative, data in files.items():
        path = os.path.join(base, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    return base


def add_trace_tags(backend_store_uri, tags_by_trace):
    """Tags written straight into ``trace_tags`` ({trace_id: {key: value}}), for the ones the REST API keeps
    immutable (``mlflow.trace.archiveLocation``, ``mlflow.trace.spansLocation``): an archived trace, as MLflow's
    archival leaves it."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = _engine(backend_store_uri)
    meta = sqlalchemy.MetaData()
    meta.reflect(engine, only=["trace_tags"])
    table = meta.tables["trace_tags"]
    try:
        with engine.begin() as connection:
            for trace_id, tags in tags_by_trace.items():
                for key, value in tags.items():
                    connection.execute(table.delete().where(table.c.request_id == trace_id).where(table.c.key == key))
                    connection.execute(table.insert(), [dict(key=key, value=str(value), request_id=trace_id)])
    finally:
        engine.dispose()


def archive_location(server_url, experiment_id, trace_id):
    """The ``mlflow-artifacts:`` URI where MLflow's archival puts a trace's span payload (``traces.pb``)."""
    experiment = api(server_url, "experiments/get?experiment_id=%s" % experiment_id)["experiment"]
    return "%s/traces/%s/artifacts" % (experiment["artifact_location"].rstrip("/"), trace_id)
