# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental, parallel copies of artifact trees between local directories and S3 prefixes.

- Listings are streams of :class:`Entry`, sorted by the UTF-8 bytes of the relative key (the order
  S3's ``ListObjectsV2`` returns); local trees are walked in that same order. Every S3 listing is paged.
- :func:`merge_listings` joins two sorted streams in bounded memory; :func:`quick_compare` is the pure
  decision (copy, skip, or look closer); the executor does the I/O with bounded concurrency.
- Local trees: :mod:`artifact_localfs` (no write ever goes through a symlink; files 0600, directories 0700).
  Reserved names and other pure checks: :mod:`artifact_names`.
- Local files are written to a temporary name, fsynced, then renamed; manifests are written last, and a mirror
  removes the old manifest before its first change.
- A whole job honours a wall-clock ``Deadline``; a run of consecutive transport failures stops it early
  (``FailureBreaker``) with what was done so far.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import queue
import sys
import threading
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    DeadlineExceeded,
    MaintenanceError,
    backoff_delays,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names as names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_localfs import (
    CHUNK,
    MAX_LISTED,
    Entry,
    LocalStore,
    sort_key,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_names import (
    MANIFEST_NAME,
    MARKER_NAME,
    SNAPSHOT_NAME,
)

SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
SOURCE_ETAG_META = "mlflowops-source-etag"
SHA256_META = "sha256"


class EndpointDown(MaintenanceError):
    """Too many consecutive transport failures: the endpoint is taken as gone, the job stops."""


# ---------------------------------------------------------------- pure decisions


class _Done(object):
    pass


def prefetch(iterable, size=5000, deadline=None):
    """Iterate ``iterable`` in a background thread, at most ``size`` items ahead (both sides list at once).

    The consumer waits at most until ``deadline`` (a stuck listing cannot hold the job past it)."""
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
            try:
                item = items.get(timeout=0.25)
            except queue.Empty:
                if deadline is not None:
                    deadline.check("the listing")
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def merge_listings(source, dest, deadline=None):
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

    src_iter = checked(prefetch(source, deadline=deadline), "source")
    dst_iter = checked(prefetch(dest, deadline=deadline), "destination")
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


def _opener(source):
    """A callable that opens ``source`` for reading: a path, or already such a callable."""
    if callable(source):
        return source
    return lambda: open(source, "rb")


def file_etag(source, part_size):
    """The ETag S3 gives the file when uploaded in ``part_size`` parts (plain MD5 for one part).

    ``source``: a path, or a callable that opens the file (a destination file is opened without following links)."""
    digests = []
    with _opener(source)() as handle:
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


def etag_matches_file(source, size, etag, preferred_part_size):
    """Whether the local file has the content an S3 object's ETag (plain or multipart) stands for."""
    etag = strip_etag(etag)
    if not etag:
        return False
    if "-" not in etag:
        return file_etag(source, max(size, 1) + 1) == etag
    try:
        parts = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return False
    for part_size in multipart_part_sizes(size, parts, preferred_part_size):
        if file_etag(source, part_size) == etag:
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


def is_transport_failure(exc):
    """A failure that says the endpoint is unreachable or broken (not a 4xx, not local I/O)."""
    code = s3_utils.error_code(exc)
    if code is not None:
        return code in ("500", "502", "503", "504", "InternalError", "ServiceUnavailable")
    botocore = s3_utils.botocore
    if botocore is not None and isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


# ---------------------------------------------------------------- execution: concurrency, deadline


class _Stop(object):
    pass


def parallel_map(func, items, concurrency, deadline=None, should_stop=None):
    """Apply ``func`` to each item with at most ``concurrency`` calls in flight, on daemon threads.

    Yields ``(item, result, error)`` in completion order; items are pulled only as slots free up. Raises
    DeadlineExceeded once ``deadline`` passes (calls still in flight are abandoned); stops pulling new items
    when ``should_stop()`` is true and returns after the calls in flight end.
    """
    concurrency = max(1, int(concurrency))
    work, done = queue.Queue(), queue.Queue()
    stop = _Stop()

    def worker():
        while True:
            item = work.get()
            if item is stop:
                return
            try:
                done.put((item, func(item), None))
            except BaseException as exc:  # pylint: disable=broad-except
                done.put((item, None, exc))

    threads = []
    iterator = iter(items)
    in_flight, exhausted = 0, False
    try:
        while True:
            while not exhausted and in_flight < concurrency:
                if should_stop is not None and should_stop():
                    exhausted = True
                    break
                if deadline is not None:
                    deadline.check("the copy")
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                if len(threads) < concurrency and len(threads) <= in_flight:
                    thread = threading.Thread(target=worker, name="mlflowops-copy-%d" % len(threads))
                    thread.daemon = True
                    thread.start()
                    threads.append(thread)
                work.put(item)
                in_flight += 1
            if in_flight == 0:
                return
            try:
                outcome = done.get(timeout=0.25)
            except queue.Empty:
                if deadline is not None:
                    deadline.check("the copy")
                continue
            in_flight -= 1
            yield outcome
    finally:
        for _thread in threads:
            work.put(stop)


def _exit_now():
    """Leave the process once the result is printed, without waiting for threads stuck in a network call."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(1)  # pylint: disable=protected-access


def run_with_deadline(func, deadline, progress=None, hard_exit=False):
    """Run ``func()`` and return its value; raise DeadlineExceeded if it has not ended by ``deadline``.

    The code inside checks the deadline itself and stops cleanly; this is the backstop for a call stuck in
    the network (a server trickling bytes never trips a per-read timeout). ``progress()`` gives the partial
    result for the error. With ``hard_exit``, a job thread still stuck at interpreter exit does not hold the
    process (it exits once the module's result is printed).
    """
    if deadline is None or deadline.seconds is None:
        return func()
    box = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as exc:  # pylint: disable=broad-except
            box["error"] = exc

    thread = threading.Thread(target=target, name="mlflowops-job")
    thread.daemon = True
    thread.start()
    thread.join(deadline.remaining() + 1.0)
    if thread.is_alive():
        if hard_exit and hasattr(threading, "_register_atexit"):
            threading._register_atexit(_exit_now)  # pylint: disable=protected-access
        details = progress() if progress is not None else {}
        raise DeadlineExceeded("the artifact copy stopped at its deadline of %ss; %s; a rerun continues where it stopped"
                               % (int(deadline.seconds), describe_progress(details)), **details)
    if "error" in box:
        raise box["error"]
    return box["value"]


def describe_progress(details):
    return "%d file(s) (%d bytes) copied, %d deleted before that; the rest was not done" % (
        details.get("copied", 0), details.get("bytes_copied", 0), details.get("deleted", 0))


# ---------------------------------------------------------------- copying


class Transfer(object):
    """Copies one entry between stores, the right way for each direction, with jittered retries.

    ``breaker`` counts consecutive transport failures across all copies; once it trips, no copy is retried or
    started. ``deadline`` caps every retry sleep."""

    def __init__(self, params, retries=3, deadline=None, breaker=None):
        self.params = params
        self.retries = max(0, int(retries))
        self.deadline = deadline
        self.breaker = breaker or names.FailureBreaker(params.get("max_consecutive_failures") or names.MAX_CONSECUTIVE_FAILURES)
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

    def guarded(self, func, *args):
        """Call ``func`` with retries on transient failures; feeds the breaker; refuses once it tripped."""
        delays = backoff_delays(self.retries, 0.5, 8.0) + [None]
        for sleep_for in delays:
            if self.breaker.tripped:
                raise EndpointDown("the S3 endpoint is taken as down after %d consecutive transport failures (last: %s)"
                                   % (self.breaker.limit, self.breaker.last_error))
            try:
                value = func(*args)
            except Exception as exc:  # pylint: disable=broad-except
                if is_transport_failure(exc):
                    self.breaker.failure(describe_failure(exc))
                if sleep_for is None or not _transient(exc) or self.breaker.tripped:
                    raise
                if self.deadline is not None:
                    self.deadline.check("the copy")
                    sleep_for = min(sleep_for, self.deadline.remaining())
                time.sleep(sleep_for)
                continue
            self.breaker.success()
            return value
        raise AssertionError("unreachable")

    def copy(self, src, entry, dst, dst_key):
        """Copy ``entry`` of ``src`` to ``dst_key`` of ``dst``; returns the sha256 when it was computed."""
        return self.guarded(self._copy_once, src, entry, dst, dst_key)

    def _copy_once(self, src, entry, dst, dst_key):
        if dst.kind == "local":
            return self._to_local(src, entry, dst, dst_key)
        if src.kind == "local":
            return self._local_to_s3(src, entry, dst, dst.full_key(dst_key))
        return self._s3_to_s3(src, entry, dst, dst.full_key(dst_key))

    def _to_local(self, src, entry, dst, dst_key):
        parts = dst.parts(dst_key)
        if src.kind == "local":
            def copy_local(writer):
                digest = hashlib.sha256()
                with src.open_read(entry) as reader:
                    for block in iter(lambda: reader.read(CHUNK), b""):
                        digest.update(block)
                        writer.write(block)
                    info = os.fstat(reader.fileno())
                writer.flush()
                # The copy keeps the source's mtime (local to local compares mtimes), not its mode (0600).
                os.utime(writer.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
                return digest.hexdigest()
            return localfs.write_file(dst.root, parts, copy_local)

        key = src.ref(entry)

        def download(writer):
            if entry.size >= self.threshold:
                src.client.download_fileobj(src.bucket, key, writer, Config=self.config)
                writer.flush()
                writer.seek(0)
                return localfs.sha256_fileobj(writer)
            digest = hashlib.sha256()
            body = src.client.get_object(Bucket=src.bucket, Key=key)["Body"]
            for block in body.iter_chunks(CHUNK):
                digest.update(block)
                writer.write(block)
            return digest.hexdigest()
        return localfs.write_file(dst.root, parts, download, mtime=entry.mtime)

    def _local_to_s3(self, src, entry, dst, key):
        sha = entry.sha256 or src.sha256(entry)
        extra = {"Metadata": {SHA256_META: sha}}
        with src.open_read(entry) as handle:
            if entry.size >= self.threshold:
                dst.client.upload_fileobj(handle, dst.bucket, key, ExtraArgs=extra, Config=self.config)
            else:
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
        return self.guarded(self._deep_same, src, s_entry, dst, d_entry, compare)

    def _deep_same(self, src, s_entry, dst, d_entry, compare):
        """Settle a ``deep`` decision by reading (metadata, local hashes, or content)."""
        if compare == "checksum":
            return src.sha256(s_entry) == dst.sha256(d_entry)
        if src.kind == "s3" and dst.kind == "s3":
            meta = dst.head(d_entry).get("Metadata", {}) or {}
            return bool(s_entry.etag) and meta.get(SOURCE_ETAG_META) == s_entry.etag
        if src.kind == "s3" and dst.kind == "local":
            return etag_matches_file(lambda: dst.open_read(d_entry), d_entry.size, s_entry.etag, self.part_size)
        if src.kind == "local" and dst.kind == "s3":
            return etag_matches_file(lambda: src.open_read(s_entry), s_entry.size, d_entry.etag, self.part_size)
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
    """Write a JSON document 0600 through a temporary file in the same directory, never through a symlink."""
    directory, name = os.path.split(path)
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    localfs.write_file(directory, [name], lambda handle: handle.write(body))
    localfs.fsync_dir_quiet(directory)


def remove_manifest(root):
    """Remove a mirror's manifest (before its first change): a stale proof of completion must not survive a crash."""
    try:
        localfs.unlink_file(root, [MANIFEST_NAME])
    except FileNotFoundError:
        return False
    localfs.fsync_dir_quiet(root)
    return True


def ensure_marker(root):
    """Mark ``root`` as a directory this collection writes (its reserved names are escaped)."""
    if localfs.is_our_manifest(os.path.join(root, MARKER_NAME)):
        return False
    write_json_atomic(os.path.join(root, MARKER_NAME), dict(tool=names.TOOL, format=1, escape=names.ESCAPE_PREFIX))
    return True


def manifest_document(files, source, mode, extra=None):
    document = dict(format=1, tool=names.TOOL, mode=mode, source=source,
                    created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    file_count=len(files), total_bytes=sum(item["size"] for item in files.values()), files=files)
    document.update(extra or {})
    return document


def complete_manifest(store, rows, previous, concurrency, deadline=None):
    """{key: {size, mtime, sha256}} for the files of a local tree; hashes what neither the copy nor the
    previous manifest (same size and mtime) supplies. ``store``: a LocalStore (or a root path)."""
    if not isinstance(store, LocalStore):
        store = LocalStore(store, managed=True, role="dest")
    files, to_hash = {}, []
    for key, size, mtime, sha in rows:
        if not sha:
            old = previous.get(key)
            if old and old.get("size") == size and int(old.get("mtime") or -1) == int(mtime):
                sha = old.get("sha256")
        files[key] = dict(size=size, mtime=int(mtime), sha256=sha)
        if not sha:
            to_hash.append(key)
    for key, sha, error in parallel_map(lambda k: store.sha256(Entry(k, 0)), to_hash, concurrency, deadline):
        if error:
            raise MaintenanceError("cannot hash %s for the manifest: %s" % (store.path(key), describe_failure(error)))
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
        self.stale_temps_removed = 0

    def error(self, key, exc):
        self.error_count += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append("%s: %s" % (key, describe_failure(exc)))

    def note(self, listing, key):
        if len(listing) < MAX_LISTED:
            listing.append(key)

    def progress(self):
        """What was done so far, for an error that stops the job."""
        return dict(copied=self.copied, bytes_copied=self.bytes_copied, deleted=self.deleted,
                    unchanged=self.skipped, linked=self.linked, error_count=self.error_count,
                    errors=list(self.errors), copied_keys=list(self.copied_keys))


def _stopped(exc, result):
    """Re-raise a job-stopping failure with the partial progress attached."""
    details = result.progress()
    if isinstance(exc, DeadlineExceeded):
        return DeadlineExceeded("%s; %s" % (exc.msg, describe_progress(details)), **details)
    if isinstance(exc, EndpointDown):
        return EndpointDown("%s; %s; a rerun continues where it stopped" % (exc.msg, describe_progress(details)), **details)
    return MaintenanceError("%s; %s" % (describe_failure(exc), describe_progress(details)), **details)


def remove_stale_temps(store, result):
    """Remove our temporary files older than the grace period that the destination listing found."""
    for directory, name in store.stale_temp_parts:
        relative = os.path.relpath(directory, store.root)
        parts = [] if relative == "." else relative.split(os.sep)
        try:
            localfs.unlink_file(store.root, parts + [name])
            result.stale_temps_removed += 1
        except (OSError, MaintenanceError) as exc:
            result.error("/".join(parts + [name]), exc)


def sync(src, dst, transfer, compare="auto", delete_extraneous=False, check_mode=False, concurrency=16,
         verify_only=False, link_from=None, result=None, deadline=None, before_change=None):
    """Make ``dst`` hold what ``src`` holds (mirror). Returns ``(Result, manifest rows)``.

    ``link_from``: a LocalStore of the previous snapshot; ``dst`` then starts empty and files that
    are unchanged against ``link_from`` are hard-linked from it instead of copied.
    Manifest rows ``(key, size, mtime, sha256_or_None)`` are collected for local destinations.
    ``before_change()`` is called once, before the first write or deletion (a mirror removes its manifest there).
    A dead endpoint (``transfer.breaker``) or the ``deadline`` stops the job with MaintenanceError carrying the
    partial progress.
    """
    result = result if result is not None else Result()
    if dst.kind == "local" and dst.role != "dest":
        # A destination is always written as one: reserved names escaped, links listed (never written through).
        dst = LocalStore(dst.root, managed=True, role="dest")
    rows = [] if dst.kind == "local" else None
    against = link_from if link_from is not None else dst
    deletions = []
    change_lock = threading.Lock()
    changing = []

    def about_to_change():
        if before_change is None or changing:
            return
        with change_lock:
            if not changing:
                before_change()
                changing.append(True)

    def tasks():
        for key, s_entry, d_entry in merge_listings(src.list(), against.list(), deadline):
            if s_entry is None:
                if link_from is not None:
                    continue
                result.extraneous_count += 1
                result.note(result.extraneous, key)
                if delete_extraneous:
                    deletions.append(d_entry)
                elif rows is not None and d_entry.size >= 0:
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
                        localfs.set_mtime(dst.root, dst.parts(key), s_entry.mtime)
                        return ("skip", key, d_entry.size, s_entry.mtime, None)
                    return ("skip", key, d_entry.size, d_entry.mtime, None)
            else:
                decision = "differ"
        if decision == "link":
            if not check_mode:
                localfs.link_file(link_from.root, link_from.parts(key), dst.root, dst.parts(key))
            return ("link", key, d_entry.size, d_entry.mtime, d_entry.sha256)
        if verify_only or check_mode:
            return (decision, key, s_entry.size, s_entry.mtime, None)
        about_to_change()
        sha = transfer.copy(src, s_entry, dst, key)
        return ("copy", key, s_entry.size, s_entry.mtime, sha)

    try:
        for task, outcome, error in parallel_map(work, tasks(), concurrency, deadline,
                                                 should_stop=lambda: transfer.breaker.tripped):
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
        if transfer.breaker.tripped:
            raise EndpointDown("stopped after %d consecutive S3 transport failures (last: %s)"
                               % (transfer.breaker.limit, transfer.breaker.last_error))
    except (DeadlineExceeded, EndpointDown) as exc:
        raise _stopped(exc, result)
    except MaintenanceError:
        raise
    except Exception as exc:  # pylint: disable=broad-except
        raise _stopped(exc, result)

    if deletions and not verify_only:
        for entry in deletions:
            result.deleted += 1
            result.bytes_deleted += max(entry.size, 0)
            result.note(result.deleted_keys, entry.key)
        if not check_mode:
            about_to_change()
            if dst.kind == "local":
                removed = []
                for entry in deletions:
                    parts = dst.parts(entry.key)
                    try:
                        localfs.unlink_file(dst.root, parts)
                        removed.append(parts)
                    except (OSError, MaintenanceError) as exc:
                        result.error(entry.key, exc)
                localfs.prune_empty_dirs(dst.root, removed)
            else:
                for key, message in dst.delete_keys([dst.full_key(entry.key) for entry in deletions]):
                    result.error(key, MaintenanceError(message))
    if dst.kind == "local" and not (check_mode or verify_only) and link_from is None:
        remove_stale_temps(dst, result)
    return result, rows
