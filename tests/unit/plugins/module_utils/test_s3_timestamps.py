# -*- coding: utf-8 -*-
"""The S3 client's fast LastModified parser gives exactly botocore's instants, for every form botocore accepts."""

import datetime

import botocore.utils
import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.s3 import fast_timestamp


@pytest.mark.parametrize("value", [
    "2026-11-29T16:45:41.000Z", "2026-11-29T16:45:41Z", "2026-11-29T16:45:41.5Z", "2026-11-29T16:45:41.123456789Z",
    "1999-12-31T23:59:59.999Z", "Sun, 29 Nov 2026 16:45:41 GMT", "2026-11-29T16:45:41+02:00", 1700000000, "1700000000",
])
def test_same_instant_as_botocore(value):
    fast, reference = fast_timestamp(value), botocore.utils.parse_timestamp(value)
    assert fast == reference and fast.timestamp() == reference.timestamp()
    assert fast.utcoffset() is not None


def test_fast_path_values():
    parsed = fast_timestamp("2026-11-29T16:45:41.123456789Z")
    assert parsed.replace(tzinfo=None) == datetime.datetime(2026, 11, 29, 16, 45, 41, 123456)
    assert parsed.utcoffset() == datetime.timedelta(0)


def test_garbage_is_refused_like_botocore():
    with pytest.raises(ValueError):
        botocore.utils.parse_timestamp("not a time")
    with pytest.raises(ValueError):
        fast_timestamp("not a time")
