# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MLflow schema revisions: what the database is at, what the installed MLflow expects, and migration.

The revision graph arithmetic (pending revisions, unknown revisions) is pure and works on a
``{revision: (down_revisions...)}`` map; reading the graph and the database, and migrating,
import alembic, SQLAlchemy and mlflow lazily (this runs on the tracking server's host, in the
server's own virtualenv).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import sqlite3
import subprocess
import sys

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils import sqlite_store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow_compat import upgrade_db
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

TRACKING = "tracking"
AUTH = "auth"
VERSION_TABLES = {TRACKING: "alembic_version", AUTH: "alembic_version_auth"}
# Tables whose presence marks a database as MLflow's (tracking) or the basic-auth app's.
MARKER_TABLES = {TRACKING: "experiments", AUTH: "users"}
# The first revision of the auth migrations; auth databases from MLflow < 3.6 have tables but no version table.
AUTH_INITIAL_REVISION = "8606fa83a998"


# ---------------------------------------------------------------------------------------------
# Pure revision arithmetic


def _ancestors(graph, revision):
    """``revision`` and every revision below it."""
    seen = set()
    stack = [revision]
    while stack:
        current = stack.pop()
        if current is None or current in seen:
            continue
        seen.add(current)
        stack.extend(graph.get(current) or ())
    return seen


def _topological(graph, heads):
    """Revisions under ``heads``, oldest first (each after all of its down revisions)."""
    order = []
    done = set()
    for head in heads:
        stack = [(head, False)]
        while stack:
            node, expanded = stack.pop()
            if node is None or node in done:
                continue
            if expanded:
                done.add(node)
                order.append(node)
                continue
            stack.append((node, True))
            for down in sorted(graph.get(node) or (), reverse=True):
                if down not in done:
                    stack.append((down, False))
    return order


def pending_revisions(graph, heads, current):
    """Revisions to apply to go from ``current`` (None: an unversioned database) to ``heads``, oldest first.

    Raises MaintenanceError when ``current`` is not in the graph: the database was migrated by a
    newer MLflow than the one installed (or by something else entirely).
    """
    if current is not None and current not in graph:
        raise MaintenanceError(
            "the database is at schema revision %s, which the installed MLflow does not know (its head is %s): "
            "the database was migrated by a newer MLflow; install that version or restore a backup "
            "taken before the upgrade" % (current, ", ".join(heads)), revision=current, heads=list(heads))
    applied = _ancestors(graph, current) if current is not None else set()
    return [revision for revision in _topological(graph, heads) if revision not in applied]


def schema_status(name, current, heads, pending, version_table_present, marker_present):
    """The report for one database."""
    at_head = current is not None and current in heads and not pending
    return dict(database=name, current_revision=current, head_revision=heads[0] if len(heads) == 1 else list(heads),
                at_head=at_head, pending=list(pending), pending_count=len(pending),
                version_table=version_table_present, mlflow_tables=marker_present)


# ---------------------------------------------------------------------------------------------
# Reading the installed MLflow's migrations


def migrations_dir(kind):
    try:
        import mlflow  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MaintenanceError(missing_required_lib("mlflow", reason="to read its migrations (%s); run this module with the "
                                                    "tracking server's virtualenv as ansible_python_interpreter" % exc))
    base = os.path.dirname(mlflow.__file__)
    if kind == AUTH:
        return os.path.join(base, "server", "auth", "db", "migrations")
    return os.path.join(base, "store", "db_migrations")


def mlflow_version():
    import mlflow  # pylint: disable=import-outside-toplevel
    return mlflow.__version__


def revision_graph(kind):
    """(graph, heads) of the installed MLflow's migrations for ``kind``."""
    try:
        from alembic.script import ScriptDirectory  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MaintenanceError(missing_required_lib("alembic", reason="to read MLflow's migrations (%s)" % exc))
    directory = migrations_dir(kind)
    if not os.path.isdir(directory):
        raise MaintenanceError("the installed MLflow has no %s migrations at %s" % (kind, directory))
    script = ScriptDirectory(directory)
    graph = {}
    for revision in script.walk_revisions():
        down = revision.down_revision
        if down is None:
            downs = ()
        elif isinstance(down, (tuple, list)):
            downs = tuple(down)
        else:
            downs = (down,)
        graph[revision.revision] = downs
    return graph, tuple(script.get_heads())


# ---------------------------------------------------------------------------------------------
# Reading the database


def _read_sqlite(path, version_table, marker_table):
    if not os.path.exists(path):
        raise MaintenanceError("SQLite database %s does not exist; check the URI (it is never created)" % path)
    try:
        connection = sqlite_store.connect(path, "ro", allow_empty=True)
        try:
            names = set(row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
            revision = None
            if version_table in names:
                row = connection.execute("SELECT version_num FROM %s" % version_table).fetchone()
                revision = row[0] if row else None
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise MaintenanceError("cannot read SQLite database %s: %s" % (path, exc))
    return version_table in names, marker_table in names, revision


def _engine(store, connect_timeout):
    try:
        import sqlalchemy  # pylint: disable=import-outside-toplevel
        from sqlalchemy.pool import NullPool  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MaintenanceError(missing_required_lib("SQLAlchemy", reason="to open the backend store (%s)" % exc))
    connect_args = {}
    if (store.is_postgresql or store.is_mysql) and connect_timeout:
        connect_args["connect_timeout"] = int(connect_timeout)
    return sqlalchemy.create_engine(store.sqlalchemy_url(), poolclass=NullPool, connect_args=connect_args)


def _read_postgres(store, version_table, marker_table, connect_timeout):
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    engine = _engine(store, connect_timeout)
    try:
        with engine.connect() as connection:
            names = set(sqlalchemy.inspect(connection).get_table_names())
            revision = None
            if version_table in names:
                row = connection.execute(sqlalchemy.text("SELECT version_num FROM %s" % version_table)).fetchone()
                revision = row[0] if row else None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise MaintenanceError("cannot read %s database %s: %s" % (
            "MySQL" if store.is_mysql else "PostgreSQL", store.redacted(), _first_line(exc)))
    finally:
        engine.dispose()
    return version_table in names, marker_table in names, revision


def _first_line(exc):
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def read_database(store, kind, connect_timeout=10):
    """(version table present, MLflow tables present, revision) of the store for ``kind``."""
    if store.is_sqlite:
        return _read_sqlite(store.path, VERSION_TABLES[kind], MARKER_TABLES[kind])
    return _read_postgres(store, VERSION_TABLES[kind], MARKER_TABLES[kind], connect_timeout)


def inspect_schema(store, kind, connect_timeout=10, graph_and_heads=None):
    """The status of one database, raising MaintenanceError when its revision is unknown."""
    graph, heads = graph_and_heads or revision_graph(kind)
    has_version, has_tables, revision = read_database(store, kind, connect_timeout)
    if not has_tables and not has_version:
        raise MaintenanceError("%s holds no MLflow %s tables; check the URI (a new database is initialised "
                               "by the tracking server on its first start)" % (store.redacted(), kind))
    if kind == TRACKING and has_tables and revision is None:
        raise MaintenanceError("%s has MLflow tables but no alembic revision; it predates MLflow 1.0 or was "
                               "created by hand, and cannot be migrated safely" % store.redacted())
    legacy = kind == AUTH and has_tables and not has_version
    # An auth database from MLflow < 3.6 has its tables but no alembic_version_auth: MLflow's own
    # migration stamps it with the initial auth revision first, so that is where it starts from.
    pending = pending_revisions(graph, heads, AUTH_INITIAL_REVISION if legacy else revision)
    status = schema_status(kind, revision, list(heads), pending, has_version, has_tables)
    status["legacy_unversioned"] = legacy
    return status


# ---------------------------------------------------------------------------------------------
# Migrating


@contextlib.contextmanager
def _stdout_to_stderr():
    """Keep anything a library prints off stdout, which carries the module's JSON result."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def upgrade(store, kind, connect_timeout=10):
    """Run MLflow's own migrations for ``kind`` to head; returns seconds taken."""
    watch = Stopwatch()
    engine = _engine(store, connect_timeout)
    try:
        with _stdout_to_stderr():
            if kind == AUTH:
                from mlflow.server.auth.db.utils import migrate  # pylint: disable=import-outside-toplevel
                migrate(engine, "head")
            else:
                upgrade_db(engine)
    except Exception as exc:  # pylint: disable=broad-except
        raise MaintenanceError("MLflow's %s schema migration of %s failed: %s: %s" % (
            kind, store.redacted(), exc.__class__.__name__, _first_line(exc)))
    finally:
        engine.dispose()
    return watch.elapsed()


# ---------------------------------------------------------------------------------------------
# The whole operation, in this interpreter or in the tracking server's


def run_schema(params, check_mode):
    """Report (and with state=upgraded, migrate) the tracking and optional auth databases."""
    stores = {TRACKING: parse_backend_store_uri(params["backend_store_uri"], params.get("db_password"))}
    if params.get("auth_database_uri"):
        stores[AUTH] = parse_backend_store_uri(params["auth_database_uri"], params.get("auth_db_password"))
    timeout = params.get("db_connect_timeout") or 10
    graphs = dict((kind, revision_graph(kind)) for kind in stores)
    before = dict((kind, inspect_schema(store, kind, timeout, graphs[kind])) for kind, store in stores.items())
    behind = [kind for kind in (TRACKING, AUTH) if kind in before and before[kind]["pending"]]
    after = dict(before)
    seconds = {}
    if params["state"] == "upgraded" and not check_mode:
        for kind in behind:
            seconds[kind] = upgrade(stores[kind], kind, timeout)
            after[kind] = inspect_schema(stores[kind], kind, timeout, graphs[kind])
            if after[kind]["pending"]:
                raise MaintenanceError("the %s migration finished but %s is still behind: %s" % (
                    kind, stores[kind].redacted(), ", ".join(after[kind]["pending"])), before=before, after=after)
    migrating = params["state"] == "upgraded" and bool(behind)
    return dict(
        changed=migrating,
        mlflow_version=mlflow_version(),
        python=sys.executable,
        tracking=after[TRACKING],
        auth=after.get(AUTH),
        before=before,
        migrated=behind if migrating else [],
        at_head=all(status["at_head"] for status in after.values()),
        migration_duration_s=seconds,
        store=stores[TRACKING].to_result(),
    )


_RESULT_MARK = "\n@@mlflowops-db-schema-result@@"
_CHILD = ("from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_schema import child_main; "
          "child_main()")


def child_main():
    """Entry point in the server's interpreter: request on stdin, result after a marker on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        with _stdout_to_stderr():
            answer = dict(result=run_schema(request["params"], request["check_mode"]))
    except MaintenanceError as exc:
        answer = dict(error=exc.msg, details=exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        answer = dict(error="%s: %s" % (exc.__class__.__name__, _first_line(exc)), details={})
    sys.stdout.write(_RESULT_MARK + json.dumps(answer, default=str) + "\n")
    sys.stdout.flush()


def _payload_paths():
    """The parts of sys.path that hold this module's code (the AnsiballZ payload zip, a collections dir),
    and none that hold site-packages: the child must import its own mlflow, not ours."""
    paths = []
    for path in sys.path:
        if not path:
            continue
        if os.path.isfile(path) or (os.path.isdir(os.path.join(path, "ansible_collections"))
                                    and not os.path.isdir(os.path.join(path, "mlflow"))):
            paths.append(path)
    return paths


def run_in_interpreter(python, params, check_mode, timeout=3600):
    """run_schema in another Python (the tracking server's virtualenv), so its MLflow decides.

    The collection's and ansible's module_utils reach the child through PYTHONPATH (this process's
    path, which holds the module's payload); the parameters, password included, go through stdin.
    """
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise MaintenanceError("python %s is not an executable file; point it at the tracking server's "
                               "virtualenv (for example /srv/mlflow/venv/bin/python)" % python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(_payload_paths())
    env.pop("PYTHONHOME", None)
    try:
        completed = subprocess.run([python, "-c", _CHILD], input=json.dumps(dict(params=params, check_mode=check_mode)),
                                   capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False)
    except subprocess.TimeoutExpired:
        raise MaintenanceError("db_schema in %s did not finish within %ss" % (python, timeout))
    if _RESULT_MARK not in completed.stdout:
        tail = (completed.stderr or completed.stdout or "").strip().splitlines()[-5:]
        raise MaintenanceError("db_schema could not run in %s (exit %s): %s" % (
            python, completed.returncode, " | ".join(tail)))
    answer = json.loads(completed.stdout.rsplit(_RESULT_MARK, 1)[1])
    if "error" in answer:
        raise MaintenanceError(answer["error"], **(answer.get("details") or {}))
    return answer["result"]
