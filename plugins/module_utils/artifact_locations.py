# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a run's artifacts live, from the URI the tracking store records (pure, no I/O)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit

MLFLOW_ARTIFACTS_SCHEME = "mlflow-artifacts"


def mlflow_artifacts_path(uri):
    """The path part of a proxied ``mlflow-artifacts:`` URI (``mlflow-artifacts://host:port/a/b`` -> ``a/b``)."""
    rest = uri[len(MLFLOW_ARTIFACTS_SCHEME) + 1:]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest.split("/", 1)[1] if "/" in rest else ""
    return rest.strip("/")


def resolve_artifact_location(artifact_uri, artifacts_destination=None):
    """Where a run's artifacts live: ``("local", path)``, ``("s3", (bucket, prefix))``, ``("mlflow", uri)``
    (anything MLflow's own artifact repositories must handle) or ``("none", None)``.

    ``mlflow-artifacts:`` URIs are mapped onto ``artifacts_destination`` when it is given.
    """
    uri = (artifact_uri or "").strip()
    if not uri:
        return "none", None
    if uri.startswith(MLFLOW_ARTIFACTS_SCHEME + ":"):
        if not artifacts_destination:
            return "mlflow", uri
        destination = artifacts_destination.rstrip("/")
        path = mlflow_artifacts_path(uri)
        uri = destination + ("/" + path if path else "")
    if uri.startswith("s3://"):
        bucket, _sep, key = uri[len("s3://"):].partition("/")
        key = key.strip("/")
        return "s3", (bucket, key + "/" if key else "")
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        return "local", unquote(parts.path)
    if uri.startswith("/"):
        return "local", uri
    return "mlflow", uri
