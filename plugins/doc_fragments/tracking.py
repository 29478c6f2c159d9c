# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of every module that talks to a tracking server's REST API.
    DOCUMENTATION = r"""
options:
  tracking_uri:
    description:
      - Base address of the MLflow tracking server, for example C(https://mlflow.example.com).
      - If not set, the value of the E(MLFLOW_TRACKING_URI) environment variable is used.
    type: str
    required: true
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
    type: float
    default: 30
  retries:
    description:
      - How many times to retry a request that failed to connect or got HTTP 429 or 5xx,
        with jittered exponential backoff between attempts.
    type: int
    default: 3
requirements:
  - requests >= 2.25
"""
