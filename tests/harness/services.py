# -*- coding: utf-8 -*-
"""Real services for tests, benchmarks and the demo: PostgreSQL, moto's S3 server, MLflow servers.

Every service runs on a free loopback port in its own temporary directory, in its own process
group, and is stopped by ``stop()`` (also registered with atexit), so two test runs on one
machine never collide and nothing outlives the run.
"""

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from http.client import HTTPConnection

_LIVE = []


def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, what, process=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("%s exited with %s before it was ready:\n%s" % (what, process.returncode, _tail(log_path)))
        try:
            if predicate():
                return
        except Exception:  # pylint: disable=broad-except
            pass
        time.sleep(0.2)
    raise RuntimeError("%s was not ready within %ss:\n%s" % (what, timeout, _tail(log_path)))


def _tail(path, lines=40):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec - loopback test service
        return response.status, response.read().decode("utf-8", "replace")


def _stop_all():
    for service in list(reversed(_LIVE)):
        with contextlib.suppress(Exception):
            service.stop()


atexit.register(_stop_all)


class Service:
    """A child process in its own session, killed with its whole process group."""

    name = "service"

    def __init__(self, root=None):
        self.root = root or tempfile.mkdtemp(prefix="mlflowops-%s-" % self.name)
        self.process = None
        self.log_path = os.path.join(self.root, "%s.log" % self.name)

    def _spawn(self, argv, env=None, cwd=None):
        log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd or self.root,
            start_new_session=True,
        )
        log.close()
        if self not in _LIVE:
            _LIVE.append(self)

    def detach(self):
        """Leave the process running after this Python process exits (for scripts that daemonize it)."""
        if self in _LIVE:
            _LIVE.remove(self)

    def kill(self, sig=signal.SIGKILL):
        """Kill the process group at once (to simulate a crash)."""
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children (uvicorn workers) may outlive a leader that exited first.
        if self.process:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        raise NotImplementedError


def _postgres_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are missing: apt-get install -y postgresql")
    return os.path.dirname(found[-1])


class PostgresCluster(Service):
    """A throwaway PostgreSQL cluster on a free port: trust on its socket, scram passwords over TCP."""

    name = "postgres"

    def __init__(self, root=None):
        super().__init__(root)
        os.chmod(self.root, 0o755)
        self.bindir = _postgres_bindir()
        self.port = free_port()
        self.datadir = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        self.superuser_password = "pg-" + secrets.token_hex(8)
        self.as_root = os.geteuid() == 0
        self.owner = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _run_as_owner(self, argv, **kwargs):
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run(prefix + argv, check=True, capture_output=True, text=True, **kwargs)

    def start(self):
        os.makedirs(self.sockdir, exist_ok=True)
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(self.superuser_password + "\n")
        if self.as_root:
            uid = pwd.getpwnam("postgres")
            for path in (self.root, self.sockdir, pwfile):
                os.chown(path, uid.pw_uid, uid.pw_gid)
            os.chmod(self.root, 0o755)
        self._run_as_owner([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", pwfile,
                            "-E", "UTF8", "--no-sync"])
        os.remove(pwfile)
        options = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" % (
            self.port, self.sockdir)
        self._run_as_owner([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-o", options,
                            "-l", os.path.join(self.root, "server.log"), "-w", "-t", "60", "start"])
        if self not in _LIVE:
            _LIVE.append(self)
        return self

    def stop(self):
        if os.path.isdir(self.datadir):
            with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                self._run_as_owner([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "immediate",
                                    "-w", "stop"])
        if self in _LIVE:
            _LIVE.remove(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql, database="postgres"):
        """Run SQL as the superuser over the socket; returns stdout (tuples only, unaligned)."""
        result = subprocess.run(
            ["psql", "-h", self.sockdir, "-p", str(self.port), "-U", "postgres", "-d", database, "-v",
             "ON_ERROR_STOP=1", "-Atq", "-c", sql], check=True, capture_output=True, text=True)
        return result.stdout.strip()

    def create_database(self, name, user=None, password=None):
        """A database owned by ``user`` (created with ``password`` when given). Returns its URI."""
        user = user or "mlflow_%s" % name
        password = password or "pw-" + secrets.token_hex(6)
        exists = self.psql("SELECT 1 FROM pg_roles WHERE rolname = '%s'" % user)
        if not exists:
            self.psql("CREATE ROLE \"%s\" LOGIN PASSWORD '%s'" % (user, password))
        else:
            self.psql("ALTER ROLE \"%s\" PASSWORD '%s'" % (user, password))
        self.psql("CREATE DATABASE \"%s\" OWNER \"%s\"" % (name, user))
        return self.uri(name, user, password)

    def uri(self, database, user, password, driver="postgresql+psycopg2"):
        return "%s://%s:%s@127.0.0.1:%d/%s" % (driver, user, password, self.port, database)


class MariaDBServer(Service):
    """A throwaway MariaDB server from Debian's packages: own datadir, free loopback port, password auth.

    ``root`` has a random password over TCP; ``create_database`` makes a database and a user with a password
    that may hold shell and URI special characters (quoted in URIs).
    """

    name = "mariadb"

    def __init__(self, root=None):
        super().__init__(root)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.datadir = os.path.join(self.root, "data")
        self.socket = os.path.join(self.root, "mysqld.sock")
        self.root_password = "root-" + secrets.token_hex(8)
        self.as_root = os.geteuid() == 0

    def start(self):
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db")
        if not os.path.exists(mariadbd) or not install:
            raise RuntimeError("MariaDB server binaries are missing: apt-get install -y mariadb-server mariadb-client")
        user = ["--user=mysql"] if self.as_root else []
        if self.as_root:
            os.makedirs(self.datadir, exist_ok=True)
            uid = pwd.getpwnam("mysql")
            for path in (self.root, self.datadir):
                os.chown(path, uid.pw_uid, uid.pw_gid)
        subprocess.run([install, "--no-defaults", "--datadir=%s" % self.datadir, "--auth-root-authentication-method=normal",
                        "--skip-test-db"] + user, check=True, capture_output=True, text=True)
        self._spawn([mariadbd, "--no-defaults", "--datadir=%s" % self.datadir, "--port=%d" % self.port,
                     "--bind-address=127.0.0.1", "--socket=%s" % self.socket, "--skip-name-resolve",
                     "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin",
                     "--innodb-log-file-size=48M", "--max-connections=200", "--log-error=%s" % os.path.join(
                         self.root, "error.log"), "--pid-file=%s" % os.path.join(self.root, "mysqld.pid")] + user)
        self.log_path = os.path.join(self.root, "error.log")
        wait_until(lambda: os.path.exists(self.socket) and self._admin_ping(), 90, "mariadb server",
                   self.process, self.log_path)
        self.sql("ALTER USER 'root'@'localhost' IDENTIFIED BY '%s'" % self.root_password, password="")
        self.sql("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '%s'" % self.root_password)
        self.sql("ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '%s'" % self.root_password)
        self.sql("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
        return self

    def _admin_ping(self):
        self.sql("SELECT 1", password="")
        return True

    def connect(self, database=None, password=None):
        import pymysql  # pylint: disable=import-outside-toplevel
        return pymysql.connect(unix_socket=self.socket, user="root",
                               password=self.root_password if password is None else password,
                               database=database, autocommit=True, connect_timeout=5)

    def sql(self, statement, database=None, password=None, args=None):
        """Run one statement as root over the socket; returns all rows."""
        conn = self.connect(database, password)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall()
        finally:
            conn.close()

    def create_database(self, name, user=None, password=None, grant_all=True):
        """A database and a user with every privilege on it (and on *.* with ``grant_all`` for scratch databases)."""
        user = user or ("u_" + name)[:32]
        password = password or "pw-" + secrets.token_hex(6)
        self.sql("CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4" % name)
        self.sql("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", args=(user, password))
        self.sql("ALTER USER %s@'127.0.0.1' IDENTIFIED BY %s", args=(user, password))
        self.sql("GRANT ALL PRIVILEGES ON %s TO %%s@'127.0.0.1'" % ("*.*" if grant_all else "`%s`.*" % name),
                 args=(user,))
        return self.uri(name, user, password)

    def uri(self, database, user, password, driver="mysql+pymysql"):
        from urllib.parse import quote  # pylint: disable=import-outside-toplevel
        return "%s://%s:%s@127.0.0.1:%d/%s" % (driver, quote(user, safe=""), quote(password, safe=""), self.port,
                                               database)

    def stop(self):
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in _LIVE:
            _LIVE.remove(self)
        shutil.rmtree(self.root, ignore_errors=True)


class MotoS3(Service):
    """moto's standalone S3 server over real HTTP on loopback."""

    name = "moto"
    access_key = "testing-access-key"
    secret_key = "testing-secret-key"
    region = "us-east-1"

    def __init__(self, root=None):
        super().__init__(root)
        self.port = free_port()
        self.endpoint_url = "http://127.0.0.1:%d" % self.port

    def start(self):
        self._spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)])
        wait_until(lambda: http_get(self.endpoint_url + "/moto-api/")[0] == 200, 60, "moto server",
                   self.process, self.log_path)
        return self

    @property
    def env(self):
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(max_pool_connections=32, retries={"max_attempts": 3}))

    def create_bucket(self, name=None):
        name = name or "bucket-" + secrets.token_hex(4)
        self.client().create_bucket(Bucket=name)
        return name


class MlflowServer(Service):
    """``mlflow server`` from the installed package, on a free loopback port."""

    name = "mlflow"

    def __init__(self, backend_store_uri=None, artifacts_destination=None, root=None, basic_auth=False,
                 extra_env=None, python=None, port=None, workers=1):
        super().__init__(root)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.backend_store_uri = backend_store_uri or "sqlite:///%s" % os.path.join(self.root, "mlflow.db")
        self.artifacts_destination = artifacts_destination or os.path.join(self.root, "artifacts")
        self.basic_auth = basic_auth
        self.admin_username = "admin"
        self.admin_password = "admin-" + secrets.token_hex(6)
        self.extra_env = dict(extra_env or {})
        self.python = python or sys.executable
        self.workers = workers

    @property
    def sqlite_path(self):
        if self.backend_store_uri.startswith("sqlite:///"):
            return self.backend_store_uri[len("sqlite:///"):]
        return None

    def env(self):
        env = dict(os.environ)
        env.update(self.extra_env)
        # The job runner's consumers cost ~1 GB and seconds of start-up, and these tests need no jobs.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.basic_auth:
            config = os.path.join(self.root, "basic_auth.ini")
            with open(config, "w") as handle:
                handle.write(
                    "[mlflow]\ndefault_permission = READ\n"
                    "database_uri = sqlite:///%s\n" % os.path.join(self.root, "basic_auth.db")
                    + "admin_username = %s\nadmin_password = %s\n" % (self.admin_username, self.admin_password)
                    + "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env["MLFLOW_AUTH_CONFIG_PATH"] = config
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(16))
        return env

    def start(self, timeout=180):
        argv = [self.python, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                "--artifacts-destination", self.artifacts_destination, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers)]
        if self.basic_auth:
            argv += ["--app-name", "basic-auth"]
        self._spawn(argv, env=self.env())
        wait_until(lambda: http_get(self.url + "/health")[1].strip() == "OK", timeout, "mlflow server",
                   self.process, self.log_path)
        return self

    def restart(self):
        self.stop()
        return self.start()


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards requests to an upstream HTTP server, optionally demanding a bearer token."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def _forward(self):
        server = self.server
        if server.token is not None and self.headers.get("Authorization") != "Bearer %s" % server.token:
            body = b'{"error_code": "UNAUTHENTICATED", "message": "a valid bearer token is required"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else None
        headers = dict((k, v) for k, v in self.headers.items() if k.lower() not in ("host", "authorization"))
        connection = HTTPConnection(server.upstream_host, server.upstream_port, timeout=60)
        try:
            connection.request(self.command, self.path, body=payload, headers=headers)
            upstream = connection.getresponse()
            data = upstream.read()
            self.send_response(upstream.status)
            for key, value in upstream.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            connection.close()

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _forward


class BackgroundHttpd:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread; ``url``, start/stop."""

    def __init__(self, handler, scheme="http"):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = "%s://127.0.0.1:%d" % (scheme, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FrontProxy(BackgroundHttpd):
    """A token-checking and/or TLS-terminating proxy in front of an MLflow server, in this process."""

    def __init__(self, upstream_url, token=None, tls=False):
        host_port = upstream_url.split("://", 1)[1]
        host, port = host_port.split(":")
        super().__init__(_ProxyHandler, scheme="https" if tls else "http")
        self.httpd.upstream_host, self.httpd.upstream_port = host, int(port)
        self.httpd.token = token
        self.cert_path = None
        if tls:
            self.cert_path = make_self_signed_cert(tempfile.mkdtemp(prefix="mlflowops-tls-"))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_path, self.cert_path.replace(".crt", ".key"))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)


def make_self_signed_cert(directory, common_name="127.0.0.1"):
    cert = os.path.join(directory, "server.crt")
    key = os.path.join(directory, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=%s" % common_name, "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert


class _NotMlflowHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass

    def do_GET(self):  # pylint: disable=invalid-name
        body = b"<html><body>It works!</body></html>"
        self.send_response(200 if self.path in ("/", "/health") else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


class PlainHttpServer(BackgroundHttpd):
    """An HTTP server that is not MLflow (answers 200 with HTML on / and /health, 404 elsewhere)."""

    def __init__(self):
        super().__init__(_NotMlflowHandler)


class SilentListener:
    """Accepts TCP connections (the kernel completes the handshake) and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def start(self):
        return self

    def stop(self):
        self.sock.close()


def closed_port_url():
    return "http://127.0.0.1:%d" % free_port()


def api(url, path, payload=None, auth=None, method=None, timeout=30):
    """A tiny JSON REST call for tests (so the tests themselves need no client library)."""
    import base64  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url.rstrip("/") + "/api/2.0/mlflow/" + path, data=data,
                                     method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec - loopback test service
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError("%s %s: HTTP %s %s" % (request.get_method(), path, exc.code, exc.read()[:300]))
    return json.loads(body) if body else {}
