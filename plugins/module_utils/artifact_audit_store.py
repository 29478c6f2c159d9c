# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The artifact-store side of artifacts_audit: opening the destination, listing it (whole, or below the audited
experiments' folders), and removing confirmed orphan folders (never through a symlink; bounded concurrency,
the deadline, and a stop after consecutive failures).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_audit_layout import local_path_of
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_stores import LocalStore, S3Store
from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_transfer import describe_failure
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Failures, MaintenanceError, bounded_parallel_map
from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3 as s3_utils

MAX_LISTED = 100
FAIL_FAST_AFTER = 3


def open_store(params, identity):
    destination = params["artifacts_destination"]
    if identity.kind == "s3":
        bucket, prefix = s3_utils.parse_s3_url(destination)
        client = s3_utils.build_client(params, pool_size=params["concurrency"])
        s3_utils.check_bucket(client, bucket, "artifacts_destination")
        return S3Store(client, bucket, prefix)
    store = LocalStore(local_path_of(destination))
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
            for entry in LocalStore(store.path(prefix)).list():
                entry.key = prefix + "/" + entry.key
                yield entry


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
    progress = dict(removed_objects=0, removed_folders=[], failures=Failures(limit=MAX_LISTED), stopped=None)
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
        reason = describe_failure(error)
        progress["failures"].add(folder, reason)
        if streak[0] >= FAIL_FAST_AFTER and not progress["stopped"]:
            progress["stopped"] = "%d removals failed in a row (last: %s)" % (streak[0], reason)
    return progress
