# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deletion of one run's (or logged model's) artifacts, on disk, in S3, or through MLflow's repositories."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil

from ansible_collections.mlflowops.maintenance.plugins.module_utils.artifact_locations import (
    MLFLOW_ARTIFACTS_SCHEME,
    resolve_artifact_location,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.s3 import build_client


def local_tree_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class ArtifactDeleter:
    """Deletes one run's artifacts; returns bytes freed (None when unknown)."""

    def __init__(self, artifacts_destination=None, tracking_uri=None, s3_params=None, s3_client_factory=None,
                 pool_size=16):
        self.artifacts_destination = artifacts_destination
        self.tracking_uri = tracking_uri
        self._s3_params = dict(s3_params or {})
        self._s3_client_factory = s3_client_factory
        self._pool_size = pool_size
        self._s3 = None

    def s3(self):
        """The S3 client, built on first use from the module's S3 options (the one client factory)."""
        if self._s3 is None:
            if self._s3_client_factory is not None:
                self._s3 = self._s3_client_factory()
            else:
                self._s3 = build_client(self._s3_params, pool_size=self._pool_size)
        return self._s3

    def delete(self, artifact_uri, run_id=None):
        kind, where = resolve_artifact_location(artifact_uri, self.artifacts_destination)
        if kind == "none":
            return 0
        if kind == "local":
            size = 0
            if os.path.isdir(where) and not os.path.islink(where):
                size = local_tree_size(where)
                shutil.rmtree(where)
            elif os.path.lexists(where):
                size = os.lstat(where).st_size
                os.remove(where)
            self._remove_empty_run_dir(where, run_id)
            return size
        if kind == "s3":
            return self._delete_s3(*where)
        return self._delete_with_mlflow(where)

    @staticmethod
    def _remove_empty_run_dir(where, run_id):
        """``<run_id>/artifacts`` leaves ``<run_id>/`` behind: remove it when empty."""
        parent = os.path.dirname(where.rstrip("/"))
        if run_id and os.path.basename(parent) == run_id:
            try:
                os.rmdir(parent)
            except OSError:
                pass

    def _delete_s3(self, bucket, prefix):
        if not prefix:
            raise MaintenanceError("refusing to delete the whole bucket %s" % bucket)
        client = self.s3()
        freed = 0
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            contents = page.get("Contents") or []
            if not contents:
                continue
            response = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": item["Key"]} for item in contents], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                raise MaintenanceError("S3 refused to delete %d objects under s3://%s/%s (first: %s %s)"
                                       % (len(errors), bucket, prefix, errors[0].get("Code"), errors[0].get("Message")))
            freed += sum(int(item.get("Size") or 0) for item in contents)
        return freed

    def _delete_with_mlflow(self, uri):
        if uri.startswith(MLFLOW_ARTIFACTS_SCHEME + ":") and not self.tracking_uri and not os.environ.get(
                "MLFLOW_TRACKING_URI"):
            raise MaintenanceError("cannot resolve %s: set artifacts_destination (or tracking_uri)" % uri)
        from mlflow.store.artifact.artifact_repository_registry import (  # pylint: disable=import-outside-toplevel
            get_artifact_repository,
        )
        if self.tracking_uri:
            import mlflow  # pylint: disable=import-outside-toplevel
            mlflow.set_tracking_uri(self.tracking_uri)
        get_artifact_repository(uri).delete_artifacts()
        return None
