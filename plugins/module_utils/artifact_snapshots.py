# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of artifact trees: hard-linked local snapshots (like ``rsync --link-dest``) and content-addressed
S3 snapshot repositories (``blobs/<content id>`` plus ``snapshots/<name>.json``), with restic-style retention.
The copying itself is :func:`artifact_sync.sync` / :class:`artifact_sync.Transfer`."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import threading

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_localfs import Entry, sort_key
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_names import (
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    SNAPSHOT_NAME,
    TEMP_GRACE_SECONDS,
    snapshot_name,
    snapshot_time,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_stores import LocalStore, S3Store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_sync import (
    Result,
    complete_manifest,
    manifest_document,
    read_manifest,
    stopping_with_progress,
    sync,
    write_json_atomic,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import parallel_map, prefetch


def local_snapshots(root):
    """Complete snapshot names under ``root`` (a manifest marks completion; symlinks are not ours), oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if SNAPSHOT_NAME.match(name) and not os.path.islink(path) and os.path.isdir(path) \
                and os.path.isfile(os.path.join(path, MANIFEST_NAME)) and not os.path.islink(os.path.join(path, MANIFEST_NAME)):
            found.append(name)
    return sorted(found)


def s3_snapshots(store):
    found = []
    for entry in store.list("snapshots"):
        name = entry.key[len("snapshots/"):]
        if name.endswith(".json") and SNAPSHOT_NAME.match(name[:-5]):
            found.append(name[:-5])
    return sorted(found)


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


def retention_plan(snapshot_names, policy):
    """``(kept, removed)`` snapshot names under a restic-style policy (retention.apply_retention)."""
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import (
        apply_retention, split_decisions)
    dated = [(name, snapshot_time(name)) for name in snapshot_names]
    return split_decisions(apply_retention(dated, policy))


def _remove_tree_at(root, name):
    """Remove ``root/name`` (a directory of ours); a symlink there is removed as a link, never followed."""
    path = os.path.join(root, name)
    if os.path.islink(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def local_snapshot(src, dest_root, transfer, policy, compare="auto", check_mode=False, concurrency=16,
                   snapshot_if_unchanged=False, source_label="", result=None, deadline=None):
    """A hard-linked snapshot (like ``rsync --link-dest``) under ``dest_root``, then retention."""
    result = result if result is not None else Result()
    existing = local_snapshots(dest_root)
    previous = existing[-1] if existing else None
    taken = set(os.listdir(dest_root)) if os.path.isdir(dest_root) else set()
    name = snapshot_name(existing=taken | set(entry[len(PARTIAL_PREFIX):] for entry in taken if entry.startswith(PARTIAL_PREFIX)))
    partial_name = PARTIAL_PREFIX + name
    partial = os.path.join(dest_root, partial_name)
    prev_root = os.path.join(dest_root, previous) if previous else os.path.join(dest_root, PARTIAL_PREFIX + "none")
    prev_store = LocalStore(prev_root, managed=True, role="dest")
    prev_manifest = read_manifest(os.path.join(prev_root, MANIFEST_NAME)) if previous else {}
    if not check_mode:
        localfs.open_dir_chain_close(dest_root, [], create=True)
        for stale in os.listdir(dest_root):
            # A crashed run's partial snapshot; a younger one may belong to a run still going.
            if stale.startswith(PARTIAL_PREFIX) and fsutil.is_stale(os.path.join(dest_root, stale), TEMP_GRACE_SECONDS):
                _remove_tree_at(dest_root, stale)
                result.stale_temps_removed += 1
        localfs.open_dir_chain_close(dest_root, [partial_name], create=True)
    target = LocalStore(partial, managed=True, role="dest")
    try:
        result, rows = sync(src, target, transfer, compare=compare, check_mode=check_mode, concurrency=concurrency,
                            link_from=prev_store, result=result, deadline=deadline)
        source_keys = set(row[0] for row in rows)
        removed_since = previous is not None and any(key not in source_keys for key in prev_manifest)
        unchanged = previous is not None and result.copied == 0 and not removed_since and not result.failures.count
        created = None
        if result.failures.count:
            if not check_mode:
                _remove_tree_at(dest_root, partial_name)
            return result, dict(snapshot=None, previous=previous, created=False)
        if unchanged and not snapshot_if_unchanged:
            if not check_mode:
                _remove_tree_at(dest_root, partial_name)
        else:
            created = name
            if not check_mode:
                files = complete_manifest(target, rows, prev_manifest, concurrency, deadline)
                write_json_atomic(os.path.join(partial, MANIFEST_NAME),
                                  manifest_document(files, source_label, "snapshot", dict(snapshot=name, previous=previous)))
                localfs.rename_at(dest_root, partial_name, name)
    except BaseException:
        if not check_mode:
            _remove_tree_at(dest_root, partial_name)
        raise
    all_names = existing + ([created] if created else [])
    kept, removed = retention_plan(all_names, policy) if all_names else ([], [])
    if not check_mode:
        for old in removed:
            _remove_tree_at(dest_root, old)
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
                source_label="", result=None, deadline=None):
    """A content-addressed snapshot in an S3 repository: ``blobs/<id>`` plus ``snapshots/<name>.json``.

    A blob is copied only when no earlier snapshot holds the same content id; the manifest is written last.
    """
    result = result if result is not None else Result()
    snapshot_names = s3_snapshots(repo)
    previous = snapshot_names[-1] if snapshot_names else None
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
                sha = src.sha256(entry)
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

    with stopping_with_progress(result, transfer):
        for entry, outcome, error in parallel_map(work, prefetch(src.list(), deadline=deadline), concurrency, deadline,
                                                  should_stop=lambda: transfer.breaker.tripped):
            if error is not None:
                result.error(entry.key, error)
                continue
            blob, present, sha = outcome
            files[entry.key] = dict(size=entry.size, mtime=int(entry.mtime) if entry.mtime else None, blob=blob,
                                    etag=entry.etag, sha256=sha)
            if present:
                result.unchanged += 1
            else:
                result.copied += 1
                result.copied_bytes += entry.size
                result.note(result.copied_keys, entry.key)
    if result.failures.count:
        return result, dict(snapshot=None, previous=previous, created=False)
    same_as_previous = previous is not None and \
        dict((k, v["blob"]) for k, v in files.items()) == dict((k, v.get("blob")) for k, v in prev_files.items())
    created = None
    if not same_as_previous or snapshot_if_unchanged:
        created = snapshot_name(existing=set(snapshot_names))
        if not check_mode:
            document = manifest_document(files, source_label, "snapshot", dict(snapshot=created, previous=previous))
            repo.client.put_object(Bucket=repo.bucket, Key=repo.full_key("snapshots/%s.json" % created),
                                   Body=json.dumps(document, sort_keys=True).encode("utf-8"),
                                   ContentType="application/json")
    all_names = snapshot_names + ([created] if created else [])
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
