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
  - Local files are written under a temporary name C(.mlflowops-tmp-*), then renamed into place; the
    destination's filesystem is flushed once (C(syncfs)) after the last file and before the manifest, instead of
    one fsync per file.
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
  - mlflowops.maintenance.retention
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
      - Most files or objects in flight at once. Local to local copies run on one thread (beside the two
        listings), since more threads there only add interpreter lock hand-offs.
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
  - O(retention) applies to O(mode=snapshot) and follows restic's C(forget) rules; with no rule set every snapshot
    is kept. S3 blobs no kept snapshot references are deleted after the snapshot manifests.
  - A run with failed files fails, with the first failures in its RV(failures) result; the manifest is then not
    written.
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
    retention:
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
unchanged_count:
  description:
    - Files already up to date, not copied (in a snapshot, hard-linked or already stored).
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
copied_bytes:
  description: Bytes copied (or that would be).
  returned: always
  type: int
  sample: 10485760
deleted_bytes:
  description: Bytes deleted (or that would be).
  returned: always
  type: int
  sample: 0
duration_s:
  description: Wall-clock seconds the run took.
  returned: always
  type: float
  sample: 3.52
failures:
  description: The first 100 files that failed, as C(id) (the key) and C(msg) (the reason).
  returned: always
  type: list
  elements: dict
  sample: [{id: 1/abc/artifacts/model.pkl, msg: "AccessDenied: Access Denied"}]
failure_count:
  description: How many files failed.
  returned: always
  type: int
  sample: 0
failures_truncated:
  description: Whether RV(failures) lists only the first 100.
  returned: always
  type: bool
copied_keys:
  description: The first 100 keys copied.
  returned: always
  type: list
  elements: str
copied_keys_truncated:
  description: Whether RV(copied_keys) lists only the first 100.
  returned: always
  type: bool
deleted_keys:
  description: The first 100 keys deleted.
  returned: always
  type: list
  elements: str
deleted_keys_truncated:
  description: Whether RV(deleted_keys) lists only the first 100.
  returned: always
  type: bool
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
missing_truncated:
  description: Whether RV(missing) lists only the first 100.
  returned: when O(mode=verify)
  type: bool
different:
  description: With O(mode=verify), the first 100 files that differ.
  returned: when O(mode=verify)
  type: list
  elements: str
different_truncated:
  description: Whether RV(different) lists only the first 100.
  returned: when O(mode=verify)
  type: bool
extraneous:
  description: With O(mode=verify) or O(mode=mirror), the first 100 files of O(dest) that O(src) lacks.
  returned: always
  type: list
  elements: str
extraneous_truncated:
  description: Whether RV(extraneous) lists only the first 100.
  returned: always
  type: bool
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
skipped_reserved_truncated:
  description: Whether RV(skipped_reserved) lists only the first 100.
  returned: always
  type: bool
stale_temp_files:
  description: Temporary files C(.mlflowops-tmp-*) older than one hour found in a local O(dest) (the first 100).
  returned: always
  type: list
  elements: str
stale_temp_files_truncated:
  description: Whether RV(stale_temp_files) lists only the first 100.
  returned: always
  type: bool
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

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils import artifact_names
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import describe_failure
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifacts_backup_job import run
from ansible_collections.mlflowops.maintenance.plugins.module_utils.retention import retention_argument_spec


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
        retention=retention_argument_spec(),
        symlinks=dict(type="str", default="skip", choices=list(artifact_names.SYMLINK_POLICIES)),
        max_consecutive_failures=dict(type="int", default=artifact_names.MAX_CONSECUTIVE_FAILURES),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec)
    module.run(run, module.params, module.check_mode, module.deadline, describe=describe_failure)


if __name__ == "__main__":
    main()
