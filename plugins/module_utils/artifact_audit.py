# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Join a tracking store's runs with an artifact store's listing: what is missing, orphaned, awaiting gc.

The artifact store is a proxied-artifacts destination laid out as ``<experiment_id>/<run_id>/artifacts/...``
(what ``mlflow server --artifacts-destination`` writes), plus whatever experiments with a custom
``artifact_location`` inside it hold. Nothing is downloaded: the store is listed, the runs come from the
REST API.

Orphan removal deletes only what is provably orphaned:

- every run's artifact URI is mapped onto the store by identity, not by text: local paths through
  ``os.path.realpath`` (symlinks, ``//``, ``/./``, trailing slashes), S3 locations by bucket and
  normalised key, ``mlflow-artifacts:`` URIs relative to the destination;
- a run whose URI cannot be mapped (an unknown scheme, a relative path, another host's ``file:`` URI)
  makes the module refuse to remove anything, and the result names those runs;
- a folder is a candidate only when no run's artifact root is inside it, equal to it, or above it, and
  no run read carries its run id; each candidate is then confirmed with ``runs/get`` (the server must
  answer 404) before it is removed, which also covers runs of experiments outside ``experiment_ids``;
- a cap (``max_remove``) refuses before anything is deleted; check mode lists exactly what would go.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil

from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError, bounded_parallel_map
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import redact_uri
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import (
    TrackingClient,
    TrackingError,
)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LISTED = 100
REMOVED_LISTED = 1000
FAIL_FAST_AFTER = 3
IN_STORE, ELSEWHERE, UNMAPPED = "store", "elsewhere", "unmapped"


# ---------------------------------------------------------------- identities (pure, resolver injected)


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
    """The run folder of a run's in-store artifact root (``1/<run>/artifacts`` -> ``1/<run>``)."""
    parts = artifact_root.split("/") if artifact_root else []
    if parts and parts[-1] == "artifacts":
        parts = parts[:-1]
    return "/".join(parts)


def folder_of_key(key):
    """The literal key prefix up to the first run-id component (``1/<run>``), or None when there is none."""
    parts = key.split("/")
    for index, part in enumerate(parts[:-1]):
        if RUN_ID.match(part):
            return "/".join(parts[:index + 1])
    return None


class FolderStats(object):
    """Objects and bytes per run folder and per experiment, accumulated from a listing."""

    def __init__(self):
        self.folders = {}
        self.experiments = {}
        self.other_objects = 0
        self.other_bytes = 0
        self.objects = 0
        self.bytes = 0

    def add(self, key, size):
        self.objects += 1
        self.bytes += size
        experiment = key.split("/", 1)[0] if "/" in key else ""
        stats = self.experiments.setdefault(experiment, [0, 0])
        stats[0] += 1
        stats[1] += size
        folder = folder_of_key(key)
        if folder is None:
            self.other_objects += 1
            self.other_bytes += size
            return
        stats = self.folders.setdefault(folder, [0, 0])
        stats[0] += 1
        stats[1] += size


class Ownership(object):
    """In-store artifact roots of runs: is a folder (normalised) equal to, above, or below any of them?"""

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


def classify(runs, stats, identity, resolve=os.path.realpath):
    """Pure join (with the path resolver injected). ``runs``: dicts with run_id, experiment_id,
    lifecycle_stage, artifact_uri.

    Returns missing (runs without a folder), orphans (candidate folders no run owns), awaiting_gc (deleted
    runs whose folder is still there), unmapped (runs whose URI cannot be mapped), external (runs whose
    artifacts provably live outside the store), and per-experiment counts.
    """
    ownership = Ownership()
    run_ids = set()
    missing, awaiting_gc, unmapped = [], [], []
    external = 0
    per_experiment = {}
    normalized_folders = {}
    for folder, counts in stats.folders.items():
        normalized_folders.setdefault(normalize_relative(folder), []).append((folder, counts))
    for run in runs:
        experiment_id = str(run["experiment_id"])
        row = per_experiment.setdefault(experiment_id, dict(runs=0, deleted_runs=0, runs_without_artifacts=0))
        row["runs"] += 1
        run_ids.add(run["run_id"])
        deleted = run.get("lifecycle_stage") == "deleted"
        if deleted:
            row["deleted_runs"] += 1
        where, detail = locate(run.get("artifact_uri"), identity, resolve)
        if where == UNMAPPED:
            unmapped.append(dict(run_id=run["run_id"], experiment_id=experiment_id,
                                 lifecycle_stage=run.get("lifecycle_stage"),
                                 artifact_uri=redact_uri(run.get("artifact_uri")), reason=detail))
            continue
        if where == ELSEWHERE:
            external += 1
            continue
        ownership.add(detail)
        folder = run_folder(detail)
        present = normalized_folders.get(folder)
        if not present:
            row["runs_without_artifacts"] += 1
            missing.append(dict(run_id=run["run_id"], experiment_id=experiment_id,
                                lifecycle_stage=run.get("lifecycle_stage"), folder=folder))
        elif deleted:
            awaiting_gc.append(dict(run_id=run["run_id"], experiment_id=experiment_id, folder=folder,
                                    objects=sum(counts[0] for _name, counts in present),
                                    bytes=sum(counts[1] for _name, counts in present)))
    orphans = []
    for folder, (count, size) in sorted(stats.folders.items()):
        normalized = normalize_relative(folder)
        if normalized is None or ownership.owns(normalized) or normalized.rsplit("/", 1)[-1] in run_ids:
            continue
        orphans.append(dict(folder=folder, experiment_id=folder.split("/")[0], objects=count, bytes=size))
    return dict(missing=missing, orphans=orphans, awaiting_gc=awaiting_gc, unmapped=unmapped, external=external,
                per_experiment=per_experiment)


def check_count(value, option, minimum=0, unlimited=None):
    """Refuse a count option below ``minimum`` (``unlimited`` is the one value meaning "no limit")."""
    if value is None or (unlimited is not None and value == unlimited):
        return value
    if value < minimum:
        allowed = "at least %d" % minimum + (", or %d for no limit" % unlimited if unlimited is not None else "")
        raise MaintenanceError("%s must be %s, got %d; nothing was changed" % (option, allowed, value))
    return value


def validate_options(params):
    """Every option checked before the first request or listing; returns the destination's identity."""
    check_count(params.get("concurrency"), "concurrency", 1)
    check_count(params.get("max_remove"), "max_remove", 0, unlimited=-1)
    if not params.get("artifacts_destination"):
        raise MaintenanceError("artifacts_audit needs artifacts_destination")
    for experiment_id in params.get("experiment_ids") or []:
        if not str(experiment_id).strip() or "/" in str(experiment_id) or str(experiment_id).strip() in (".", ".."):
            raise MaintenanceError("experiment_ids: %r is not an experiment id" % experiment_id)
    return store_identity(params["artifacts_destination"])


def removal_refusal(unmapped, candidates, max_remove):
    """Why orphans must not be removed (a message), or None. Pure."""
    if unmapped:
        listed = ", ".join("%s (%s)" % (item["run_id"], item["artifact_uri"] or item["reason"])
                           for item in unmapped[:10])
        more = " and %d more" % (len(unmapped) - 10) if len(unmapped) > 10 else ""
        return ("refusing to remove orphans: %d run(s) have artifact locations that cannot be mapped onto "
                "artifacts_destination, so no folder is provably orphaned: %s%s; nothing was removed"
                % (len(unmapped), listed, more))
    if max_remove is not None and max_remove >= 0 and len(candidates) > max_remove:
        return ("refusing to remove orphans: %d orphaned run folders would be removed, more than max_remove=%d; "
                "nothing was removed. Check them in the orphans list, then raise max_remove."
                % (len(candidates), max_remove))
    return None


# ---------------------------------------------------------------- I/O: the store, the job


def open_store(params, identity):
    destination = params["artifacts_destination"]
    if identity.kind == "s3":
        bucket, prefix = s3_utils.parse_s3_url(destination)
        client = s3_utils.build_client(params, pool_size=params["concurrency"])
        s3_utils.check_bucket(client, bucket, "artifacts_destination")
        return sync_utils.S3Store(client, bucket, prefix)
    store = sync_utils.LocalStore(local_path_of(destination))
    if not store.exists():
        raise MaintenanceError("artifacts_destination %s is not a directory" % store.root)
    return store


def list_store(store, prefixes):
    """Every object of the store, or below each of ``prefixes`` (store-relative); keys relative to the store."""
    if prefixes is None:
        yield from store.list()
        return
    for prefix in prefixes:
        if store.kind == "s3":
            yield from store.list(below=prefix)
        else:
            for entry in sync_utils.LocalStore(store.path(prefix)).list():
                entry.key = prefix + "/" + entry.key
                yield entry


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


def confirm_orphans(client, candidates, concurrency):
    """Ask the server about each candidate's run id: ``(confirmed, claimed)``; a run it knows is never an orphan."""
    confirmed, claimed = [], []

    def ask(item):
        run_id = item["folder"].rstrip("/").split("/")[-1]
        try:
            client.get("runs/get", run_id=run_id)
        except TrackingError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    for item, exists, error in bounded_parallel_map(ask, candidates, concurrency):
        if error is not None:
            raise error
        (claimed if exists else confirmed).append(item)
    confirmed.sort(key=lambda item: item["folder"])
    return confirmed, claimed


def remove_folder(store, identity, folder):
    """Delete every object of one run folder; returns the number of objects deleted."""
    if store.kind == "local":
        path = store.path(folder)
        expected = os.path.join(identity.root, *folder.split("/"))
        # Never through a symlink: the folder's real path must be exactly where the store says it is.
        if os.path.islink(path) or os.path.realpath(path) != expected or not os.path.isdir(path):
            raise MaintenanceError("%s is not a plain directory inside the store any more; left alone" % path)
        count = sum(len(files) for _root, _dirs, files in os.walk(path))
        shutil.rmtree(path)
        return count
    keys = [store.full_key(entry.key) for entry in store.list(below=folder)]
    errors = store.delete_keys(keys)
    if errors:
        raise MaintenanceError("could not delete %d object(s) of %s; first: %s %s"
                               % (len(errors), folder, errors[0][0], errors[0][1]))
    return len(keys)


def remove_folders(store, identity, folders, concurrency, deadline=None):
    """Remove folders with bounded concurrency; stops at the deadline or after consecutive failures.

    Returns ``dict(removed_objects, removed_folders, failures, stopped)``.
    """
    progress = dict(removed_objects=0, removed_folders=[], failures=[], stopped=None)
    streak = [0]

    def pending():
        for folder in folders:
            if deadline is not None and deadline.expired():
                progress["stopped"] = progress["stopped"] or "the task's deadline of %ss passed" % int(deadline.seconds)
            if progress["stopped"]:
                return
            yield folder

    for folder, count, error in bounded_parallel_map(lambda item: remove_folder(store, identity, item), pending(),
                                                     concurrency):
        if error is None:
            streak[0] = 0
            progress["removed_objects"] += count
            progress["removed_folders"].append(folder)
            continue
        streak[0] += 1
        progress["failures"].append(dict(folder=folder, error=sync_utils.describe_failure(error)))
        if streak[0] >= FAIL_FAST_AFTER and not progress["stopped"]:
            progress["stopped"] = "%d removals failed in a row (last: %s)" % (streak[0], progress["failures"][-1]["error"])
    return progress


def _read_failed(exc, what, stats, runs):
    reason = exc.msg if isinstance(exc, MaintenanceError) else sync_utils.describe_failure(exc)
    return MaintenanceError("artifacts_audit stopped while %s after listing %d objects and reading %d runs; "
                            "nothing was removed (%s)" % (what, stats.objects, len(runs), reason),
                            objects=stats.objects, runs=len(runs), removed=0)


def run_audit(params, check_mode=False, deadline=None, client=None):
    """The whole audit; returns the result dict or raises MaintenanceError saying what was done."""
    identity = validate_options(params)
    max_remove = params.get("max_remove", -1)
    store = open_store(params, identity)
    if client is None:
        client = TrackingClient(
            params["tracking_uri"], username=params.get("username"), password=params.get("password"),
            token=params.get("token"), validate_certs=params.get("validate_certs", True), ca_path=params.get("ca_path"),
            timeout=params.get("timeout", 30.0), retries=params.get("retries", 3), deadline=deadline,
            pool_size=max(16, params["concurrency"] * 2))
    experiment_ids = [str(value).strip() for value in (params.get("experiment_ids") or [])]
    stats = FolderStats()
    runs = []
    what = "reading the experiments"
    try:
        experiments = dict((str(item["experiment_id"]), item) for item in client.search_experiments(view_type="ALL"))
        wanted = experiment_ids or sorted(experiments)
        # The store before the runs: a run folder listed here belongs to a run that the search below sees.
        what = "listing the artifact store"
        prefixes = experiment_prefixes(experiment_ids, experiments, identity) if experiment_ids else None
        for entry in list_store(store, prefixes):
            stats.add(entry.key, entry.size)
            if deadline is not None and stats.objects % 1000 == 0:
                deadline.check("artifacts_audit", objects=stats.objects, removed=0)
        what = "reading the runs"
        for offset in range(0, len(wanted), 100):
            for run_item in client.search_runs(wanted[offset:offset + 100], run_view_type="ALL"):
                info = run_item.get("info", {})
                runs.append(dict(run_id=info.get("run_id") or info.get("run_uuid"),
                                 experiment_id=info.get("experiment_id"),
                                 lifecycle_stage=info.get("lifecycle_stage"), artifact_uri=info.get("artifact_uri")))
    except MaintenanceError as exc:
        raise _read_failed(exc, what, stats, runs)
    except Exception as exc:  # pylint: disable=broad-except
        raise _read_failed(exc, what, stats, runs)

    verdict = classify(runs, stats, identity)
    per_experiment = {}
    for experiment_id in sorted(set(wanted) | set(stats.experiments) | set(verdict["per_experiment"])):
        if experiment_ids and experiment_id not in experiment_ids:
            continue
        objects, size = stats.experiments.get(experiment_id, (0, 0))
        row = dict(name=experiments.get(experiment_id, {}).get("name"),
                   lifecycle_stage=experiments.get(experiment_id, {}).get("lifecycle_stage"),
                   objects=objects, bytes=size, runs=0, deleted_runs=0, runs_without_artifacts=0)
        row.update(verdict["per_experiment"].get(experiment_id, {}))
        per_experiment[experiment_id] = row

    orphans = verdict["orphans"]
    result = dict(
        changed=False, experiments=per_experiment, runs=len(runs), objects=stats.objects, bytes=stats.bytes,
        missing=verdict["missing"][:MAX_LISTED], missing_count=len(verdict["missing"]),
        orphans=orphans[:MAX_LISTED], orphan_count=len(orphans), orphan_bytes=sum(item["bytes"] for item in orphans),
        awaiting_gc=verdict["awaiting_gc"][:MAX_LISTED], awaiting_gc_count=len(verdict["awaiting_gc"]),
        awaiting_gc_bytes=sum(item["bytes"] for item in verdict["awaiting_gc"]),
        unmapped_runs=len(verdict["unmapped"]), unmapped=verdict["unmapped"][:MAX_LISTED],
        external_runs=verdict["external"], other_objects=stats.other_objects,
        removed=0, removed_folders=[], claimed_folders=[])
    if not (params.get("remove_orphans") and orphans):
        return result

    refusal = removal_refusal(verdict["unmapped"], orphans, max_remove)
    if refusal:
        raise MaintenanceError(refusal, **result)
    try:
        confirmed, claimed = confirm_orphans(client, orphans, params["concurrency"])
    except Exception as exc:  # pylint: disable=broad-except
        raise MaintenanceError("artifacts_audit stopped while confirming orphans with the tracking server; nothing "
                               "was removed (%s)" % sync_utils.describe_failure(exc), **result)
    result["claimed_folders"] = [item["folder"] for item in claimed][:MAX_LISTED]
    folders = [item["folder"] for item in confirmed]
    if check_mode:
        result.update(changed=bool(folders), removed=sum(item["objects"] for item in confirmed),
                      removed_folders=folders[:REMOVED_LISTED])
        return result
    progress = remove_folders(store, identity, folders, params["concurrency"], deadline)
    done = progress["removed_folders"]
    result.update(changed=bool(done), removed=progress["removed_objects"], removed_folders=sorted(done)[:REMOVED_LISTED],
                  removal_failures=progress["failures"][:MAX_LISTED])
    if progress["stopped"] or progress["failures"]:
        failures = progress["failures"]
        cause = progress["stopped"] or "%d removal(s) failed (first: %s)" % (len(failures), failures[0]["error"])
        raise MaintenanceError("artifacts_audit stopped removing orphans: %d of %d orphaned run folders removed "
                               "(%d objects), %d remain; %s. Rerun the task to finish the job."
                               % (len(done), len(folders), progress["removed_objects"], len(folders) - len(done), cause),
                               **result)
    return result
