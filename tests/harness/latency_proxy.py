# -*- coding: utf-8 -*-
"""An HTTP reverse proxy that adds a fixed latency to every request (a real S3 region's ~20 ms), for benchmarks.

moto answers in well under a millisecond on loopback, so a benchmark against it measures CPU, not the
round trips that dominate against real S3. ``LatencyProxy(upstream_url, latency_ms=20)`` forwards every request
(method, path, headers, body) to ``upstream_url`` after sleeping ``latency_ms`` and returns the answer unchanged.
Each connection is served by its own thread, so concurrent requests overlap as they would against S3.
"""

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self):
        server = self.server
        body = self._body()
        time.sleep(server.latency)
        headers = dict((k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP)
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        connection = server.upstream_connection()
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            server.drop_connection()
            self.send_error(502)
            return
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else response.getheader(
            "Content-Length") or 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815


class LatencyProxy:
    def __init__(self, upstream_url, latency_ms=20.0):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port or 80)
        self.latency = latency_ms / 1000.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.latency = self.latency
        self._local = threading.local()
        self._server.upstream_connection = self._connection
        self._server.drop_connection = self._drop
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = None

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(*self.upstream, timeout=120)
            self._local.connection = connection
        return connection

    def _drop(self):
        self._local.connection = None

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
