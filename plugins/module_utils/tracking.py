# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small REST client for MLflow tracking servers, without importing mlflow.

It pages through every search, retries with jittered backoff on connection errors, 429 and
5xx, puts a timeout on every request, and runs per-run calls with bounded concurrency.

With a ``common.Deadline``, every request attempt is also bounded by the task's remaining wall-clock
time: requests' own read timeout is a gap between bytes, so a server trickling one byte a second never
trips it. Each attempt then runs in a daemon thread that the caller waits for at most until the
deadline; past it the call raises ``RequestDeadlineExceeded``. After ``fail_fast_after`` consecutive
calls that failed on the transport (refused, timed out, 5xx after retries), every further call fails at
once with ``kind="gone"``, so a job over thousands of runs stops instead of waiting out each one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.six.moves.urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import (
    DeadlineExceeded,
    MaintenanceError,
    backoff_delays,
    bounded_parallel_map,
    run_bounded,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import redact_uri

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


def split_userinfo(uri):
    """``(uri without userinfo, user, password)``; user and password are decoded, None when absent."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri, None, None
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _sep, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    stripped = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return stripped, unquote(user) or None, (unquote(password) if colon else None) or None


WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"


def single_workspace(value):
    """The one workspace of the ``workspace`` option (None when unset); lists and ``all`` are for cleanup modules."""
    names = [str(item).strip() for item in (value if isinstance(value, (list, tuple)) else [value] if value else [])]
    names = [name for name in names if name]
    if not names:
        return None
    if len(names) > 1 or names[0] == "all":
        raise MaintenanceError("workspace: this module acts in one workspace; a list of workspaces or 'all' is accepted "
                               "by traces_cleanup, logged_models_cleanup, runs_cleanup, artifacts_audit and gc only")
    return names[0]


class TrackingError(MaintenanceError):
    """A request to the tracking server failed; ``kind`` says how, for health checks."""

    def __init__(self, msg, kind, status=None):
        super(TrackingError, self).__init__(msg, kind=kind, status=status)
        self.kind = kind
        self.status = status


class RequestDeadlineExceeded(TrackingError, DeadlineExceeded):
    """A request was cut off (or not started) because the task's deadline passed."""

    def __init__(self, msg):
        super(RequestDeadlineExceeded, self).__init__(msg, "deadline")


TRANSPORT_KINDS = frozenset(["connection", "timeout", "gone"])
FAIL_FAST_AFTER = 3
ATTEMPT_GRACE = 0.25


def _is_retryable(exc):
    if isinstance(exc, TrackingError):
        return exc.kind == "connection" or exc.status in RETRY_STATUSES
    return False


def is_transport_failure(exc):
    """Whether a failed call says the server is unreachable or unwell (not a 4xx about this request)."""
    return isinstance(exc, TrackingError) and (exc.kind in TRANSPORT_KINDS or exc.status in RETRY_STATUSES)


def request_timeout(timeout, deadline):
    """(connect, read) timeouts of one attempt: ``timeout`` capped by the deadline's remaining seconds."""
    value = float(timeout)
    if deadline is not None:
        value = deadline.remaining(value)
    return (value, value)


def _seconds(value):
    return ("%.1f" % value).rstrip("0").rstrip(".")


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
                 ca_path=None, timeout=30.0, retries=3, pool_size=16, deadline=None, fail_fast_after=FAIL_FAST_AFTER,
                 attempt_limit=None, workspace=None):
        if requests is None:
            raise MaintenanceError(missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
        uri, uri_username, uri_password = split_userinfo((tracking_uri or "").strip().rstrip("/"))
        if not uri.startswith(("http://", "https://")):
            raise MaintenanceError(
                "tracking_uri must be the http:// or https:// address of a tracking server, got %r"
                % redact_uri(tracking_uri)
            )
        # Credentials written in the URI (http://user:pw@host) are basic auth; the options win over them.
        username = username or uri_username
        password = password or uri_password
        self.base_url = uri
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.deadline = deadline
        # Whole-attempt wall-clock bound (connect + complete answer), for probes that must answer within ``timeout``.
        self.attempt_limit = float(attempt_limit) if attempt_limit else None
        self.fail_fast_after = max(1, int(fail_fast_after))
        self.consecutive_failures = 0
        self.last_transport_error = None
        self._failure_lock = threading.Lock()
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
        if workspace:
            self.session.headers[WORKSPACE_HEADER] = workspace

    @classmethod
    def from_module(cls, module, **kwargs):
        params = module.params
        kwargs.setdefault("deadline", getattr(module, "deadline", None))
        if "workspace" not in kwargs:
            kwargs["workspace"] = single_workspace(params.get("workspace"))
        return cls(
            params["tracking_uri"], username=params.get("username"), password=params.get("password"),
            token=params.get("token"), validate_certs=params.get("validate_certs", True),
            ca_path=params.get("ca_path"), timeout=params.get("timeout", 30.0),
            retries=params.get("retries", 3), **kwargs
        )

    def check_deadline(self, method, path):
        if self.deadline is not None and self.deadline.expired():
            raise RequestDeadlineExceeded("%s %s: not sent, the task's deadline of %ss has passed"
                                          % (method, self.url(path), int(self.deadline.seconds)))

    def url(self, path):
        if path.startswith("/"):
            return self.base_url + path
        return self.base_url + API_PREFIX + path

    def timed_request(self, method, path, **kwargs):
        """One attempt, no retry: ``(response, seconds)``; raises TrackingError on transport errors."""
        self.check_deadline(method, path)
        started = time.monotonic()
        timeout = request_timeout(self.timeout, self.deadline)

        def attempt():
            response = self.session.request(method, self.url(path), timeout=timeout, verify=self.verify, **kwargs)
            # Read the whole body here, inside the wall-clock bound.
            response.content  # pylint: disable=pointless-statement
            return response

        wall_clock = None if self.deadline is None or self.deadline.seconds is None else self.deadline.remaining()
        by_deadline = wall_clock is not None and (self.attempt_limit is None or wall_clock < self.attempt_limit)
        if self.attempt_limit is not None and not by_deadline:
            # A little grace, so that requests' own timeouts (connect, silent server) report themselves first.
            wall_clock = self.attempt_limit + ATTEMPT_GRACE
        finished, response, error = run_bounded(attempt, wall_clock)
        if not finished:
            if by_deadline:
                raise RequestDeadlineExceeded("%s %s: no complete answer before the task's deadline of %ss"
                                              % (method, self.url(path), int(self.deadline.seconds)))
            raise TrackingError("%s %s: no complete answer within the timeout of %ss (the server answers too slowly)"
                                % (method, self.url(path), _seconds(self.attempt_limit)), "timeout")
        if error is not None:
            if isinstance(error, requests.exceptions.RequestException):
                kind, reason = describe_request_error(error)
                raise TrackingError("%s %s: %s" % (method, self.url(path), reason), kind)
            raise error
        return response, time.monotonic() - started

    def _record(self, error):
        """Count consecutive transport failures; any answer the server gave resets the count."""
        with self._failure_lock:
            if error is not None and is_transport_failure(error):
                self.consecutive_failures += 1
                self.last_transport_error = error
            elif error is None or (isinstance(error, TrackingError) and error.kind == "http"):
                self.consecutive_failures = 0

    def call(self, method, path, json_body=None, params=None):
        """A REST API call that returns the decoded JSON body or raises TrackingError.

        Retries transport errors, 429 and 5xx ``retries`` times with full-jitter backoff, never sleeping
        past the deadline; fails at once after ``fail_fast_after`` consecutive failed calls.
        """
        if self.consecutive_failures >= self.fail_fast_after:
            last = self.last_transport_error
            raise TrackingError("%s %s: not sent, the tracking server failed %d calls in a row (last: %s)"
                                % (method, self.url(path), self.consecutive_failures, getattr(last, "msg", last)),
                                "gone", getattr(last, "status", None))
        delays = backoff_delays(self.retries, 0.5, 8.0) + [None]
        for sleep_for in delays:
            try:
                result = self._call_once(method, path, json_body, params)
            except TrackingError as exc:
                stop = (sleep_for is None or not _is_retryable(exc)
                        or (self.deadline is not None and self.deadline.remaining(sleep_for) < sleep_for))
                if stop:
                    self._record(exc)
                    raise
                time.sleep(sleep_for)
                continue
            self._record(None)
            return result
        raise AssertionError("unreachable")

    def _call_once(self, method, path, json_body, params):
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
