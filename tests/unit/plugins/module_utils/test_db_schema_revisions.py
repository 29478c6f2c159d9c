# -*- coding: utf-8 -*-
"""db_schema's revision arithmetic (pure)."""

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_schema import (
    pending_revisions,
    schema_status,
)

LINEAR = {"a": (), "b": ("a",), "c": ("b",), "d": ("c",)}
# a - b - c1 \
#       \ c2 - merge - e
BRANCHED = {"a": (), "b": ("a",), "c1": ("b",), "c2": ("b",), "merge": ("c1", "c2"), "e": ("merge",)}


def test_pending_on_a_linear_history_oldest_first():
    assert pending_revisions(LINEAR, ("d",), "b") == ["c", "d"]
    assert pending_revisions(LINEAR, ("d",), "d") == []
    assert pending_revisions(LINEAR, ("d",), None) == ["a", "b", "c", "d"]


def test_pending_through_a_merge():
    pending = pending_revisions(BRANCHED, ("e",), "c1")
    assert set(pending) == {"c2", "merge", "e"}
    assert pending.index("c2") < pending.index("merge") < pending.index("e")
    everything = pending_revisions(BRANCHED, ("e",), None)
    assert everything[0] == "a" and everything[-1] == "e" and len(everything) == 6


def test_unknown_revision_is_refused_with_reason():
    with pytest.raises(MaintenanceError) as info:
        pending_revisions(LINEAR, ("d",), "f00dfeed")
    assert "f00dfeed" in info.value.msg
    assert "newer MLflow" in info.value.msg
    assert info.value.details["heads"] == ["d"]


def test_schema_status():
    status = schema_status("tracking", "b", ["d"], ["c", "d"], True, True)
    assert status["at_head"] is False and status["pending_count"] == 2 and status["head_revision"] == "d"
    assert schema_status("tracking", "d", ["d"], [], True, True)["at_head"] is True
    assert schema_status("auth", None, ["d"], [], False, False)["at_head"] is False
