# -*- coding: utf-8 -*-
"""A forwarding proxy that kills the MLflow server behind it at a chosen request: deterministic "server died midway".

``KillProxy(server, match, after)``: forwards every request to ``server.url``; the ``after``-th request whose
``METHOD path`` contains ``match`` is not forwarded: the server is killed (SIGKILL) and the connection is closed
without an answer. Every later request finds the server gone and is closed the same way.
"""

import http.client
import threading
from http.server import BaseHTTPRequestHandler

from harness.services import BackgroundHttpd


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def _handle(self):
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with proxy.lock:
            if proxy.match in "%s %s" % (self.command, self.path):
                proxy.matched += 1
                if proxy.matched == proxy.after and not proxy.killed:
                    proxy.mlflow.kill()
                    proxy.killed = True
            dead = proxy.killed
        if dead:
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        headers = dict((key, value) for key, value in self.headers.items() if key.lower() not in ("host", "connection"))
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        except OSError:
            self.close_connection = True
            return
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = _handle


class KillProxy(BackgroundHttpd):
    def __init__(self, mlflow_server, match, after):
        self.mlflow = mlflow_server
        self.port = int(mlflow_server.url.rsplit(":", 1)[1])
        self.match = match
        self.after = int(after)
        self.matched = 0
        self.killed = False
        self.lock = threading.Lock()
        super().__init__(_Handler)
        self.httpd.proxy = self
