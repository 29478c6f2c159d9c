# -*- coding: utf-8 -*-
"""Fault servers for tests: endpoints that misbehave on purpose, on free loopback ports.

``TrickleServer``  accepts HTTP connections and answers one byte per ``interval`` seconds, forever (until
                   ``stop()`` or its own ``lifetime`` runs out). A per-request read timeout never trips, because a
                   byte always arrives before it: only an overall wall-clock bound stops a client.
                   ``mode="all"`` trickles the whole response from its first byte (the status line never completes);
                   ``mode="body"`` sends complete headers at once (200, a large Content-Length) and trickles the body.
``ErrorServer``    answers every request at once with ``status`` (default 503) and a small JSON body.
``refused_url()``  a loopback URL on which nothing listens (connection refused).

Every server is a context manager, registers itself with atexit, and uses daemon threads, so nothing outlives the
test run.
"""

import atexit
import contextlib
import socket
import threading
import time

__all__ = ["TrickleServer", "ErrorServer", "refused_url"]


def _free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_url():
    """An http URL on a free loopback port where nothing listens."""
    return "http://127.0.0.1:%d" % _free_port()


class _LoopbackServer(object):
    """Accept loop on a free loopback port; subclasses implement ``_serve(conn)``."""

    def __init__(self, lifetime=120.0):
        self.lifetime = float(lifetime)
        self.host = "127.0.0.1"
        self.port = None
        self.connections = 0
        self.requests = []  # first bytes of each request (up to 8 KiB), for assertions
        self._sock = None
        self._stop = threading.Event()
        self._started_at = None
        self._lock = threading.Lock()
        self._threads = []

    @property
    def url(self):
        if self.port is None:
            raise RuntimeError("server not started")
        return "http://%s:%d" % (self.host, self.port)

    def start(self):
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(64)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._started_at = time.monotonic()
        thread = threading.Thread(target=self._accept_loop, name="%s-accept" % type(self).__name__, daemon=True)
        thread.start()
        self._threads.append(thread)
        atexit.register(self.stop)
        return self

    def stop(self):
        self._stop.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _expired(self):
        return self._stop.is_set() or (time.monotonic() - self._started_at) > self.lifetime

    def _accept_loop(self):
        sock = self._sock
        while not self._expired():
            try:
                conn, _addr = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._stop.set()
        with contextlib.suppress(OSError):
            sock.close()

    def _read_request(self, conn):
        """Read what the client sent so far (headers), without waiting long for a body."""
        conn.settimeout(0.5)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 8192 and not self._expired():
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, OSError):
            pass
        with self._lock:
            self.requests.append(data[:8192])
        return data

    def _handle(self, conn):
        try:
            self._read_request(conn)
            self._serve(conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _serve(self, conn):
        raise NotImplementedError


class TrickleServer(_LoopbackServer):
    """Answers every connection one byte per ``interval`` seconds until stopped (bounded by ``lifetime``)."""

    HEADERS = (b"HTTP/1.1 200 OK\r\n"
               b"Content-Type: application/json\r\n"
               b"Content-Length: 100000000\r\n"
               b"\r\n")

    def __init__(self, interval=1.0, mode="all", lifetime=120.0):
        if mode not in ("all", "body"):
            raise ValueError("mode must be 'all' or 'body'")
        super(TrickleServer, self).__init__(lifetime=lifetime)
        self.interval = float(interval)
        self.mode = mode
        self.bytes_sent = 0

    def _payload(self):
        """The response bytes, endless: headers (trickled in mode 'all'), then a JSON body that never ends."""
        if self.mode == "all":
            for byte in self.HEADERS:
                yield bytes([byte])
        for byte in b'{"runs": [':
            yield bytes([byte])
        while True:
            yield b" "

    def _serve(self, conn):
        conn.settimeout(5.0)
        if self.mode == "body":
            conn.sendall(self.HEADERS)
        for piece in self._payload():
            if self._stop.wait(self.interval) or self._expired():
                return
            conn.sendall(piece)
            with self._lock:
                self.bytes_sent += len(piece)


class ErrorServer(_LoopbackServer):
    """Answers every request at once with ``status`` and a small JSON body, then closes the connection."""

    def __init__(self, status=503, lifetime=120.0):
        super(ErrorServer, self).__init__(lifetime=lifetime)
        self.status = int(status)

    def _serve(self, conn):
        body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected fault"}'
        head = ("HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (self.status, len(body))).encode("ascii")
        conn.sendall(head + body)
