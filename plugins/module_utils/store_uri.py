# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-store URIs: parse, redact, and hand credentials to libpq without argv.

Accepted spellings: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://``,
``postgresql+psycopg2://``, ``postgresql+psycopg://`` (and ``postgres://``), ``mysql://``, ``mysql+pymysql://``
and ``mysql+mysqldb://`` (MySQL and MariaDB; the collection talks to them through PyMySQL). MSSQL is refused
with a plain "not supported".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re

from ansible.module_utils.six.moves.urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_tools import private_secret_file

POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgres")
MYSQL_SCHEMES = ("mysql", "mysql+pymysql", "mysql+mysqldb", "mariadb", "mariadb+pymysql", "mariadb+mysqldb")
MSSQL_SCHEMES = ("mssql", "mssql+pyodbc", "mssql+pymssql", "mssql+aioodbc", "sqlserver")
# MySQL URI query parameters kept (SSL, socket, charset); others are refused so a typo is not silently ignored.
MYSQL_QUERY_KEYS = ("unix_socket", "charset", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert",
                    "ssl_verify_identity", "ssl_disabled", "ssl_mode")

# libpq environment variables for URI query parameters we pass through.
_LIBPQ_QUERY_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}


# ``scheme://user:password@`` (the password as written, up to the first ``@``) and ``password=`` query values.
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:'\"]*):(?P<secret>[^\s@'\"]*?)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&;]password=)(?P<secret>[^&#\s'\"]*)", re.IGNORECASE)


def redact_uri(text):
    """``text`` with every URI userinfo password and ``password=`` query value replaced by ``***``.

    Works on any scheme and on free text that contains URIs (error messages), so callers can pass
    a whole message through it.
    """
    if text is None:
        return None
    text = _USERINFO_PASSWORD.sub(lambda match: match.group("head") + ":***@", str(text))
    return _QUERY_PASSWORD.sub(lambda match: match.group("head") + "***", text)


def _written_passwords(uri):
    """Every string that may be the password inside ``uri``, as written (not decoded)."""
    text = str(uri or "")
    found = []
    if "://" in text:
        rest = text.split("://", 1)[1]
        # The authority as a URI parser sees it (up to the first / ? #), and as someone who did not
        # percent-encode a / or # in the password wrote it (up to the last @).
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        for userinfo in (authority.rpartition("@")[0], rest.rpartition("@")[0]):
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
    for pattern in (r"(?:^|[?&;])password=([^&#]*)", r"(?:^|[?&;])password=([^&]*)"):
        found.extend(match.group(1) for match in re.finditer(pattern, text, re.IGNORECASE))
    return found


def secret_forms(uri):
    """Every form in which the secrets of ``uri`` may be shown: as written, decoded and re-encoded.

    Covers the userinfo password and ``password=`` query values; each as written (percent-encoded
    or not), decoded (``%xx`` and ``+``), and encoded again with ``quote`` and ``quote_plus``.
    Empty strings are never returned (they would mask every position of every output).
    """
    forms = set()
    for written in _written_passwords(uri):
        decoded = set([written, unquote(written), unquote_plus(written)])
        forms.update(decoded)
        for value in decoded:
            forms.update([quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")])
    forms.discard("")
    return forms


class BackendStore:
    """A parsed backend-store URI. ``password`` never appears in ``redacted`` or ``to_result``."""

    def __init__(self, engine, path=None, host=None, port=None, user=None, password=None, database=None,
                 query=None, scheme=None):
        self.engine = engine
        self.path = path
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.query = dict(query or {})
        self.scheme = scheme

    @property
    def is_sqlite(self):
        return self.engine == "sqlite"

    @property
    def is_postgresql(self):
        return self.engine == "postgresql"

    @property
    def is_mysql(self):
        return self.engine == "mysql"

    @property
    def socket_host(self):
        """The host libpq should use: the URI's host, else a ``host=`` query parameter (a socket dir).

        MySQL: the host, else the ``unix_socket`` path.
        """
        if self.is_mysql:
            return self.host or self.query.get("unix_socket")
        return self.host or self.query.get("host")

    def redacted(self):
        if self.is_sqlite:
            return "sqlite:///%s" % self.path
        auth = ""
        if self.user:
            auth = quote(self.user, safe="") + (":***" if self.password else "") + "@"
        netloc = auth + (self.host or "") + (":%s" % self.port if self.port else "")
        query = "&".join("%s=%s" % (k, quote(str(v), safe="/")) for k, v in sorted(self.query.items()))
        return "%s://%s/%s%s" % (self.scheme, netloc, self.database or "", "?" + query if query else "")

    def sqlalchemy_url(self, driver=None, database=None):
        """A URL for SQLAlchemy (MLflow's store code). Contains the password: never return or log it."""
        if self.is_sqlite:
            return "sqlite:///%s" % self.path
        if self.is_mysql:
            driver = driver or "pymysql"
        else:
            driver = driver or installed_postgres_driver()
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        netloc = auth + (self.host or "") + (":%s" % self.port if self.port else "")
        query = "&".join("%s=%s" % (k, quote(str(v), safe="/")) for k, v in sorted(self.query.items()))
        return "%s+%s://%s/%s%s" % ("mysql" if self.is_mysql else "postgresql", driver, netloc,
                                    database or self.database or "", "?" + query if query else "")

    def libpq_env(self, pgpass_file=None, database=None, connect_timeout=None):
        """Environment for pg_dump/pg_restore/psql: connection by variables, secret by PGPASSFILE."""
        env = {}
        if self.socket_host:
            env["PGHOST"] = self.socket_host
        if self.port:
            env["PGPORT"] = str(self.port)
        if self.user:
            env["PGUSER"] = self.user
        env["PGDATABASE"] = database or self.database or ""
        for key, variable in _LIBPQ_QUERY_ENV.items():
            if key in self.query:
                env[variable] = str(self.query[key])
        if connect_timeout:
            env["PGCONNECT_TIMEOUT"] = str(int(connect_timeout))
        if pgpass_file:
            env["PGPASSFILE"] = pgpass_file
        return env

    def psycopg2_kwargs(self, database=None, connect_timeout=None):
        kwargs = dict(dbname=database or self.database)
        if self.socket_host:
            kwargs["host"] = self.socket_host
        if self.port:
            kwargs["port"] = self.port
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "options"):
            if key in self.query:
                kwargs[key] = self.query[key]
        if connect_timeout:
            kwargs["connect_timeout"] = int(connect_timeout)
        return kwargs

    def to_result(self):
        result = dict(engine=self.engine, uri=self.redacted())
        if self.is_sqlite:
            result["path"] = self.path
        else:
            result.update(host=self.socket_host, port=self.port, user=self.user, database=self.database)
        return result


def installed_postgres_driver():
    """``psycopg2`` when importable, else ``psycopg`` (3), the driver SQLAlchemy 2.1 defaults to."""
    for module_name, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        try:
            __import__(module_name)
            return driver
        except ImportError:
            continue
    return "psycopg2"


def parse_backend_store_uri(uri, password=None):
    """Parse a backend-store URI into a BackendStore; ``password`` overrides one in the URI."""
    if not uri or "://" not in uri:
        raise MaintenanceError("backend_store_uri %r is not a URI like sqlite:////path/mlflow.db or "
                               "postgresql://user@host/db" % (_redact_raw(uri),))
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "sqlite":
        rest = uri.split("://", 1)[1]
        if not rest.startswith("/") or rest in ("/", ""):
            raise MaintenanceError("backend_store_uri %r must name a file: sqlite:////absolute/path.db" % uri)
        path = unquote(rest[1:].split("?", 1)[0])
        if not path or path == ":memory:":
            raise MaintenanceError("backend_store_uri %r names no database file" % uri)
        return BackendStore("sqlite", path=os.path.abspath(path), scheme="sqlite")
    if scheme in POSTGRES_SCHEMES:
        parts, query, query_password = _split_server_uri(uri)
        database = unquote(parts.path.lstrip("/")) or query.pop("dbname", None)
        if not database:
            raise MaintenanceError("backend_store_uri %r names no database" % (_redact_raw(uri),))
        return _server_store("postgresql", parts, query, query_password, database, password, scheme)
    if scheme in MYSQL_SCHEMES:
        return _parse_mysql(uri, scheme, password)
    if scheme in MSSQL_SCHEMES or scheme.startswith("mssql"):
        raise MaintenanceError(
            "backend_store_uri scheme %r: Microsoft SQL Server (MSSQL) backend stores are not supported by this "
            "collection; supported are SQLite, PostgreSQL and MySQL/MariaDB" % scheme)
    raise MaintenanceError(
        "backend_store_uri scheme %r is not supported; use sqlite://, postgresql:// "
        "(also postgresql+psycopg2:// and postgresql+psycopg://) or mysql:// (also mysql+pymysql:// "
        "and mysql+mysqldb://)" % scheme
    )


def _split_server_uri(uri):
    """``(parts, query, query_password)`` of a server URI (its port checked). MLflow (SQLAlchemy, libpq) accepts
    ``?password=``: it is used, and never kept in the query."""
    try:
        parts = urlsplit(uri)
        # a bad port raises ValueError when it is read
        parts.port  # pylint: disable=pointless-statement
    except ValueError as exc:
        raise MaintenanceError("backend_store_uri %r is malformed: %s" % (_redact_raw(uri), redact_uri(exc)))
    query = dict(parse_qsl(parts.query))
    return parts, query, query.pop("password", None)


def _server_store(engine, parts, query, query_password, database, password, scheme):
    """The BackendStore of a parsed server URI; ``password`` (the option) wins over the URI's own."""
    return BackendStore(
        engine,
        host=parts.hostname,
        port=parts.port,
        user=unquote(parts.username) if parts.username else None,
        password=password or (unquote(parts.password) if parts.password else None) or query_password or None,
        database=database,
        query=query,
        scheme=scheme,
    )


def _parse_mysql(uri, scheme, password=None):
    """``mysql[+driver]://user:password@host:port/database?unix_socket=...&ssl_ca=...``."""
    parts, query, query_password = _split_server_uri(uri)
    database = unquote(parts.path.lstrip("/")) or None
    if not database:
        raise MaintenanceError("backend_store_uri %r names no database" % (_redact_raw(uri),))
    unknown = sorted(k for k in query if k not in MYSQL_QUERY_KEYS)
    if unknown:
        raise MaintenanceError("backend_store_uri %r: unsupported MySQL query parameter(s) %s; supported: %s" % (
            _redact_raw(uri), ", ".join(unknown), ", ".join(MYSQL_QUERY_KEYS)))
    if not parts.hostname and not query.get("unix_socket"):
        raise MaintenanceError("backend_store_uri %r names no host (or ?unix_socket=/path)" % (_redact_raw(uri),))
    return _server_store("mysql", parts, query, query_password, database, password,
                         scheme if scheme.startswith("mysql") else scheme.replace("mariadb", "mysql"))


def backend_store_from_module(module, uri_option="backend_store_uri", password_option="db_password"):
    """Parse the module's backend-store option and mask its password everywhere Ansible reports.

    A password written inside the URI is not covered by ``no_log`` on a separate option, so every
    form of it is added to ``module.no_log_values`` (MlflowOpsModule already did so before argument
    validation; this keeps plain AnsibleModule callers safe): results and the logged invocation show
    it as ``********``.
    """
    uri = module.params.get(uri_option)
    if not uri:
        raise MaintenanceError("%s is required by this module (or set MLFLOW_BACKEND_STORE_URI)" % uri_option)
    module.no_log_values.update(secret_forms(uri))
    store = parse_backend_store_uri(uri, module.params.get(password_option))
    if store.password:
        module.no_log_values.update(secret_forms("x://u:%s@h" % quote(store.password, safe="")))
    return store


def _redact_raw(uri):
    """Best-effort redaction of a URI we could not parse, for error messages."""
    text = str(uri or "")
    if "://" in text and "@" in text:
        scheme, rest = text.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        text = "%s://%s@%s" % (scheme, creds.split(":", 1)[0] + (":***" if ":" in creds else ""), host)
    return redact_uri(text)


@contextlib.contextmanager
def pgpass_file(store):
    """A 0600 pgpass file in a private 0700 directory holding the store's password, removed afterwards.

    Yields its path, or None when there is no password (libpq then uses its own defaults).
    """
    if not store.password:
        yield None
        return
    # host:port:database:user:password, with : and \ escaped; wildcards so that a scratch
    # database on the same server (verify: restore) authenticates too.
    text = "*:*:*:%s:%s\n" % (_pgpass_escape(store.user or "*"), _pgpass_escape(store.password))
    with private_secret_file("mlflowops-pgpass-", "pgpass", text) as path:
        yield path


def _pgpass_escape(value):
    return str(value).replace("\\", "\\\\").replace(":", "\\:")
