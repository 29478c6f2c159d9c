# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module base of the collection: option families, secrets, one failure path, timing.

Every module of the ``mlflow`` action group builds its module with :class:`MlflowOpsModule`
(in the spirit of amazon.aws's ``AnsibleAWSModule`` and community.general's ``ModuleHelper``):

- it accepts every option family (tracking, backend store, S3, ``deadline``), so one
  ``module_defaults: group/mlflowops.maintenance.mlflow`` block configures the whole collection;
- it registers every form of a secret written inside a URI-bearing option as a no-log value before
  argument validation can fail (the invocation of a failed task is masked too);
- ``run(job)`` is the one failure path: MaintenanceError -> ``fail_json(msg, **details)``,
  OSError -> one line, anything else -> one line (a traceback only at -vvv); every ``msg`` is
  passed through ``redact_uri``;
- ``require_lib`` is the one missing-library check;
- every result (success or failure) carries ``duration_s``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import redact_uri, secret_forms

# The option families. Each is documented by the doc fragment of the same name
# (``tracking``, ``backend_store``, ``s3``; ``deadline`` by ``common``).
TRACKING_FAMILY = dict(
    tracking_uri=dict(type="str", fallback=(env_fallback, ["MLFLOW_TRACKING_URI"])),
    username=dict(type="str", fallback=(env_fallback, ["MLFLOW_TRACKING_USERNAME"])),
    password=dict(type="str", no_log=True, fallback=(env_fallback, ["MLFLOW_TRACKING_PASSWORD"])),
    token=dict(type="str", no_log=True, fallback=(env_fallback, ["MLFLOW_TRACKING_TOKEN"])),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="float", default=30.0),
    retries=dict(type="int", default=3),
    workspace=dict(type="list", elements="str", fallback=(env_fallback, ["MLFLOW_WORKSPACE"])),
)

STORE_FAMILY = dict(
    backend_store_uri=dict(type="str", fallback=(env_fallback, ["MLFLOW_BACKEND_STORE_URI"])),
    db_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    db_connect_timeout=dict(type="int", default=10),
    artifacts_destination=dict(type="str"),
)

S3_FAMILY = dict(
    endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"])),
    region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
    aws_access_key=dict(type="str", no_log=True, aliases=["access_key"]),
    aws_secret_key=dict(type="str", no_log=True, aliases=["secret_key"]),
    session_token=dict(type="str", no_log=True),
    profile=dict(type="str"),
    s3_validate_certs=dict(type="bool", default=True),
    s3_connect_timeout=dict(type="float", default=10.0),
    s3_read_timeout=dict(type="float", default=60.0),
    s3_retries=dict(type="int", default=3),
    multipart_threshold_mb=dict(type="int", default=8),
    multipart_chunksize_mb=dict(type="int", default=8),
)

COMMON_FAMILY = dict(
    deadline=dict(type="int", default=3600),
)

FAMILIES = dict(tracking=TRACKING_FAMILY, store=STORE_FAMILY, s3=S3_FAMILY, common=COMMON_FAMILY)

# The option a module that needs a family cannot do without, and the variable that can stand in for it.
FAMILY_KEY_OPTION = dict(tracking=("tracking_uri", "MLFLOW_TRACKING_URI"),
                         store=("backend_store_uri", "MLFLOW_BACKEND_STORE_URI"))

# Options whose values may carry a secret inside a URI (userinfo or ``password=``).
URI_OPTIONS = ("tracking_uri", "backend_store_uri", "auth_database_uri", "endpoint_url", "artifacts_destination")

# Family options that must not be negative (ints) or must be positive (per-request timeouts).
_NON_NEGATIVE = ("deadline", "retries", "db_connect_timeout", "s3_retries")
_POSITIVE = ("timeout", "s3_connect_timeout", "s3_read_timeout", "multipart_threshold_mb", "multipart_chunksize_mb")


def family_argument_spec():
    """A fresh copy of every family's options (callers may mutate it)."""
    spec = {}
    for family in FAMILIES.values():
        for name, option in family.items():
            spec[name] = dict(option)
    return spec


def merge_argument_spec(own_spec):
    """The families plus a module's own options; a module may not redefine a family option."""
    spec = family_argument_spec()
    clashes = sorted(set(own_spec or {}) & set(spec))
    if clashes:
        raise ValueError("module options %s are family options of MlflowOpsModule; do not redeclare them"
                         % ", ".join(clashes))
    spec.update(own_spec or {})
    return spec


def _string_values(value):
    """Every string inside a (possibly nested) parameter value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _string_values(item)


def uri_secret_forms(params, spec, uri_options=URI_OPTIONS, environ=None):
    """Every form of every secret inside the URI-bearing values of ``params`` and of their fallbacks.

    ``params`` may be the raw, unvalidated module arguments: names are matched with their aliases,
    any string containing ``://`` is scanned too, and the environment variables named in the
    fallbacks of URI options count as well (they are applied during validation).
    """
    environ = os.environ if environ is None else environ
    params = params or {}
    names = set(uri_options)
    for name in list(names):
        names.update((spec.get(name) or {}).get("aliases") or [])
    forms = set()
    for name, value in params.items():
        for text in _string_values(value):
            if name in names or "://" in text:
                forms.update(secret_forms(text))
    for name in uri_options:
        fallback = (spec.get(name) or {}).get("fallback")
        if fallback and fallback[0] is env_fallback:
            for variable in (fallback[1] if len(fallback) > 1 else []):
                if environ.get(variable):
                    forms.update(secret_forms(environ[variable]))
    return forms


def one_line(exc, limit=500):
    """The first line of an exception's text (its class name when it has none), redacted."""
    lines = str(exc).strip().splitlines()
    return redact_uri(lines[0] if lines else type(exc).__name__)[:limit]


class MlflowOpsModule(AnsibleModule):
    """AnsibleModule with the collection's option families, secret handling and failure path.

    ``argument_spec`` holds the module's own options only; the families are added here.
    ``requires`` names families (``tracking``, ``store``) or options the module cannot do without:
    they are checked right after argument validation, before anything else runs.
    ``uri_options`` names module options that carry URIs in addition to ``URI_OPTIONS``.
    """

    def __init__(self, argument_spec=None, requires=(), uri_options=(), supports_check_mode=True, **kwargs):
        self._started = time.monotonic()
        self._uri_options = tuple(URI_OPTIONS) + tuple(uri_options)
        spec = merge_argument_spec(argument_spec)
        self._family_spec = spec
        super(MlflowOpsModule, self).__init__(argument_spec=spec, supports_check_mode=supports_check_mode, **kwargs)
        # Values applied by fallbacks during validation are masked too.
        self.no_log_values.update(uri_secret_forms(self.params, spec, self._uri_options, environ={}))
        self._check_family_values()
        self.require(*requires)
        self.deadline = Deadline(self.params.get("deadline"))

    # -- secrets ------------------------------------------------------------------------------------
    def _load_params(self):
        """Load the raw arguments, then register the URI secrets before validation can fail on them."""
        super(MlflowOpsModule, self)._load_params()
        self.no_log_values.update(uri_secret_forms(self.params, self._family_spec, self._uri_options))

    # -- checks -------------------------------------------------------------------------------------
    def _check_family_values(self):
        for name in _NON_NEGATIVE:
            value = self.params.get(name)
            if value is not None and value < 0:
                self.fail_json(msg="%s must not be negative, got %s" % (name, value))
        for name in _POSITIVE:
            value = self.params.get(name)
            if value is not None and value <= 0:
                self.fail_json(msg="%s must be greater than 0, got %s" % (name, value))

    def require(self, *names):
        """Fail (before any side effect) unless each family's key option, or each named option, is set."""
        for name in names:
            option, variable = FAMILY_KEY_OPTION.get(name, (name, None))
            if self.params.get(option) in (None, ""):
                hint = " (or the %s environment variable)" % variable if variable else ""
                self.fail_json(msg="%s needs %s%s" % (self.short_name, option, hint))

    require_family = require

    def require_lib(self, name, import_error, reason=None):
        """The one missing-library check: names the package and the host whose Python lacks it."""
        if import_error:
            self.fail_json(msg=missing_required_lib(name, reason=reason), exception=import_error)

    # -- results ------------------------------------------------------------------------------------
    @property
    def short_name(self):
        name = os.path.basename(str(self._name))
        if name.endswith(".py"):
            name = name[:-3]
        return name.rsplit(".", 1)[-1]

    def elapsed(self):
        return round(time.monotonic() - self._started, 3)

    def exit_json(self, **kwargs):
        kwargs["duration_s"] = self.elapsed()
        super(MlflowOpsModule, self).exit_json(**kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs["duration_s"] = self.elapsed()
        if isinstance(kwargs.get("exception"), str):
            kwargs["exception"] = redact_uri(kwargs["exception"])
        super(MlflowOpsModule, self).fail_json(redact_uri(msg), **kwargs)

    def run(self, job, *args, **kwargs):
        """Run ``job(*args, **kwargs)``, exit with its result dict, or fail through the one failure path.

        ``describe`` (keyword, optional): a function that turns an unexpected exception into the one-line
        ``msg`` (for example S3-aware wording); by default the module name, class and first line are used.
        """
        describe = kwargs.pop("describe", None)
        try:
            result = job(*args, **kwargs)
        except MaintenanceError as exc:
            details = dict(exc.details)
            for key in ("msg", "failed", "invocation", "duration_s"):
                details.pop(key, None)
            self.fail_json(msg=exc.msg, **details)
        except Exception as exc:  # pylint: disable=broad-except
            if describe is not None:
                msg = describe(exc)
            elif isinstance(exc, (IOError, OSError)):
                msg = "%s failed: %s" % (self.short_name, one_line(exc))
            else:
                msg = "%s failed: %s: %s" % (self.short_name, type(exc).__name__, one_line(exc))
            self.fail_json(msg=one_line(msg, limit=2000), exception=self._traceback())
        self.exit_json(**(result or {}))

    def _traceback(self):
        """The current traceback at -vvv and above, else none (an expected error needs no traceback)."""
        if getattr(self, "_verbosity", 0) >= 3:
            return traceback.format_exc()
        return ""
