# -*- coding: utf-8 -*-
"""traces_cleanup through Ansible against real MLflow 3 servers (SQLite, PostgreSQL).

Traces are logged through the MLflow client (and back-dated in the database) plus bulk-inserted with spread
timestamps; outcomes are read from the store itself. Every call names the test's own experiments.
"""

import uuid

from harness import datagen, datagen_mlflow3 as gen
from harness.lifecycle import StoreReader, in_list
from harness.runner import run_module

DAY = datagen.DAY_MS
HOUR = 3600 * 1000
KEEP = "mlflowops.keep"


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def spread(count, max_age_days, now):
    """Timestamps spread over ``max_age_days``, none within an hour of the 30-day boundary."""
    step = max_age_days * DAY // count
    times = [now - 1000 - i * step for i in range(count)]
    return [t for t in times if abs((now - t) - 30 * DAY) > HOUR]


def trace_ids(reader, experiment_id):
    return reader.ids("SELECT request_id FROM trace_info WHERE experiment_id = %s" % experiment_id)


def test_3000_traces_over_60_days_keep_tag_check_mode_cap_and_second_run(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    uri = server.backend_store_uri
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("traces"))
    exp_plain = datagen.create_experiment(server.url, unique("traces-plain"))

    client_ids = gen.log_traces_with_client(server.url, exp, 4)
    gen.set_trace_times(uri, client_ids[:3], now - 45 * DAY)
    gen.set_trace_tag(server.url, client_ids[0], KEEP, "true")
    times = spread(3000, 60, now)
    bulk = gen.add_traces(uri, exp, times)
    kept_old = gen.add_traces(uri, exp, [now - 50 * DAY - i for i in range(20)], tags={KEEP: "yes"})
    not_kept = gen.add_traces(uri, exp, [now - 40 * DAY - i for i in range(5)], tags={KEEP: "false"})
    kept_new = gen.add_traces(uri, exp, [now - 2 * DAY - i for i in range(5)], tags={KEEP: "true"})
    plain = gen.add_traces(uri, exp_plain, spread(200, 60, now))

    old_bulk = [tid for tid, t in zip(bulk, times) if now - t > 30 * DAY]
    expected_exp = set(old_bulk) | set(client_ids[1:3]) | set(not_kept)
    plain_times = spread(200, 60, now)
    expected_plain = set(tid for tid, t in zip(plain, plain_times) if now - t > 30 * DAY)
    survivors_exp = (set(bulk) - set(old_bulk)) | {client_ids[0], client_ids[3]} | set(kept_old) | set(kept_new)
    before_exp, before_plain = trace_ids(reader, exp), trace_ids(reader, exp_plain)
    assert len(before_exp) == 4 + len(bulk) + 30
    args = {"tracking_uri": server.url, "experiments": [exp, exp_plain], "older_than": "30d", "batch_size": 70}

    checked, _run = run_module("traces_cleanup", args, check=True)
    assert checked["_status"] == "ok", checked.get("msg")
    assert checked["changed"] is True
    assert checked["deleted"] == len(expected_exp) + len(expected_plain)
    assert checked["deleted_per_experiment"] == {exp: len(expected_exp), exp_plain: len(expected_plain)}
    assert checked["protected"] == 21
    assert trace_ids(reader, exp) == before_exp and trace_ids(reader, exp_plain) == before_plain

    capped, _run = run_module("traces_cleanup", dict(args, max_delete=checked["deleted"] - 1))
    assert capped["_status"] == "failed" and "max_delete" in capped["msg"] and "nothing was changed" in capped["msg"]
    assert trace_ids(reader, exp) == before_exp and trace_ids(reader, exp_plain) == before_plain

    result, _run = run_module("traces_cleanup", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["changed"] is True and result["failure_count"] == 0
    assert result["deleted_per_experiment"] == {exp: len(expected_exp), exp_plain: len(expected_plain)}
    modes = dict((item["experiment_id"], item["mode"]) for item in result["experiments"])
    assert modes == {exp: "ids", exp_plain: "timestamp"}
    assert trace_ids(reader, exp) == survivors_exp
    assert trace_ids(reader, exp_plain) == set(plain) - expected_plain
    # Tags and metadata of deleted traces went with them.
    assert reader.scalar("SELECT count(*) FROM trace_tags WHERE request_id IN %s" % in_list(old_bulk[:500])) == 0

    again, _run = run_module("traces_cleanup", args)
    assert again["_status"] == "ok", again.get("msg")
    assert again["changed"] is False and again["deleted"] == 0
    assert trace_ids(reader, exp) == survivors_exp


def test_filter_bad_inputs_fail_before_any_change(mlflow_sqlite):
    server = mlflow_sqlite
    reader = StoreReader(server)
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("traces-bad"))
    dev = gen.add_traces(server.backend_store_uri, exp, [now - 40 * DAY - i for i in range(30)], tags={"env": "dev"})
    prod = gen.add_traces(server.backend_store_uri, exp, [now - 40 * DAY - i for i in range(10)], tags={"env": "prod"})
    before = trace_ids(reader, exp)
    base = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d"}
    bad = [
        (dict(base, older_than="abc"), "not a duration"),
        (dict(base, experiments=[exp, unique("no-such")]), "unknown experiment"),
        (dict(base, max_delete=-5), "max_delete"),
        (dict(base, batch_size=0), "batch_size"),
        (dict(base, filter="tag.env = 'dev' OR tag.env = 'prod'"), "only AND"),
        (dict(base, workspace="all"), "does not have workspaces enabled"),
        (dict(base, max_delete=39), "max_delete=39"),
    ]
    for args, expected in bad:
        result, _run = run_module("traces_cleanup", args)
        assert result["_status"] == "failed", args
        assert expected in result["msg"], result["msg"]
        assert "Traceback" not in result["msg"]
        assert trace_ids(reader, exp) == before

    result, _run = run_module("traces_cleanup", dict(base, filter="tag.env = 'dev'", batch_size=7))
    assert result["_status"] == "ok", result.get("msg")
    assert result["deleted"] == 30 and result["experiments"][0]["mode"] == "ids"
    assert trace_ids(reader, exp) == set(prod)
    assert not set(dev) & trace_ids(reader, exp)


def test_postgresql_backend_keep_tag_and_idempotence(mlflow_pg_s3, postgres):
    server = mlflow_pg_s3
    reader = StoreReader(server, postgres)
    now = datagen.now_ms()
    exp = datagen.create_experiment(server.url, unique("traces-pg"))
    client_ids = gen.log_traces_with_client(server.url, exp, 2)
    gen.set_trace_times(server.backend_store_uri, client_ids, now - 31 * DAY)
    old = gen.add_traces(server.backend_store_uri, exp, [now - 35 * DAY - i for i in range(250)])
    kept = gen.add_traces(server.backend_store_uri, exp, [now - 35 * DAY - i for i in range(3)], tags={KEEP: "1"})
    new = gen.add_traces(server.backend_store_uri, exp, [now - DAY - i for i in range(50)])
    args = {"tracking_uri": server.url, "experiments": [exp], "older_than": "30d", "batch_size": 100}
    result, _run = run_module("traces_cleanup", args)
    assert result["_status"] == "ok", result.get("msg")
    assert result["deleted"] == 252 and result["protected"] == 3
    assert trace_ids(reader, exp) == set(kept) | set(new)
    assert not set(old) & trace_ids(reader, exp)
    again, _run = run_module("traces_cleanup", args)
    assert again["_status"] == "ok" and again["changed"] is False
