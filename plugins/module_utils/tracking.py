# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small REST client for MLflow tracking servers, without importing mlflow.

It pages through every search, retries with jittered backoff on connection errors, 429 and
5xx, puts a timeout on every request, and runs per-run calls with bounded concurrency.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    MaintenanceError,
    bounded_parallel_map,
    jittered_backoff,
)

REQUESTS_IMPORT_ERROR = None
try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError:
    requests = None
    HTTPAdapter = object
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

API_PREFIX = "/api/2.0/mlflow/"
RETRY_STATUSES = frozenset([429, 500, 502, 503, 504])
SEARCH_PAGE_SIZE = 1000

TRACKING_ARGUMENT_SPEC = dict(
    tracking_uri=dict(type="str", required=True, fallback=(env_fallback, ["MLFLOW_TRACKING_URI"])),
    username=dict(type="str", fallback=(env_fallback, ["MLFLOW_TRACKING_USERNAME"])),
    password=dict(type="str", no_log=True, fallback=(env_fallback, ["MLFLOW_TRACKING_PASSWORD"])),
    token=dict(type="str", no_log=True, fallback=(env_fallback, ["MLFLOW_TRACKING_TOKEN"])),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="float", default=30.0),
    retries=dict(type="int", default=3),
)


def tracking_argument_spec(**overrides):
    """The tracking options, as documented by the ``mlflowops.maintenance.tracking`` fragment."""
    spec = dict((name, dict(option)) for name, option in TRACKING_ARGUMENT_SPEC.items())
    for name, option in overrides.items():
        spec[name].update(option)
    return spec


class TrackingError(MaintenanceError):
    """A request to the tracking server failed; ``kind`` says how, for health checks."""

    def __init__(self, msg, kind, status=None):
        super(TrackingError, self).__init__(msg, kind=kind, status=status)
        self.kind = kind
        self.status = status


def _is_retryable(exc):
    if isinstance(exc, TrackingError):
        return exc.kind == "connection" or exc.status in RETRY_STATUSES
    return False


def _first_line(text, limit=300):
    text = str(text).strip().splitlines()
    return (text[0] if text else "")[:limit]


def describe_request_error(exc):
    """(kind, one-line reason) for a requests exception; kinds: timeout, tls, connection."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls", "TLS error: %s" % _first_line(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timeout", "timed out connecting"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout", "no answer within the timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = str(exc)
        if "Connection refused" in reason:
            return "connection", "connection refused"
        if "Name or service not known" in reason or "Failed to resolve" in reason:
            return "connection", "host name does not resolve"
        return "connection", "connection failed: %s" % _first_line(reason)
    return "error", _first_line(exc)


class TrackingClient:
    """REST client bound to one tracking server."""

    def __init__(self, tracking_uri, username=None, password=None, token=None, validate_certs=True,
                 ca_path=None, timeout=30.0, retries=3, pool_size=16):
        if requests is None:
            raise MaintenanceError(missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
        uri = (tracking_uri or "").strip().rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise MaintenanceError(
                "tracking_uri must be the http:// or https:// address of a tracking server, got %r" % tracking_uri
            )
        self.base_url = uri
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(2, pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "mlflowops.maintenance"
        if token:
            self.session.headers["Authorization"] = "Bearer %s" % token
        elif username or password:
            self.session.auth = (username or "", password or "")
        # Passed on every request: a session-level ``verify`` loses to REQUESTS_CA_BUNDLE in requests.
        self.verify = ca_path if (validate_certs and ca_path) else bool(validate_certs)

    @classmethod
    def from_module(cls, module, **kwargs):
        params = module.params
        return cls(
            params["tracking_uri"], username=params.get("username"), password=params.get("password"),
            token=params.get("token"), validate_certs=params.get("validate_certs", True),
            ca_path=params.get("ca_path"), timeout=params.get("timeout", 30.0),
            retries=params.get("retries", 3), **kwargs
        )

    def url(self, path):
        if path.startswith("/"):
            return self.base_url + path
        return self.base_url + API_PREFIX + path

    def timed_request(self, method, path, **kwargs):
        """One attempt, no retry: ``(response, seconds)``; raises TrackingError on transport errors."""
        started = time.monotonic()
        try:
            response = self.session.request(method, self.url(path), timeout=self.timeout, verify=self.verify,
                                            **kwargs)
        except requests.exceptions.RequestException as exc:
            kind, reason = describe_request_error(exc)
            raise TrackingError("%s %s: %s" % (method, self.url(path), reason), kind)
        return response, time.monotonic() - started

    @jittered_backoff(retries=3, delay=0.5, max_delay=8.0, should_retry=_is_retryable)
    def call(self, method, path, json_body=None, params=None):
        """A REST API call that returns the decoded JSON body or raises TrackingError."""
        response, _elapsed = self.timed_request(method, path, json=json_body, params=params)
        if response.status_code >= 400:
            raise TrackingError(self._error_message(method, path, response), "http", response.status_code)
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise TrackingError(
                "%s %s did not answer with JSON (is this an MLflow tracking server?)" % (method, self.url(path)),
                "protocol", response.status_code,
            )

    def _error_message(self, method, path, response):
        detail = ""
        try:
            body = response.json()
            detail = body.get("message") or body.get("error_code") or ""
        except ValueError:
            detail = _first_line(response.text, 200)
        if response.status_code in (401, 403):
            detail = "authentication failed (%s)" % (detail or response.reason)
        return "%s %s returned HTTP %s: %s" % (method, self.url(path), response.status_code, detail)

    def get(self, path, **params):
        return self.call("GET", path, params=params or None)

    def post(self, path, body):
        return self.call("POST", path, json_body=body)

    def paged(self, path, body, key, page_size=SEARCH_PAGE_SIZE, method="POST"):
        """Yield every item of a paged search, following ``next_page_token`` to the end.

        ``method="GET"`` sends ``body`` as query parameters (model-versions/search only takes GET).
        """
        body = dict(body, max_results=page_size)
        while True:
            page = self.post(path, body) if method == "POST" else self.get(path, **body)
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return
            body["page_token"] = token

    def search_experiments(self, view_type="ACTIVE_ONLY", filter_string=None):
        body = {"view_type": view_type}
        if filter_string:
            body["filter"] = filter_string
        return self.paged("experiments/search", body, "experiments")

    def search_runs(self, experiment_ids, filter_string="", run_view_type="ACTIVE_ONLY", order_by=None,
                    page_size=SEARCH_PAGE_SIZE):
        body = {"experiment_ids": list(experiment_ids), "filter": filter_string or "",
                "run_view_type": run_view_type}
        if order_by:
            body["order_by"] = list(order_by)
        return self.paged("runs/search", body, "runs", page_size=page_size)

    def get_experiment_by_name(self, name):
        try:
            return self.get("experiments/get-by-name", experiment_name=name)["experiment"]
        except TrackingError as exc:
            if exc.status == 404:
                return None
            raise

    def get_experiment(self, experiment_id):
        try:
            return self.get("experiments/get", experiment_id=experiment_id)["experiment"]
        except TrackingError as exc:
            if exc.status in (400, 404):
                return None
            raise

    def search_model_versions(self, filter_string=""):
        body = {"filter": filter_string} if filter_string else {}
        return self.paged("model-versions/search", body, "model_versions", page_size=SEARCH_PAGE_SIZE,
                          method="GET")

    def map_concurrently(self, func, items, concurrency):
        """``bounded_parallel_map`` over this client's pooled connections."""
        return bounded_parallel_map(func, items, concurrency)
