#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: artifacts_backup
short_description: Incremental mirror, snapshot or verification of an MLflow artifact store (local or S3)
version_added: 0.1.0
description:
  - Copies an artifact store, a local directory or an C(s3://bucket/prefix), to another one. Local to local,
    local to S3, S3 to S3 and S3 to local all work.
  - Every listing is paginated and the two sides are joined as sorted streams, so memory stays bounded
    whatever the number of objects.
  - Copies run with bounded concurrency. S3 to S3 copies are server-side (C(CopyObject), or boto3's
    managed multipart copy above O(multipart_threshold_mb)); nothing flows through the host.
  - Local files are written under a temporary name C(.mlflowops-tmp-*), fsynced, then renamed into place.
    Files this module creates are C(0600) and directories C(0700), whatever the umask (the source's mode is
    not copied); manifests too.
  - Nothing is ever written through a symlink in a local O(dest). Every directory below O(dest) is opened
    component by component without following links; a symlinked directory planted in O(dest) fails the files
    below it with a clear error (nothing is written where it points), and a symlink where a file belongs is
    replaced by the file, not written through.
  - On a local destination, a sha256 manifest C(.mlflowops-manifest.json) is written last, after every
    file is in place; it is the proof that the pass completed. A mirror removes the previous manifest before
    its first change, so a pass that is killed or fails leaves no stale proof behind.
  - Temporary files C(.mlflowops-tmp-*) left by a killed run and older than one hour are removed by the next
    mirror into the same O(dest) and listed in RV(stale_temp_files).
  - Reserved names. A local directory this module writes holds its own files C(.mlflowops-manifest.json) and
    C(.mlflowops-store.json) (a marker) at its root, and temporary files. So that user files or objects whose
    names start with C(.mlflowops-) round-trip, each such name is stored as C(.mlflowops-esc-<rest>) there, and
    read back under its original name when the directory is a source again. A source directory without the
    marker is read as it is.
  - Stops early, with what was done so far in the error, when O(max_consecutive_failures) transfers in a row fail
    on the network (a dead S3 endpoint), and when the task's O(deadline) passes (a trickling endpoint).
  - Nothing is written when the source or destination bucket is missing, the credentials are rejected, the
    endpoint does not answer within the timeouts, or O(dest) lies inside O(src).
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  src:
    description:
      - What to back up, a local directory or C(s3://bucket/prefix), for example the tracking server's
        C(--artifacts-destination).
      - With O(src_snapshot), a snapshot repository written by O(mode=snapshot), to restore from.
    type: str
    required: true
  dest:
    description:
      - Where the backup goes, a local directory or C(s3://bucket/prefix). It must not lie inside O(src).
      - With O(mode=snapshot), the snapshot repository.
    type: str
    required: true
  mode:
    description:
      - C(mirror) makes O(dest) hold what O(src) holds, copying only new and changed files.
      - C(snapshot) writes a new timestamped snapshot under O(dest) and applies the retention policy.
        On a local O(dest), each snapshot is a directory C(YYYYMMDDTHHMMSSZ) in which files unchanged since the
        previous snapshot are hard links to it (as C(rsync --link-dest) does), so every snapshot stands alone
        and costs only the changed files.
        On an S3 O(dest), content is stored once under C(blobs/<content id>) and each snapshot is a manifest
        C(snapshots/<name>.json) mapping paths to blobs; a blob is copied only when no earlier snapshot holds it.
        The content id is the sha256 of a local source file, or the ETag and size of an S3 source object (so an
        S3 source is never downloaded).
      - C(verify) compares O(dest) with O(src) using O(compare) and reports missing, different and extraneous
        files; it writes nothing.
    type: str
    choices: [mirror, snapshot, verify]
    default: mirror
  compare:
    description:
      - How a file present on both sides is judged unchanged.
      - C(auto) compares sizes, then S3 to S3 the ETags (a multipart copy's differing ETag is settled by the
        source ETag recorded in the copy's metadata, one C(HEAD)); local to local the modification times in
        whole seconds; S3 to local the file's mtime against the object's C(LastModified) (downloads set it),
        falling back to computing the file's ETag, plain or multipart; local to S3, the object must not be older
        than the file, else the file's ETag is computed and compared.
      - C(checksum) compares the sha256 of the content on both sides. Local files are read; an S3 object uses the
        C(sha256) metadata this module records on upload (one C(HEAD)) and is otherwise downloaded and hashed,
        which costs reading the data.
      - C(size) compares sizes only.
    type: str
    choices: [auto, checksum, size]
    default: auto
  delete_extraneous:
    description:
      - With O(mode=mirror), delete files of O(dest) that O(src) does not have.
    type: bool
    default: false
  concurrency:
    description:
      - Most files or objects in flight at once.
    type: int
    default: 16
  copy_multipart_threshold_mb:
    description:
      - S3 to S3 copies of this many MiB and more go through boto3's managed copy in parts of
        O(multipart_chunksize_mb) (C(UploadPartCopy), server side); smaller ones take one C(CopyObject),
        also server side. 5120 (5 GiB, C(CopyObject)'s limit) is the most allowed.
    type: int
    default: 5120
  src_snapshot:
    description:
      - Treat O(src) as a snapshot repository and copy from the named snapshot, or the newest with C(latest).
        With O(mode=mirror) this restores a snapshot.
    type: str
  snapshot_if_unchanged:
    description:
      - With O(mode=snapshot), write a new snapshot even when nothing changed since the previous one.
      - By default an unchanged source gives no new snapshot and C(changed=false) (as restic's C(--skip-if-unchanged)).
    type: bool
    default: false
  keep_last:
    description: Keep the newest N snapshots.
    type: int
  keep_hourly:
    description: Keep the newest snapshot of each of the last N hours that have one.
    type: int
  keep_daily:
    description: Keep the newest snapshot of each of the last N days that have one.
    type: int
  keep_weekly:
    description: Keep the newest snapshot of each of the last N ISO weeks that have one.
    type: int
  keep_monthly:
    description: Keep the newest snapshot of each of the last N months that have one.
    type: int
  keep_yearly:
    description: Keep the newest snapshot of each of the last N years that have one.
    type: int
  symlinks:
    description:
      - What to do with symlinks met in a local O(src). Each one not followed is listed in RV(skipped_symlinks)
        with the reason; nothing is dropped silently.
      - C(skip) follows no symlink.
      - C(follow_within) follows a link (to a file or a directory) only when its resolved target lies inside O(src).
      - C(follow) follows every link, also to files outside O(src) (for example C(/etc/passwd)), an explicit opt-in.
      - Dangling links, links to something that is neither a file nor a directory, and directory links that
        lead back to a directory being walked (cycles) are never followed.
      - Symlinks in an S3 source do not exist; in a local O(dest) they are never followed (see above).
    type: str
    choices: [skip, follow_within, follow]
    default: skip
  max_consecutive_failures:
    description:
      - Stop the whole task after this many transfers in a row failed on the network or with an S3 server error
        (each after the retries of O(s3_retries)), taking the endpoint as gone. The error says how much was
        copied; a rerun continues where it stopped.
    type: int
    default: 5
attributes:
  check_mode:
    support: full
    description: Lists both sides and makes every comparison, then reports what would be copied and deleted, writing nothing.
  diff_mode:
    support: none
    description: Many files change at once; the results list counts and the first keys instead of a diff.
requirements:
  - boto3 >= 1.28 (S3 locations)
notes:
  - Uses the S3 family (for C(s3://) locations). The tracking and backend store families are accepted for
    C(module_defaults) and ignored.
  - One set of S3 credentials serves both sides when both are in S3.
  - Retention (the O(keep_last) family) follows restic's C(forget) rules; with no rule set every snapshot is kept.
    S3 blobs no kept snapshot references are deleted after the snapshot manifests.
  - A run with failed files fails, with the first failures in its C(errors) result; the manifest is then not written.
seealso:
  - module: mlflowops.maintenance.artifacts_audit
"""

EXAMPLES = r"""
- name: Mirror the artifact bucket to a backup bucket, server-side
  mlflowops.maintenance.artifacts_backup:
    src: s3://mlflow-artifacts/mlflow
    dest: s3://mlflow-backups/artifacts
    endpoint_url: https://minio.example.com
    aws_access_key: "{{ s3_access_key }}"
    aws_secret_key: "{{ s3_secret_key }}"

- name: Daily hard-linked snapshots of a local artifact directory, two weeks and six months kept
  mlflowops.maintenance.artifacts_backup:
    src: /srv/mlflow/artifacts
    dest: /backup/mlflow/artifacts
    mode: snapshot
    keep_daily: 14
    keep_monthly: 6

- name: Verify the backup against the source, comparing content
  mlflowops.maintenance.artifacts_backup:
    src: s3://mlflow-artifacts/mlflow
    dest: /backup/mlflow/mirror
    mode: verify
    compare: checksum
  register: verification

- name: Restore the newest snapshot into an empty artifact directory
  mlflowops.maintenance.artifacts_backup:
    src: /backup/mlflow/artifacts
    src_snapshot: latest
    dest: /srv/mlflow/artifacts
"""

RETURN = r"""
copied:
  description: Files copied (or, in check mode, that would be copied).
  returned: always
  type: int
  sample: 42
unchanged:
  description:
    - Files already up to date, not copied (in a snapshot, hard-linked or already stored).
    - Named so because Ansible reads a C(skipped) key in a result as a skipped task.
  returned: always
  type: int
  sample: 2458
deleted:
  description: Files deleted from O(dest) (extraneous files, or S3 snapshot blobs no kept snapshot references).
  returned: always
  type: int
  sample: 0
linked:
  description: Files of a local snapshot hard-linked to the previous snapshot.
  returned: always
  type: int
  sample: 2458
bytes_copied:
  description: Bytes copied (or that would be).
  returned: always
  type: int
  sample: 10485760
bytes_deleted:
  description: Bytes deleted (or that would be).
  returned: always
  type: int
  sample: 0
duration_s:
  description: Wall-clock seconds the run took.
  returned: always
  type: float
  sample: 3.52
errors:
  description: 'The first 100 failures, one line each: the key, a colon, the reason.'
  returned: always
  type: list
  elements: str
  sample: []
error_count:
  description: How many files failed.
  returned: always
  type: int
  sample: 0
copied_keys:
  description: The first 100 keys copied.
  returned: always
  type: list
  elements: str
deleted_keys:
  description: The first 100 keys deleted.
  returned: always
  type: list
  elements: str
manifest:
  description: Path of the manifest written (local O(dest)), or the key of the S3 snapshot manifest; null if none.
  returned: always
  type: str
  sample: /backup/mlflow/mirror/.mlflowops-manifest.json
snapshot:
  description: With O(mode=snapshot), the name of the snapshot written, or of the newest one when nothing changed.
  returned: when O(mode=snapshot)
  type: str
  sample: 20261128T043000Z
snapshot_created:
  description: Whether a new snapshot was written (would be, in check mode).
  returned: when O(mode=snapshot)
  type: bool
snapshots_kept:
  description: Snapshots kept by the retention policy.
  returned: when O(mode=snapshot)
  type: list
  elements: str
snapshots_removed:
  description: Snapshots removed by the retention policy (would be, in check mode).
  returned: when O(mode=snapshot)
  type: list
  elements: str
verified:
  description: With O(mode=verify), whether every source file is in O(dest) and equal.
  returned: when O(mode=verify)
  type: bool
  sample: false
missing:
  description: With O(mode=verify), the first 100 source files O(dest) lacks.
  returned: when O(mode=verify)
  type: list
  elements: str
different:
  description: With O(mode=verify), the first 100 files that differ.
  returned: when O(mode=verify)
  type: list
  elements: str
extraneous:
  description: With O(mode=verify) or O(mode=mirror), the first 100 files of O(dest) that O(src) lacks.
  returned: always
  type: list
  elements: str
src_snapshot:
  description: With O(src_snapshot), the name of the snapshot copied from.
  returned: when O(src_snapshot) is set
  type: str
  sample: 20261128T043000Z
skipped_symlinks:
  description:
    - Symlinks of a local O(src) that were not followed (the first 100), with the link's key, its target and why.
  returned: always
  type: list
  elements: dict
  sample: [{path: "1/abc/artifacts/passwd", target: /etc/passwd, reason: "symlink not followed (symlinks=skip)"}]
skipped_symlinks_count:
  description: How many symlinks were not followed.
  returned: always
  type: int
skipped_symlinks_truncated:
  description: Whether RV(skipped_symlinks) lists only the first 100.
  returned: always
  type: bool
skipped_reserved:
  description:
    - Files of a directory this module writes whose names start with C(.mlflowops-) but are neither escaped user
      files nor this module's own files (for example written there by another program); they are left alone.
  returned: always
  type: list
  elements: str
stale_temp_files:
  description: Temporary files C(.mlflowops-tmp-*) older than one hour found in a local O(dest) (the first 100).
  returned: always
  type: list
  elements: str
stale_temps_removed:
  description:
    - How many of them were removed (none in check mode and with O(mode=verify)).
    - With O(mode=snapshot) on a local O(dest), the number of partial snapshots C(.mlflowops-partial-*) of crashed
      runs, older than one hour, that were removed (younger ones may belong to a run still going and are kept).
  returned: always
  type: int
counts:
  description: With O(mode=verify), the numbers of missing, different and extraneous files.
  returned: when O(mode=verify)
  type: dict
  sample: {missing: 1, different: 0, extraneous: 0}
"""

import os

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, MaintenanceError, Stopwatch
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_localfs as localfs
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_snapshots as snapshots
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_sync as sync_utils


def open_location(location, params, what, client_holder, deadline=None):
    if s3_utils.is_s3_url(location):
        bucket, prefix = s3_utils.parse_s3_url(location)
        if client_holder.get("client") is None:
            client_holder["client"] = s3_utils.build_client(params, pool_size=params["concurrency"], deadline=deadline)
        s3_utils.check_bucket(client_holder["client"], bucket, what)
        return sync_utils.S3Store(client_holder["client"], bucket, prefix)
    if "://" in location:
        raise MaintenanceError("%s must be a local directory or s3://bucket/prefix, got %r" % (what, location))
    if what == "dest":
        # Written by this module: reserved names are escaped, nothing is written through a symlink.
        return sync_utils.LocalStore(location, managed=True, role="dest")
    return sync_utils.LocalStore(location, symlinks=params.get("symlinks") or "skip", role="src")


def refuse_overlap(src, dest):
    if src.kind == "local" and dest.kind == "local":
        src_path = os.path.realpath(src.root)
        dest_path = os.path.realpath(dest.root)
        if dest_path == src_path or dest_path.startswith(src_path.rstrip(os.sep) + os.sep):
            raise MaintenanceError("dest %s lies inside src %s; choose a destination outside the source" % (dest.root, src.root))
    elif src.kind == "s3" and dest.kind == "s3" and src.bucket == dest.bucket:
        if sync_utils.inside(dest.prefix, src.prefix):
            raise MaintenanceError("dest %s lies inside src %s; choose a destination outside the source" % (dest, src))


def resolve_snapshot_source(src, name):
    if src.kind == "local":
        names = snapshots.local_snapshots(src.root)
        chosen = names[-1] if (name == "latest" and names) else (name if name in names else None)
        if chosen is None:
            raise MaintenanceError("no snapshot %r in %s (have: %s)" % (name, src.root, ", ".join(names[-5:]) or "none"))
        return sync_utils.LocalStore(os.path.join(src.root, chosen), managed=True, role="src"), chosen
    names = snapshots.s3_snapshots(src)
    chosen = names[-1] if (name == "latest" and names) else (name if name in names else None)
    if chosen is None:
        raise MaintenanceError("no snapshot %r in %s (have: %s)" % (name, src, ", ".join(names[-5:]) or "none"))
    return snapshots.SnapshotView(src, chosen), chosen


def run(module):
    """Validate every option first, then run the job under the task's deadline (partial progress on failure)."""
    params = module.params
    stopwatch = Stopwatch()
    artifact_names.validate_params(params)
    deadline = getattr(module, "deadline", None) or Deadline(params.get("deadline"))
    result = sync_utils.Result()
    out = sync_utils.run_with_deadline(lambda: copy_job(params, module.check_mode, deadline, result), deadline,
                                       progress=result.progress, hard_exit=True)
    out["duration_s"] = stopwatch.elapsed()
    return out


def copy_job(params, check_mode, deadline, result):
    holder = {}
    src = open_location(params["src"], params, "src", holder, deadline)
    dest = open_location(params["dest"], params, "dest", holder, deadline)
    refuse_overlap(src, dest)
    if src.kind == "local" and not src.exists():
        raise MaintenanceError("src %s is not a directory" % src.root)
    transfer = sync_utils.Transfer(params, retries=params.get("s3_retries", 3), deadline=deadline)
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
        policy = dict((key, params[key]) for key in artifact_names.RETENTION_KEYS if params[key])
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
            out.update(verified=not (result.missing_count or result.different_count or result.error_count),
                       missing=result.missing, different=result.different,
                       counts=dict(missing=result.missing_count, different=result.different_count,
                                   extraneous=result.extraneous_count))
        else:
            out["changed"] = bool(result.copied or result.deleted or result.stale_temps_removed)
            if dest.kind == "local" and not result.error_count:
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
    out.update(copied=result.copied, unchanged=result.skipped, deleted=result.deleted, linked=result.linked,
               bytes_copied=result.bytes_copied, bytes_deleted=result.bytes_deleted, errors=result.errors,
               error_count=result.error_count, copied_keys=result.copied_keys, deleted_keys=result.deleted_keys,
               extraneous=result.extraneous,
               skipped_symlinks=links.items if links else [], skipped_symlinks_count=links.count if links else 0,
               skipped_symlinks_truncated=links.truncated if links else False,
               skipped_reserved=reserved[:sync_utils.MAX_LISTED],
               stale_temp_files=dest.stale_temps.items if dest.kind == "local" else [],
               stale_temps_removed=result.stale_temps_removed)
    return out


def main():
    argument_spec = dict(
        src=dict(type="str", required=True),
        dest=dict(type="str", required=True),
        mode=dict(type="str", default="mirror", choices=["mirror", "snapshot", "verify"]),
        compare=dict(type="str", default="auto", choices=["auto", "checksum", "size"]),
        delete_extraneous=dict(type="bool", default=False),
        concurrency=dict(type="int", default=16),
        copy_multipart_threshold_mb=dict(type="int", default=5120),
        src_snapshot=dict(type="str"),
        snapshot_if_unchanged=dict(type="bool", default=False),
        keep_last=dict(type="int"),
        keep_hourly=dict(type="int"),
        keep_daily=dict(type="int"),
        keep_weekly=dict(type="int"),
        keep_monthly=dict(type="int"),
        keep_yearly=dict(type="int"),
        symlinks=dict(type="str", default="skip", choices=list(artifact_names.SYMLINK_POLICIES)),
        max_consecutive_failures=dict(type="int", default=artifact_names.MAX_CONSECUTIVE_FAILURES),
    )
    module = MlflowOpsModule(argument_spec=argument_spec)

    def job():
        out = run(module)
        if out["error_count"]:
            raise MaintenanceError("%d file(s) failed; first: %s" % (out["error_count"], out["errors"][0]), **out)
        return out

    module.run(job, describe=sync_utils.describe_failure)


if __name__ == "__main__":
    main()
