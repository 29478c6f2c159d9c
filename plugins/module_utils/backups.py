# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup directory layout, names, manifests, store identities, checksums, listing and the directory lock.

Compression streams: :mod:`compression`; files, modes and atomic writes: :mod:`fsutil`.

A backup is one entry in the destination directory, a file or (for pg_dump's directory format) a
directory, named ``<prefix>-<engine>-<UTC time>.<ext>``, plus ``<entry>.manifest.json`` written
last. An entry without a valid manifest is incomplete: restore never uses it and retention never
counts it. Work in progress carries a ``.partial`` suffix.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import hashlib
import json
import os
import re
import sys
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, parse_duration

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

MANIFEST_SUFFIX = ".manifest.json"
# Files that belong to a backup entry next to its manifest: the backup role's set manifest and the artifact
# snapshot manifest that backup_offsite keeps with a set. Listed with their entry, never as entries of their own.
SIDECAR_SUFFIXES = (".set.json", ".artifacts.json")
PARTIAL_SUFFIX = ".partial"
MANIFEST_VERSION = 1
REQUIRED_MANIFEST_KEYS = ("format_version", "file", "engine", "format", "compression", "size_bytes", "sha256",
                          "created_at")
_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<engine>sqlite|postgresql|mysql)-(?P<stamp>\d{8}T\d{6}\d{6}Z)\.")


# ---------------------------------------------------------------- names and times

def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(when):
    return when.strftime("%Y%m%dT%H%M%S%fZ")


def iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def backup_name(prefix, engine, when, extension):
    return "%s-%s-%s.%s" % (prefix, engine, stamp(when), extension)


def manifest_path_for(entry_path):
    return entry_path + MANIFEST_SUFFIX


# ---------------------------------------------------------------- store identity

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def validate_prefix(prefix):
    """A prefix is one plain file-name component: no separator, no leading dot, nothing like ``..``."""
    text = "" if prefix is None else str(prefix)
    if not _PREFIX_RE.match(text) or ".." in text:
        raise MaintenanceError("prefix %r is not allowed: use letters, digits, '.', '_', '+' or '-' (at most 100, "
                               "starting with a letter or digit, no '/' and no '..')" % (prefix,))
    return text


def store_identity(store, prefix=None, kind=None):
    """Who a backup belongs to: engine, location (no user, no password), for db_backup the prefix, and the kind
    of MLflow database when it is not the tracking store (``kind="auth"``: mlflow_tables.StoreKind).

    SQLite: the resolved real path of the database file, so two spellings of one file (a symlink, ``..``)
    are one store. PostgreSQL: host (or socket directory), port (5432 when not given) and database; the
    user is not part of it (two roles see the same database) and the password never is.
    """
    if store.is_sqlite:
        location = "sqlite:///%s" % os.path.realpath(store.path)
    elif getattr(store, "is_mysql", False):
        # MySQL/MariaDB: host (or the unix socket path), port (3306 when not given) and database.
        host = (store.socket_host or "localhost").lower()
        location = "mysql://%s:%d/%s" % (host, int(store.port or 3306), store.database or "")
    else:
        host = (store.socket_host or "localhost").lower()
        location = "postgresql://%s:%d/%s" % (host, int(store.port or 5432), store.database or "")
    identity = dict(engine=store.engine, location=location)
    if prefix is not None:
        identity["prefix"] = prefix
    if kind not in (None, "tracking"):
        identity["kind"] = kind
    return identity


def manifest_identity(manifest):
    """The ``store`` identity a manifest records, or None (a backup written before identities were recorded)."""
    ident = (manifest or {}).get("store")
    if isinstance(ident, dict) and ident.get("engine") and ident.get("location"):
        return ident
    return None


def same_store(manifest, identity, match_prefix=True):
    """True only when the manifest records exactly this store (and, with ``match_prefix``, this prefix).

    A manifest without an identity is never the same store: retention never prunes it and restore never
    picks it, unless the user says so explicitly.
    """
    recorded = manifest_identity(manifest)
    if recorded is None:
        return False
    if recorded.get("engine") != identity.get("engine") or recorded.get("location") != identity.get("location"):
        return False
    if recorded.get("kind", "tracking") != identity.get("kind", "tracking"):
        return False
    if match_prefix and recorded.get("prefix") != identity.get("prefix"):
        return False
    return True


def describe_identity(identity):
    if not identity:
        return "an unknown store (no identity in its manifest)"
    text = "%s %s %s" % (identity.get("engine"), "auth database" if identity.get("kind") == "auth" else "store",
                         identity.get("location"))
    if identity.get("prefix"):
        text += " (prefix %s)" % identity["prefix"]
    return text


def name_prefix(name):
    """The prefix a backup name was written with (``mlflow-prod`` for ``mlflow-prod-sqlite-<time>.db``), or None."""
    match = _NAME_RE.match(name)
    return match.group("prefix") if match else None


def path_size(path):
    if os.path.isdir(path):
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                total += os.path.getsize(os.path.join(root, name))
        return total
    return os.path.getsize(path)


def path_mtime(path):
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


# ---------------------------------------------------------------- checksums

def tree_digest(file_hashes):
    """One sha256 for a directory backup: over sorted ``"<sha256>  <relative path>\\n"`` lines."""
    digest = hashlib.sha256()
    for rel in sorted(file_hashes):
        digest.update(("%s  %s\n" % (file_hashes[rel], rel)).encode("utf-8"))
    return digest.hexdigest()


def tree_hashes(path):
    hashes = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            hashes[os.path.relpath(full, path)] = fsutil.file_sha256(full)
    return hashes


def verify_size(entry_path, manifest):
    """Raise MaintenanceError naming the file when the backup is missing or its size is not the manifest's."""
    if not os.path.exists(entry_path):
        raise MaintenanceError("backup %s is missing (its manifest exists)" % entry_path)
    size = path_size(entry_path)
    if size != manifest.get("size_bytes"):
        raise MaintenanceError("backup %s is corrupt: %d bytes, its manifest says %s" % (
            entry_path, size, manifest.get("size_bytes")))


def verify_checksum(entry_path, manifest):
    """Raise MaintenanceError naming the file when the backup does not match its manifest."""
    verify_size(entry_path, manifest)
    if os.path.isdir(entry_path):
        hashes = tree_hashes(entry_path)
        expected = manifest.get("files") or {}
        for rel in sorted(set(hashes) | set(expected)):
            if hashes.get(rel) != expected.get(rel):
                raise MaintenanceError("backup %s is corrupt: checksum mismatch in %s" % (
                    entry_path, os.path.join(entry_path, rel)))
        actual = tree_digest(hashes)
    else:
        actual = fsutil.file_sha256(entry_path)
    if actual != manifest.get("sha256"):
        raise MaintenanceError("backup %s is corrupt: sha256 %s, its manifest says %s" % (
            entry_path, actual, manifest.get("sha256")))
    return actual


# ---------------------------------------------------------------- listing

def read_manifest(path):
    """The manifest dict, or raise ValueError with a reason."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError("manifest unreadable: %s" % exc)
    return check_manifest(data)


def check_manifest(data):
    """``data`` (a parsed manifest) if it is a valid manifest, or raise ValueError with a reason."""
    if not isinstance(data, dict):
        raise ValueError("manifest is not a JSON object")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in data]
    if missing:
        raise ValueError("manifest lacks %s" % ", ".join(missing))
    if data["format_version"] != MANIFEST_VERSION:
        raise ValueError("manifest format_version %r is not supported" % data["format_version"])
    if os.path.basename(str(data["file"])) != data["file"]:
        raise ValueError("manifest names a file outside its directory")
    try:
        parse_iso(data["created_at"])
    except ValueError:
        raise ValueError("manifest created_at %r is not a UTC timestamp" % data["created_at"])
    return data


def list_backups(directory, prefix=None, verify_checksums=False):
    """Every backup-like entry in ``directory``, newest first.

    Each item: ``name``, ``path``, ``manifest_path``, ``status`` (``complete``, ``incomplete`` or
    ``corrupt``), ``reason``, ``manifest`` (dict or None), ``created_at`` (datetime or None), ``mtime``.
    With ``prefix``, only entries written with exactly that prefix are considered (``mlflow`` does not
    match ``mlflow-prod-sqlite-...``); a manifest that records another prefix does not match either.
    """
    if not os.path.isdir(directory):
        return []
    names = sorted(os.listdir(directory))
    if prefix:
        names = [n for n in names if name_prefix(n) == prefix]
    items = []
    claimed = set()
    for name in names:
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        manifest_path = os.path.join(directory, name)
        entry_name = name[:-len(MANIFEST_SUFFIX)]
        claimed.update(entry_name + suffix for suffix in SIDECAR_SUFFIXES)
        item = dict(name=entry_name, path=os.path.join(directory, entry_name), manifest_path=manifest_path,
                    manifest=None, created_at=None, mtime=path_mtime(manifest_path))
        try:
            manifest = read_manifest(manifest_path)
        except ValueError as exc:
            item.update(status="incomplete", reason=str(exc))
            items.append(item)
            claimed.update([name, entry_name])
            continue
        item["manifest"] = manifest
        item["created_at"] = parse_iso(manifest["created_at"])
        recorded = manifest_identity(manifest)
        if prefix and recorded is not None and recorded.get("prefix") not in (None, prefix):
            claimed.update([name, entry_name])
            continue
        if manifest["file"] != entry_name:
            item.update(status="corrupt", reason="manifest names %s, not %s" % (manifest["file"], entry_name))
        elif not os.path.exists(item["path"]):
            item.update(status="corrupt", reason="backup data %s is missing" % item["path"])
        elif path_size(item["path"]) != manifest["size_bytes"]:
            item.update(status="corrupt", reason="backup %s is %d bytes, its manifest says %s" % (
                item["path"], path_size(item["path"]), manifest["size_bytes"]))
        else:
            item.update(status="complete", reason="manifest valid")
            if verify_checksums:
                try:
                    verify_checksum(item["path"], manifest)
                    item["reason"] = "manifest valid, sha256 verified"
                except MaintenanceError as exc:
                    item.update(status="corrupt", reason=exc.msg)
        items.append(item)
        claimed.update([name, entry_name])
    for name in names:
        if name in claimed or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        if name.endswith(PARTIAL_SUFFIX):
            reason = "partial write (interrupted or in progress)"
        elif _NAME_RE.match(name):
            reason = "no manifest (interrupted before it was written)"
        else:
            continue
        items.append(dict(name=name, path=path, manifest_path=None, manifest=None, created_at=None,
                          mtime=path_mtime(path), status="incomplete", reason=reason))

    def sort_key(item):
        when = item["created_at"]
        return when.timestamp() if when else (item["mtime"] or 0)

    items.sort(key=sort_key, reverse=True)
    return items


def newest_complete(items, engine=None):
    for item in items:
        if item["status"] == "complete" and (engine is None or item["manifest"]["engine"] == engine):
            return item
    return None


def public_item(item):
    """A listing item fit for module results."""
    manifest = item.get("manifest") or {}
    return dict(
        name=item["name"], path=item["path"], manifest_path=item["manifest_path"], status=item["status"],
        reason=item["reason"], created_at=manifest.get("created_at"), engine=manifest.get("engine"),
        format=manifest.get("format"), compression=manifest.get("compression"),
        size_bytes=manifest.get("size_bytes"), sha256=manifest.get("sha256"),
        schema_revision=manifest.get("schema_revision"), source=manifest.get("source"),
        store=manifest_identity(manifest), manifest=item.get("manifest"),
    )


def stale_incomplete(items, grace_seconds, now=None):
    """Incomplete entries whose last modification is older than the grace period."""
    now = now if now is not None else time.time()
    stale = []
    for item in items:
        if item["status"] != "incomplete":
            continue
        mtime = item["mtime"]
        if mtime is None or now - mtime >= grace_seconds:
            stale.append(item)
    return stale


# ---------------------------------------------------------------- locking

class DirectoryLock:
    """An exclusive, non-blocking flock on ``<dest>/.<prefix>-backup.lock``: one backup a destination."""

    def __init__(self, directory, prefix):
        self.path = os.path.join(directory, ".%s-backup.lock" % prefix)
        self.handle = None

    def __enter__(self):
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MaintenanceError("lock file %s is a symlink; refusing to follow it" % self.path)
            raise
        self.handle = os.fdopen(fd, "a")
        if fcntl is not None:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (IOError, OSError) as exc:
                self.handle.close()
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise MaintenanceError("another backup into %s is running (lock %s is held)" % (
                        os.path.dirname(self.path), self.path))
                raise
        return self

    def __exit__(self, *exc):
        self.handle.close()


def python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def os_error_message(exc, what):
    """A one-line reason for an OSError while writing a backup (no traceback)."""
    if exc.errno == errno.ENOSPC:
        return "%s: no space left on device (%s)" % (what, getattr(exc, "filename", None) or "")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "%s: permission denied (%s)" % (what, getattr(exc, "filename", None) or exc)
    return "%s: %s" % (what, exc)


# ---------------------------------------------------------------- options and checks db_backup and db_restore share

def check_jobs(jobs):
    """``jobs`` as an int; at least 1."""
    if int(jobs) < 1:
        raise MaintenanceError("jobs must be at least 1")
    return int(jobs)


def grace_seconds(text):
    """The ``incomplete_grace`` option (``90s``, ``1h``, ...) in seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise MaintenanceError("incomplete_grace: %s" % exc)
