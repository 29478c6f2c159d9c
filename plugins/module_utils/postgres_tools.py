# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL backend stores: pg_dump/pg_restore with the password in a PGPASSFILE, snapshots, row counts.

Snapshot and row counts: one REPEATABLE READ, READ ONLY transaction exports its snapshot
(``pg_export_snapshot()``), counts the rows of every table of the store inside it, and stays open
while ``pg_dump --snapshot`` dumps exactly that snapshot (also with ``--jobs``). The counts in the
manifest are therefore the source's counts as of the dump, and ``verify: restore`` compares a
scratch database's counts against them.

Change fingerprint (unchanged-store detection): a sha256 over, for every table, ``count(*)`` and
``sum(xmin)`` in that same snapshot, plus the table list and the alembic revision. Every insert and
update writes a row version with a new transaction id (xmin), and every delete lowers a count or
removes an xmin from the sum, so any committed change alters the fingerprint; reads (including
pg_dump's) never do. The cost is one sequential scan of the store, which the dump pays anyway.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups

try:
    import psycopg2
    import psycopg2.extensions
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the host
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


def _scrub(text, store):
    text = str(text or "")
    if store is not None and store.password:
        text = text.replace(store.password, "********")
    return " ".join(text.split())


def connect(store, connect_timeout, database=None, autocommit=False):
    if not HAS_PSYCOPG2:
        raise MaintenanceError("the psycopg2 Python library is required for PostgreSQL backend stores")
    try:
        conn = psycopg2.connect(**store.psycopg2_kwargs(database=database, connect_timeout=connect_timeout))
    except psycopg2.Error as exc:
        raise MaintenanceError("cannot connect to PostgreSQL %s: %s" % (
            _target(store, database), _scrub(exc, store)))
    conn.autocommit = autocommit
    return conn


def _target(store, database=None):
    return "%s:%s/%s" % (store.socket_host or "localhost", store.port or 5432, database or store.database)


def child_env(store, pgpass, database=None, connect_timeout=None):
    """Environment for libpq tools: connection by variables, secret only through PGPASSFILE."""
    env = dict(os.environ)
    for name in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGPASSFILE"):
        env.pop(name, None)
    env.update(store.libpq_env(pgpass_file=pgpass, database=database, connect_timeout=connect_timeout))
    env.setdefault("LC_ALL", "C")
    return env


def tool_version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    return out.strip() or None


def tool_major(binary):
    match = re.search(r"(\d+)(?:\.\d+)?", tool_version(binary) or "")
    return int(match.group(1)) if match else None


def require_tool(binary):
    from ansible.module_utils.common.process import get_bin_path  # pylint: disable=import-outside-toplevel
    try:
        return get_bin_path(binary)
    except ValueError:
        raise MaintenanceError("%s is not installed (install the PostgreSQL client tools, e.g. postgresql-client)"
                               % binary)


def _stderr_problem(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    bad = [line for line in lines if re.search(r"\b(error|fatal|FATAL|ERROR)\b", line)]
    return bad


def run_tool(argv, env, timeout, what, store, stdin=None, stdout=None):
    """Run a libpq tool; fail on a non-zero exit, a timeout, or an error line on stderr."""
    with tempfile.TemporaryFile() as err:
        try:
            completed = subprocess.run(argv, env=env, timeout=timeout, stdin=stdin,
                                       stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                       stderr=err, check=False)
            code = completed.returncode
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    _check(code, stderr, what, store)
    return stderr


def _check(code, stderr, what, store):
    problems = _stderr_problem(stderr)
    if code != 0 or problems:
        detail = "; ".join(problems[:3]) or stderr.strip()[-500:]
        raise MaintenanceError("%s failed (exit status %s): %s" % (what, code, _scrub(detail, store)))


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


class DumpSnapshot:
    """An open REPEATABLE READ, READ ONLY transaction with an exported snapshot, counts and fingerprint."""

    def __init__(self, store, connect_timeout, lock_wait_timeout):
        self.store = store
        self.conn = connect(store, connect_timeout)
        self.snapshot_id = None
        self.row_counts = {}
        self.fingerprint = None
        self.schema_revision = None
        self.server_version = None
        try:
            self.conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            cur = self.conn.cursor()
            cur.execute("SET LOCAL lock_timeout = %s", ("%ds" % int(lock_wait_timeout),))
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            self.snapshot_id, self.server_version = cur.fetchone()
            self.row_counts, sums = table_counts(cur, with_xmin=True)
            self.schema_revision = schema_revision(cur)
            parts = dict(tables=sorted(self.row_counts), counts=self.row_counts, xmin_sums=sums,
                         revision=self.schema_revision)
            self.fingerprint = dict(method="postgresql-count-xmin",
                                    value=hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest())
        except psycopg2.Error as exc:
            self.close()
            raise MaintenanceError("reading PostgreSQL %s failed: %s" % (_target(store), _scrub(exc, store)))

    def close(self):
        try:
            self.conn.rollback()
        except psycopg2.Error:
            pass
        self.conn.close()


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


def schema_revision(cur):
    cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT version_num FROM alembic_version")
    row = cur.fetchone()
    return row[0] if row else None


def database_counts(store, connect_timeout, database):
    conn = connect(store, connect_timeout, database=database)
    try:
        return table_counts(conn.cursor())[0]
    except psycopg2.Error as exc:
        raise MaintenanceError("counting rows in %s failed: %s" % (_target(store, database), _scrub(exc, store)))
    finally:
        conn.close()


@contextlib.contextmanager
def _cursor(store, connect_timeout, failure, database=None, autocommit=True):
    """A cursor on its own connection; a psycopg2 error becomes MaintenanceError("<failure>: <reason>")."""
    conn = connect(store, connect_timeout, database=database, autocommit=autocommit)
    try:
        yield conn.cursor()
    except psycopg2.Error as exc:
        raise MaintenanceError("%s: %s" % (failure, _scrub(exc, store)))
    finally:
        conn.close()


def database_exists(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "reading pg_database failed") as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return cur.fetchone() is not None


def database_has_tables(store, connect_timeout, database):
    failure = "listing the tables of %s failed" % database
    with _cursor(store, connect_timeout, failure, database=database, autocommit=False) as cur:
        return bool(list_tables(cur))


def create_database(store, connect_timeout, database):
    failure = "cannot create database %s (the role needs CREATEDB)" % database
    with _cursor(store, connect_timeout, failure) as cur:
        cur.execute("CREATE DATABASE %s TEMPLATE template0" % quote_ident(database))


def drop_database(store, connect_timeout, database):
    with _cursor(store, connect_timeout, "cannot drop scratch database %s" % database) as cur:
        cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(database))


def scratch_name(database):
    return ("%s_verify_%s" % (database[:40], secrets.token_hex(4))).lower()


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
    what = "pg_dump of %s" % _target(store)
    if directory or external == "none" and "--file" in argv:
        run_tool(argv, env, timeout, what, store)
        if directory:
            backups.fsync_tree(out_path)
            files = backups.tree_hashes(out_path)
            return backups.tree_digest(files), backups.path_size(out_path), files
        with open(out_path, "rb") as handle:
            os.fsync(handle.fileno())
        return backups.file_sha256(out_path), os.path.getsize(out_path), None
    with tempfile.TemporaryFile() as err, open(out_path, "wb") as out:
        sink = backups.HashingWriter(out)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err,  # pylint: disable=consider-using-with
                                stdin=subprocess.DEVNULL)
        try:
            backups.compress_stream(proc.stdout, sink, external, timeout=timeout)
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        out.flush()
        os.fsync(out.fileno())
        err.seek(0)
        _check(code, err.read().decode("utf-8", "replace"), what, store)
    return sink.sha256.hexdigest(), sink.size, None


def restore_from(store, env, manifest, entry_path, database, jobs, timeout, clean=True, scratch_dir=None):
    """pg_restore (or psql for plain dumps) of a backup into ``database``."""
    what = "restore of %s into %s" % (os.path.basename(entry_path), _target(store, database))
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
                backups.decompress_stream(source, out, external, timeout=timeout)
            return run_tool(argv + [plain_path], env, timeout, what, store)
        finally:
            os.unlink(plain_path)
    return _stream_into(argv, env, entry_path, external, timeout, what, store)


def _stream_into(argv, env, entry_path, external, timeout, what, store):
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                stderr=err)
        try:
            with open(entry_path, "rb") as source:
                try:
                    backups.decompress_stream(source, proc.stdin, external, timeout=timeout)
                except BrokenPipeError:
                    pass
            proc.stdin.close()
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    _check(code, stderr, what, store)
    return stderr
