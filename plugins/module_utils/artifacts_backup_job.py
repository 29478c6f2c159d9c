# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The artifacts_backup job: open both locations, mirror, snapshot or verify, and build the result.

Every option is checked (:func:`artifact_names.validate_params`, :func:`retention.retention_policy`) before anything
is read or written; the job runs under the task's deadline and reports what was done when it stops midway.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_snapshots as snapshots
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_compare import inside
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_stores import LocalStore, S3Store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import Transfer, run_with_deadline
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import retention_policy


def open_location(location, params, what, client_holder, deadline=None):
    if s3_utils.is_s3_url(location):
        bucket, prefix = s3_utils.parse_s3_url(location)
        if client_holder.get("client") is None:
            client_holder["client"] = s3_utils.build_client(params, pool_size=params["concurrency"], deadline=deadline)
        s3_utils.check_bucket(client_holder["client"], bucket, what)
        return S3Store(client_holder["client"], bucket, prefix)
    if "://" in location:
        raise MaintenanceError("%s must be a local directory or s3://bucket/prefix, got %r" % (what, location))
    if what == "dest":
        # Written by this module: reserved names are escaped, nothing is written through a symlink.
        return LocalStore(location, managed=True, role="dest")
    return LocalStore(location, symlinks=params.get("symlinks") or "skip", role="src")


def refuse_overlap(src, dest):
    if src.kind == "local" and dest.kind == "local":
        src_path = os.path.realpath(src.root)
        dest_path = os.path.realpath(dest.root)
        if dest_path == src_path or dest_path.startswith(src_path.rstrip(os.sep) + os.sep):
            raise MaintenanceError("dest %s lies inside src %s; choose a destination outside the source" % (dest.root, src.root))
    elif src.kind == "s3" and dest.kind == "s3" and src.bucket == dest.bucket:
        if inside(dest.prefix, src.prefix):
            raise MaintenanceError("dest %s lies inside src %s; choose a destination outside the source" % (dest, src))


def resolve_snapshot_source(src, name):
    if src.kind == "local":
        names = snapshots.local_snapshots(src.root)
        chosen = names[-1] if (name == "latest" and names) else (name if name in names else None)
        if chosen is None:
            raise MaintenanceError("no snapshot %r in %s (have: %s)" % (name, src.root, ", ".join(names[-5:]) or "none"))
        return LocalStore(os.path.join(src.root, chosen), managed=True, role="src"), chosen
    names = snapshots.s3_snapshots(src)
    chosen = names[-1] if (name == "latest" and names) else (name if name in names else None)
    if chosen is None:
        raise MaintenanceError("no snapshot %r in %s (have: %s)" % (name, src, ", ".join(names[-5:]) or "none"))
    return snapshots.SnapshotView(src, chosen), chosen


def run(params, check_mode, deadline):
    """Validate every option first, then run the job under the task's deadline (partial progress on failure).

    Returns the result dict; raises MaintenanceError (with the result) when any file failed."""
    artifact_names.validate_params(params)
    try:
        policy = retention_policy(params.get("retention"))
    except ValueError as exc:
        raise MaintenanceError(str(exc))
    result = sync_utils.Result()
    out = run_with_deadline(lambda: copy_job(params, policy, check_mode, deadline, result), deadline,
                            progress=result.progress, hard_exit=True)
    if out["failure_count"]:
        raise MaintenanceError("%d file(s) failed; first: %s" % (out["failure_count"], result.failures.first()), **out)
    return out


def copy_job(params, policy, check_mode, deadline, result):
    holder = {}
    src = open_location(params["src"], params, "src", holder, deadline)
    dest = open_location(params["dest"], params, "dest", holder, deadline)
    refuse_overlap(src, dest)
    if src.kind == "local" and not src.exists():
        raise MaintenanceError("src %s is not a directory" % src.root)
    transfer = Transfer(params, retries=params.get("s3_retries", 3), deadline=deadline)
    label = params["src"]
    snapshot_used = None
    if params["src_snapshot"]:
        src, snapshot_used = resolve_snapshot_source(src, params["src_snapshot"])
        label = "%s@%s" % (params["src"], snapshot_used)

    # No src/dest keys in the result: AnsibleModule would add the stat of a "dest" path (mode, size...) to it.
    out = dict(changed=False, manifest=None)
    if snapshot_used:
        out["src_snapshot"] = snapshot_used
    mode = params["mode"]
    concurrency = params["concurrency"]
    if mode == "snapshot":
        if dest.kind == "local":
            result, info = snapshots.local_snapshot(
                src, dest.root, transfer, policy, compare=params["compare"], check_mode=check_mode,
                concurrency=concurrency, snapshot_if_unchanged=params["snapshot_if_unchanged"],
                source_label=label, result=result, deadline=deadline)
            if info.get("created"):
                out["manifest"] = os.path.join(dest.root, info["snapshot"], sync_utils.MANIFEST_NAME)
        else:
            result, info = snapshots.s3_snapshot(
                src, dest, transfer, policy, check_mode=check_mode, concurrency=concurrency,
                snapshot_if_unchanged=params["snapshot_if_unchanged"], source_label=label, result=result,
                deadline=deadline)
            if info.get("created"):
                out["manifest"] = "s3://%s/%s" % (dest.bucket, dest.full_key("snapshots/%s.json" % info["snapshot"]))
        out.update(snapshot=info.get("snapshot"), snapshot_created=bool(info.get("created")),
                   snapshots_kept=info.get("snapshots_kept", []), snapshots_removed=info.get("snapshots_removed", []))
        out["changed"] = bool(info.get("created") or info.get("snapshots_removed") or result.deleted or result.stale_temps_removed)
    else:
        verify = mode == "verify"
        manifest_path = os.path.join(dest.root, sync_utils.MANIFEST_NAME) if dest.kind == "local" else None
        writes = dest.kind == "local" and not (verify or check_mode)
        # Read before the mirror starts: its first change removes the manifest (a stale proof must not survive a crash).
        previous = sync_utils.read_manifest(manifest_path) if writes else {}

        def before_change():
            localfs.open_dir_chain_close(dest.root, [], create=True)
            sync_utils.ensure_marker(dest.root)
            sync_utils.remove_manifest(dest.root)

        result, rows = sync_utils.sync(src, dest, transfer, compare=params["compare"],
                                       delete_extraneous=params["delete_extraneous"] and not verify,
                                       check_mode=check_mode or verify, concurrency=concurrency,
                                       verify_only=verify, result=result, deadline=deadline,
                                       before_change=before_change if writes else None)
        if verify:
            out.update(verified=not (result.missing_count or result.different_count or result.failures.count),
                       missing=result.missing, missing_truncated=result.missing_count > len(result.missing),
                       different=result.different, different_truncated=result.different_count > len(result.different),
                       counts=dict(missing=result.missing_count, different=result.different_count,
                                   extraneous=result.extraneous_count))
        else:
            out["changed"] = bool(result.copied or result.deleted or result.stale_temps_removed)
            if dest.kind == "local" and not result.failures.count:
                if out["changed"] or not os.path.exists(manifest_path):
                    out["changed"] = True
                    if not check_mode:
                        files = sync_utils.complete_manifest(dest, rows, previous, concurrency, deadline)
                        localfs.open_dir_chain_close(dest.root, [], create=True)
                        sync_utils.ensure_marker(dest.root)
                        sync_utils.write_json_atomic(manifest_path, sync_utils.manifest_document(files, label, "mirror"))
                out["manifest"] = manifest_path
    listed_src = src if src.kind == "local" else None
    links = listed_src.skipped_symlinks if listed_src is not None else None
    reserved = [item for store in (listed_src, dest if dest.kind == "local" else None) if store is not None
                for item in store.skipped_reserved.items]
    out.update(copied=result.copied, unchanged_count=result.unchanged, deleted=result.deleted, linked=result.linked,
               copied_bytes=result.copied_bytes, deleted_bytes=result.deleted_bytes,
               copied_keys=result.copied_keys, copied_keys_truncated=result.copied > len(result.copied_keys),
               deleted_keys=result.deleted_keys, deleted_keys_truncated=result.deleted > len(result.deleted_keys),
               extraneous=result.extraneous, extraneous_truncated=result.extraneous_count > len(result.extraneous),
               skipped_symlinks=links.items if links else [], skipped_symlinks_count=links.count if links else 0,
               skipped_symlinks_truncated=links.truncated if links else False,
               skipped_reserved=reserved[:sync_utils.MAX_LISTED],
               skipped_reserved_truncated=len(reserved) > sync_utils.MAX_LISTED,
               stale_temp_files=dest.stale_temps.items if dest.kind == "local" else [],
               stale_temp_files_truncated=dest.stale_temps.truncated if dest.kind == "local" else False,
               stale_temps_removed=result.stale_temps_removed, **result.failures.as_result())
    return out
