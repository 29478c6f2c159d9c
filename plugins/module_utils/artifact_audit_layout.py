# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where artifacts_audit's entities live in the artifact store (pure; the path resolver is injected).

Store identities (a real local root, or an S3 bucket and normalised prefix), the mapping of an artifact URI
onto the store (``locate``), entity folders of listed keys, per-folder and per-experiment totals, and which
folders entities' artifact roots cover. See artifact_audit for the rules these serve.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import redact_uri

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
TRACE_ID = re.compile(r"^tr-[0-9a-f]{32}$")
IN_STORE, ELSEWHERE, UNMAPPED = "store", "elsewhere", "unmapped"
RUN, MODEL, TRACE = "run", "logged_model", "trace"
KINDS = (RUN, MODEL, TRACE)
ID_KEYS = {RUN: "run_id", MODEL: "model_id", TRACE: "trace_id"}
# Entity folders below an experiment's folder: ``models/<model_id>``, ``traces/<trace_id>``.
ENTITY_DIRS = ((MODEL, "models", MODEL_ID), (TRACE, "traces", TRACE_ID))


def normalize_relative(path):
    """``a//b/./c/`` -> ``a/b/c``; None when a ``..`` component would leave the path's root."""
    parts = []
    for part in str(path).split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


class StoreIdentity(object):
    """What a destination really is: ``local`` with its real root path, or ``s3`` with bucket and normalised prefix."""

    def __init__(self, kind, root=None, bucket=None, prefix=""):
        self.kind = kind
        self.root = root
        self.bucket = bucket
        self.prefix = prefix

    def __repr__(self):
        return "StoreIdentity(%r, root=%r, bucket=%r, prefix=%r)" % (self.kind, self.root, self.bucket, self.prefix)


def local_path_of(destination):
    """The local path of a destination written as a path or a ``file:`` URI, or None when it is neither."""
    text = str(destination or "").strip()
    if text.startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            return None
        return unquote(parts.path) or None
    if "://" in text or not text:
        return None
    return os.path.expanduser(text)


def store_identity(destination, resolve=os.path.realpath):
    """The StoreIdentity of ``artifacts_destination``; MaintenanceError for anything but a directory or S3."""
    if s3_utils.is_s3_url(destination):
        bucket, prefix = s3_utils.parse_s3_url(destination)
        normalized = normalize_relative(prefix)
        if normalized is None:
            raise MaintenanceError("artifacts_destination %s: the prefix leaves the bucket with '..'" % destination)
        return StoreIdentity("s3", bucket=bucket, prefix=normalized)
    path = local_path_of(destination)
    if path is None:
        raise MaintenanceError("artifacts_destination must be a local directory or s3://bucket/prefix, got %r"
                               % redact_uri(destination))
    return StoreIdentity("local", root=resolve(_absolute(path)))


def _absolute(path):
    """An absolute, normalised path (POSIX keeps a leading ``//``; it means the same directory here)."""
    path = os.path.normpath(os.path.abspath(path))
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _inside(path, root, sep):
    """``path`` relative to ``root`` with '/' separators when it is ``root`` or below it, else None."""
    if path == root:
        return ""
    base = root if root.endswith(sep) else root + sep
    if path.startswith(base):
        return path[len(base):].replace(sep, "/")
    return None


def locate(uri, identity, resolve=os.path.realpath):
    """Where an artifact URI lives relative to the store: ``(IN_STORE, rel)``, ``(ELSEWHERE, None)`` or
    ``(UNMAPPED, reason)``.

    ``mlflow-artifacts:`` URIs are relative to the destination. ``s3://`` URIs are in the store when
    bucket and normalised key fall under it. ``file:`` URIs and absolute paths are resolved to real paths
    (``resolve``) and compared with the store's real root. Anything else cannot be mapped.
    """
    text = str(uri or "").strip()
    if not text:
        return UNMAPPED, "no artifact URI"
    if text.startswith("mlflow-artifacts:"):
        rest = text[len("mlflow-artifacts:"):]
        if rest.startswith("//"):
            rest = "/" + rest[2:].partition("/")[2]
        rel = normalize_relative(unquote(rest.partition("?")[0].partition("#")[0]))
        if rel is None:
            return UNMAPPED, "the mlflow-artifacts path leaves the destination with '..'"
        return IN_STORE, rel
    if text.startswith("s3://"):
        if identity.kind != "s3":
            return ELSEWHERE, None
        bucket, _sep, key = text[len("s3://"):].partition("/")
        if not bucket:
            return UNMAPPED, "an s3 URI without a bucket"
        key = normalize_relative(key)
        if key is None:
            return UNMAPPED, "an s3 key with '..'"
        if bucket != identity.bucket:
            return ELSEWHERE, None
        rel = _inside(key, identity.prefix, "/") if identity.prefix else key
        return (IN_STORE, rel) if rel is not None else (ELSEWHERE, None)
    path = local_path_of(text)
    if path is None or not os.path.isabs(path):
        return UNMAPPED, "an artifact location this module cannot map onto the store"
    if identity.kind != "local":
        return ELSEWHERE, None
    rel = _inside(resolve(_absolute(path)), identity.root, os.sep)
    return (IN_STORE, normalize_relative(rel)) if rel is not None else (ELSEWHERE, None)


def run_folder(artifact_root):
    """The entity folder of an in-store artifact root (``1/<run>/artifacts`` -> ``1/<run>``,
    ``1/models/<id>/artifacts`` -> ``1/models/<id>``)."""
    parts = artifact_root.split("/") if artifact_root else []
    if parts and parts[-1] == "artifacts":
        parts = parts[:-1]
    return "/".join(parts)


def entity_folder_of_key(key):
    """``(kind, folder)`` of the first entity folder in a key, or ``(None, None)``.

    The first path component that is a run id (``1/<run>``), or a logged model's or trace's id right below
    ``models/`` or ``traces/`` (``1/models/<model_id>``, ``1/traces/<trace_id>``), decides: a run's artifacts
    that contain a ``models/`` folder stay the run's.
    """
    parts = key.split("/")
    for index, part in enumerate(parts[:-1]):
        if RUN_ID.match(part):
            return RUN, "/".join(parts[:index + 1])
        if index:
            for kind, directory, pattern in ENTITY_DIRS:
                if parts[index - 1] == directory and pattern.match(part):
                    return kind, "/".join(parts[:index + 1])
    return None, None


def folder_of_key(key):
    """The literal key prefix of the key's entity folder (see entity_folder_of_key), or None."""
    return entity_folder_of_key(key)[1]


class FolderStats(object):
    """Objects and bytes per entity folder (with its kind) and per experiment, accumulated from a listing.

    ``experiment_roots`` ({in-store folder: experiment id}) attributes keys to experiments by their artifact
    location (``workspaces/<ws>/<id>`` on servers with workspaces); other keys count for their first component.
    """

    def __init__(self, experiment_roots=None):
        self.folders = {}
        self.kinds = {}
        self.experiments = {}
        self.roots = dict((root, str(ident)) for root, ident in (experiment_roots or {}).items() if root)
        self.depth = max([len(root.split("/")) for root in self.roots] or [0])
        self.other_objects = 0
        self.other_bytes = 0
        self.objects = 0
        self.bytes = 0

    def experiment_of(self, key):
        parts = key.split("/")
        for length in range(min(self.depth, len(parts) - 1), 0, -1):
            found = self.roots.get("/".join(parts[:length]))
            if found is not None:
                return found
        return parts[0] if len(parts) > 1 else ""

    def add(self, key, size):
        self.objects += 1
        self.bytes += size
        stats = self.experiments.setdefault(self.experiment_of(key), [0, 0])
        stats[0] += 1
        stats[1] += size
        kind, folder = entity_folder_of_key(key)
        if folder is None:
            self.other_objects += 1
            self.other_bytes += size
            return
        self.kinds[folder] = kind
        stats = self.folders.setdefault(folder, [0, 0])
        stats[0] += 1
        stats[1] += size


class Ownership(object):
    """In-store artifact roots of entities: is a folder (normalised) equal to, above, or below any of them?"""

    def __init__(self):
        self.roots = set()
        self.covered = set()

    def add(self, root):
        self.roots.add(root)
        parts = root.split("/") if root else []
        for index in range(len(parts) + 1):
            self.covered.add("/".join(parts[:index]))

    def owns(self, folder):
        if folder in self.covered:
            return True
        parts = folder.split("/")
        return any("/".join(parts[:index]) in self.roots for index in range(len(parts)))


def experiment_prefixes(wanted, experiments, identity):
    """The store folders of the wanted experiments: their own id, and their in-store artifact_location."""
    prefixes = []
    for experiment_id in wanted:
        candidates = [experiment_id]
        location = (experiments.get(experiment_id) or {}).get("artifact_location")
        where, rel = locate(location, identity) if location else (UNMAPPED, None)
        if where == IN_STORE and rel:
            candidates.append(rel)
        for prefix in candidates:
            if prefix not in prefixes:
                prefixes.append(prefix)
    # A prefix inside another one is listed by it already.
    return [prefix for prefix in prefixes
            if not any(prefix != other and prefix.startswith(other + "/") for other in prefixes)]


def experiment_roots(experiments, identity):
    """{in-store folder: experiment id} of the experiments whose artifact location is inside the store."""
    roots = {}
    for ident, item in experiments.items():
        where, rel = locate(item.get("artifact_location"), identity) if item.get("artifact_location") else (UNMAPPED, None)
        if where == IN_STORE and rel:
            roots[rel] = ident
    return roots
