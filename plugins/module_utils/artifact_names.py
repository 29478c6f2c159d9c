# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of artifact copies: the collection's reserved names and their escaping, symlink policy,
S3 prefix checks, option validation and the consecutive-failure breaker. No I/O here.

Reserved names. A local directory this collection writes (a mirror destination, a snapshot) holds its own
files next to the user's: ``.mlflowops-manifest.json`` and ``.mlflowops-store.json`` at the root, and
``.mlflowops-tmp-<32 hex>`` temporary files anywhere. So that user files with such names round-trip, every
user name component starting with ``.mlflowops-`` is stored as ``.mlflowops-esc-<rest>`` in such a directory
(and read back under its original name). A directory the collection did not write (no store marker) is read
as it is: nothing in it is skipped for its name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import threading

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

RESERVED = ".mlflowops-"
ESCAPE_PREFIX = ".mlflowops-esc-"
TEMP_PREFIX = ".mlflowops-tmp-"
PARTIAL_PREFIX = ".mlflowops-partial-"
MANIFEST_NAME = ".mlflowops-manifest.json"
MARKER_NAME = ".mlflowops-store.json"
TOOL = "mlflowops.maintenance.artifacts_backup"
# Our temporary files: the current form, and the one earlier versions used (<name>.<8 hex>).
OWN_TEMP = re.compile(r"^\.mlflowops-tmp-(?:[0-9a-f]{32}|.*\.[0-9a-f]{8})$", re.S)
TEMP_GRACE_SECONDS = 3600
SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
SNAPSHOT_NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
SYMLINK_POLICIES = ("skip", "follow_within", "follow")
MAX_CONSECUTIVE_FAILURES = 5


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


def escape_name(name):
    """The on-disk name of a user name component inside a directory the collection writes."""
    if name.startswith(RESERVED):
        return ESCAPE_PREFIX + name[len(RESERVED):]
    return name


def classify_disk_name(name, at_root):
    """What an on-disk name of a managed directory is: ``("user", key_name)``, ``("own", kind)`` or
    ``("foreign", None)`` (a reserved name this collection neither writes nor escapes)."""
    if not name.startswith(RESERVED):
        return "user", name
    if name.startswith(ESCAPE_PREFIX):
        return "user", RESERVED + name[len(ESCAPE_PREFIX):]
    if OWN_TEMP.match(name):
        return "own", "temp"
    if at_root and name in (MANIFEST_NAME, MARKER_NAME):
        return "own", "manifest" if name == MANIFEST_NAME else "marker"
    if at_root and name.startswith(PARTIAL_PREFIX):
        return "own", "partial"
    return "foreign", None


def disk_parts(key, managed):
    """The on-disk path components of a '/'-separated key; refuses empty, '.' and '..' components."""
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in key:
        raise MaintenanceError("refusing the key %r: it has an empty, '.' or '..' path component" % key)
    return [escape_name(part) for part in parts] if managed else parts


def check_s3_prefix(prefix, what):
    """A usable S3 prefix: relative, no empty, '.' or '..' component (one trailing '/' is allowed)."""
    if prefix.startswith("/"):
        raise MaintenanceError("%s: the prefix %r must not start with '/'" % (what, prefix))
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if body == "":
        return ""
    for part in body.split("/"):
        if part in ("", ".", ".."):
            raise MaintenanceError("%s: the prefix %r has an empty, '.' or '..' component; write s3://bucket/a/b" % (what, prefix))
    return body


def symlink_decision(policy, target_real, src_real, dangling, is_cycle):
    """Whether a symlink met in a local source is followed: ``(follow, reason_when_skipped)``."""
    if dangling:
        return False, "dangling link"
    if is_cycle:
        return False, "link cycle"
    if policy == "follow":
        return True, None
    if policy == "follow_within":
        root = src_real.rstrip("/") or "/"
        if target_real == root or target_real.startswith(root.rstrip("/") + "/"):
            return True, None
        return False, "points outside src (symlinks=follow_within)"
    return False, "symlink not followed (symlinks=skip)"


def _number(params, names, default=None):
    for name in names:
        if params.get(name) is not None:
            return params[name]
    return default


def validate_params(params):
    """Every check that needs no I/O, before anything is read or written; raises MaintenanceError."""
    def need(ok, text):
        if not ok:
            raise MaintenanceError(text)

    concurrency = params.get("concurrency")
    need(concurrency is not None and 1 <= concurrency <= 1024, "concurrency must be between 1 and 1024, got %r" % concurrency)
    deadline = params.get("deadline")
    need(deadline is None or deadline >= 0, "deadline must be 0 (none) or more seconds, got %r" % deadline)
    threshold = params.get("copy_multipart_threshold_mb")
    need(threshold is None or 5 <= threshold <= 5120, "copy_multipart_threshold_mb must be between 5 and 5120, got %r" % threshold)
    for name in ("multipart_threshold_mb", "multipart_chunksize_mb"):
        value = params.get(name)
        need(value is None or 5 <= value <= 5120, "%s must be between 5 and 5120, got %r" % (name, value))
    for names in (("s3_connect_timeout", "connect_timeout"), ("s3_read_timeout", "read_timeout")):
        value = _number(params, names)
        need(value is None or value > 0, "%s must be more than 0, got %r" % (names[0], value))
    retries = _number(params, ("s3_retries", "retries"))
    need(retries is None or 0 <= retries <= 20, "s3_retries must be between 0 and 20, got %r" % retries)
    failures = params.get("max_consecutive_failures")
    need(failures is None or failures >= 1, "max_consecutive_failures must be 1 or more, got %r" % failures)
    policy = params.get("symlinks") or "skip"
    need(policy in SYMLINK_POLICIES, "symlinks must be one of %s" % ", ".join(SYMLINK_POLICIES))
    name = params.get("src_snapshot")
    need(name is None or name == "latest" or bool(SNAPSHOT_NAME.match(name)),
         "src_snapshot must be 'latest' or a snapshot name like 20261128T043000Z, got %r" % name)
    for what in ("src", "dest"):
        location = params.get(what) or ""
        need(location.strip() != "", "%s must not be empty" % what)
        if location.startswith("s3://"):
            bucket, _sep, prefix = location[len("s3://"):].partition("/")
            need(bucket != "", "%s %r names no bucket; write s3://bucket/prefix" % (what, location))
            check_s3_prefix(prefix, what)
    return True


class FailureBreaker(object):
    """Counts consecutive transport failures across threads; trips after ``limit`` (any success resets)."""

    def __init__(self, limit=MAX_CONSECUTIVE_FAILURES):
        self.limit = max(1, int(limit))
        self.consecutive = 0
        self.tripped = False
        self.last_error = None
        self._lock = threading.Lock()

    def success(self):
        with self._lock:
            if not self.tripped:
                self.consecutive = 0

    def failure(self, message):
        with self._lock:
            self.consecutive += 1
            self.last_error = message
            if self.consecutive >= self.limit:
                self.tripped = True
            return self.tripped
