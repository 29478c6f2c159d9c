# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""boto3 S3 clients built from module options, with timeouts, retries and readable errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

BOTO3_IMPORT_ERROR = None
try:
    import boto3
    import botocore
    import botocore.session
    import botocore.utils
    from botocore.config import Config
    from boto3.s3.transfer import TransferConfig
except ImportError:
    boto3 = None
    botocore = None
    Config = None
    TransferConfig = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()

MB = 1024 * 1024
_ISO_UTC = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6})\d*)?Z$")


def fast_timestamp(value):
    """botocore's timestamp parser, with a fast path for the ``2026-11-29T16:45:41.000Z`` form of S3 listings.

    botocore parses every listed object's LastModified with dateutil's generic parser, which costs about two
    thirds of the client's CPU on a 1,000-object ListObjectsV2 page; any other form goes to botocore's parser.
    """
    match = _ISO_UTC.match(value) if isinstance(value, str) else None
    if match is None:
        return botocore.utils.parse_timestamp(value)
    year, month, day, hour, minute, second, fraction = match.groups()
    return datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                             int((fraction or "0").ljust(6, "0")), tzinfo=botocore.utils.tzutc())


def is_s3_url(location):
    return str(location or "").startswith("s3://")


def parse_s3_url(url):
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (no leading or trailing slash)."""
    if not is_s3_url(url):
        raise MaintenanceError("%r is not an s3://bucket/prefix URL" % (url,))
    bucket, _sep, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise MaintenanceError("%r names no bucket; write s3://bucket/prefix" % (url,))
    return bucket, prefix.strip("/")


def require_boto3():
    if boto3 is None:
        raise MaintenanceError(missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)


def _option(params, name, old_name, default):
    value = params.get(name)
    if value is None:
        value = params.get(old_name)
    return default if value is None else value


def client_config(params, pool_size=16, deadline=None):
    """A botocore Config with connect/read timeouts and botocore's own retries (standard mode).

    With a ``deadline`` (common.Deadline), each timeout is capped by the time the task has left."""
    connect_timeout = float(_option(params, "s3_connect_timeout", "connect_timeout", 10.0))
    read_timeout = float(_option(params, "s3_read_timeout", "read_timeout", 60.0))
    if deadline is not None:
        connect_timeout = deadline.remaining(connect_timeout)
        read_timeout = deadline.remaining(read_timeout)
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # total_max_attempts counts the first request too (botocore's max_attempts would count retries only).
        retries={"total_max_attempts": max(0, int(_option(params, "s3_retries", "retries", 3))) + 1, "mode": "standard"},
        max_pool_connections=max(10, int(pool_size) + 4),
    )


def transfer_config(params, concurrency=4):
    """Managed-transfer settings: multipart above the threshold, a few threads per large object."""
    return TransferConfig(
        multipart_threshold=max(5, int(params.get("multipart_threshold_mb") or 8)) * MB,
        multipart_chunksize=max(5, int(params.get("multipart_chunksize_mb") or 8)) * MB,
        max_concurrency=max(1, int(concurrency)),
        use_threads=True,
    )


def build_client(params, pool_size=16, deadline=None):
    """An S3 client from module options; unset keys fall back to boto3's chain (environment, profiles, roles)."""
    require_boto3()
    core = botocore.session.Session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=fast_timestamp)
    session_kwargs = dict(botocore_session=core)
    if params.get("profile"):
        session_kwargs["profile_name"] = params["profile"]
    try:
        session = boto3.session.Session(**session_kwargs)
    except botocore.exceptions.ProfileNotFound as exc:
        raise MaintenanceError("AWS profile not found: %s" % exc)
    kwargs = dict(config=client_config(params, pool_size, deadline))
    if params.get("endpoint_url"):
        kwargs["endpoint_url"] = params["endpoint_url"]
    if params.get("region"):
        kwargs["region_name"] = params["region"]
    if params.get("aws_access_key") or params.get("aws_secret_key"):
        if not (params.get("aws_access_key") and params.get("aws_secret_key")):
            raise MaintenanceError("aws_access_key and aws_secret_key must be given together")
        kwargs["aws_access_key_id"] = params["aws_access_key"]
        kwargs["aws_secret_access_key"] = params["aws_secret_key"]
        if params.get("session_token"):
            kwargs["aws_session_token"] = params["session_token"]
    if not params.get("s3_validate_certs", True):
        kwargs["verify"] = False
    try:
        return session.client("s3", **kwargs)
    except ValueError as exc:
        raise MaintenanceError("cannot build an S3 client: %s" % exc)


def error_code(exc):
    """The S3 error code of a botocore ClientError (``NoSuchBucket``, ``403``...), else None."""
    if botocore is not None and isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return None


def describe_error(exc, what=""):
    """One readable line for a boto3/botocore failure; never includes credentials."""
    prefix = (what + ": ") if what else ""
    if botocore is None:
        return prefix + str(exc)
    code = error_code(exc)
    if code is not None:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",):
            return prefix + "the bucket does not exist (NoSuchBucket)"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken",
                    "InvalidToken"):
            return prefix + "access denied: the credentials were rejected (%s)" % code
        if code in ("404", "NoSuchKey"):
            return prefix + "not found (%s)" % code
        message = exc.response.get("Error", {}).get("Message") or ""
        return prefix + "S3 error %s (HTTP %s) %s" % (code, status, message)
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        return prefix + "cannot reach the S3 endpoint: %s" % exc
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return prefix + "the S3 endpoint did not answer within s3_read_timeout: %s" % exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return prefix + "no AWS credentials: set aws_access_key/aws_secret_key, a profile or the environment"
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return prefix + str(exc)
    return prefix + "%s: %s" % (type(exc).__name__, exc)


def check_bucket(client, bucket, what):
    """Fail early, with one clear message, when the bucket is missing, forbidden or unreachable."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # pylint: disable=broad-except
        code = error_code(exc)
        if code in ("404", "NoSuchBucket"):
            raise MaintenanceError("%s: bucket %r does not exist" % (what, bucket))
        raise MaintenanceError(describe_error(exc, "%s: bucket %r" % (what, bucket)))


def paginate(client, operation, key, **kwargs):
    """Yield every item under ``key`` of every page of a paginated S3 listing."""
    paginator = client.get_paginator(operation)
    for page in paginator.paginate(**kwargs):
        yield from page.get(key, []) or []
