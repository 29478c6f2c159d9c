# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The tracking family: accepted by every module of the mlflow action group, used by those that talk
    # to a tracking server's REST API (each module's notes say whether it uses or ignores them).
    DOCUMENTATION = r"""
options:
  tracking_uri:
    description:
      - Base address of the MLflow tracking server, for example C(https://mlflow.example.com).
      - If not set, the value of the E(MLFLOW_TRACKING_URI) environment variable is used.
      - Required by the modules that talk to a tracking server; they fail before doing anything when it is unset.
      - Credentials written in the address (C(https://user:password@host)) are used for HTTP basic
        authentication (O(username) and O(password) take precedence) and are never shown in results or messages.
    type: str
  username:
    description:
      - User name for HTTP basic authentication (for example the C(basic-auth) app).
      - If not set, the value of the E(MLFLOW_TRACKING_USERNAME) environment variable is used.
    type: str
  password:
    description:
      - Password for HTTP basic authentication.
      - If not set, the value of the E(MLFLOW_TRACKING_PASSWORD) environment variable is used.
    type: str
  token:
    description:
      - "Bearer token, sent as C(Authorization: Bearer <token>). Takes precedence over O(username) and O(password)."
      - If not set, the value of the E(MLFLOW_TRACKING_TOKEN) environment variable is used.
    type: str
  validate_certs:
    description:
      - Whether to verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of CA certificates to verify the server's certificate against.
    type: path
  timeout:
    description:
      - Seconds to wait for each HTTP connection and response before giving up on that request.
      - The whole task is bounded by O(deadline) on top of this.
    type: float
    default: 30
  retries:
    description:
      - How many times to retry a tracking server request that failed to connect or got HTTP 429 or 5xx,
        with jittered exponential backoff between attempts. S3 requests use O(s3_retries).
    type: int
    default: 3
  workspace:
    description:
      - The MLflow workspace to act in, sent as the C(X-MLFLOW-WORKSPACE) header on every request, for servers
        started with C(--enable-workspaces). Unset means the server's default workspace (no header).
      - Most modules take one workspace. M(mlflowops.maintenance.traces_cleanup),
        M(mlflowops.maintenance.logged_models_cleanup), M(mlflowops.maintenance.runs_cleanup) (with C(method=rest)),
        M(mlflowops.maintenance.artifacts_audit) and M(mlflowops.maintenance.gc) also take a list, or V(all)
        for every workspace; on a server (or store) without workspaces they fail before any change.
      - Falls back to the E(MLFLOW_WORKSPACE) environment variable.
    type: list
    elements: str
"""
