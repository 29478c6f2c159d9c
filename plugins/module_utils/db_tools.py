# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the PostgreSQL and MySQL client tools have in common: finding them, running them, streaming through them.

One runner checks every tool the same way: a timeout, the exit status, error lines on stderr, and the store's
password scrubbed from whatever is quoted in the message. Secrets never reach argv here: each engine passes them
in a private file (``pgpass_file``, ``mysql_tools.option_file``) written by :func:`private_secret_file`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import compression as compress


def scrub(text, store):
    """``text`` on one line, with the store's password masked."""
    text = str(text or "")
    if store is not None and store.password:
        text = text.replace(store.password, "********")
    return " ".join(text.split())


def require_driver(store):
    """Fail before any side effect, naming the library and the host, when the store's Python driver is missing."""
    if store.is_postgresql:
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.postgres_tools import psycopg2 as driver  # pylint: disable=import-outside-toplevel
        name, reason = "psycopg2", "for PostgreSQL backend stores"
    elif store.is_mysql:
        from ansible_collections.mlflowops.maintenance.plugins.module_utils.mysql_tools import pymysql as driver  # pylint: disable=import-outside-toplevel
        name, reason = "PyMySQL", "for MySQL/MariaDB backend stores"
    else:
        return
    if driver is None:
        raise MaintenanceError(missing_required_lib(name, reason=reason))


def json_digest(parts):
    """sha256 (hex) of ``parts`` as canonical JSON (the change fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def scratch_name(database):
    """A fresh scratch database name for ``verify: restore`` next to ``database``."""
    return ("%s_verify_%s" % (database[:40], secrets.token_hex(4))).lower()


@contextlib.contextmanager
def private_secret_file(prefix, name, text):
    """``text`` in a new 0600 file inside a private 0700 temporary directory; yields its path, removes both."""
    directory = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def closing_cursor(conn, errors, failure, store):
    """A cursor on ``conn`` (closed afterwards); an ``errors`` exception becomes MaintenanceError("<failure>: ...")."""
    try:
        yield conn.cursor()
    except errors as exc:
        raise MaintenanceError("%s: %s" % (failure, scrub(exc, store)))
    finally:
        conn.close()


# ---------------------------------------------------------------- finding the tools

class BackgroundScan(object):
    """The exact fingerprint scan of a dump snapshot, run on the snapshot's own connection, beside the dump.

    For an engine's ``DumpSnapshot``, which has ``conn``, ``store`` and ``fingerprint`` and gives
    ``_exact_scan(cursor)``, ``_apply_scan(outcome, source)``, ``_cancel_scan()`` (stop a running scan from another
    thread), ``_driver_error(error)`` (a MaintenanceError for the driver's errors, else None) and ``_describe()``
    (the store, for messages). ``_after_scan()`` runs when a scan ends, whatever its outcome. When
    ``_compare_with`` (an earlier backup's fingerprint) holds the scan's value, the store is unchanged:
    ``fingerprint`` becomes that one and ``same_as_previous`` is set.
    """

    scan_thread_name = "mlflowops-fingerprint"
    _scan_thread = None
    _scan_outcome = None
    _compare_with = None
    same_as_previous = False

    def _after_scan(self):
        pass

    def _background_scan(self):
        try:
            self._scan_outcome = (self._exact_scan(self.conn.cursor()), None)
        except Exception as exc:  # pylint: disable=broad-except
            self._scan_outcome = (None, exc)
        finally:
            self._after_scan()

    def start_scan(self):
        """Start the pending exact scan in this snapshot, on its connection, while the dump runs.

        Nothing else may use the connection until :meth:`finish_scan` (or :meth:`close`)."""
        if self.fingerprint is not None or self._scan_thread is not None:
            return
        self._scan_thread = threading.Thread(target=self._background_scan, name=self.scan_thread_name)
        self._scan_thread.daemon = True
        self._scan_thread.start()

    def finish_scan(self, timeout=None):
        """The fingerprint to record: the pending scan's (waited for, at most ``timeout`` s), or run now."""
        if self.fingerprint is not None:
            return self.fingerprint
        if self._scan_thread is None:
            self._background_scan()
        else:
            self._scan_thread.join(timeout)
            if self._scan_thread.is_alive():
                self._stop_scan()
                raise MaintenanceError("the change fingerprint of %s did not finish within %ss" % (
                    self._describe(), timeout))
        outcome, error = self._scan_outcome
        if error is not None:
            raise self._driver_error(error) or error
        self._apply_scan(outcome, "scan-during-dump" if self._scan_thread is not None else "scan")
        if self._compare_with is not None and self._compare_with.get("value") == self.fingerprint["value"]:
            self.fingerprint = self._compare_with
            self.same_as_previous = True
        return self.fingerprint

    def _stop_scan(self):
        if self._scan_thread is not None and self._scan_thread.is_alive():
            self._cancel_scan()
            self._scan_thread.join(10)


def find_tool(candidates):
    """The path of the first of ``candidates`` on PATH, or None."""
    from ansible.module_utils.common.process import get_bin_path  # pylint: disable=import-outside-toplevel
    for binary in candidates:
        try:
            return get_bin_path(binary)
        except ValueError:
            continue
    return None


def tool_version(binary):
    """``<binary> --version`` (stripped), or None when it cannot run."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    return out.strip() or None


# ---------------------------------------------------------------- running them

def stderr_problems(stderr, pattern):
    """The non-blank lines of ``stderr`` that match ``pattern`` (a compiled regex): the tool's error lines."""
    lines = [line for line in (stderr or "").splitlines() if line.strip()]
    return [line for line in lines if pattern.search(line)]


def check_exit(code, stderr, what, store, pattern):
    """Fail on a non-zero exit status or an error line on stderr, quoting up to three lines (password scrubbed)."""
    problems = stderr_problems(stderr, pattern)
    if code != 0 or problems:
        detail = "; ".join(problems[:3]) or stderr.strip()[-500:]
        raise MaintenanceError("%s failed (exit status %s): %s" % (what, code, scrub(detail, store)))


def _read_back(err):
    err.seek(0)
    return err.read().decode("utf-8", "replace")


def _end(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_tool(argv, env, timeout, what, store, pattern, stdin=None, stdout=None):
    """Run a tool to its end; fail on a timeout, a non-zero exit, or an error line on stderr. Returns stderr."""
    with tempfile.TemporaryFile() as err:
        try:
            code = subprocess.run(argv, env=env, timeout=timeout, stdin=stdin,
                                  stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                  stderr=err, check=False).returncode
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        stderr = _read_back(err)
    check_exit(code, stderr, what, store, pattern)
    return stderr


def stream_out(argv, env, out, external, timeout, what, store, pattern):
    """Run a dump tool, its stdout through ``external`` compression into the open file ``out`` (fsynced).

    Returns ``(sha256, size)`` of what was written; the exit status and stderr are checked.
    """
    with tempfile.TemporaryFile() as err:
        sink = compress.HashingWriter(out)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err,  # pylint: disable=consider-using-with
                                stdin=subprocess.DEVNULL)
        try:
            compress.compress_stream(proc.stdout, sink, external, timeout=timeout)
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        finally:
            _end(proc)
            proc.stdout.close()
        out.flush()
        os.fsync(out.fileno())
        check_exit(code, _read_back(err), what, store, pattern)
    return sink.sha256.hexdigest(), sink.size


def stream_in(argv, env, entry_path, external, timeout, what, store, pattern):
    """Feed the (``external``-compressed) file ``entry_path`` to a client tool's stdin; checked as above.

    Returns the tool's stderr. A tool that stops reading early fails by its exit status, not by a broken pipe.
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                stderr=err)
        try:
            with open(entry_path, "rb") as source:
                try:
                    compress.decompress_stream(source, proc.stdin, external, timeout=timeout)
                except BrokenPipeError:
                    pass
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        finally:
            _end(proc)
        stderr = _read_back(err)
    check_exit(code, stderr, what, store, pattern)
    return stderr
