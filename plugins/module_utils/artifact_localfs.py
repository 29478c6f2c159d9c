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
import itertools
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


_TEMP_TOKEN = uuid.uuid4().hex[:16]
_TEMP_COUNTER = itertools.count()


def temp_name():
    """A new temporary name (32 hex digits: a random per-process token and a counter, no syscall per name)."""
    return "%s%s%016x" % (names.TEMP_PREFIX, _TEMP_TOKEN, next(_TEMP_COUNTER))


def _rename_into_place(dir_fd, temp, name, shown):
    """Rename ``temp`` over ``name`` in ``dir_fd``. A directory there fails the rename itself (EISDIR), which is
    refused with the destination's path ``shown``."""
    try:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except IsADirectoryError:
        raise MaintenanceError("%s is a directory in the destination; the source has a file there" % shown)


def _discard(dir_fd, temp):
    try:
        os.unlink(temp, dir_fd=dir_fd)
    except OSError:
        pass


def write_file(root, parts, fill, mtime_ns=None, mtime=None, mode=fsutil.FILE_MODE, durable=True):
    """Write ``root/parts`` through a temporary file in the same directory (``fill(fileobj)`` writes it), fsync,
    set the mtime, rename into place. Returns what ``fill`` returned. Never follows a symlink.

    ``durable=False`` leaves out the fsync: the caller flushes the whole tree once (:func:`flush_tree`) before it
    writes the manifest that says the copy is complete."""
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
                if durable:
                    os.fsync(handle.fileno())
                if mtime_ns is not None:
                    os.utime(handle.fileno(), ns=mtime_ns)
                elif mtime is not None:
                    os.utime(handle.fileno(), (mtime, mtime))
            _rename_into_place(dir_fd, temp, parts[-1], "/".join(parts))
        except BaseException:
            _discard(dir_fd, temp)
            raise
        return outcome
    finally:
        os.close(dir_fd)


class DirChains(object):
    """Directory fds below ``root`` for one batch of copies, each opened once and reused: every component with
    ``O_NOFOLLOW`` (as :func:`open_dir_chain`), missing ones created ``mode`` when ``create``. ``close()`` ends
    them. A component that fails is not kept, so each file that needs it gets the error itself."""

    def __init__(self, root, create=False, mode=fsutil.DIR_MODE):
        self.root = root
        self.create = create
        self.mode = mode
        self.fds = {}

    def get(self, parts):
        key = tuple(parts)
        fd = self.fds.get(key)
        if fd is not None:
            return fd
        if not key:
            if self.create:
                _ensure_root(self.root, self.mode)
            fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        else:
            parent = self.get(key[:-1])
            shown = "/".join(key)
            try:
                fd = _open_dir_at(parent, key[-1], shown)
            except FileNotFoundError:
                if not self.create:
                    raise
                try:
                    os.mkdir(key[-1], self.mode, dir_fd=parent)
                except FileExistsError:
                    pass
                fd = _open_dir_at(parent, key[-1], shown)
                try:
                    os.fchmod(fd, self.mode)
                except BaseException:
                    os.close(fd)
                    raise
        self.fds[key] = fd
        return fd

    def close(self):
        fds, self.fds = list(self.fds.values()), {}
        for fd in fds:
            os.close(fd)


def copy_files(src_root, src_parts_list, root, parts_list, mode=fsutil.FILE_MODE, durable=True):
    """Copy a batch of files, ``src_root/src_parts_list[i]`` to ``root/parts_list[i]``, each through a temporary file.

    Directory chains are opened once per batch (:class:`DirChains`: ``O_NOFOLLOW`` on every component, missing
    destination directories created); each file is read once, hashed from the same buffer, written to a new
    0600 temporary file, given the source's mtime, and renamed into place (see :func:`write_file`;
    ``durable=False``: no fsync per file, the caller flushes once with :func:`flush_tree`).
    Returns a list with, per file, ``(sha256 hex, None)`` or ``(None, exception)``.
    """
    sources, dests = DirChains(src_root), DirChains(root, create=True)
    outcomes = []
    try:
        for src_parts, parts in zip(src_parts_list, parts_list):
            try:
                src_fd = sources.get(src_parts[:-1])
                dir_fd = dests.get(parts[:-1])
                outcomes.append((_copy_one(src_fd, src_parts[-1], dir_fd, parts[-1], parts[:-1], mode, durable), None))
            except Exception as exc:  # pylint: disable=broad-except
                outcomes.append((None, exc))
        return outcomes
    finally:
        sources.close()
        dests.close()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_one(src_fd, name_from, dir_fd, name_to, dir_parts, mode, durable):
    """One file of :func:`copy_files`; returns its sha256."""
    reader = os.open(name_from, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=src_fd)
    try:
        temp = temp_name()
        writer = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(writer, mode)
                digest = hashlib.sha256()
                while True:
                    block = os.read(reader, CHUNK)
                    if not block:
                        break
                    digest.update(block)
                    _write_all(writer, block)
                info = os.fstat(reader)
                # The copy keeps the source's mtime (local to local compares mtimes), not its mode (0600).
                os.utime(writer, ns=(info.st_atime_ns, info.st_mtime_ns))
                if durable:
                    os.fsync(writer)
            finally:
                os.close(writer)
            _rename_into_place(dir_fd, temp, name_to, "/".join(list(dir_parts) + [name_to]))
        except BaseException:
            _discard(dir_fd, temp)
            raise
        return digest.hexdigest()
    finally:
        os.close(reader)


def _load_syncfs():
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (ImportError, OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int

    def syncfs(fd):
        if func(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    return syncfs


_SYNCFS = []


def flush_tree(root):
    """Make everything written below ``root`` durable in one pass: ``syncfs`` on its filesystem (Linux: one
    journal commit for all the files, directories and renames), else ``sync``. Called once after a copy whose
    files were written without a per-file fsync, before the manifest that marks the copy complete."""
    if not _SYNCFS:
        _SYNCFS.append(_load_syncfs())
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        if _SYNCFS[0] is not None:
            _SYNCFS[0](fd)
        else:
            os.sync()
    finally:
        os.close(fd)


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
