# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Artifact stores: a local tree (:class:`LocalStore`) and an S3 prefix (:class:`S3Store`).

Both list :class:`artifact_localfs.Entry` streams in S3 key byte order, open entries for reading and hash them.
Local trees never write through a symlink (:mod:`artifact_localfs`); names are escaped per :mod:`artifact_names`"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import os
import stat
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names as names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_compare import strip_etag
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_localfs import (
    CHUNK,
    Capped,
    Entry,
    is_our_manifest,
    open_read,
    sha256_fileobj,
    sort_key,
)

SHA256_META = "sha256"


def is_managed(root):
    """A directory this collection writes: it has our store marker, or (older versions) our manifest."""
    return any(is_our_manifest(os.path.join(root, name)) for name in (names.MARKER_NAME, names.MANIFEST_NAME))


class LocalStore(object):
    """A local tree. ``managed``: a directory the collection writes (reserved names escaped, own files skipped);
    None detects it from the store marker. ``symlinks``: the policy for links met while listing a source
    (``skip``, ``follow_within``, ``follow``). ``role="dest"`` lists links as entries of size -1 so that they
    are replaced, never written through."""

    kind = "local"

    def __init__(self, root, symlinks="skip", managed=None, role="src"):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.symlinks = symlinks
        self.role = role
        self._managed = managed
        self.skipped_symlinks = Capped()
        self.skipped_reserved = Capped()
        self.stale_temps = Capped()
        self.stale_temp_parts = []

    def __str__(self):
        return self.root

    @property
    def managed(self):
        if self._managed is None:
            self._managed = is_managed(self.root) if self.exists() else False
        return self._managed

    def exists(self):
        return os.path.isdir(self.root)

    def parts(self, key):
        return names.disk_parts(key, self.managed)

    def path(self, key):
        return os.path.join(self.root, *self.parts(key))

    def ref(self, entry):
        return entry.ref or self.path(entry.key)

    def open_read(self, entry):
        if entry.ref:
            return open(entry.ref, "rb")
        return open_read(self.root, self.parts(entry.key))

    def sha256(self, entry):
        with self.open_read(entry) as handle:
            return sha256_fileobj(handle)

    def list(self):
        """Every regular file below the root, in key byte order (the order S3 lists in).

        Children are sorted by key name, with '/' appended to directory names: a depth-first walk in that
        order yields keys in the byte order of the whole key.
        """
        if not self.exists():
            return
        real_root = os.path.realpath(self.root)
        yield from self._walk(self.root, "", real_root, {self._dir_id(self.root)}, False)

    @staticmethod
    def _dir_id(path):
        info = os.stat(path)
        return (info.st_dev, info.st_ino)

    def _walk(self, directory, rel, real_root, ancestors, via_link):
        for _sort, path, key, kind, info in self._children(directory, rel, real_root, ancestors):
            if kind in ("dir", "linkdir"):
                below = ancestors if info is None else ancestors | {(info.st_dev, info.st_ino)}
                yield from self._walk(path, key, real_root, below, via_link or kind == "linkdir")
            else:
                yield Entry(key, info.st_size, info.st_mtime, ref=path if (via_link or kind == "followed") else None)

    def _skip_link(self, key, path, reason):
        try:
            target = os.readlink(path)
        except OSError:
            target = None
        self.skipped_symlinks.add(dict(path=key, target=target, reason=reason))

    def _children(self, directory, rel, real_root, ancestors):
        items = []
        try:
            scanner = os.scandir(directory)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return items
            raise
        managed = self.managed
        now = None
        # A directory's identity (one stat each) only serves the cycle check of symlinked directories, which are
        # followed only in a source with symlinks=follow/follow_within: a plain walk saves that syscall.
        dir_ids = self.role != "dest" and self.symlinks != "skip"
        with scanner:
            for dirent in scanner:
                name = dirent.name
                if managed:
                    kind, key_name = names.classify_disk_name(name, not rel)
                    if kind == "own":
                        now = time.time() if now is None else now
                        if key_name == "temp" and self.role == "dest" and fsutil.is_stale(dirent.path, names.TEMP_GRACE_SECONDS, now):
                            shown = rel + "/" + name if rel else name
                            self.stale_temps.add(shown)
                            self.stale_temp_parts.append((directory, name))
                        continue
                    if kind == "foreign":
                        self.skipped_reserved.add(rel + "/" + name if rel else name)
                        continue
                else:
                    key_name = name
                key = rel + "/" + key_name if rel else key_name
                if dirent.is_symlink():
                    entry = self._symlink_child(dirent, key, key_name, real_root, ancestors)
                    if entry is not None:
                        items.append(entry)
                    continue
                if dirent.is_dir(follow_symlinks=False):
                    items.append((sort_key(key_name + "/"), dirent.path, key, "dir",
                                  dirent.stat(follow_symlinks=False) if dir_ids else None))
                elif dirent.is_file(follow_symlinks=False):
                    items.append((sort_key(key_name), dirent.path, key, "file", dirent.stat(follow_symlinks=False)))
        items.sort(key=lambda item: item[0])
        return items

    def _symlink_child(self, dirent, key, key_name, real_root, ancestors):
        info = dirent.stat(follow_symlinks=False)
        if self.role == "dest":
            # Listed so that it is replaced by a real file (or reported as extraneous), never written through.
            return (sort_key(key_name), dirent.path, key, "file", _LinkInfo(info))
        try:
            target_info = os.stat(dirent.path)
            dangling = False
        except OSError:
            target_info, dangling = None, True
        is_dir = target_info is not None and stat.S_ISDIR(target_info.st_mode)
        cycle = is_dir and (target_info.st_dev, target_info.st_ino) in ancestors
        target_real = None if dangling else os.path.realpath(dirent.path)
        follow, reason = names.symlink_decision(self.symlinks, target_real, real_root, dangling, cycle)
        if follow and not is_dir and not stat.S_ISREG(target_info.st_mode):
            follow, reason = False, "not a regular file"
        if not follow:
            self._skip_link(key, dirent.path, reason)
            return None
        if is_dir:
            return (sort_key(key_name + "/"), target_real, key, "linkdir", target_info)
        return (sort_key(key_name), target_real, key, "followed", target_info)


class _LinkInfo(object):
    """stat-like values for a symlink listed in a destination: size -1 (never equal to a source file)."""

    def __init__(self, info):
        self.st_size = -1
        self.st_mtime = info.st_mtime


class S3Store(object):
    kind = "s3"

    def __init__(self, client, bucket, prefix):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def __str__(self):
        return "s3://%s/%s" % (self.bucket, self.prefix)

    def full_key(self, key):
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def ref(self, entry):
        return entry.ref or self.full_key(entry.key)

    def list(self, below=""):
        """Every object under the prefix (all pages), keys relative to the prefix."""
        prefix = self.full_key(below.strip("/")) if below else self.prefix
        list_prefix = prefix + "/" if prefix else ""
        cut = len(self.prefix) + 1 if self.prefix else 0
        for item in s3_utils.paginate(self.client, "list_objects_v2", "Contents", Bucket=self.bucket,
                                      Prefix=list_prefix):
            key = item["Key"][cut:]
            if not key or key.endswith("/"):
                continue
            yield Entry(key, item["Size"], _epoch(item.get("LastModified")), strip_etag(item.get("ETag")))

    def head(self, entry):
        return self.client.head_object(Bucket=self.bucket, Key=self.ref(entry))

    def sha256(self, entry):
        """sha256 from the object's metadata (written by this module's uploads), else by reading it."""
        if entry.sha256:
            return entry.sha256
        meta = self.head(entry).get("Metadata", {}) or {}
        if meta.get(SHA256_META):
            return meta[SHA256_META]
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self.ref(entry))["Body"]
        for block in body.iter_chunks(CHUNK):
            digest.update(block)
        return digest.hexdigest()

    def delete_keys(self, full_keys):
        """Delete objects in batches of 1,000; returns a list of (key, error message)."""
        errors = []
        for offset in range(0, len(full_keys), 1000):
            batch = full_keys[offset:offset + 1000]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": key} for key in batch], "Quiet": True})
            for error in answer.get("Errors", []) or []:
                errors.append((error.get("Key"), "%s %s" % (error.get("Code"), error.get("Message"))))
        return errors


def _epoch(value):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return value.timestamp()
