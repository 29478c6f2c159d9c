# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL backend stores: connections, catalog reads, pg_dump/pg_restore with the password in a PGPASSFILE.

The dump's snapshot, its row counts and the change fingerprint: ``postgres_snapshot``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tempfile

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress

try:
    import psycopg2
except ImportError:  # pragma: no cover - depends on the host
    psycopg2 = None

# stderr lines that mean a libpq tool failed
STDERR_ERRORS = re.compile(r"\b(error|fatal|FATAL|ERROR)\b")
_scrub = db_tools.scrub


def connect(store, connect_timeout, database=None, autocommit=False):
    if psycopg2 is None:
        raise MaintenanceError(missing_required_lib("psycopg2", reason="for PostgreSQL backend stores"))
    try:
        conn = psycopg2.connect(**store.psycopg2_kwargs(database=database, connect_timeout=connect_timeout))
    except psycopg2.Error as exc:
        raise MaintenanceError("cannot connect to PostgreSQL %s: %s" % (
            target(store, database), _scrub(exc, store)))
    conn.autocommit = autocommit
    return conn


def target(store, database=None):
    """``host:port/database`` for messages (no user, no password)."""
    return "%s:%s/%s" % (store.socket_host or "localhost", store.port or 5432, database or store.database)


def child_env(store, pgpass, database=None, connect_timeout=None):
    """Environment for libpq tools: connection by variables, secret only through PGPASSFILE."""
    env = dict(os.environ)
    for name in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGPASSFILE"):
        env.pop(name, None)
    env.update(store.libpq_env(pgpass_file=pgpass, database=database, connect_timeout=connect_timeout))
    env.setdefault("LC_ALL", "C")
    return env


def tool_major(binary):
    match = re.search(r"(\d+)(?:\.\d+)?", db_tools.tool_version(binary) or "")
    return int(match.group(1)) if match else None


def require_tool(binary):
    path = db_tools.find_tool((binary,))
    if path is None:
        raise MaintenanceError("%s is not installed (install the PostgreSQL client tools, e.g. postgresql-client)"
                               % binary)
    return path


def run_tool(argv, env, timeout, what, store, stdin=None, stdout=None):
    """Run a libpq tool; fail on a non-zero exit, a timeout, or an error line on stderr."""
    return db_tools.run_tool(argv, env, timeout, what, store, STDERR_ERRORS, stdin=stdin, stdout=stdout)


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def list_tables(cur):
    cur.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
    return cur.fetchall()


def table_counts(cur, with_xmin=False):
    counts, sums = {}, {}
    for schema, table in list_tables(cur):
        key = table if schema == "public" else "%s.%s" % (schema, table)
        qualified = "%s.%s" % (quote_ident(schema), quote_ident(table))
        if with_xmin:
            cur.execute("SELECT count(*), coalesce(sum(xmin::text::bigint), 0)::text FROM %s" % qualified)
            counts[key], sums[key] = cur.fetchone()
        else:
            cur.execute("SELECT count(*) FROM %s" % qualified)
            counts[key] = cur.fetchone()[0]
    return counts, sums


def schema_revision(cur, version_tables=("alembic_version",)):
    """The alembic revision in the first of ``version_tables`` that exists (None: none does, or it is empty)."""
    for table in version_tables:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if cur.fetchone()[0]:
            cur.execute("SELECT version_num FROM %s" % table)
            row = cur.fetchone()
            return row[0] if row else None
    return None


def database_counts(store, connect_timeout, database):
    conn = connect(store, connect_timeout, database=database)
    try:
        return table_counts(conn.cursor())[0]
    except psycopg2.Error as exc:
        raise MaintenanceError("counting rows in %s failed: %s" % (target(store, database), _scrub(exc, store)))
    finally:
        conn.close()


def _cursor(store, connect_timeout, failure, database=None, autocommit=True):
    """A cursor on its own connection; a psycopg2 error becomes MaintenanceError("<failure>: <reason>")."""
    return db_tools.closing_cursor(connect(store, connect_timeout, database=database, autocommit=autocommit),
                                   psycopg2.Error, failure, store)


def database_exists(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "reading pg_database failed") as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return cur.fetchone() is not None


def database_has_tables(store, connect_timeout, database):
    failure = "listing the tables of %s failed" % database
    with _cursor(store, connect_timeout, failure, database=database, autocommit=False) as cur:
        return bool(list_tables(cur))


def table_key(schema, table):
    """A table's name as the backups' manifests record it (``row_counts``): ``table`` in public, else ``schema.table``."""
    return table if schema == "public" else "%s.%s" % (schema, table)


def database_tables(store, connect_timeout, database):
    """The (schema, table) pairs of the base tables of ``database``."""
    failure = "listing the tables of %s failed" % database
    with _cursor(store, connect_timeout, failure, database=database, autocommit=False) as cur:
        return [tuple(row) for row in list_tables(cur)]


def drop_tables(store, connect_timeout, database, tables):
    """Drop the (schema, table) pairs of ``database`` with what depends on them, in one statement."""
    if not tables:
        return
    failure = "dropping %d tables of %s failed" % (len(tables), database)
    with _cursor(store, connect_timeout, failure, database=database) as cur:
        cur.execute("DROP TABLE IF EXISTS %s CASCADE" % ", ".join(
            "%s.%s" % (quote_ident(schema), quote_ident(table)) for schema, table in tables))


def create_database(store, connect_timeout, database):
    failure = "cannot create database %s (the role needs CREATEDB)" % database
    with _cursor(store, connect_timeout, failure) as cur:
        cur.execute("CREATE DATABASE %s TEMPLATE template0" % quote_ident(database))


def drop_database(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "cannot drop scratch database %s" % database) as cur:
        cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(database))


def dump_argv(pg_dump, fmt, jobs, compression, snapshot_id, lock_wait_timeout, out_path=None, major=None):
    """pg_dump's argv (no connection details, no secret: those travel in the environment).

    Returns ``(argv, external)``: ``external`` is the compression our code applies to pg_dump's
    stdout (``none`` when pg_dump compresses or writes a directory itself).
    """
    argv = [pg_dump, "--lock-wait-timeout=%d" % (int(lock_wait_timeout) * 1000), "--no-password"]
    if snapshot_id:
        argv.append("--snapshot=%s" % snapshot_id)
    external = "none"
    if fmt == "custom":
        argv.append("--format=custom")
        if compression == "gzip":
            argv.append("--compress=6")
        else:
            argv.append("--compress=0")
            external = compression
    elif fmt == "directory":
        argv += ["--format=directory", "--jobs=%d" % max(1, int(jobs))]
        if compression == "gzip":
            argv.append("--compress=6")
        elif compression == "zstd":
            argv.append("--compress=zstd" if (major or 0) >= 16 else "--compress=6")
        else:
            argv.append("--compress=0")
    elif fmt == "plain":
        argv += ["--format=plain", "--clean", "--if-exists"]
        external = compression
    else:
        raise MaintenanceError("unknown pg_dump format %r" % fmt)
    if out_path:
        argv += ["--file", out_path]
    return argv, external


def dump_to(store, env, argv, external, out_path, timeout, directory=False):
    """Run pg_dump into ``out_path``; returns ``(sha256, size, files)`` of what was written."""
    what = "pg_dump of %s" % target(store)
    if directory or external == "none" and "--file" in argv:
        run_tool(argv, env, timeout, what, store)
        if directory:
            fsutil.fsync_tree(out_path)
            files = backups.tree_hashes(out_path)
            return backups.tree_digest(files), backups.path_size(out_path), files
        with open(out_path, "rb") as handle:
            os.fsync(handle.fileno())
        return fsutil.file_sha256(out_path), os.path.getsize(out_path), None
    with open(out_path, "wb") as out:
        sha256, size = db_tools.stream_out(argv, env, out, external, timeout, what, store, STDERR_ERRORS)
    return sha256, size, None


def restore_from(store, env, manifest, entry_path, database, jobs, timeout, clean=True, scratch_dir=None):
    """pg_restore (or psql for plain dumps) of a backup into ``database``."""
    what = "restore of %s into %s" % (os.path.basename(entry_path), target(store, database))
    fmt = manifest["format"]
    external = manifest.get("external_compression", "none")
    if fmt == "plain":
        argv = [require_tool("psql"), "--no-password", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                "--quiet", "--dbname", database, "--file", "-"]
        return _stream_into(argv, env, entry_path, external, timeout, what, store)
    argv = [require_tool("pg_restore"), "--no-password", "--exit-on-error", "--dbname", database]
    if clean:
        argv += ["--clean", "--if-exists"]
    else:
        argv += ["--no-owner", "--no-privileges"]
    if int(jobs) > 1:
        argv.append("--jobs=%d" % int(jobs))
    if external == "none":
        return run_tool(argv + [entry_path], env, timeout, what, store)
    if int(jobs) > 1:
        # a parallel restore needs a seekable file: decompress next to the backup first
        fd, plain_path = tempfile.mkstemp(prefix=".restore-", suffix=".dump", dir=scratch_dir)
        try:
            with os.fdopen(fd, "wb") as out, open(entry_path, "rb") as source:
                compress.decompress_stream(source, out, external, timeout=timeout)
            return run_tool(argv + [plain_path], env, timeout, what, store)
        finally:
            os.unlink(plain_path)
    return _stream_into(argv, env, entry_path, external, timeout, what, store)


def _stream_into(argv, env, entry_path, external, timeout, what, store):
    return db_tools.stream_in(argv, env, entry_path, external, timeout, what, store, STDERR_ERRORS)
