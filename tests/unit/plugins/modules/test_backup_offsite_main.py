# -*- coding: utf-8 -*-
"""backup_offsite's main(): every option is checked before any S3 client exists."""

from unittest import mock

import pytest

from harness.module_args import ModuleFailed, run_main

from ansible_collections.mlflowops.maintenance.plugins.modules import backup_offsite

ARGS = dict(path="/nonexistent/backups", bucket="b", namespace="web1", backend_store_uri="sqlite:////nonexistent/mlflow.db")


def fails_before_s3(args, check_mode=False):
    with mock.patch.object(backup_offsite.s3util, "build_client", side_effect=AssertionError("S3 reached")):
        with pytest.raises(ModuleFailed) as info:
            run_main(backup_offsite.main, args, check_mode=check_mode, name="backup_offsite")
    return info.value.result["msg"]


def test_push_needs_the_store_to_know_which_backups_are_ours():
    args = dict(ARGS)
    del args["backend_store_uri"]
    assert fails_before_s3(args) == "backup_offsite needs backend_store_uri (or the MLFLOW_BACKEND_STORE_URI environment variable)"


@pytest.mark.parametrize("override, words", [
    (dict(namespace="web1/../web2"), "namespace"),
    (dict(namespace=".."), "namespace"),
    (dict(prefix="a/../b"), "prefix"),
    (dict(backup_prefix="../x"), "prefix"),
    (dict(retention={"keep_last": -1}), "retention"),
    (dict(state="fetched", name="../../etc/passwd"), "not a backup name"),
])
def test_bad_options_fail_before_s3(override, words):
    assert words in fails_before_s3(dict(ARGS, **override))
