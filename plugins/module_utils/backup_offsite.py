# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offsite copies of backup sets in S3: what to upload, what to prune, what to fetch (pure), and the I/O.

Layout under ``s3://<bucket>/<prefix>/<namespace>/`` (one namespace a host), for a backup entry ``<name>``:
``<name>`` (or ``<name>/<relative path>`` for a directory backup), ``<name>.artifacts.json`` (the artifact
snapshot manifest of the set), ``<name>.set.json`` (the backup role's set manifest) and ``<name>.manifest.json``,
uploaded last, only after every data object was verified. A set is complete offsite when its manifest is valid
and every data object it names is there with the recorded size. Only sets whose manifest records this store
(engine, location, prefix) are ever pruned; nothing is deleted by key prefix, only the keys a manifest names.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import posixpath
import re

from ansible_collections.mlflowops.maintenance.plugins.module_utils import backups
from ansible_collections.mlflowops.maintenance.plugins.module_utils import fsutil
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3util
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import apply_retention

SET_SUFFIX = ".set.json"
ARTIFACTS_SUFFIX = ".artifacts.json"
MAX_JSON_BYTES = 16 * 1024 * 1024
LIST_LIMIT = 100
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_.+@=-]{1,255}$")


# ---------------------------------------------------------------- names and keys (pure)

def check_namespace(namespace):
    """The per-host namespace: one key component (the inventory hostname), never ``.``, ``..`` or empty."""
    text = "" if namespace is None else str(namespace)
    if not _COMPONENT_RE.match(text) or text in (".", ".."):
        raise MaintenanceError("namespace %r is not one plain key component (letters, digits, '.', '_', '-', '+', '@', "
                               "'='; not '.' or '..')" % (namespace,))
    return text


def check_key_prefix(prefix):
    """The ``prefix`` option: ``a/b`` (slashes at either end dropped); no empty, ``.`` or ``..`` component."""
    text = str(prefix or "").strip("/")
    if not text:
        return ""
    for part in text.split("/"):
        if not _COMPONENT_RE.match(part) or part in (".", ".."):
            raise MaintenanceError("prefix %r: component %r is not allowed" % (prefix, part))
    return text


def host_base(prefix, namespace):
    """``<prefix>/<namespace>/`` (the trailing slash keeps ``host1`` from listing ``host10``)."""
    prefix = check_key_prefix(prefix)
    namespace = check_namespace(namespace)
    return "%s/%s/" % (prefix, namespace) if prefix else "%s/" % namespace


def safe_relpath(rel):
    """A relative path from a manifest, as a key/file-system path that stays inside its directory; else raise."""
    text = str(rel)
    if not text or "\x00" in text or "\\" in text or text.startswith("/"):
        raise MaintenanceError("manifest names an unsafe path %r" % (rel,))
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(text) != text:
        raise MaintenanceError("manifest names an unsafe path %r" % (rel,))
    return text


def check_entry_name(name):
    """A backup entry name from a manifest or a key: one component, the db_backup naming scheme."""
    text = str(name or "")
    if "/" in text or text in (".", "..") or text.startswith(".") or backups.name_prefix(text) is None:
        raise MaintenanceError("%r is not a backup name" % (name,))
    return text


def set_objects(name, manifest, extras=()):
    """The objects of one set, in upload order: data, then ``extras`` (artifacts, set manifests), manifest last.

    Each: ``rel`` (key below the host base), ``kind`` (``data``, ``meta``, ``manifest``), ``sha256`` (hex; None
    for a directory file whose digest the manifest lacks), ``size`` (bytes; None when the manifest does not say).
    ``extras``: ``(suffix, sha256, size)`` for the set's sidecar files.
    """
    name = check_entry_name(name)
    objects = []
    if is_directory(manifest):
        files = manifest.get("files") or {}
        for rel in sorted(files):
            objects.append(dict(rel="%s/%s" % (name, safe_relpath(rel)), kind="data", sha256=files[rel], size=None))
    else:
        objects.append(dict(rel=name, kind="data", sha256=manifest.get("sha256"), size=manifest.get("size_bytes")))
    for suffix, sha, size in extras:
        objects.append(dict(rel=name + suffix, kind="meta", sha256=sha, size=size))
    return objects


def is_directory(manifest):
    """A directory backup (pg_dump's directory format): one object per file its manifest lists."""
    return manifest.get("format") == "directory" or bool(isinstance(manifest.get("files"), dict) and manifest["files"])


def offsite_sets(listing, manifests, identity=None, backup_prefix=None):
    """The sets found offsite, newest first.

    ``listing``: ``{rel: size}`` of every key below the host base; ``manifests``: ``{name: parsed manifest or
    an error string}``. Each set: ``name``, ``created_at``, ``manifest``, ``complete`` (every data object there
    with the right size), ``ours`` (the manifest records exactly ``identity``; False without one), ``reason``.
    """
    found = []
    for name, manifest in manifests.items():
        item = dict(name=name, created_at=None, manifest=None, complete=False, ours=False, reason="")
        found.append(item)
        if not isinstance(manifest, dict):
            item["reason"] = "manifest invalid: %s" % manifest
            continue
        try:
            backups.check_manifest(manifest)
            check_entry_name(name)
            if manifest["file"] != name:
                raise ValueError("manifest names %s, not %s" % (manifest["file"], name))
            if backup_prefix and backups.name_prefix(name) != backup_prefix:
                raise ValueError("written with another prefix")
            data = [o for o in set_objects(name, manifest) if o["kind"] == "data"]
        except (ValueError, MaintenanceError) as exc:
            item["reason"] = "manifest invalid: %s" % (getattr(exc, "msg", None) or exc)
            continue
        item["manifest"] = manifest
        item["created_at"] = backups.parse_iso(manifest["created_at"])
        item["ours"] = identity is not None and backups.same_store(manifest, identity)
        sizes = [listing.get(o["rel"]) for o in data]
        if any(size is None for size in sizes):
            item["reason"] = "data missing offsite"
        elif sum(sizes) != manifest["size_bytes"]:
            item["reason"] = "data is %d bytes offsite, its manifest says %s" % (sum(sizes), manifest["size_bytes"])
        else:
            item.update(complete=True, reason="complete")
    found.sort(key=lambda item: (item["created_at"] is not None, item["created_at"] and item["created_at"].timestamp(),
                                 item["name"]), reverse=True)
    return found


def manifest_names(listing):
    """Backup names with a manifest directly below the host base."""
    names = []
    for rel in listing:
        if rel.endswith(backups.MANIFEST_SUFFIX) and "/" not in rel:
            names.append(rel[:-len(backups.MANIFEST_SUFFIX)])
    return sorted(names)


def objects_to_upload(objects, listing, offsite_sha):
    """Which objects of one local set must be (re)uploaded, in order; the manifest last, whenever data moves.

    ``listing``: ``{rel: size}`` offsite; ``offsite_sha``: ``{rel: sha256}`` of the small JSON objects read back.
    Data is there when its size matches (it was verified before its manifest went up); JSON objects must match
    byte for byte (their sha256).
    """
    todo = []
    data_moves = False
    for obj in objects:
        if obj["kind"] == "data":
            needed = listing.get(obj["rel"]) is None or listing.get(obj["rel"]) != obj["size"]
            data_moves = data_moves or needed
        elif obj["kind"] == "manifest":
            needed = data_moves or offsite_sha.get(obj["rel"]) != obj["sha256"]
        else:
            needed = offsite_sha.get(obj["rel"]) != obj["sha256"]
        if needed:
            todo.append(obj)
    return todo


def plan_push(local_sets, remote_sets, policy):
    """Decide what to upload and what to prune offsite.

    ``local_sets``: this store's complete local sets (``name``, ``created_at``); ``remote_sets``: from
    :func:`offsite_sets`. Retention runs over the union of this store's complete offsite sets and the local
    ones: a local set that retention would drop is not uploaded (else every run would push and prune it).
    Returns ``upload`` (local set names, newest first), ``prune`` (offsite set names) and ``decisions``.
    Only complete sets of this store are pruned, and never the newest of them.
    """
    ours = [s for s in remote_sets if s["ours"] and s["complete"]]
    times = dict((s["name"], s["created_at"]) for s in ours)
    for item in local_sets:
        times[item["name"]] = item["created_at"]
    decisions = apply_retention(list(times.items()), policy)
    kept = set(d["id"] for d in decisions if d["keep"])
    remote_complete = set(s["name"] for s in ours)
    upload = [d["id"] for d in decisions if d["id"] in kept and d["id"] in set(i["name"] for i in local_sets)]
    prune = [d["id"] for d in decisions if d["id"] not in kept and d["id"] in remote_complete]
    if ours:
        newest = max(ours, key=lambda s: s["created_at"])["name"]
        newer_kept = [d for d in decisions if d["keep"] and d["time"] > times[newest]]
        if newest in prune and not newer_kept:
            prune.remove(newest)
    return dict(upload=upload, prune=prune, decisions=decisions)


def prune_keys(name, manifest, listing):
    """The keys of one pruned set that exist offsite, manifest first (the set stops being complete at once)."""
    rels = [name + backups.MANIFEST_SUFFIX]
    rels += [o["rel"] for o in set_objects(name, manifest) if o["kind"] == "data"]
    rels += [name + ARTIFACTS_SUFFIX, name + SET_SUFFIX]
    return [rel for rel in rels if rel in listing]


def choose_fetch(remote_sets, name=None, identity=None):
    """The set to fetch: ``name``, or the newest complete one (of this store when ``identity`` is known)."""
    eligible = [s for s in remote_sets if s["complete"] and (identity is None or _same_store(s, identity))]
    if name:
        for item in remote_sets:
            if item["name"] == name:
                if not item["complete"]:
                    raise MaintenanceError("offsite set %s is not complete: %s" % (name, item["reason"]))
                if item not in eligible:
                    raise MaintenanceError("offsite set %s belongs to %s, not to this store" % (
                        name, backups.describe_identity(backups.manifest_identity(item["manifest"]))))
                return item
        raise MaintenanceError("no offsite set named %s" % name)
    if not eligible:
        raise MaintenanceError("no complete offsite set%s (%d set(s) found)" % (
            " of this store" if identity is not None else "", len(remote_sets)))
    return eligible[0]


def _same_store(item, identity):
    return item["manifest"] is not None and backups.same_store(item["manifest"], identity, match_prefix=False)


# ---------------------------------------------------------------- local sets (I/O)

def _read_private(path, limit=MAX_JSON_BYTES):
    """Bytes of a small regular file, never through a symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise MaintenanceError("%s is larger than %d bytes" % (path, limit))
    return data


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def local_sets(directory, identity, backup_prefix):
    """This store's complete local backups with their objects (and the bytes of the small ones)."""
    found = []
    for item in backups.list_backups(directory, backup_prefix):
        if item["status"] != "complete" or not backups.same_store(item["manifest"], identity):
            continue
        if os.path.islink(item["path"]) or os.path.islink(item["manifest_path"]):
            continue
        name = item["name"]
        blobs = {}
        extras = []
        paths = {}
        set_path = os.path.join(directory, name + SET_SUFFIX)
        if os.path.isfile(set_path) and not os.path.islink(set_path):
            set_bytes = _read_private(set_path)
            artifacts_path = _artifacts_manifest_path(set_bytes)
            if artifacts_path and os.path.isfile(artifacts_path) and not os.path.islink(artifacts_path):
                # An artifact snapshot manifest lists every file: streamed from disk, never held in memory.
                paths[name + ARTIFACTS_SUFFIX] = artifacts_path
                extras.append((ARTIFACTS_SUFFIX, fsutil.file_sha256(artifacts_path), os.path.getsize(artifacts_path)))
            blobs[name + SET_SUFFIX] = set_bytes
            extras.append((SET_SUFFIX, _sha(set_bytes), len(set_bytes)))
        manifest_bytes = _read_private(item["manifest_path"])
        blobs[name + backups.MANIFEST_SUFFIX] = manifest_bytes
        objects = set_objects(name, item["manifest"], extras)
        objects.append(dict(rel=name + backups.MANIFEST_SUFFIX, kind="manifest", sha256=_sha(manifest_bytes),
                            size=len(manifest_bytes)))
        for obj in objects:
            if obj["kind"] == "data":
                local = os.path.join(directory, obj["rel"])
                if os.path.islink(local):
                    raise MaintenanceError("%s is a symlink; refusing to follow it out of the backup" % local)
                if obj["size"] is None:
                    obj["size"] = os.path.getsize(local)
                obj["path"] = local
            elif obj["rel"] in paths:
                obj["path"] = paths[obj["rel"]]
            else:
                obj["data"] = blobs[obj["rel"]]
        found.append(dict(name=name, created_at=item["created_at"], manifest=item["manifest"], objects=objects))
    return found


def _artifacts_manifest_path(set_bytes):
    """The local artifact snapshot manifest a set manifest names (an absolute path), or None."""
    try:
        data = json.loads(set_bytes.decode("utf-8"))
        path = (data.get("artifacts") or {}).get("manifest")
    except (ValueError, AttributeError):
        return None
    if isinstance(path, str) and os.path.isabs(path):
        return path
    return None


# ---------------------------------------------------------------- S3 side (I/O)

class Offsite(object):
    """One host's namespace in a bucket."""

    def __init__(self, client, bucket, base, transfer_config=None, deadline=None):
        self.client = client
        self.bucket = bucket
        self.base = base
        self.transfer_config = transfer_config
        self.deadline = deadline

    def url(self, rel=""):
        return "s3://%s/%s%s" % (self.bucket, self.base, rel)

    def _check(self, what):
        if self.deadline is not None:
            self.deadline.check(what)

    def listing(self):
        found = {}
        for item in s3util.paginate(self.client, "list_objects_v2", "Contents", Bucket=self.bucket, Prefix=self.base):
            found[item["Key"][len(self.base):]] = int(item["Size"])
        return found

    def get_bytes(self, rel, limit=MAX_JSON_BYTES):
        body = self.client.get_object(Bucket=self.bucket, Key=self.base + rel)["Body"]
        try:
            data = body.read(limit + 1)
        finally:
            body.close()
        if len(data) > limit:
            raise MaintenanceError("%s is larger than %d bytes" % (self.url(rel), limit))
        return data

    def read_manifests(self, names):
        found = {}
        for name in names:
            self._check("reading offsite manifests")
            try:
                found[name] = backups.check_manifest(json.loads(self.get_bytes(name + backups.MANIFEST_SUFFIX).decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                found[name] = str(exc)
        return found

    def put_bytes(self, rel, data):
        self._check("uploading %s" % rel)
        self.client.put_object(Bucket=self.bucket, Key=self.base + rel, Body=data, ChecksumAlgorithm="SHA256",
                               Metadata={"sha256": _sha(data)})

    def upload_file(self, path, rel, sha256):
        self._check("uploading %s" % rel)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            extra = dict(ChecksumAlgorithm="SHA256")
            if sha256:
                extra["Metadata"] = {"sha256": str(sha256)}
            self.client.upload_fileobj(handle, self.bucket, self.base + rel, ExtraArgs=extra, Config=self.transfer_config)

    def stream(self, rel, sink=None):
        """Read an object in chunks: ``(sha256, size)``; each chunk also goes to ``sink`` (a file) when given."""
        self._check("reading %s" % rel)
        body = self.client.get_object(Bucket=self.bucket, Key=self.base + rel)["Body"]
        digest = hashlib.sha256()
        size = 0
        try:
            while True:
                chunk = body.read(fsutil.CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
                self._check("reading %s" % rel)
        finally:
            body.close()
        return digest.hexdigest(), size

    def head(self, rel):
        """``(size, sha256 recorded in the object's metadata at upload or None)``."""
        self._check("checking %s" % rel)
        answer = self.client.head_object(Bucket=self.bucket, Key=self.base + rel)
        return int(answer["ContentLength"]), (answer.get("Metadata") or {}).get("sha256")

    def delete(self, rels):
        for start in range(0, len(rels), 1000):
            self._check("deleting offsite objects")
            batch = rels[start:start + 1000]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete=dict(
                Objects=[dict(Key=self.base + rel) for rel in batch], Quiet=True))
            errors = answer.get("Errors") or []
            if errors:
                raise MaintenanceError("could not delete %s: %s" % (errors[0].get("Key"), errors[0].get("Message")))


def verify_object(offsite, obj, level):
    """Check one uploaded object against what the local manifest says; raise naming the object."""
    if obj["kind"] != "data" or level == "checksum":
        sha, size = offsite.stream(obj["rel"])
        if obj["sha256"] and sha != obj["sha256"]:
            raise MaintenanceError("offsite copy %s does not match its manifest: sha256 %s, expected %s" % (
                offsite.url(obj["rel"]), sha, obj["sha256"]))
    else:
        size = offsite.head(obj["rel"])[0]
    if obj["size"] is not None and size != obj["size"]:
        raise MaintenanceError("offsite copy %s does not match its manifest: %d bytes, expected %d" % (
            offsite.url(obj["rel"]), size, obj["size"]))


# ---------------------------------------------------------------- jobs

def _cap(names):
    return names[:LIST_LIMIT], len(names) > LIST_LIMIT


def push(offsite, directory, identity, backup_prefix, policy, verify="checksum", check_mode=False):
    """Upload this store's complete local sets that retention keeps and that are not offsite, then prune."""
    sets = local_sets(directory, identity, backup_prefix) if os.path.isdir(directory) else []
    listing = offsite.listing()
    remote = offsite_sets(listing, offsite.read_manifests(manifest_names(listing)), identity, backup_prefix)
    plan = plan_push(sets, remote, policy)
    by_name = dict((s["name"], s) for s in sets)
    wanted = [by_name[name] for name in plan["upload"]]
    offsite_sha = {}
    for item in wanted:
        for obj in item["objects"]:
            # Small objects: the sha256 this module recorded when it uploaded and verified them (one HEAD each).
            if obj["kind"] != "data" and listing.get(obj["rel"]) == obj["size"]:
                offsite_sha[obj["rel"]] = offsite.head(obj["rel"])[1]
    uploads = [(item, objects_to_upload(item["objects"], listing, offsite_sha)) for item in wanted]
    uploads = [(item, todo) for item, todo in uploads if todo]
    result = dict(uploaded=[], uploaded_bytes=0, pruned=[], deleted_objects_count=0, verified=verify,
                  offsite_url=offsite.url(), kept=[d["id"] for d in plan["decisions"] if d["keep"]],
                  incomplete_offsite=[s["name"] for s in remote if not s["complete"] and s["manifest"] is not None],
                  ignored_count=len([s for s in remote if not s["ours"]]))
    for item, todo in uploads:
        try:
            for obj in ([] if check_mode else todo):
                if "path" in obj:
                    offsite.upload_file(obj["path"], obj["rel"], obj["sha256"])
                else:
                    offsite.put_bytes(obj["rel"], obj["data"])
                try:
                    verify_object(offsite, obj, verify)
                except MaintenanceError:
                    offsite.delete([obj["rel"]])  # written just now and wrong: the set stays incomplete offsite
                    raise
        except MaintenanceError as exc:
            raise MaintenanceError("%s (set %s not completed offsite; nothing pruned)" % (exc.msg, item["name"]),
                                   **_done(result))
        except Exception as exc:  # pylint: disable=broad-except
            if isinstance(exc, OSError) or s3util.botocore is None:
                raise
            raise MaintenanceError(s3util.describe_error(exc, "uploading set %s to %s" % (item["name"], offsite.url())),
                                   **_done(result))
        result["uploaded"].append(item["name"])
        result["uploaded_bytes"] += sum(obj["size"] or 0 for obj in todo)
    remote_by_name = dict((s["name"], s) for s in remote)
    for name in plan["prune"]:
        keys = prune_keys(name, remote_by_name[name]["manifest"], listing)
        result["pruned"].append(name)
        result["deleted_objects_count"] += len(keys)
        if not check_mode:
            offsite.delete(keys)
    result["changed"] = bool(result["uploaded"] or result["pruned"])
    result["unchanged_count"] = len([name for name in plan["upload"] if name not in result["uploaded"]])
    result["uploaded"], result["uploaded_truncated"] = _cap(result["uploaded"])
    result["pruned"], result["pruned_truncated"] = _cap(result["pruned"])
    result["kept"], result["kept_truncated"] = _cap(result["kept"])
    result["incomplete_offsite"], result["incomplete_offsite_truncated"] = _cap(result["incomplete_offsite"])
    result["msg"] = "%s%d set(s) uploaded to %s, %d pruned offsite, %d already there" % (
        "check mode: " if check_mode else "", len(uploads), offsite.url(), len(plan["prune"]), result["unchanged_count"])
    return result


def _done(result):
    return dict(uploaded=list(result["uploaded"]), uploaded_bytes=result["uploaded_bytes"])


def fetch(offsite, directory, name=None, identity=None, backup_prefix=None, check_mode=False):
    """Download one complete offsite set into ``directory``: data (sha256 checked), sidecars, manifest last."""
    if os.path.islink(directory):
        raise MaintenanceError("%s is a symlink; refusing to write through it" % directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise MaintenanceError("%s is not a directory" % directory)
    listing = offsite.listing()
    remote = offsite_sets(listing, offsite.read_manifests(manifest_names(listing)), identity, backup_prefix)
    chosen = choose_fetch(remote, name, identity)
    name, manifest = chosen["name"], chosen["manifest"]
    entry = os.path.join(directory, name)
    fetched = dict(name=name, path=entry, created_at=manifest["created_at"], engine=manifest["engine"],
                   size_bytes=manifest["size_bytes"], sha256=manifest["sha256"], url=offsite.url(name))
    result = dict(fetched=fetched, offsite_url=offsite.url(), changed=False)
    if _local_copy_ok(entry, manifest):
        result["msg"] = "%s is already in %s and matches its manifest" % (name, directory)
        return result
    if os.path.lexists(entry) or os.path.lexists(backups.manifest_path_for(entry)):
        raise MaintenanceError("%s exists but does not match the offsite manifest; move it away first" % entry)
    result["changed"] = True
    result["msg"] = "fetched %s from %s" % (name, offsite.url())
    if check_mode:
        result["msg"] = "would fetch %s from %s" % (name, offsite.url())
        return result
    fsutil.makedirs_private(directory)
    data = [o for o in set_objects(name, manifest) if o["kind"] == "data"]
    is_dir = is_directory(manifest)
    partial = entry + backups.PARTIAL_SUFFIX
    fsutil.remove_path(partial)
    try:
        if is_dir:
            fsutil.makedirs_private(partial)
        for obj in data:
            target = partial if not is_dir else os.path.join(partial, obj["rel"][len(name) + 1:])
            if is_dir:
                fsutil.makedirs_private(os.path.dirname(target))
            with fsutil.open_private(target) as handle:
                sha, _size = offsite.stream(obj["rel"], sink=handle)
                handle.flush()
                os.fsync(handle.fileno())
            if obj["sha256"] and sha != obj["sha256"]:
                raise MaintenanceError("offsite copy %s is corrupt: sha256 %s, its manifest says %s" % (
                    offsite.url(obj["rel"]), sha, obj["sha256"]))
        if is_dir:
            fsutil.fsync_tree(partial)
        backups.verify_checksum(partial, manifest)
        fsutil.atomic_rename(partial, entry)
    except BaseException:
        fsutil.remove_path(partial)
        raise
    for suffix in (ARTIFACTS_SUFFIX, SET_SUFFIX):
        if name + suffix in listing:
            _download_atomic(offsite, name + suffix, entry + suffix)
    manifest_bytes = offsite.get_bytes(name + backups.MANIFEST_SUFFIX)
    if json.loads(manifest_bytes.decode("utf-8")) != manifest:
        raise MaintenanceError("the offsite manifest of %s changed while it was fetched; run again" % name)
    fsutil.write_bytes_atomic(backups.manifest_path_for(entry), manifest_bytes)
    return result


def _download_atomic(offsite, rel, path):
    """One object to ``path``: a 0600 temporary name, fsync, rename (never through a symlink)."""
    fsutil.write_atomic(path, lambda handle: offsite.stream(rel, sink=handle), temp_suffix=backups.PARTIAL_SUFFIX)


def _local_copy_ok(entry, manifest):
    manifest_path = backups.manifest_path_for(entry)
    if os.path.islink(entry) or os.path.islink(manifest_path) or not os.path.isfile(manifest_path):
        return False
    try:
        if backups.read_manifest(manifest_path) != manifest:
            return False
        backups.verify_checksum(entry, manifest)
    except (ValueError, MaintenanceError, OSError):
        return False
    return True
