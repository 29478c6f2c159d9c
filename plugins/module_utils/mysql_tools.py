# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL and MariaDB backend stores: PyMySQL connections, dumps and restores with the password in an option file.

Secrets: the client tools (``mariadb-dump``/``mysqldump``, ``mariadb``/``mysql``) get every connection setting,
the password included, from a temporary 0600 option file in a private 0700 directory, passed as their FIRST
argument (``--defaults-extra-file`` must come first); it is removed when the tool ends. The password is never in
argv or in the child's environment (``MYSQL_PWD`` is removed from it).

Consistency: the dump runs with ``--single-transaction`` (one InnoDB consistent snapshot, no table locks; only
DDL waits on, or is held by, the metadata locks of the table being dumped).

Change fingerprint (unchanged-store detection), first O(1) (``quick_fingerprint``), read in one consistent
snapshot taken BEFORE the dump starts: InnoDB's transaction id counter (``Innodb_max_trx_id``: every read-write
transaction takes an id when it first writes and another when it commits, so any committed insert, update, delete
or DDL anywhere on the server moves it; reads, including the dump's, never do), the ids of the read-write
transactions still open (a write that commits later moves the counter then), the server run (start time, server
id, host), the table list with engines, each table's definition (``SHOW CREATE TABLE`` without its
``AUTO_INCREMENT`` counter) and the alembic revision. When it equals the newest backup's, nothing was written
since that backup's snapshot: unchanged, without reading a row. It is None (never equal) when in doubt: a
table that is not InnoDB (its writes take no transaction id), or ``information_schema.innodb_trx`` or the counter
not readable (``innodb_trx`` needs the PROCESS privilege). InnoDB's ``information_schema.tables.UPDATE_TIME``
is not persistent (lost on a restart and on eviction), so it is NOT used.

Otherwise (something wrote on the server: this database, another one, a ``verify: restore`` scratch database,
persistent statistics) the exact scan decides when the newest backup holds an exact value: a sha256 over the
table list, the definitions, ``COUNT(*)`` and ``CHECKSUM TABLE`` (a checksum of every row's content) of every
table and the revision, in that same snapshot. With nothing to compare with (a first backup, ``force``, a
manifest without an exact value) the store is backed up whatever the scan says, so the scan only records its
value for the next run: it runs alongside the dump, in the snapshot taken before it (:meth:`DumpSnapshot.start_scan`).
A change committed after the fingerprint's snapshot but before the dump's only makes the next run back up again
(the dump already holds it). When in doubt, back up: a fingerprint that cannot be computed disables skipping.

Row counts: the dump's snapshot cannot be shared with another session, so the manifest's exact per-table
``row_counts`` are those of the scratch database ``verify: restore`` restored the dump into.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import secrets

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil

try:
    import pymysql
except ImportError:  # pragma: no cover - depends on the host
    pymysql = None

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")
# URI query parameter -> option-file key
_SSL_OPTION_KEYS = {"ssl_ca": "ssl-ca", "ssl_cert": "ssl-cert", "ssl_key": "ssl-key"}
DEFAULT_READ_TIMEOUT = 3600
# stderr lines that mean the tool failed (it may still exit 0, e.g. a client that lost its server)
STDERR_ERRORS = re.compile(r"\b(error|fatal|denied|unknown|can't|cannot)\b", re.I)
_scrub = db_tools.scrub


def _target(store, database=None):
    where = store.host or store.query.get("unix_socket") or "localhost"
    if store.host:
        where = "%s:%s" % (store.host, store.port or 3306)
    return "%s/%s" % (where, database or store.database)


def pymysql_kwargs(store, database=None, connect_timeout=None, read_timeout=None):
    """Keyword arguments for ``pymysql.connect`` (contains the password: never log them)."""
    kwargs = dict(database=database or store.database, charset=store.query.get("charset") or "utf8mb4",
                  connect_timeout=int(connect_timeout or 10), read_timeout=int(read_timeout or DEFAULT_READ_TIMEOUT),
                  write_timeout=int(read_timeout or DEFAULT_READ_TIMEOUT))
    if store.query.get("unix_socket") and not store.host:
        kwargs["unix_socket"] = store.query["unix_socket"]
    else:
        kwargs["host"] = store.host or "localhost"
        kwargs["port"] = int(store.port or 3306)
    if store.user:
        kwargs["user"] = store.user
    if store.password:
        kwargs["password"] = store.password
    ssl = ssl_settings(store.query)
    if ssl:
        kwargs["ssl"] = ssl
    return kwargs


def _truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def ssl_settings(query):
    """PyMySQL's ``ssl`` dict from the URI's ``ssl_*`` query parameters (None when there are none)."""
    ssl = {}
    for key in ("ssl_ca", "ssl_cert", "ssl_key"):
        if query.get(key):
            ssl[key[4:]] = query[key]
    if "ssl_verify_cert" in query:
        ssl["check_hostname"] = _truthy(query["ssl_verify_cert"])
    if "ssl_verify_identity" in query:
        ssl["check_hostname"] = _truthy(query["ssl_verify_identity"])
    mode = str(query.get("ssl_mode", "")).upper()
    if _truthy(query.get("ssl_disabled", "")) or mode == "DISABLED":
        return None
    if mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY") and not ssl:
        ssl["check_hostname"] = mode == "VERIFY_IDENTITY"
    return ssl or None


def connect(store, connect_timeout, database=None, autocommit=True, read_timeout=None):
    if pymysql is None:
        raise MaintenanceError(missing_required_lib("PyMySQL", reason="for MySQL/MariaDB backend stores"))
    try:
        conn = pymysql.connect(autocommit=autocommit,
                               **pymysql_kwargs(store, database, connect_timeout, read_timeout))
    except pymysql.Error as exc:
        raise MaintenanceError("cannot connect to MySQL %s: %s" % (_target(store, database), _scrub(exc, store)))
    return conn


# ---------------------------------------------------------------- option file (the only place the password goes)

def _option_value(value):
    """A value for a MySQL option file: double-quoted, with backslash escapes (the client unescapes them)."""
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"),
                         ('"', '\\"'), ("'", "\\'")):
        text = text.replace(raw, escaped)
    return '"%s"' % text


def option_file_text(store, connect_timeout=None):
    """The ``[client]`` section for the client tools: connection settings and the password."""
    lines = ["[client]"]
    if store.query.get("unix_socket") and not store.host:
        lines.append("socket=%s" % _option_value(store.query["unix_socket"]))
        lines.append("protocol=SOCKET")
    else:
        lines.append("host=%s" % _option_value(store.host or "localhost"))
        lines.append("port=%d" % int(store.port or 3306))
        lines.append("protocol=TCP")
    if store.user:
        lines.append("user=%s" % _option_value(store.user))
    if store.password:
        lines.append("password=%s" % _option_value(store.password))
    for key, option in sorted(_SSL_OPTION_KEYS.items()):
        if store.query.get(key):
            lines.append("%s=%s" % (option, _option_value(store.query[key])))
    # connect-timeout is not a [client] option every tool knows (mariadb-dump refuses it): the client gets it in argv
    return "\n".join(lines) + "\n"


def option_file(store, connect_timeout=None):
    """A 0600 option file in a private 0700 directory, removed afterwards; yields its path."""
    return db_tools.private_secret_file("mlflowops-mycnf-", "client.cnf", option_file_text(store, connect_timeout))


def child_env():
    """The child's environment: no MYSQL_PWD (the password travels only in the option file)."""
    env = dict(os.environ)
    for name in ("MYSQL_PWD", "MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT"):
        env.pop(name, None)
    env.setdefault("LC_ALL", "C")
    return env


# ---------------------------------------------------------------- client tools

def find_tool(candidates, what):
    path = db_tools.find_tool(candidates)
    if path is None:
        raise MaintenanceError("%s is not installed (%s); install the MariaDB or MySQL client tools, e.g. "
                               "apt-get install mariadb-client" % (what, " or ".join(candidates)))
    return path


def is_oracle_mysqldump(version_text):
    """True for Oracle MySQL's mysqldump (it knows --set-gtid-purged); False for MariaDB's tools."""
    text = version_text or ""
    return "mariadb" not in text.lower() and "mysqldump" in text.lower()


def dump_argv(dump, defaults_file, database, oracle=False):
    """The dump's argv. ``--defaults-extra-file`` comes FIRST (the client tools ignore it anywhere else).

    ``--single-transaction`` (consistent InnoDB snapshot without table locks), ``--quick`` (row by row, bounded
    memory), routines, triggers and events are not part of MLflow but are kept when present; ``--hex-blob``
    keeps binary columns byte-exact; no ``CREATE DATABASE``/``USE`` so the dump restores into any database;
    ``--no-tablespaces`` needs no PROCESS privilege.
    """
    argv = [dump, "--defaults-extra-file=%s" % defaults_file, "--single-transaction", "--quick", "--routines",
            "--triggers", "--hex-blob", "--no-tablespaces", "--skip-lock-tables", "--add-drop-table",
            "--default-character-set=utf8mb4", "--skip-dump-date", "--max-allowed-packet=256M"]
    if oracle:
        argv.append("--set-gtid-purged=OFF")
    if str(database).startswith("-"):
        raise MaintenanceError("database name %r starts with '-'; the client tools would read it as an option"
                               % database)
    argv.append(database)
    return argv


def client_argv(client, defaults_file, database, connect_timeout=None):
    """The client's argv for replaying a dump into ``database`` (stops at the first error)."""
    argv = [client, "--defaults-extra-file=%s" % defaults_file, "--batch", "--binary-mode",
            "--default-character-set=utf8mb4", "--max-allowed-packet=256M", "--database=%s" % database]
    if connect_timeout:
        argv.append("--connect-timeout=%d" % int(connect_timeout))
    return argv


def stderr_problems(stderr):
    return db_tools.stderr_problems(stderr, STDERR_ERRORS)


def dump_to(store, argv, out_path, external, timeout, file_mode=0o600):
    """Run the dump, stream its stdout through ``external`` compression into ``out_path``; ``(sha256, size)``."""
    what = "%s of %s" % (os.path.basename(argv[0]), _target(store))
    with fsutil.open_private(out_path, file_mode) as out:
        return db_tools.stream_out(argv, child_env(), out, external, timeout, what, store, STDERR_ERRORS)


def restore_from(store, argv, entry_path, external, timeout, database):
    """Replay a (compressed) dump into ``database`` through the client; exit status and stderr checked."""
    what = "restore of %s into %s" % (os.path.basename(entry_path), _target(store, database))
    return db_tools.stream_in(argv, child_env(), entry_path, external, timeout, what, store, STDERR_ERRORS)


# ---------------------------------------------------------------- catalog

def quote_ident(name):
    return "`%s`" % str(name).replace("`", "``")


def list_tables(cur, database):
    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name", (database,))
    return [row[0] for row in cur.fetchall()]


def table_counts(cur, database):
    counts = {}
    for table in list_tables(cur, database):
        cur.execute("SELECT COUNT(*) FROM %s.%s" % (quote_ident(database), quote_ident(table)))
        counts[table] = int(cur.fetchone()[0])
    return counts


def schema_revision(cur, database, version_table="alembic_version"):
    if version_table not in list_tables(cur, database):
        return None
    cur.execute("SELECT version_num FROM %s.%s" % (quote_ident(database), quote_ident(version_table)))
    row = cur.fetchone()
    return row[0] if row else None


_AUTO_INCREMENT = re.compile(r"\s+AUTO_INCREMENT=\d+")


EXACT_METHOD = "mysql-count-checksum"


def fingerprint_parts(tables, definitions, counts, checksums, revision):
    """The exact fingerprint over what ``DumpSnapshot`` read (pure; unit-tested)."""
    parts = dict(tables=sorted(tables), definitions=_definitions(definitions),
                 counts=counts, checksums=checksums, revision=revision)
    return dict(method=EXACT_METHOD, value=db_tools.json_digest(parts))


def _definitions(definitions):
    return dict((t, _AUTO_INCREMENT.sub("", d or "")) for t, d in definitions.items())


def quick_fingerprint(max_trx_id, open_trx_ids, server_run, engines, definitions, revision):
    """The O(1) fingerprint (module doc), or None when it cannot prove anything (pure; unit-tested).

    ``engines`` maps every table to its engine; ``open_trx_ids`` are the ids of the open read-write transactions
    (None when ``innodb_trx`` could not be read); ``server_run`` identifies the running server.
    """
    if max_trx_id is None or open_trx_ids is None or server_run is None:
        return None
    if any(str(engine or "").lower() != "innodb" for engine in engines.values()):
        return None
    parts = dict(max_trx_id=str(max_trx_id), open_trx_ids=sorted(str(i) for i in open_trx_ids),
                 server_run=server_run, engines=dict(engines), definitions=_definitions(definitions),
                 revision=revision)
    return db_tools.json_digest(parts)


def scan_plan(previous, quick):
    """When the exact scan runs (pure; as for PostgreSQL): ``snapshot``, ``scan-first`` or ``scan-during-dump``.

    ``snapshot``: the newest backup's fingerprint holds this very ``quick`` value: unchanged, no row is read.
    ``scan-first``: it holds an exact value the scan may match: the scan decides before any dump.
    ``scan-during-dump``: nothing to compare with (no previous backup, ``force``, no exact value): the store is
    backed up anyway; the scan only records its value for the next run, alongside the dump.
    """
    if not isinstance(previous, dict):
        return "scan-during-dump"
    if quick is not None and previous.get("quick") == quick:
        return "snapshot"
    if previous.get("method") == EXACT_METHOD and previous.get("value"):
        return "scan-first"
    return "scan-during-dump"


def _global_status(cur, names):
    """``{lowercase name: value}`` of these global status variables (empty when they cannot be read)."""
    try:
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN (%s)" % ", ".join(["%s"] * len(names)), tuple(names))
        return dict((str(row[0]).lower(), row[1]) for row in cur.fetchall())
    except pymysql.Error:
        return {}


def _open_rw_transactions(cur, max_trx_id):
    """Ids of the open read-write transactions (``innodb_trx``; None when it is not readable)."""
    try:
        cur.execute("SELECT trx_id FROM information_schema.innodb_trx WHERE trx_is_read_only = 0")
        rows = cur.fetchall()
    except pymysql.Error:
        return None
    # read-only and not-yet-writing transactions show made-up ids above the counter
    return [int(row[0]) for row in rows if int(row[0]) <= int(max_trx_id)]


class SameAsPrevious(Exception):
    """The exact fingerprint, read alongside the dump, equals the newest backup's: the store is unchanged."""


class DumpSnapshot(db_tools.BackgroundScan):
    """Table list, schema revision, server version and the change fingerprint, read in one consistent snapshot.

    Taken before the dump starts (module doc). O(1) first (:func:`scan_plan`): when ``previous`` (the newest
    backup's fingerprint, None with ``force``) holds the same ``quick`` value, ``fingerprint`` is ``previous``
    and no row is read. When it holds an exact value, the scan decides now. With nothing to compare with,
    ``fingerprint`` stays None (never "unchanged") and the snapshot stays open: the caller runs the scan alongside
    the dump with :meth:`start_scan` and records :meth:`finish_scan`. Otherwise the snapshot ends before the
    dump (its metadata locks would block DDL for the whole dump). ``row_counts`` stays None: exact counts come
    from ``verify: restore``.

    ``defer_scan``: when the scan would decide before the dump (``scan-first``), run it alongside the dump
    instead, as when there is nothing to compare with; :meth:`finish_scan` then sets ``same_as_previous`` when its
    value equals ``previous``'s, and the caller discards the new dump (``SameAsPrevious``). On a live store, which
    has nearly always changed, the backup then costs the longer of the dump and the scan, not their sum.
    """

    scan_thread_name = "mlflowops-mysql-fingerprint"

    def __init__(self, store, connect_timeout, lock_wait_timeout=60, previous=None, defer_scan=False,
                 version_tables=("alembic_version",)):
        self.store = store
        self.connect_timeout = connect_timeout
        self.snapshot_id = None
        self.row_counts = None
        self.fingerprint = None
        self.fingerprint_source = None
        self.schema_revision = None
        self.server_version = None
        self.tables = []
        self._quick = None
        self._definitions = {}
        self.conn = connect(store, connect_timeout, autocommit=True)
        database = store.database
        try:
            cur = self.conn.cursor()
            cur.execute("SET SESSION lock_wait_timeout = %s", (int(lock_wait_timeout),))
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.execute("SELECT VERSION(), @@server_id, @@hostname, UNIX_TIMESTAMP()")
            self.server_version, server_id, hostname, now = cur.fetchone()
            status = _global_status(cur, ("Uptime", "Innodb_max_trx_id"))  # Oracle MySQL has no max_trx_id: None
            max_trx_id = status.get("innodb_max_trx_id")
            started = None if status.get("uptime") is None else int(now) - int(status["uptime"])
            cur.execute("SELECT table_name, engine FROM information_schema.tables WHERE table_schema = %s "
                        "AND table_type = 'BASE TABLE' ORDER BY table_name", (database,))
            engines = dict((row[0], row[1]) for row in cur.fetchall())
            self.tables = sorted(engines)
            present = [table for table in version_tables if table in self.tables]
            self.schema_revision = schema_revision(cur, database, present[0]) if present else None
            for table in self.tables:
                cur.execute("SHOW CREATE TABLE %s.%s" % (quote_ident(database), quote_ident(table)))
                self._definitions[table] = cur.fetchone()[1]
            open_ids = _open_rw_transactions(cur, max_trx_id) if max_trx_id is not None else None
            server_run = None if started is None else [str(server_id), hostname, started]
            self._quick = quick_fingerprint(max_trx_id, open_ids, server_run, engines,
                                            self._definitions, self.schema_revision)
            plan = scan_plan(previous, self._quick)
            if plan == "snapshot":
                self.fingerprint = previous
                self.fingerprint_source = "snapshot"
            elif plan == "scan-first" and not defer_scan:
                self._apply_scan(self._exact_scan(cur), "scan")
                if previous.get("value") == self.fingerprint["value"]:
                    self.fingerprint = previous  # same rows: unchanged (the equality db_backup checks)
            else:
                self._compare_with = previous if plan == "scan-first" else None
                self.fingerprint_source = "pending"
                return  # the snapshot stays open for start_scan/finish_scan
            # end the snapshot now: its metadata locks would otherwise block DDL for the whole dump
            self.conn.rollback()
        except pymysql.Error as exc:
            self.close()
            raise MaintenanceError("reading MySQL %s failed: %s" % (_target(store), _scrub(exc, store)))

    def _exact_scan(self, cur):
        database = self.store.database
        counts, checksums = {}, {}
        for table in self.tables:
            qualified = "%s.%s" % (quote_ident(database), quote_ident(table))
            cur.execute("SELECT COUNT(*) FROM %s" % qualified)
            counts[table] = int(cur.fetchone()[0])
            cur.execute("CHECKSUM TABLE %s" % qualified)
            row = cur.fetchone()
            checksums[table] = None if row is None or row[1] is None else str(row[1])
        if None in checksums.values():
            # a table without a checksum cannot prove "unchanged": never skip
            return "unavailable-%s" % secrets.token_hex(8)
        return fingerprint_parts(self.tables, self._definitions, counts, checksums, self.schema_revision)["value"]

    def _apply_scan(self, value, source):
        self.fingerprint = dict(method=EXACT_METHOD, value=value, quick=self._quick)
        self.fingerprint_source = source

    def _after_scan(self):
        try:
            self.conn.rollback()  # the scan was the snapshot's last use: end it
        except Exception:  # pylint: disable=broad-except
            pass

    def _driver_error(self, error):
        if isinstance(error, pymysql.Error):
            return MaintenanceError("reading MySQL %s failed: %s" % (_target(self.store), _scrub(error, self.store)))
        return None

    def _describe(self):
        return _target(self.store)

    def _cancel_scan(self):
        try:
            with _cursor(self.store, self.connect_timeout, "cannot stop the fingerprint scan") as cur:
                cur.execute("KILL QUERY %d" % int(self.conn.thread_id()))
        except MaintenanceError:
            pass

    def close(self):
        self._stop_scan()
        try:
            self.conn.rollback()
        except pymysql.Error:
            pass
        try:
            self.conn.close()
        except pymysql.Error:
            pass


def _cursor(store, connect_timeout, failure, database=None):
    """A cursor on its own autocommit connection; a PyMySQL error becomes MaintenanceError("<failure>: <reason>")."""
    return db_tools.closing_cursor(connect(store, connect_timeout, database=database), pymysql.Error, failure, store)


def database_exists(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "reading information_schema failed", database="information_schema") as cur:
        cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (database,))
        return cur.fetchone() is not None


def database_tables(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "listing the tables of %s failed" % database,
                 database="information_schema") as cur:
        return list_tables(cur, database)


def database_counts(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "counting rows in %s failed" % database, database=database) as cur:
        return table_counts(cur, database)


def create_database(store, connect_timeout, database):
    failure = "cannot create database %s (the user needs the CREATE privilege on it)" % database
    with _cursor(store, connect_timeout, failure, database="information_schema") as cur:
        cur.execute("CREATE DATABASE %s CHARACTER SET utf8mb4" % quote_ident(database))


def drop_database(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "cannot drop scratch database %s" % database,
                 database="information_schema") as cur:
        cur.execute("DROP DATABASE IF EXISTS %s" % quote_ident(database))


def drop_tables(store, connect_timeout, database, tables):
    """Drop these tables of ``database`` (foreign key checks off for this session only)."""
    with _cursor(store, connect_timeout, "cannot drop tables of %s" % database, database=database) as cur:
        cur.execute("SET SESSION foreign_key_checks = 0")
        for table in tables:
            cur.execute("DROP TABLE IF EXISTS %s.%s" % (quote_ident(database), quote_ident(table)))
