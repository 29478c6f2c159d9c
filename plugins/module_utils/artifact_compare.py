# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure comparison decisions for artifact copies: whether two entries are the same, differ, or need a closer look.

:func:`quick_compare` decides without I/O; :func:`etag_matches_file` settles S3 ETags (plain or multipart)
against a local file"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_localfs import CHUNK


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


def inside(child, parent):
    """Whether ``child`` is ``parent`` or below it ('/'-separated keys or paths)."""
    parent = parent.rstrip("/")
    return parent == "" or child == parent or child.startswith(parent + "/")
