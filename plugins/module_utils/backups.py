# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup directory layout, manifests, streaming compression, atomic writes and listing.

A backup is one entry in the destination directory, a file or (for pg_dump's directory format) a
directory, named ``<prefix>-<engine>-<UTC time>.<ext>``, plus ``<entry>.manifest.json`` written
last. An entry without a valid manifest is incomplete: restore never uses it and retention never
counts it. Work in progress carries a ``.partial`` suffix.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

try:
    import zstandard
    HAS_ZSTANDARD = True
except ImportError:
    zstandard = None
    HAS_ZSTANDARD = False

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
MANIFEST_VERSION = 1
CHUNK = 1024 * 1024
COMPRESSION_EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}
REQUIRED_MANIFEST_KEYS = ("format_version", "file", "engine", "format", "compression", "size_bytes", "sha256",
                          "created_at")
_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<engine>sqlite|postgresql)-(?P<stamp>\d{8}T\d{6}\d{6}Z)\.")


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


# ---------------------------------------------------------------- compression

def zstd_cli():
    return shutil.which("zstd")


def resolve_compression(requested):
    """``auto`` means zstd when the zstandard library or the zstd CLI is present, else gzip."""
    if requested in (None, "auto"):
        return "zstd" if (HAS_ZSTANDARD or zstd_cli()) else "gzip"
    if requested == "zstd" and not (HAS_ZSTANDARD or zstd_cli()):
        raise MaintenanceError("compression=zstd needs the zstandard Python library or the zstd command; "
                               "install one, or use compression=gzip")
    return requested


def compression_tool(method):
    if method == "zstd":
        if HAS_ZSTANDARD:
            return "python-zstandard %s" % zstandard.__version__
        return "zstd-cli"
    if method == "gzip":
        return "python-gzip"
    return None


class HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle):
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        self.handle.write(data)
        return len(data)

    def flush(self):
        self.handle.flush()


def compress_stream(source, sink, method, timeout=None, level=None):
    """Copy readable ``source`` (a file object with ``read``; with ``fileno`` for the zstd CLI) into ``sink``.

    Memory stays bounded: chunks of 1 MiB (the zstd library and the CLI stream too).
    """
    if method == "none":
        shutil.copyfileobj(source, sink, CHUNK)
    elif method == "gzip":
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level or 6, mtime=0) as writer:
            shutil.copyfileobj(source, writer, CHUNK)
    elif method == "zstd" and HAS_ZSTANDARD:
        compressor = zstandard.ZstdCompressor(level=level or 3, threads=-1, write_checksum=True)
        compressor.copy_stream(source, sink, read_size=CHUNK, write_size=CHUNK)
    elif method == "zstd":
        proc = subprocess.Popen([zstd_cli(), "-q", "-c", "-%d" % (level or 3)],  # pylint: disable=consider-using-with
                                stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _drain(proc, sink, "zstd", timeout)
    else:
        raise MaintenanceError("unknown compression %r" % method)


def decompress_stream(source, sink, method, timeout=None):
    """Inverse of :func:`compress_stream`."""
    if method == "none":
        shutil.copyfileobj(source, sink, CHUNK)
    elif method == "gzip":
        with gzip.GzipFile(fileobj=source, mode="rb") as reader:
            shutil.copyfileobj(reader, sink, CHUNK)
    elif method == "zstd" and HAS_ZSTANDARD:
        zstandard.ZstdDecompressor().copy_stream(source, sink, read_size=CHUNK, write_size=CHUNK)
    elif method == "zstd":
        proc = subprocess.Popen([zstd_cli(), "-q", "-d", "-c"],  # pylint: disable=consider-using-with
                                stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _drain(proc, sink, "zstd -d", timeout)
    else:
        raise MaintenanceError("unknown compression %r" % method)


def _drain(proc, sink, what, timeout):
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while True:
            data = proc.stdout.read(CHUNK)
            if not data:
                break
            sink.write(data)
            if deadline and time.monotonic() > deadline:
                raise MaintenanceError("%s did not finish within %ss" % (what, timeout))
        stderr = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait(timeout=60) != 0:
            raise MaintenanceError("%s failed with exit status %s: %s" % (what, proc.returncode, stderr.strip()[-500:]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- atomic files (fsutil; names kept for importers)

fsync_dir = fsutil.fsync_dir
fsync_tree = fsutil.fsync_tree
atomic_rename = fsutil.atomic_rename
write_json_atomic = fsutil.write_json_atomic
remove_path = fsutil.remove_path
file_sha256 = fsutil.file_sha256
open_private = fsutil.open_private
makedirs_private = fsutil.makedirs_private


def dir_mode_for(file_mode):
    """The directory mode that goes with a file mode: each read bit also grants search (0600 -> 0700)."""
    return file_mode | ((file_mode & 0o444) >> 2) | 0o700


def parse_mode(value, option="mode"):
    """A file mode from an option: None, an int (YAML 0640 arrives as 416) or an octal string (``"0640"``)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MaintenanceError("%s must be an octal file mode like '0600', not %r" % (option, value))
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if not re.match(r"^0?[0-7]{3,4}$", text):
            raise MaintenanceError("%s must be an octal file mode like '0600', not %r" % (option, value))
        mode = int(text, 8)
    if mode < 0 or mode > 0o7777:
        raise MaintenanceError("%s %r is not a file mode" % (option, value))
    return mode


@contextlib.contextmanager
def private_umask(mask=0o077):
    """Files created meanwhile (also by child processes such as pg_dump) are private to the owner."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def chmod_tree(path, file_mode, dir_mode):
    """Give a directory-format backup (pg_dump --format=directory) the backup's modes; never follows links."""
    for root, dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, file_mode)
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, dir_mode)
    os.chmod(path, dir_mode)


# ---------------------------------------------------------------- store identity

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def validate_prefix(prefix):
    """A prefix is one plain file-name component: no separator, no leading dot, nothing like ``..``."""
    text = "" if prefix is None else str(prefix)
    if not _PREFIX_RE.match(text) or ".." in text:
        raise MaintenanceError("prefix %r is not allowed: use letters, digits, '.', '_', '+' or '-' (at most 100, "
                               "starting with a letter or digit, no '/' and no '..')" % (prefix,))
    return text


def store_identity(store, prefix=None):
    """Who a backup belongs to: engine, location (no user, no password) and, for db_backup, the prefix.

    SQLite: the resolved real path of the database file, so two spellings of one file (a symlink, ``..``)
    are one store. PostgreSQL: host (or socket directory), port (5432 when not given) and database; the
    user is not part of it (two roles see the same database) and the password never is.
    """
    if store.is_sqlite:
        location = "sqlite:///%s" % os.path.realpath(store.path)
    else:
        host = (store.socket_host or "localhost").lower()
        location = "postgresql://%s:%d/%s" % (host, int(store.port or 5432), store.database or "")
    identity = dict(engine=store.engine, location=location)
    if prefix is not None:
        identity["prefix"] = prefix
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
    if match_prefix and recorded.get("prefix") != identity.get("prefix"):
        return False
    return True


def describe_identity(identity):
    if not identity:
        return "an unknown store (no identity in its manifest)"
    text = "%s store %s" % (identity.get("engine"), identity.get("location"))
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
            hashes[os.path.relpath(full, path)] = file_sha256(full)
    return hashes


def entry_sha256(path):
    """sha256 of a backup file, or the tree digest of a directory backup."""
    if os.path.isdir(path):
        return tree_digest(tree_hashes(path))
    return file_sha256(path)


def verify_checksum(entry_path, manifest):
    """Raise MaintenanceError naming the file when the backup does not match its manifest."""
    if not os.path.exists(entry_path):
        raise MaintenanceError("backup %s is missing (its manifest exists)" % entry_path)
    size = path_size(entry_path)
    if size != manifest.get("size_bytes"):
        raise MaintenanceError("backup %s is corrupt: %d bytes, its manifest says %s" % (
            entry_path, size, manifest.get("size_bytes")))
    if os.path.isdir(entry_path):
        hashes = tree_hashes(entry_path)
        expected = manifest.get("files") or {}
        for rel in sorted(set(hashes) | set(expected)):
            if hashes.get(rel) != expected.get(rel):
                raise MaintenanceError("backup %s is corrupt: checksum mismatch in %s" % (
                    entry_path, os.path.join(entry_path, rel)))
        actual = tree_digest(hashes)
    else:
        actual = file_sha256(entry_path)
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
