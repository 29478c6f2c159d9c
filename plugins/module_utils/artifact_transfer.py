# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copying artifact entries between stores: retries, the consecutive-failure breaker, bounded concurrency and the deadline.

:class:`Transfer` copies one entry the right way for each direction (server-side S3 copies, temp+fsync+rename
for local files); :func:`parallel_map` runs calls with bounded concurrency; :func:`run_with_deadline` is the
backstop for a call stuck in the network"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import queue
import threading
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    MaintenanceError,
    backoff_delays,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import run_with_deadline as common_run_with_deadline
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names as names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_compare import etag_matches_file
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_localfs import CHUNK
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_stores import SHA256_META

SOURCE_ETAG_META = "mlflowops-source-etag"


class EndpointDown(MaintenanceError):
    """Too many consecutive transport failures: the endpoint is taken as gone, the job stops."""


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


class _Done(object):
    pass


def prefetch(iterable, size=5000, deadline=None, chunk=256):
    """Iterate ``iterable`` in a background thread, at most ``size`` items ahead (both sides list at once).

    Items cross the queue in lists of up to ``chunk`` (one queue operation per chunk, not per item: a local walk
    yields tens of thousands of entries). The consumer waits at most until ``deadline`` (a stuck listing cannot
    hold the job past it)."""
    items = queue.Queue(maxsize=max(1, size // chunk))
    done = _Done()
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            pending = []
            for item in iterable:
                pending.append(item)
                if len(pending) >= chunk:
                    if not put(pending):
                        return
                    pending = []
            if pending and not put(pending):
                return
            items.put(done)
        except BaseException as exc:  # pylint: disable=broad-except
            items.put(exc)

    worker = threading.Thread(target=produce, name="mlflowops-listing")
    worker.daemon = True
    worker.start()
    try:
        while True:
            item = _poll(items, deadline, "the listing")
            if item is _EMPTY:
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()


class _Stop(object):
    pass


_EMPTY = _Stop()


def _poll(source, deadline, what):
    """The next item of the queue ``source``, or _EMPTY after a quarter second (the deadline is checked then)."""
    try:
        return source.get(timeout=0.25)
    except queue.Empty:
        if deadline is not None:
            deadline.check(what)
        return _EMPTY


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
            outcome = _poll(done, deadline, "the copy")
            if outcome is _EMPTY:
                continue
            in_flight -= 1
            yield outcome
    finally:
        for _thread in threads:
            work.put(stop)


def run_with_deadline(func, deadline, progress=None, hard_exit=False):
    """common.run_with_deadline for the artifact copy: the stop message says what was copied."""
    return common_run_with_deadline(func, deadline, progress=progress, hard_exit=hard_exit, what="the artifact copy",
                                    describe=describe_progress)


def describe_progress(details):
    return "%d file(s) (%d bytes) copied, %d deleted before that; the rest was not done" % (
        details.get("copied", 0), details.get("copied_bytes", 0), details.get("deleted", 0))


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

    def copy(self, src, entry, dst, dst_key, durable=True):
        """Copy ``entry`` of ``src`` to ``dst_key`` of ``dst``; returns the sha256 when it was computed.

        ``durable=False``: a local destination file is not fsynced; the caller flushes the tree once
        (``artifact_localfs.flush_tree``) before it writes a manifest."""
        return self.guarded(self._copy_once, src, entry, dst, dst_key, durable)

    def _copy_once(self, src, entry, dst, dst_key, durable=True):
        if dst.kind == "local":
            return self._to_local(src, entry, dst, dst_key, durable)
        if src.kind == "local":
            return self._local_to_s3(src, entry, dst, dst.full_key(dst_key))
        return self._s3_to_s3(src, entry, dst, dst.full_key(dst_key))

    @staticmethod
    def copy_local_batch(src, entries, dst, keys, durable=True):
        """Local to local: copy a batch of files (``entries[i]`` to ``keys[i]``), each directory of the batch opened
        once (``artifact_localfs.copy_files``). Returns ``[(sha256, error), ...]`` in order.

        Local I/O errors are not transient: no retries, no breaker (that is for S3 endpoints)."""
        return localfs.copy_files(src.root, [src.parts(entry.key) for entry in entries],
                                  dst.root, [dst.parts(key) for key in keys], durable=durable)

    def _to_local(self, src, entry, dst, dst_key, durable=True):
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
            return localfs.write_file(dst.root, parts, copy_local, durable=durable)

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
        return localfs.write_file(dst.root, parts, download, mtime=entry.mtime, durable=durable)

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
