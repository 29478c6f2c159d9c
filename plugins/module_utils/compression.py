# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compression streams for backups: zstd (the zstandard library or the zstd CLI), gzip, or none.

Everything streams in 1 MiB chunks (bounded memory); :class:`HashingWriter` hashes and counts what is written.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import shutil
import subprocess
import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

try:
    import zstandard
    HAS_ZSTANDARD = True
except ImportError:
    zstandard = None
    HAS_ZSTANDARD = False

CHUNK = 1024 * 1024
COMPRESSION_EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}


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
        proc = subprocess.Popen([zstd_cli(), "-q", "-c", "-T0", "-%d" % (level or 3)],  # pylint: disable=consider-using-with
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
