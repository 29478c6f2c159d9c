# -*- coding: utf-8 -*-
"""The result-key contract (docs/DEVELOPING.md): common.Failures, and every module's RETURN keys."""

import glob
import importlib
import os
import re

import pytest
import yaml

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import Failures

MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "plugins", "modules")
NAMES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(MODULES, "*.py"))
               if not os.path.basename(path).startswith("_"))


def test_failures_are_capped_counted_and_say_when_truncated():
    failures = Failures(limit=2)
    assert failures.as_result() == dict(failures=[], failure_count=0, failures_truncated=False)
    failures.add("r1", "HTTP 403", kind="run")
    failures.add(2, "x" * 900)
    assert failures.as_result()["failures_truncated"] is False
    failures.add("r3", "lost")
    result = failures.as_result()
    assert result["failure_count"] == 3 and result["failures_truncated"] is True
    assert result["failures"][0] == dict(id="r1", msg="HTTP 403", kind="run")
    assert result["failures"][1] == dict(id="2", msg="x" * 500)
    assert failures.first() == "r1: HTTP 403"
    result["failures"].append("not shared")
    assert len(failures.items) == 2


def returned_keys(name):
    module = importlib.import_module("ansible_collections.mlflowops.maintenance.plugins.modules." + name)
    return yaml.safe_load(module.RETURN) or {}


@pytest.mark.parametrize("name", NAMES)
def test_return_keys_follow_the_contract(name):
    keys = returned_keys(name)
    bad = []
    for key, spec in keys.items():
        if key in ("failed", "skipped", "errors", "error_count", "dest", "path") or key.endswith("_seconds"):
            bad.append(key)
        elif key.startswith("bytes_") or (key.startswith("size_") and not key.endswith("_bytes")):
            bad.append(key)
        elif key == "unchanged" and spec.get("type") != "bool":
            bad.append(key)
        elif key.endswith("_truncated") and spec.get("type") != "bool":
            bad.append(key)
    assert not bad, "%s returns keys outside the contract: %s" % (name, bad)
    if "failures" in keys:
        assert {"failure_count", "failures_truncated"} <= set(keys), name
    for key, spec in keys.items():
        if spec.get("type") == "list" and re.search(r"first \d+|at most", str(spec.get("description"))):
            assert says_when_truncated(keys, key), "%s: the capped list %s does not say when it is cut" % (name, key)


def says_when_truncated(keys, key):
    """A ``<key>_truncated`` flag, a flag that names it (or "any of the ... lists"), or a count of the whole."""
    if key + "_truncated" in keys or re.sub(r"s$", "", key) + "_count" in keys or key + "_count" in keys:
        return True
    flags = [str(spec.get("description")) for name, spec in keys.items() if name.endswith("_truncated")]
    return any("RV(%s)" % key in text or "any of the" in text for text in flags)
