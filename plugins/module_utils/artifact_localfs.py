# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Local artifact trees: listing in S3 key order with a symlink policy, and writes that never go through a symlink.

Every write, link, rename, unlink and utime below a store's root goes through directory file descriptors opened
component by component with ``O_NOFOLLOW``: a symlinked directory planted in a destination makes the operation
fail with UnsafePath, it never receives data. Files and temporary files are created 0600, directories 0700.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import stat
import threading
import uuid

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names as names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil

CHUNK = 1024 * 1024
MAX_LISTED = 100
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRFLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC


class UnsafePath(MaintenanceError):
    """A path component in a destination is a symlink (or not a directory): nothing is written through it."""


def sort_key(key):
    return key.encode("utf-8", "surrogateescape")


class Entry(object):
    """One file or object: relative ``key`` ('/'-separated), ``size``, ``mtime`` (epoch s), ``etag``.

    ``ref`` is where the bytes are when that is not ``key`` under the store (snapshot blobs, followed links);
    ``sha256`` is known content, when a manifest says so. A symlink in a destination is listed with size -1.
    """

    __slots__ = ("key", "size", "mtime", "etag", "ref", "sha256")

    def __init__(self, key, size, mtime=None, etag=None, ref=None, sha256=None):
        self.key = key
        self.size = int(size)
        self.mtime = mtime
        self.etag = etag
        self.ref = ref
        self.sha256 = sha256

    def __repr__(self):
        return "Entry(%r, %r, %r, %r)" % (self.key, self.size, self.mtime, self.etag)


class Capped(object):
    """A list that keeps the first MAX_LISTED items and counts them all (thread-safe)."""

    def __init__(self):
        self.items = []
        self.count = 0
        self._lock = threading.Lock()

    def add(self, item):
        with self._lock:
            self.count += 1
            if len(self.items) < MAX_LISTED:
                self.items.append(item)

    @property
    def truncated(self):
        return self.count > len(self.items)


def _open_dir_at(parent_fd, name, shown):
    try:
        return os.open(name, _DIRFLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
            except OSError:
                what = "not a directory"
            raise UnsafePath("%s in the destination is %s; refusing to write through it" % (shown, what))
        raise


def _ensure_root(root, mode):
    """Create ``root`` (and parents) with ``mode``; another thread creating it at the same time is fine."""
    for _attempt in range(5):
        if os.path.isdir(root):
            return
        try:
            fsutil.makedirs_private(root, mode)
        except FileExistsError:
            continue
    if not os.path.isdir(root):
        raise MaintenanceError("cannot create the directory %s" % root)


def open_dir_chain(root, parts, create=False, mode=fsutil.DIR_MODE):
    """A directory fd for ``root/parts...``, every component opened with O_NOFOLLOW; missing ones created
    (``mode``) when ``create``. ``root`` itself is the user's choice and may be a symlink."""
    if create:
        _ensure_root(root, mode)
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        for index, part in enumerate(parts):
            shown = "/".join(parts[:index + 1])
            try:
                child = _open_dir_at(fd, part, shown)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                child = _open_dir_at(fd, part, shown)
                os.fchmod(child, mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir_chain_close(root, parts, create=False, mode=fsutil.DIR_MODE):
    """Create (when ``create``) and check ``root/parts`` like open_dir_chain, without keeping the fd."""
    os.close(open_dir_chain(root, parts, create=create, mode=mode))


def rename_at(root, old, new):
    """Rename ``root/old`` to ``root/new`` (both plain names), then fsync ``root``."""
    dir_fd = open_dir_chain(root, [])
    try:
        os.rename(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fsync_dir_quiet(path):
    try:
        fsutil.fsync_dir(path)
    except OSError:
        pass


def temp_name():
    return names.TEMP_PREFIX + uuid.uuid4().hex


def write_file(root, parts, fill, mtime_ns=None, mtime=None, mode=fsutil.FILE_MODE):
    """Write ``root/parts`` through a temporary file in the same directory (``fill(fileobj)`` writes it), fsync,
    set the mtime, rename into place. Returns what ``fill`` returned. Never follows a symlink."""
    dir_fd = open_dir_chain(root, parts[:-1], create=True)
    temp = temp_name()
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dir_fd)
        try:
            handle = os.fdopen(fd, "w+b")
        except BaseException:
            os.close(fd)
            raise
        try:
            with handle:
                os.fchmod(handle.fileno(), mode)
                outcome = fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
                if mtime_ns is not None:
                    os.utime(handle.fileno(), ns=mtime_ns)
                elif mtime is not None:
                    os.utime(handle.fileno(), (mtime, mtime))
            try:
                info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise MaintenanceError("%s is a directory in the destination; the source has a file there" % "/".join(parts))
            os.rename(temp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        return outcome
    finally:
        os.close(dir_fd)


def link_file(src_root, src_parts, root, parts):
    """Hard-link ``src_root/src_parts`` to ``root/parts``; neither side goes through a symlink."""
    src_fd = open_dir_chain(src_root, src_parts[:-1])
    try:
        dir_fd = open_dir_chain(root, parts[:-1], create=True)
        try:
            os.link(src_parts[-1], parts[-1], src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)
    finally:
        os.close(src_fd)


def unlink_file(root, parts):
    dir_fd = open_dir_chain(root, parts[:-1])
    try:
        os.unlink(parts[-1], dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def set_mtime(root, parts, mtime):
    dir_fd = open_dir_chain(root, parts[:-1])
    try:
        os.utime(parts[-1], (mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def open_read(root, parts):
    """A file below ``root`` opened for reading; no component (nor the file) may be a symlink."""
    dir_fd = open_dir_chain(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "rb")


def prune_empty_dirs(root, part_lists):
    """Remove directories left empty by deletions, deepest first; never through a symlink."""
    directories = set()
    for parts in part_lists:
        for depth in range(1, len(parts)):
            directories.add(tuple(parts[:depth]))
    for directory in sorted(directories, key=len, reverse=True):
        try:
            dir_fd = open_dir_chain(root, list(directory[:-1]))
        except (OSError, MaintenanceError):
            continue
        try:
            os.rmdir(directory[-1], dir_fd=dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def sha256_fileobj(handle):
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def is_our_manifest(path):
    """Whether ``path`` is a manifest or store marker this collection wrote (not a user file of that name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
        if len(head) >= 1 << 20:
            return b'"tool":"%s"' % names.TOOL.encode() in head.replace(b" ", b"")
        data = json.loads(head.decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == names.TOOL
