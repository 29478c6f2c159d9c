# -*- coding: utf-8 -*-
"""Fast, realistic test data in a live MLflow store.

Experiments and registered models go through the tracking server's REST API. Runs, metrics,
params and tags are bulk-inserted into the server's own backend store with SQLAlchemy, using the
tables the server created (reflected, so the schema is MLflow's own), with chosen start times,
statuses and lifecycle stages: 10,000 runs take seconds. Artifacts are written where the server
keeps them: a local directory or an S3 prefix, with bounded concurrency.
"""

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from harness.services import api

DAY_MS = 86400 * 1000


def now_ms():
    return int(time.time() * 1000)


class RunSpec:
    """One run to create. Times are epoch milliseconds."""

    def __init__(self, start_time=None, end_time=None, status="FINISHED", lifecycle_stage="active",
                 deleted_time=None, metrics=3, steps=1, params=2, tags=None, name=None):
        self.start_time = now_ms() if start_time is None else int(start_time)
        self.end_time = end_time if end_time is not None or status == "RUNNING" else self.start_time + 60000
        self.status = status
        self.lifecycle_stage = lifecycle_stage
        self.deleted_time = deleted_time
        self.metrics = metrics
        self.steps = steps
        self.params = params
        self.tags = dict(tags or {})
        self.name = name


def _engine(backend_store_uri):
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    uri = backend_store_uri
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return sqlalchemy.create_engine(uri)


def create_experiment(server_url, name, auth=None):
    return api(server_url, "experiments/create", {"name": name}, auth=auth)["experiment_id"]


def add_runs(server_url, backend_store_uri, experiment_id, specs, auth=None, chunk=2000):
    """Insert the runs of ``specs`` into the experiment; returns their run ids in order."""
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    experiment = api(server_url, "experiments/get?experiment_id=%s" % experiment_id, auth=auth)["experiment"]
    location = experiment["artifact_location"].rstrip("/")
    engine = _engine(backend_store_uri)
    meta = sqlalchemy.MetaData()
    meta.reflect(engine, only=["runs", "metrics", "latest_metrics", "params", "tags"])
    tables = meta.tables
    run_ids = []
    specs = list(specs)
    try:
        for offset in range(0, len(specs), chunk):
            rows = dict(runs=[], metrics=[], latest_metrics=[], params=[], tags=[])
            for spec in specs[offset:offset + chunk]:
                run_id = uuid.uuid4().hex
                run_ids.append(run_id)
                rows["runs"].append(dict(
                    run_uuid=run_id, name=spec.name or "run-%s" % run_id[:8], source_type="LOCAL",
                    source_name="datagen", entry_point_name="", user_id="datagen", status=spec.status,
                    start_time=spec.start_time, end_time=spec.end_time, deleted_time=spec.deleted_time,
                    source_version="", lifecycle_stage=spec.lifecycle_stage,
                    artifact_uri="%s/%s/artifacts" % (location, run_id), experiment_id=int(experiment_id)))
                for index in range(spec.metrics):
                    for step in range(spec.steps):
                        rows["metrics"].append(dict(key="metric_%d" % index, value=float(step) / (index + 1),
                                                    timestamp=spec.start_time + step, step=step, is_nan=False,
                                                    run_uuid=run_id))
                    rows["latest_metrics"].append(dict(key="metric_%d" % index, value=float(spec.steps - 1),
                                                       timestamp=spec.start_time + spec.steps - 1,
                                                       step=spec.steps - 1, is_nan=False, run_uuid=run_id))
                for index in range(spec.params):
                    rows["params"].append(dict(key="param_%d" % index, value=str(index), run_uuid=run_id))
                tags = {"mlflow.runName": spec.name or "run-%s" % run_id[:8], "mlflow.user": "datagen"}
                tags.update(spec.tags)
                for key, value in tags.items():
                    rows["tags"].append(dict(key=key, value=str(value), run_uuid=run_id))
            with engine.begin() as connection:
                for table in ("runs", "metrics", "latest_metrics", "params", "tags"):
                    if rows[table]:
                        connection.execute(tables[table].insert(), rows[table])
    finally:
        engine.dispose()
    return run_ids


def register_model(server_url, name, run_id, auth=None):
    """A registered model whose version points at ``run_id`` (what protects a run from cleanup)."""
    try:
        api(server_url, "registered-models/create", {"name": name}, auth=auth)
    except RuntimeError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    return api(server_url, "model-versions/create",
               {"name": name, "source": "runs:/%s/model" % run_id, "run_id": run_id}, auth=auth)["model_version"]


def artifact_key(experiment_id, run_id, relative_path):
    return "%s/%s/artifacts/%s" % (experiment_id, run_id, relative_path)


def write_artifacts(destination, experiment_id, run_ids, files, s3_client=None, concurrency=32):
    """Write ``files`` ({relative path: bytes}) for each run where the server keeps artifacts.

    ``destination`` is the server's --artifacts-destination: a directory or ``s3://bucket/prefix``.
    Returns the number of objects written.
    """
    jobs = [(run_id, path, data) for run_id in run_ids for path, data in files.items()]
    if destination.startswith("s3://"):
        bucket, _sep, prefix = destination[len("s3://"):].partition("/")
        prefix = prefix.strip("/")

        def put(job):
            run_id, path, data = job
            key = artifact_key(experiment_id, run_id, path)
            s3_client.put_object(Bucket=bucket, Key="%s/%s" % (prefix, key) if prefix else key, Body=data)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(put, jobs))
    else:
        for run_id, path, data in jobs:
            target = os.path.join(destination, artifact_key(experiment_id, run_id, path))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
    return len(jobs)


def spread_start_times(count, max_age_days, now=None):
    """``count`` start times spread evenly from now back to ``max_age_days`` ago (exclusive)."""
    now = now or now_ms()
    return [now - int(index * max_age_days * DAY_MS / count) for index in range(count)]
