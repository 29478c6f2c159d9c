# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystem primitives shared by every job: private files, fsync, atomic writes, checksums, clean-up.

Files that hold data or secrets are created 0600 and directories 0700 unless a caller passes a mode;
nothing here follows a symlink when it creates or replaces something.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import re
import shutil
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

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
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        # Another host or process created it at the same moment (a shared backup mount): fine if a directory.
        if os.path.isdir(path) and not os.path.islink(path):
            return False
        raise
    os.chmod(path, mode)
    return True


def atomic_rename(temp_path, final_path):
    os.rename(temp_path, final_path)
    fsync_dir(os.path.dirname(final_path) or ".")


def write_atomic(path, fill, mode=FILE_MODE, temp_suffix=".partial"):
    """Write ``path`` through a temporary name (``fill(handle)`` writes it), fsync, rename, fsync the directory.
    The temporary file is removed when anything fails."""
    temp = path + temp_suffix
    remove_path(temp)
    try:
        with open_private(temp, mode) as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        atomic_rename(temp, path)
    except BaseException:
        remove_path(temp)
        raise


def write_bytes_atomic(path, data, mode=FILE_MODE, temp_suffix=".partial"):
    """Write ``data`` to ``path`` through a temporary name, fsync, rename, fsync the directory."""
    write_atomic(path, lambda handle: handle.write(data), mode=mode, temp_suffix=temp_suffix)


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


# ---------------------------------------------------------------- file modes

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
