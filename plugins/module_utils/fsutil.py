# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystem primitives shared by every job: private files, fsync, atomic writes, checksums, clean-up.

Files that hold data or secrets are created 0600 and directories 0700 unless a caller passes a mode;
nothing here follows a symlink when it creates or replaces something.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import shutil
import time

CHUNK = 1024 * 1024
FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path):
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file and directory under ``path``."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


def open_private(path, mode=FILE_MODE, exclusive=True):
    """A new file opened for binary writing, created with ``mode`` whatever the umask; never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def makedirs_private(path, mode=DIR_MODE):
    """Create ``path`` and missing parents with ``mode``; an existing directory is left as it is."""
    if os.path.isdir(path) and not os.path.islink(path):
        return False
    parent = os.path.dirname(os.path.abspath(path))
    if parent and parent != path and not os.path.isdir(parent):
        makedirs_private(parent, mode)
    os.mkdir(path, mode)
    os.chmod(path, mode)
    return True


def atomic_rename(temp_path, final_path):
    os.rename(temp_path, final_path)
    fsync_dir(os.path.dirname(final_path) or ".")


def write_bytes_atomic(path, data, mode=FILE_MODE, temp_suffix=".partial"):
    """Write ``data`` to ``path`` through a temporary name, fsync, rename, fsync the directory."""
    temp = path + temp_suffix
    remove_path(temp)
    with open_private(temp, mode) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    atomic_rename(temp, path)


def write_json_atomic(path, data, mode=FILE_MODE, temp_suffix=".partial"):
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, temp_suffix=temp_suffix)


def remove_path(path):
    """Remove a file, a symlink (never its target) or a directory tree; a missing path is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


def is_stale(path, grace_seconds, now=None):
    """True when ``path`` was last modified more than ``grace_seconds`` ago (lstat: a link is judged itself)."""
    try:
        mtime = os.lstat(path).st_mtime
    except OSError:
        return False
    return ((now if now is not None else time.time()) - mtime) > grace_seconds
