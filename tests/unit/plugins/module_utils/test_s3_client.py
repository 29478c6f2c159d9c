# -*- coding: utf-8 -*-
"""s3.build_client: module options become the boto3 client's configuration (no network)."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import s3
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Deadline, MaintenanceError

pytest.importorskip("boto3")


def params(**changes):
    values = dict(endpoint_url=None, region=None, aws_access_key=None, aws_secret_key=None, session_token=None,
                  profile=None, s3_validate_certs=True, s3_connect_timeout=None, s3_read_timeout=None, s3_retries=None)
    values.update(changes)
    return values


def test_options_become_endpoint_region_credentials_timeouts_and_retries():
    client = s3.build_client(params(endpoint_url="http://127.0.0.1:9", region="eu-west-3", aws_access_key="AKIA1",
                                    aws_secret_key="secret1", session_token="tok1", s3_connect_timeout=3.5,
                                    s3_read_timeout=7, s3_retries=4), pool_size=20)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-3"
    config = client.meta.config
    assert config.connect_timeout == 3.5 and config.read_timeout == 7.0
    assert config.retries["total_max_attempts"] == 5 and config.retries["mode"] == "standard"  # 1 + 4 retries
    assert config.max_pool_connections == 24
    credentials = client._request_signer._credentials  # pylint: disable=protected-access
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("AKIA1", "secret1", "tok1")


def test_defaults_and_deadline_capped_timeouts():
    config = s3.client_config(params())
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.retries["total_max_attempts"] == 4
    capped = s3.client_config(params(s3_read_timeout=60), deadline=Deadline(5))
    assert capped.read_timeout <= 5 and capped.connect_timeout <= 5
    assert s3.client_config(params(s3_retries=0)).retries["total_max_attempts"] == 1


def test_unverified_tls_is_passed_to_the_client(monkeypatch):
    seen = {}
    original = s3.boto3.session.Session.client

    def spy(self, service, **kwargs):
        seen.update(kwargs)
        return original(self, service, **kwargs)

    monkeypatch.setattr(s3.boto3.session.Session, "client", spy)
    s3.build_client(params(s3_validate_certs=False, region="us-east-1"))
    assert seen["verify"] is False and "aws_access_key_id" not in seen


def test_half_a_key_pair_and_a_missing_profile_fail_clearly():
    with pytest.raises(MaintenanceError, match="must be given together"):
        s3.build_client(params(aws_access_key="AKIA1"))
    with pytest.raises(MaintenanceError, match="AWS profile not found"):
        s3.build_client(params(profile="no-such-profile-w1"))


def test_transfer_config_from_multipart_options():
    config = s3.transfer_config(dict(multipart_threshold_mb=16, multipart_chunksize_mb=2), concurrency=3)
    assert config.multipart_threshold == 16 * s3.MB and config.multipart_chunksize == 5 * s3.MB
    assert config.max_concurrency == 3
