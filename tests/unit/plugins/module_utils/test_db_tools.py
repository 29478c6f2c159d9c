# -*- coding: utf-8 -*-
"""The client-tool runner both engines share: exit status, stderr error lines, timeout, scrubbed secrets; the
private secret file; the row count comparisons of verify/restore."""

import os
import stat
import sys

import pytest

from ansible_collections.mlflowops.maintenance.plugins.module_utils import db_tools
from ansible_collections.mlflowops.maintenance.plugins.module_utils import mysql_tools as myt
from ansible_collections.mlflowops.maintenance.plugins.module_utils import postgres_tools as pgt
from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.db_verify import count_differences, describe_differences
from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import parse_backend_store_uri

STORE = parse_backend_store_uri("postgresql://u:Sekr3t@h/db")


def py(code):
    return [sys.executable, "-c", code]


def test_run_tool_returns_stderr_of_a_clean_run():
    assert db_tools.run_tool(py("import sys; sys.stderr.write('note\\n')"), None, 30, "tool", STORE,
                             pgt.STDERR_ERRORS) == "note\n"


@pytest.mark.parametrize("code,words", [
    ("import sys; sys.exit(3)", "exit status 3"),
    ("import sys; sys.stderr.write('pg_restore: error: Sekr3t rejected\\n')", "exit status 0"),
])
def test_run_tool_fails_on_exit_status_or_error_line_with_the_secret_scrubbed(code, words):
    with pytest.raises(MaintenanceError) as info:
        db_tools.run_tool(py(code), None, 30, "the tool", STORE, pgt.STDERR_ERRORS)
    assert info.value.msg.startswith("the tool failed (") and words in info.value.msg
    assert "Sekr3t" not in info.value.msg


def test_run_tool_stops_at_its_timeout():
    with pytest.raises(MaintenanceError) as info:
        db_tools.run_tool(py("import time; time.sleep(30)"), None, 0.5, "slow tool", STORE, pgt.STDERR_ERRORS)
    assert info.value.msg == "slow tool did not finish within 0.5s"


def test_stream_out_hashes_what_it_writes_and_checks_the_tool(tmp_path):
    out_path = tmp_path / "dump"
    with open(str(out_path), "wb") as out:
        sha256, size = db_tools.stream_out(py("import sys; sys.stdout.write('x' * 5000)"), None, out, "none", 30,
                                           "dump", STORE, myt.STDERR_ERRORS)
    assert out_path.read_bytes() == b"x" * 5000 and size == 5000
    assert sha256 == __import__("hashlib").sha256(b"x" * 5000).hexdigest()
    with open(str(out_path), "wb") as out, pytest.raises(MaintenanceError) as info:
        db_tools.stream_out(py("import sys; sys.stderr.write('Access denied\\n')"), None, out, "none", 30, "dump",
                            STORE, myt.STDERR_ERRORS)
    assert "Access denied" in info.value.msg


def test_stream_in_feeds_the_file_and_a_tool_that_stops_early_fails_by_its_status(tmp_path):
    entry = tmp_path / "entry.sql"
    entry.write_bytes(b"y" * (4 << 20))
    sink = tmp_path / "sink"
    copy = "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, open(%r, 'wb'))" % str(sink)
    db_tools.stream_in(py(copy), None, str(entry), "none", 30, "restore", STORE, myt.STDERR_ERRORS)
    assert sink.read_bytes() == entry.read_bytes()
    with pytest.raises(MaintenanceError) as info:
        db_tools.stream_in(py("import sys; sys.exit(1)"), None, str(entry), "none", 30, "restore", STORE,
                           myt.STDERR_ERRORS)
    assert "restore failed (exit status 1)" in info.value.msg


def test_the_engines_read_different_stderr_lines_as_errors():
    assert myt.stderr_problems("mariadb: Access denied for user") and not pgt.STDERR_ERRORS.search("Access denied")
    assert db_tools.stderr_problems("pg_dump: error: x\n\nWARNING: y\n", pgt.STDERR_ERRORS) == ["pg_dump: error: x"]


def test_private_secret_file_is_0600_in_a_0700_directory_and_removed():
    with db_tools.private_secret_file("mlflowops-test-", "secret", "pw\n") as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as handle:
            assert handle.read() == "pw\n"
    assert not os.path.exists(os.path.dirname(path))


def test_scratch_names_are_fresh_lowercase_and_short():
    first, second = db_tools.scratch_name("MLflow" * 20), db_tools.scratch_name("MLflow" * 20)
    assert first != second and first == first.lower() and first.startswith(("mlflow" * 20)[:40] + "_verify_")


def test_count_differences_one_way_and_both_ways():
    expected, found = {"runs": 3, "tags": 2}, {"runs": 3, "tags": 1, "extra": 5}
    assert count_differences(expected, found) == {"tags": (2, 1)}
    assert count_differences(expected, found, both_ways=True) == {"tags": (2, 1), "extra": (None, 5)}
    assert describe_differences(count_differences(expected, found, both_ways=True)) == "extra None != 5, tags 2 != 1"
