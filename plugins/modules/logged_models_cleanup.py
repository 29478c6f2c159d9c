#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: logged_models_cleanup
short_description: Soft-delete old MLflow 3 logged models, sparing registered and keep-tagged ones
version_added: 0.2.0
description:
  - Retention for MLflow 3 logged models through the tracking server's REST API
    (C(/api/2.0/mlflow/logged-models/search), C(DELETE /api/2.0/mlflow/logged-models/<id>)); it never imports mlflow.
  - Selects logged models created longer ago than O(older_than) in O(experiments), ANDed with O(filter), every page,
    in every selected workspace, and soft-deletes them with bounded concurrency.
  - A logged model that a registered model version points to (its C(model_id), or a source of C(models:/<id>) or
    inside the model's artifact location) is never deleted, nor one carrying O(keep_tag).
  - The whole selection is counted first; when it holds more than O(max_delete) models the task fails before
    changing anything.
  - If the server goes away midway (or the O(deadline) passes), the task fails saying how many models were deleted
    and how many remain; running it again completes the job.
  - MLflow offers no restore for logged models, so there is no C(state=active) undo as in
    M(mlflowops.maintenance.runs_cleanup); a soft-deleted model keeps its rows and artifacts until
    M(mlflowops.maintenance.gc) purges it, and can be brought back only by setting its C(lifecycle_stage) in the
    database before that.
author:
  - mlflowops maintainers (@mlflowops)
extends_documentation_fragment:
  - mlflowops.maintenance.common
  - mlflowops.maintenance.tracking
  - mlflowops.maintenance.backend_store
  - mlflowops.maintenance.s3
options:
  older_than:
    description:
      - Age of the models to delete, measured on their creation time, in C(mlflow gc --older-than) syntax
        (V(30d), V(12h), V(1d2h), V(2w)); a bare number is seconds.
      - When not set, every model matching O(experiments) and O(filter) is selected.
    type: str
  experiments:
    description:
      - Experiment names or ids. A numeric entry is tried as an id first, then as a name. Unknown ones fail the task
        before anything changes. Default is every active experiment (in each selected workspace).
    type: list
    elements: str
  filter:
    description:
      - An extra logged-model search filter, ANDed with the age, for example C(status = 'FAILED') or
        C(tags.team = 'vision'). Only AND is supported.
    type: str
  keep_tag:
    description:
      - Models carrying this tag with any value except V(false), V(0), V(no) or V(off) are never deleted.
        An empty string disables the protection.
    type: str
    default: mlflowops.keep
  protect_registered:
    description:
      - Protect models that a registered model version points to. Leave it on.
    type: bool
    default: true
  max_delete:
    description:
      - Safety cap on the models one invocation deletes; a larger selection fails before any change.
        V(-1) disables the cap.
    type: int
    default: 10000
  concurrency:
    description:
      - Delete requests in flight at once. At least V(1).
    type: int
    default: 8
  model_ids_limit:
    description:
      - The most model ids listed in RV(model_ids) and RV(protected_model_ids).
    type: int
    default: 1000
attributes:
  check_mode:
    support: full
    description: Selects through the same code path and reports counts and ids; changes nothing.
  diff_mode:
    support: none
    description: Results list the affected model ids instead of a diff.
requirements:
  - requests >= 2.25
notes:
  - Uses the tracking family. With O(workspace) (a name, a list, or V(all)) the cleanup runs in each of those
    workspaces of a server started with C(--enable-workspaces); on a server without workspaces, setting it fails
    before any change.
  - The backend store and S3 families are accepted for C(module_defaults) and ignored.
  - A second identical invocation reports C(changed=false).
seealso:
  - module: mlflowops.maintenance.gc
  - module: mlflowops.maintenance.traces_cleanup
"""

EXAMPLES = r"""
- name: Soft-delete logged models older than 90 days that no registered model version uses
  mlflowops.maintenance.logged_models_cleanup:
    tracking_uri: https://mlflow.example.com
    token: "{{ mlflow_token }}"
    older_than: 90d

- name: Then purge them (rows and artifacts) once the grace period has passed
  mlflowops.maintenance.gc:
    backend_store_uri: "{{ mlflow_backend_store_uri }}"
    artifacts_destination: /srv/mlflow/artifacts
    older_than: 7d
"""

RETURN = r"""
deleted:
  description: Logged models soft-deleted (in check mode, that would be).
  returned: always
  type: int
  sample: 42
selected:
  description: Models the selection held.
  returned: always
  type: int
protected:
  description: Selected models kept because a registered model version points to them, or because of the keep tag.
  returned: always
  type: int
protected_reasons:
  description: Count of protected models by reason (C(registered_model), C(keep_tag)).
  returned: always
  type: dict
model_ids:
  description: Ids of the models deleted, at most O(model_ids_limit).
  returned: always
  type: list
  elements: str
protected_model_ids:
  description: Ids of the protected models, at most O(model_ids_limit).
  returned: always
  type: list
  elements: str
model_ids_truncated:
  description: Whether RV(model_ids) or RV(protected_model_ids) was cut at O(model_ids_limit).
  returned: always
  type: bool
deleted_per_experiment:
  description: Models deleted per experiment id (C(<workspace>/<id>) when workspaces are used).
  returned: always
  type: dict
search_filter:
  description: The server-side logged-model search filter.
  returned: always
  type: str
failures:
  description: Models whose deletion failed with an error other than a lost server, as C(id) and C(msg).
  returned: always
  type: list
  elements: dict
failure_count:
  description: How many models could not be deleted.
  returned: always
  type: int
failures_truncated:
  description: Whether RV(failures) lists only the first 50.
  returned: always
  type: bool
duration_s:
  description: Wall-clock seconds the module took.
  returned: always
  type: float
"""

import time

from ansible_collections.mlflowops.maintenance.plugins.module_utils.base import MlflowOpsModule
from ansible_collections.mlflowops.maintenance.plugins.module_utils.logged_models import run_logged_models_cleanup
from ansible_collections.mlflowops.maintenance.plugins.module_utils.mlflow3_cleanup import (
    cleanup_argument_spec,
    normalise_workspaces,
    tracking_targets,
    validate_common,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.run_selection import check_count
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient


def main():
    argument_spec = cleanup_argument_spec(
        10000,
        protect_registered=dict(type="bool", default=True),
        concurrency=dict(type="int", default=8),
        model_ids_limit=dict(type="int", default=1000),
    )
    module = MlflowOpsModule(supports_check_mode=True, argument_spec=argument_spec, requires=("tracking",))

    def job():
        # Every option is checked before the first request (the job checks them again, harmlessly).
        validate_common(module.params, int(time.time() * 1000))
        check_count(module.params["model_ids_limit"], "model_ids_limit", 0)
        normalise_workspaces(module.params.get("workspace"))
        targets = tracking_targets(module, TrackingClient.from_module, deadline=module.deadline,
                                   pool_size=max(16, module.params["concurrency"] * 2))
        return run_logged_models_cleanup(module.params, targets, check_mode=module.check_mode, deadline=module.deadline)

    module.run(job)


if __name__ == "__main__":
    main()
