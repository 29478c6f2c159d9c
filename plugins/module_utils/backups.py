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


# ---------------------------------------------------------------- atomic files

def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file and directory under ``path`` (a pg_dump directory-format backup)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


def atomic_rename(temp_path, final_path):
    os.rename(temp_path, final_path)
    fsync_dir(os.path.dirname(final_path) or ".")


def write_json_atomic(path, data):
    temp = path + PARTIAL_SUFFIX
    with open(temp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    atomic_rename(temp, path)


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


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

def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


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
    Only names starting with ``<prefix>-`` are considered when ``prefix`` is given.
    """
    if not os.path.isdir(directory):
        return []
    names = sorted(os.listdir(directory))
    if prefix:
        names = [n for n in names if n.startswith(prefix + "-")]
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
        manifest=item.get("manifest"),
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
        self.handle = open(self.path, "a")  # pylint: disable=consider-using-with
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
