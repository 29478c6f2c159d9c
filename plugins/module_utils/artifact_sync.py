# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental, parallel copies of artifact trees between local directories and S3 prefixes.

- Listings are streams of :class:`Entry`, sorted by the UTF-8 bytes of the relative key (the order
  S3's ``ListObjectsV2`` returns); local trees are walked in that same order. Every S3 listing is paged.
- :func:`merge_listings` joins two sorted streams in bounded memory; :func:`quick_compare` is the pure
  decision (copy, skip, or look closer); the executor does the I/O with bounded concurrency.
- Local files are written to a temporary name, fsynced, then renamed; manifests are written last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import hashlib
import json
import os
import queue
import re
import shutil
import stat
import threading
import uuid

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    MaintenanceError,
    bounded_parallel_map,
    jittered_backoff,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils

RESERVED = ".mlflowops-"
TEMP_PREFIX = ".mlflowops-tmp-"
PARTIAL_PREFIX = ".mlflowops-partial-"
MANIFEST_NAME = ".mlflowops-manifest.json"
SNAPSHOT_NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
CHUNK = 1024 * 1024
MAX_LISTED = 100
SOURCE_ETAG_META = "mlflowops-source-etag"
SHA256_META = "sha256"


def sort_key(key):
    return key.encode("utf-8", "surrogateescape")


class Entry(object):
    """One file or object: relative ``key`` ('/'-separated), ``size``, ``mtime`` (epoch s), ``etag``.

    ``ref`` is where the bytes are when that is not ``key`` under the store (snapshot blobs);
    ``sha256`` is known content, when a manifest says so.
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


# ---------------------------------------------------------------- pure decisions


class _Done(object):
    pass


def prefetch(iterable, size=5000):
    """Iterate ``iterable`` in a background thread, at most ``size`` items ahead (both sides list at once)."""
    items = queue.Queue(maxsize=size)
    done = _Done()
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # pylint: disable=broad-except
            items.put(exc)

    worker = threading.Thread(target=produce, name="mlflowops-listing")
    worker.daemon = True
    worker.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def merge_listings(source, dest):
    """Join two key-sorted Entry streams: yields ``(key, source_entry_or_None, dest_entry_or_None)``.

    Raises MaintenanceError if either stream is out of order (a silent mis-join could delete data).
    """
    def checked(stream, name):
        last = None
        for entry in stream:
            current = sort_key(entry.key)
            if last is not None and current <= last:
                raise MaintenanceError("the %s listing is not in key order at %r; refusing to continue" % (name, entry.key))
            last = current
            yield current, entry

    src_iter, dst_iter = checked(prefetch(source), "source"), checked(prefetch(dest), "destination")
    src, dst = next(src_iter, None), next(dst_iter, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src[0] < dst[0]):
            yield src[1].key, src[1], None
            src = next(src_iter, None)
        elif src is None or dst[0] < src[0]:
            yield dst[1].key, None, dst[1]
            dst = next(dst_iter, None)
        else:
            yield src[1].key, src[1], dst[1]
            src, dst = next(src_iter, None), next(dst_iter, None)


def strip_etag(etag):
    return (etag or "").strip('"') or None


def quick_compare(src, dst, src_kind, dst_kind, compare="auto"):
    """Decide without I/O: ``missing``, ``differ``, ``same`` or ``deep`` (needs reading to decide).

    ``auto``: size plus, S3 to S3, the ETag (multipart ETags that differ are settled by the
    source ETag the copy recorded in the object's metadata); local to local, the mtime in whole
    seconds (copies keep it); S3 to local, the local mtime equals the object's LastModified
    (downloads set it), else the local file's (multipart) ETag is computed; local to S3, the object
    is not older than the file, else the file's (multipart) ETag is computed.
    ``checksum``: sizes equal, then sha256 of both sides. ``size``: size only.
    """
    if dst is None:
        return "missing"
    if src.size != dst.size:
        return "differ"
    if compare == "size":
        return "same"
    if compare == "checksum":
        if src.sha256 and dst.sha256:
            return "same" if src.sha256 == dst.sha256 else "differ"
        return "deep"
    if src_kind == "s3" and dst_kind == "s3":
        if src.etag and src.etag == dst.etag:
            return "same"
        if src.etag and dst.etag and ("-" in src.etag or "-" in dst.etag):
            return "deep"
        return "differ" if (src.etag and dst.etag) else "deep"
    if src.mtime is None or dst.mtime is None:
        return "deep"
    if src_kind == "local" and dst_kind == "local":
        return "same" if int(src.mtime) == int(dst.mtime) else "differ"
    if src_kind == "s3" and dst_kind == "local":
        return "same" if int(src.mtime) == int(dst.mtime) else ("deep" if src.etag else "differ")
    # local -> s3: the object was written after the file last changed
    return "same" if int(dst.mtime) >= int(src.mtime) else ("deep" if dst.etag else "differ")


def multipart_part_sizes(size, parts, preferred):
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts, the likely ones first."""
    mb = 1024 * 1024
    candidates = [preferred, 8 * mb, 5 * mb, 16 * mb, 15 * mb, 64 * mb, 100 * mb, 128 * mb]
    if parts > 0:
        exact = -(-size // parts)
        candidates += [exact, -(-exact // mb) * mb]
    seen, result = set(), []
    for part in candidates:
        if part and part not in seen and -(-size // part) == parts:
            seen.add(part)
            result.append(part)
    return result


def file_etag(path, part_size):
    """The ETag S3 gives the file when uploaded in ``part_size`` parts (plain MD5 for one part)."""
    digests = []
    with open(path, "rb") as handle:
        while True:
            part = hashlib.md5()
            remaining = part_size
            got = False
            while remaining > 0:
                block = handle.read(min(CHUNK, remaining))
                if not block:
                    break
                got = True
                part.update(block)
                remaining -= len(block)
            if not got:
                break
            digests.append(part.digest())
    if len(digests) <= 1:
        return digests[0].hex() if digests else hashlib.md5(b"").hexdigest()
    return "%s-%d" % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))


def etag_matches_file(path, size, etag, preferred_part_size):
    """Whether the local file has the content an S3 object's ETag (plain or multipart) stands for."""
    etag = strip_etag(etag)
    if not etag:
        return False
    if "-" not in etag:
        return file_etag(path, max(size, 1) + 1) == etag
    try:
        parts = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return False
    for part_size in multipart_part_sizes(size, parts, preferred_part_size):
        if file_etag(path, part_size) == etag:
            return True
    return False


def snapshot_name(now=None, existing=()):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = now.strftime(SNAPSHOT_TIME_FORMAT)
    name, index = base, 1
    while name in existing:
        index += 1
        name = "%s-%d" % (base, index)
    return name


def snapshot_time(name):
    match = SNAPSHOT_NAME.match(name)
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), SNAPSHOT_TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)


def inside(child, parent):
    """Whether ``child`` is ``parent`` or below it ('/'-separated keys or paths)."""
    parent = parent.rstrip("/")
    return parent == "" or child == parent or child.startswith(parent + "/")


# ---------------------------------------------------------------- stores


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalStore(object):
    kind = "local"

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))

    def __str__(self):
        return self.root

    def exists(self):
        return os.path.isdir(self.root)

    def path(self, key):
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise MaintenanceError("refusing the key %r: it has an empty, '.' or '..' path component" % key)
        return os.path.join(self.root, *parts)

    def ref(self, entry):
        return entry.ref or self.path(entry.key)

    def list(self):
        """Every regular file below the root, in key byte order; reserved names at the root are skipped.

        Children are sorted by name, with '/' appended to directory names: a depth-first walk in that
        order yields keys in the byte order of the whole key, the order S3 lists in.
        """
        if not self.exists():
            return
        yield from self._walk(self.root, "")

    def _walk(self, directory, rel):
        for _name_key, path, key, is_dir, info in self._children(directory, rel):
            if is_dir:
                yield from self._walk(path, key)
            else:
                yield Entry(key, info.st_size, info.st_mtime)

    def _children(self, directory, rel):
        items = []
        try:
            scanner = os.scandir(directory)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return items
            raise
        with scanner:
            for dirent in scanner:
                name = dirent.name
                if name.startswith(TEMP_PREFIX) or (not rel and name.startswith(RESERVED)):
                    continue
                key = rel + "/" + name if rel else name
                if dirent.is_dir(follow_symlinks=False):
                    items.append((sort_key(name + "/"), dirent.path, key, True, None))
                elif dirent.is_file():
                    items.append((sort_key(name), dirent.path, key, False, dirent.stat()))
        items.sort(key=lambda item: item[0])
        return items

    def sha256(self, entry):
        return sha256_file(self.ref(entry))


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


def _transient(exc):
    """Retry transfers that failed on the network or with a server-side error, not on 4xx or local I/O."""
    code = s3_utils.error_code(exc)
    if code is not None:
        return code in ("500", "502", "503", "504", "InternalError", "SlowDown", "ServiceUnavailable",
                        "RequestTimeout", "RequestTimeTooSkewed")
    if s3_utils.botocore is not None and isinstance(exc, s3_utils.botocore.exceptions.BotoCoreError):
        return not isinstance(exc, (s3_utils.botocore.exceptions.NoCredentialsError,
                                    s3_utils.botocore.exceptions.ParamValidationError))
    return isinstance(exc, (ConnectionError, TimeoutError))


def describe_failure(exc):
    if s3_utils.error_code(exc) is not None or (
            s3_utils.botocore is not None and isinstance(exc, s3_utils.botocore.exceptions.BotoCoreError)):
        return s3_utils.describe_error(exc)
    if isinstance(exc, MaintenanceError):
        return exc.msg
    return "%s: %s" % (type(exc).__name__, exc)


# ---------------------------------------------------------------- copying


class Transfer(object):
    """Copies one entry between stores, the right way for each direction, with jittered retries."""

    def __init__(self, params, retries=3):
        self.params = params
        self.retries = max(0, int(retries))
        self.part_size = max(5, int(params.get("multipart_chunksize_mb") or 8)) * s3_utils.MB
        self.threshold = max(5, int(params.get("multipart_threshold_mb") or 8)) * s3_utils.MB
        # S3 to S3: one CopyObject (server side) below this size, boto3's managed multipart copy
        # (UploadPartCopy, also server side) from it; 5 GiB is CopyObject's limit.
        self.copy_threshold = min(5 * 1024, max(5, int(params.get("copy_multipart_threshold_mb") or 5 * 1024))) * s3_utils.MB
        self._config = None

    @property
    def config(self):
        if self._config is None:
            self._config = s3_utils.transfer_config(self.params, concurrency=4)
        return self._config

    @jittered_backoff(retries=3, delay=0.5, max_delay=8.0, should_retry=_transient)
    def copy(self, src, entry, dst, dst_key):
        """Copy ``entry`` of ``src`` to ``dst_key`` of ``dst``; returns the sha256 when it was computed."""
        if dst.kind == "local":
            return self._to_local(src, entry, dst.path(dst_key))
        if src.kind == "local":
            return self._local_to_s3(src.ref(entry), entry, dst, dst.full_key(dst_key))
        return self._s3_to_s3(src, entry, dst, dst.full_key(dst_key))

    def _to_local(self, src, entry, target):
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
        temp = os.path.join(directory, "%s%s.%s" % (TEMP_PREFIX, os.path.basename(target)[:80], uuid.uuid4().hex[:8]))
        try:
            if src.kind == "local":
                source_path = src.ref(entry)
                digest = hashlib.sha256()
                with open(source_path, "rb") as reader, open(temp, "wb") as writer:
                    for block in iter(lambda: reader.read(CHUNK), b""):
                        digest.update(block)
                        writer.write(block)
                    writer.flush()
                    os.fsync(writer.fileno())
                info = os.stat(source_path)
                os.chmod(temp, stat.S_IMODE(info.st_mode))
                os.utime(temp, ns=(info.st_atime_ns, info.st_mtime_ns))
                sha = digest.hexdigest()
            else:
                key = src.ref(entry)
                if entry.size >= self.threshold:
                    src.client.download_file(src.bucket, key, temp, Config=self.config)
                    sha = sha256_file(temp)
                else:
                    digest = hashlib.sha256()
                    body = src.client.get_object(Bucket=src.bucket, Key=key)["Body"]
                    with open(temp, "wb") as writer:
                        for block in body.iter_chunks(CHUNK):
                            digest.update(block)
                            writer.write(block)
                    sha = digest.hexdigest()
                with open(temp, "rb+") as handle:
                    os.fsync(handle.fileno())
                if entry.mtime is not None:
                    os.utime(temp, (entry.mtime, entry.mtime))
            if os.path.isdir(target) and not os.path.islink(target):
                raise MaintenanceError("%s is a directory in the destination; the source has a file there" % target)
            os.rename(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        return sha

    def _local_to_s3(self, path, entry, dst, key):
        sha = entry.sha256 or sha256_file(path)
        extra = {"Metadata": {SHA256_META: sha}}
        if entry.size >= self.threshold:
            dst.client.upload_file(path, dst.bucket, key, ExtraArgs=extra, Config=self.config)
        else:
            with open(path, "rb") as handle:
                dst.client.put_object(Bucket=dst.bucket, Key=key, Body=handle, **extra)
        return sha

    def _s3_to_s3(self, src, entry, dst, key):
        source = {"Bucket": src.bucket, "Key": src.ref(entry)}
        metadata = {}
        if entry.etag:
            metadata[SOURCE_ETAG_META] = entry.etag
        if entry.sha256:
            metadata[SHA256_META] = entry.sha256
        extra = {"Metadata": metadata, "MetadataDirective": "REPLACE"}
        if entry.size >= self.copy_threshold:
            # Managed copy: server side, multipart (UploadPartCopy) above the threshold.
            dst.client.copy(source, dst.bucket, key, ExtraArgs=extra, SourceClient=src.client, Config=self.config)
        else:
            dst.client.copy_object(CopySource=source, Bucket=dst.bucket, Key=key, **extra)
        return entry.sha256

    def deep_same(self, src, s_entry, dst, d_entry, compare):
        """Settle a ``deep`` decision by reading (metadata, local hashes, or content)."""
        if compare == "checksum":
            return src.sha256(s_entry) == dst.sha256(d_entry)
        if src.kind == "s3" and dst.kind == "s3":
            meta = dst.head(d_entry).get("Metadata", {}) or {}
            return bool(s_entry.etag) and meta.get(SOURCE_ETAG_META) == s_entry.etag
        if src.kind == "s3" and dst.kind == "local":
            return etag_matches_file(dst.ref(d_entry), d_entry.size, s_entry.etag, self.part_size)
        if src.kind == "local" and dst.kind == "s3":
            return etag_matches_file(src.ref(s_entry), s_entry.size, d_entry.etag, self.part_size)
        return src.sha256(s_entry) == dst.sha256(d_entry)


# ---------------------------------------------------------------- manifests


def read_manifest(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if isinstance(data, dict) else {}


def write_json_atomic(path, data):
    directory = os.path.dirname(path)
    temp = os.path.join(directory, "%s%s" % (TEMP_PREFIX, uuid.uuid4().hex[:8]))
    with open(temp, "w") as handle:
        json.dump(data, handle, sort_keys=True, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temp, path)
    _fsync_dir(directory)


def manifest_document(files, source, mode, extra=None):
    document = dict(format=1, tool="mlflowops.maintenance.artifacts_backup", mode=mode, source=source,
                    created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    file_count=len(files), total_bytes=sum(item["size"] for item in files.values()), files=files)
    document.update(extra or {})
    return document


def complete_manifest(root, rows, previous, concurrency):
    """{key: {size, mtime, sha256}} for the files of a local tree; hashes what neither the copy nor the
    previous manifest (same size and mtime) supplies."""
    files, to_hash = {}, []
    for key, size, mtime, sha in rows:
        if not sha:
            old = previous.get(key)
            if old and old.get("size") == size and int(old.get("mtime") or -1) == int(mtime):
                sha = old.get("sha256")
        files[key] = dict(size=size, mtime=int(mtime), sha256=sha)
        if not sha:
            to_hash.append(key)
    store = LocalStore(root)
    for key, sha, error in bounded_parallel_map(lambda k: sha256_file(store.path(k)), to_hash, concurrency):
        if error:
            raise MaintenanceError("cannot hash %s for the manifest: %s" % (store.path(key), error))
        files[key]["sha256"] = sha
    return files


# ---------------------------------------------------------------- the runs


class Result(object):
    def __init__(self):
        self.copied = 0
        self.skipped = 0
        self.deleted = 0
        self.linked = 0
        self.bytes_copied = 0
        self.bytes_deleted = 0
        self.errors = []
        self.error_count = 0
        self.copied_keys = []
        self.deleted_keys = []
        self.missing = []
        self.different = []
        self.extraneous = []
        self.missing_count = 0
        self.different_count = 0
        self.extraneous_count = 0

    def error(self, key, exc):
        self.error_count += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append("%s: %s" % (key, describe_failure(exc)))

    def note(self, listing, key):
        if len(listing) < MAX_LISTED:
            listing.append(key)


def _prune_empty_dirs(root, keys):
    directories = set()
    for key in keys:
        parts = key.split("/")[:-1]
        while parts:
            directories.add("/".join(parts))
            parts.pop()
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        try:
            os.rmdir(os.path.join(root, *directory.split("/")))
        except OSError:
            pass


def sync(src, dst, transfer, compare="auto", delete_extraneous=False, check_mode=False, concurrency=16,
         verify_only=False, link_from=None):
    """Make ``dst`` hold what ``src`` holds (mirror). Returns ``(Result, manifest rows)``.

    ``link_from``: a LocalStore of the previous snapshot; ``dst`` then starts empty and files that
    are unchanged against ``link_from`` are hard-linked from it instead of copied.
    Manifest rows ``(key, size, mtime, sha256_or_None)`` are collected for local destinations.
    """
    result = Result()
    rows = [] if dst.kind == "local" else None
    against = link_from if link_from is not None else dst
    deletions = []

    def tasks():
        for key, s_entry, d_entry in merge_listings(src.list(), against.list()):
            if s_entry is None:
                if link_from is not None:
                    continue
                result.extraneous_count += 1
                result.note(result.extraneous, key)
                if delete_extraneous:
                    deletions.append(d_entry)
                elif rows is not None:
                    rows.append((key, d_entry.size, d_entry.mtime, None))
                continue
            decision = quick_compare(s_entry, d_entry, src.kind, against.kind, compare)
            if decision == "same":
                if link_from is not None:
                    yield ("link", key, s_entry, d_entry)
                else:
                    result.skipped += 1
                    if rows is not None:
                        rows.append((key, d_entry.size, d_entry.mtime, None))
                continue
            yield (decision, key, s_entry, d_entry)

    def work(task):
        decision, key, s_entry, d_entry = task
        if decision == "deep":
            if transfer.deep_same(src, s_entry, against, d_entry, compare):
                if link_from is not None:
                    decision = "link"
                else:
                    if src.kind == "s3" and dst.kind == "local" and compare == "auto" and not check_mode:
                        os.utime(dst.ref(d_entry), (s_entry.mtime, s_entry.mtime))
                        return ("skip", key, d_entry.size, s_entry.mtime, None)
                    return ("skip", key, d_entry.size, d_entry.mtime, None)
            else:
                decision = "differ"
        if decision == "link":
            if not check_mode:
                target = dst.path(key)
                directory = os.path.dirname(target)
                if not os.path.isdir(directory):
                    os.makedirs(directory, exist_ok=True)
                os.link(link_from.ref(d_entry), target)
            return ("link", key, d_entry.size, d_entry.mtime, d_entry.sha256)
        if verify_only or check_mode:
            return (decision, key, s_entry.size, s_entry.mtime, None)
        sha = transfer.copy(src, s_entry, dst, key)
        mtime = s_entry.mtime
        if dst.kind == "local" and src.kind == "local":
            mtime = os.stat(dst.path(key)).st_mtime
        return ("copy", key, s_entry.size, mtime, sha)

    for task, outcome, error in bounded_parallel_map(work, tasks(), concurrency):
        if error is not None:
            result.error(task[1], error)
            continue
        kind, key, size, mtime, sha = outcome
        if kind == "skip":
            result.skipped += 1
        elif kind == "link":
            result.linked += 1
            result.skipped += 1
        else:
            if verify_only:
                if kind == "missing":
                    result.missing_count += 1
                    result.note(result.missing, key)
                else:
                    result.different_count += 1
                    result.note(result.different, key)
                continue
            result.copied += 1
            result.bytes_copied += size
            result.note(result.copied_keys, key)
        if rows is not None:
            rows.append((key, size, mtime, sha))

    if deletions and not verify_only:
        for entry in deletions:
            result.deleted += 1
            result.bytes_deleted += entry.size
            result.note(result.deleted_keys, entry.key)
        if not check_mode:
            if dst.kind == "local":
                for entry in deletions:
                    try:
                        os.unlink(dst.path(entry.key))
                    except OSError as exc:
                        result.error(entry.key, exc)
                _prune_empty_dirs(dst.root, [entry.key for entry in deletions])
            else:
                for key, message in dst.delete_keys([dst.full_key(entry.key) for entry in deletions]):
                    result.error(key, MaintenanceError(message))
    return result, rows


# ---------------------------------------------------------------- snapshots


def local_snapshots(root):
    """Complete snapshot names under ``root`` (a manifest marks completion), oldest first."""
    if not os.path.isdir(root):
        return []
    names = [name for name in os.listdir(root)
             if SNAPSHOT_NAME.match(name) and os.path.isfile(os.path.join(root, name, MANIFEST_NAME))]
    return sorted(names)


def s3_snapshots(store):
    names = []
    for entry in store.list("snapshots"):
        name = entry.key[len("snapshots/"):]
        if name.endswith(".json") and SNAPSHOT_NAME.match(name[:-5]):
            names.append(name[:-5])
    return sorted(names)


def load_s3_manifest(store, name):
    body = store.client.get_object(Bucket=store.bucket, Key=store.full_key("snapshots/%s.json" % name))["Body"].read()
    return json.loads(body.decode("utf-8"))


class SnapshotView(object):
    """A snapshot of an S3 snapshot repository, seen as a source store (for restores)."""

    kind = "s3"

    def __init__(self, repo, name):
        self.repo = repo
        self.client = repo.client
        self.bucket = repo.bucket
        self.name = name
        self.files = load_s3_manifest(repo, name).get("files", {})

    def __str__(self):
        return "%s@%s" % (self.repo, self.name)

    def ref(self, entry):
        return entry.ref

    def head(self, entry):
        return self.client.head_object(Bucket=self.bucket, Key=entry.ref)

    def list(self):
        for key in sorted(self.files, key=sort_key):
            item = self.files[key]
            yield Entry(key, item["size"], item.get("mtime"), None, ref=self.repo.full_key("blobs/" + item["blob"]),
                        sha256=item.get("sha256"))

    def sha256(self, entry):
        return S3Store.sha256(self, entry)


def retention_plan(names, policy):
    """``(kept, removed)`` snapshot names under a restic-style policy (retention.apply_retention)."""
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import (
        apply_retention, split_decisions)
    dated = [(name, snapshot_time(name)) for name in names]
    return split_decisions(apply_retention(dated, policy))


def local_snapshot(src, dest_root, transfer, policy, compare="auto", check_mode=False, concurrency=16,
                   snapshot_if_unchanged=False, source_label=""):
    """A hard-linked snapshot (like ``rsync --link-dest``) under ``dest_root``, then retention."""
    existing = local_snapshots(dest_root)
    previous = existing[-1] if existing else None
    name = snapshot_name(existing=set(os.listdir(dest_root)) if os.path.isdir(dest_root) else set())
    partial = os.path.join(dest_root, PARTIAL_PREFIX + name)
    prev_store = LocalStore(os.path.join(dest_root, previous)) if previous else LocalStore(os.path.join(dest_root, PARTIAL_PREFIX + "none"))
    prev_manifest = read_manifest(os.path.join(prev_store.root, MANIFEST_NAME)) if previous else {}
    if not check_mode:
        os.makedirs(dest_root, exist_ok=True)
        for stale in os.listdir(dest_root):
            if stale.startswith(PARTIAL_PREFIX):
                shutil.rmtree(os.path.join(dest_root, stale), ignore_errors=True)
        os.makedirs(partial)
    target = LocalStore(partial)
    try:
        result, rows = sync(src, target, transfer, compare=compare, check_mode=check_mode, concurrency=concurrency,
                            link_from=prev_store)
        source_keys = set(row[0] for row in rows)
        removed_since = previous is not None and any(key not in source_keys for key in prev_manifest)
        unchanged = previous is not None and result.copied == 0 and not removed_since and not result.error_count
        created = None
        if result.error_count:
            if not check_mode:
                shutil.rmtree(partial, ignore_errors=True)
            return result, dict(snapshot=None, previous=previous, created=False)
        if unchanged and not snapshot_if_unchanged:
            if not check_mode:
                shutil.rmtree(partial, ignore_errors=True)
        else:
            created = name
            if not check_mode:
                files = complete_manifest(partial, rows, prev_manifest, concurrency)
                write_json_atomic(os.path.join(partial, MANIFEST_NAME),
                                  manifest_document(files, source_label, "snapshot", dict(snapshot=name, previous=previous)))
                os.rename(partial, os.path.join(dest_root, name))
                _fsync_dir(dest_root)
    except BaseException:
        if not check_mode:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    names = existing + ([created] if created else [])
    kept, removed = retention_plan(names, policy) if names else ([], [])
    if not check_mode:
        for old in removed:
            shutil.rmtree(os.path.join(dest_root, old))
    return result, dict(snapshot=created or previous, previous=previous, created=bool(created),
                        snapshots_kept=sorted(kept), snapshots_removed=sorted(removed))


def content_id(entry, src_kind):
    """Blob name: sha256 of the content for local sources; the ETag and size for S3 sources (no download)."""
    if entry.sha256:
        return "sha256-" + entry.sha256
    if src_kind == "s3" and entry.etag:
        return "etag-%s-%d" % (entry.etag, entry.size)
    return None


def s3_snapshot(src, repo, transfer, policy, check_mode=False, concurrency=16, snapshot_if_unchanged=False,
                source_label=""):
    """A content-addressed snapshot in an S3 repository: ``blobs/<id>`` plus ``snapshots/<name>.json``.

    A blob is copied only when no earlier snapshot holds the same content id; the manifest is written last.
    """
    result = Result()
    names = s3_snapshots(repo)
    previous = names[-1] if names else None
    prev_files = load_s3_manifest(repo, previous).get("files", {}) if previous else {}
    blobs = set(entry.key[len("blobs/"):] for entry in repo.list("blobs"))
    lock = threading.Lock()
    claimed = set()
    files = {}

    def work(entry):
        sha = None
        if src.kind == "local":
            old = prev_files.get(entry.key)
            if old and old.get("size") == entry.size and int(old.get("mtime") or -1) == int(entry.mtime) and old.get("sha256"):
                sha = old["sha256"]
            else:
                sha = sha256_file(src.ref(entry))
            entry.sha256 = sha
        blob = content_id(entry, src.kind)
        with lock:
            present = blob in blobs or blob in claimed
            if not present:
                claimed.add(blob)
        if not present and not check_mode:
            try:
                transfer.copy(src, entry, repo, "blobs/" + blob)
            except BaseException:
                with lock:
                    claimed.discard(blob)
                raise
        return blob, present, sha

    for entry, outcome, error in bounded_parallel_map(work, src.list(), concurrency):
        if error is not None:
            result.error(entry.key, error)
            continue
        blob, present, sha = outcome
        files[entry.key] = dict(size=entry.size, mtime=int(entry.mtime) if entry.mtime else None, blob=blob,
                                etag=entry.etag, sha256=sha)
        if present:
            result.skipped += 1
        else:
            result.copied += 1
            result.bytes_copied += entry.size
            result.note(result.copied_keys, entry.key)
    if result.error_count:
        return result, dict(snapshot=None, previous=previous, created=False)
    same_as_previous = previous is not None and \
        dict((k, v["blob"]) for k, v in files.items()) == dict((k, v.get("blob")) for k, v in prev_files.items())
    created = None
    if not same_as_previous or snapshot_if_unchanged:
        created = snapshot_name(existing=set(names))
        if not check_mode:
            document = manifest_document(files, source_label, "snapshot", dict(snapshot=created, previous=previous))
            repo.client.put_object(Bucket=repo.bucket, Key=repo.full_key("snapshots/%s.json" % created),
                                   Body=json.dumps(document, sort_keys=True).encode("utf-8"),
                                   ContentType="application/json")
    all_names = names + ([created] if created else [])
    kept, removed = retention_plan(all_names, policy) if all_names else ([], [])
    if removed:
        referenced = set()
        for name in kept:
            manifest = {"files": files} if name == created else load_s3_manifest(repo, name)
            referenced.update(item.get("blob") for item in manifest.get("files", {}).values())
        garbage = sorted((blobs | claimed) - referenced)
        result.deleted = len(garbage)
        if not check_mode:
            repo.delete_keys([repo.full_key("snapshots/%s.json" % name) for name in removed])
            for key, message in repo.delete_keys([repo.full_key("blobs/" + blob) for blob in garbage]):
                result.error(key, MaintenanceError(message))
    return result, dict(snapshot=created or previous, previous=previous, created=bool(created),
                        snapshots_kept=sorted(kept), snapshots_removed=sorted(removed))
