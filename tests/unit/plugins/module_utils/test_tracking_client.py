# -*- coding: utf-8 -*-
"""TrackingClient against a scripted loopback HTTP server: paging, retries, error kinds, authentication."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.faults import refused_url

from ansible_collections.mlflowops.maintenance.plugins.module_utils import tracking
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient, TrackingError


class ScriptedServer:
    """Answers each request with the next scripted ``(status, body)`` for its path; records every request.

    A body that is a dict is sent as JSON, a str as text/plain. Unscripted paths get 404."""

    def __init__(self):
        self.script = {}
        self.requests = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                owner.requests.append(dict(method=self.command, path=url.path, query=parse_qs(url.query),
                                           body=json.loads(raw) if raw else None,
                                           auth=self.headers.get("Authorization")))
                queue = owner.script.get(url.path) or [(404, {"error_code": "ENDPOINT_NOT_FOUND"})]
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):  # quiet
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def on(self, path, *answers):
        self.script["/api/2.0/mlflow/" + path] = list(answers)


@pytest.fixture(name="server")
def fixture_server(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)  # backoff without waiting
    with ScriptedServer() as scripted:
        yield scripted


def test_post_search_follows_page_tokens_to_the_end(server):
    server.on("runs/search", (200, {"runs": [{"id": 1}, {"id": 2}], "next_page_token": "p2"}),
              (200, {"runs": [{"id": 3}], "next_page_token": "p3"}), (200, {}))
    client = TrackingClient(server.url, retries=0)
    items = list(client.paged("runs/search", {"experiment_ids": ["0"]}, "runs", page_size=2))
    assert [item["id"] for item in items] == [1, 2, 3]
    bodies = [request["body"] for request in server.requests]
    assert [body.get("page_token") for body in bodies] == [None, "p2", "p3"]
    assert all(body["max_results"] == 2 and body["experiment_ids"] == ["0"] for body in bodies)


def test_get_search_sends_the_body_as_query_parameters(server):
    server.on("model-versions/search", (200, {"model_versions": [{"version": "1"}], "next_page_token": "t"}),
              (200, {"model_versions": [{"version": "2"}]}))
    client = TrackingClient(server.url, retries=0)
    versions = list(client.paged("model-versions/search", {"filter": "name='m'"}, "model_versions", method="GET"))
    assert [item["version"] for item in versions] == ["1", "2"]
    assert [request["method"] for request in server.requests] == ["GET", "GET"]
    assert server.requests[1]["query"] == {"filter": ["name='m'"], "max_results": ["1000"], "page_token": ["t"]}


def test_5xx_and_429_are_retried_then_succeed(server):
    server.on("experiments/get", (503, {"error_code": "TEMPORARILY_UNAVAILABLE"}), (429, {"error_code": "RATE"}),
              (200, {"experiment": {"experiment_id": "7"}}))
    client = TrackingClient(server.url, retries=2)
    assert client.get("experiments/get", experiment_id="7")["experiment"]["experiment_id"] == "7"
    assert len(server.requests) == 3 and client.consecutive_failures == 0


def test_retries_run_out_with_an_http_error(server):
    server.on("experiments/get", (503, {"message": "down for maintenance"}))
    client = TrackingClient(server.url, retries=2)
    with pytest.raises(TrackingError) as info:
        client.get("experiments/get", experiment_id="7")
    assert len(server.requests) == 3
    assert info.value.kind == "http" and info.value.status == 503 and "down for maintenance" in info.value.msg


@pytest.mark.parametrize("status,body,kind,words", [
    (404, {"error_code": "RESOURCE_DOES_NOT_EXIST"}, "http", "HTTP 404: RESOURCE_DOES_NOT_EXIST"),
    (403, {"message": "no permission"}, "http", "authentication failed (no permission)"),
    (401, "nope", "http", "authentication failed"),
    (200, "<html>not mlflow</html>", "protocol", "did not answer with JSON"),
])
def test_client_errors_are_not_retried_and_have_a_kind(server, status, body, kind, words):
    server.on("runs/delete", (status, body))
    client = TrackingClient(server.url, retries=3)
    with pytest.raises(TrackingError) as info:
        client.post("runs/delete", {"run_id": "r"})
    assert len(server.requests) == 1
    assert info.value.kind == kind and words in info.value.msg


def test_refused_connection_is_a_transport_failure():
    client = TrackingClient(refused_url(), retries=0, timeout=2)
    with pytest.raises(TrackingError) as info:
        client.get("experiments/search")
    assert info.value.kind == "connection" and tracking.is_transport_failure(info.value)


def test_credentials_in_the_uri_become_basic_auth_and_leave_the_url(server):
    server.on("experiments/search", (200, {"experiments": []}))
    address = server.url.replace("http://", "http://alice:s3cret@")
    client = TrackingClient(address, retries=0)
    client.post("experiments/search", {})
    assert "s3cret" not in client.base_url and "s3cret" not in client.url("experiments/search")
    assert server.requests[0]["auth"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_token_wins_over_basic_auth(server):
    server.on("experiments/search", (200, {"experiments": []}))
    TrackingClient(server.url, username="u", password="p", token="tok", retries=0).post("experiments/search", {})
    assert server.requests[0]["auth"] == "Bearer tok"


@pytest.mark.parametrize("uri", ["", "file:///tmp/mlruns", "sqlite:///x.db", "ftp://host"])
def test_only_http_tracking_uris_are_accepted(uri):
    with pytest.raises(MaintenanceError, match="tracking_uri must be the http"):
        TrackingClient(uri)
