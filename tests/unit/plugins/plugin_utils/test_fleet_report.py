# -*- coding: utf-8 -*-
"""The fleet report's pure functions: host rows from registered results, the report, Markdown, HTML, history."""

import base64
import datetime
import json

from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_stats import (
    local_artifact_root,
    sqlite_store_size,
    tally_runs,
    tree_size,
)
from ansible_collections.mlflowops.maintenance.plugins.plugin_utils import fleet_report as fr

NOW = datetime.datetime(2026, 1, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)


def health(ok=True):
    return {"changed": False, "healthy": ok, "server": {"version": "3.17.2"},
            "checks": [{"name": "api", "ok": ok, "msg": "fine" if ok else "HTTP 500"}]}


def stats(active=3, deleted=1, size=1000):
    return {"changed": False, "runs": {"total": active + deleted, "by_stage": {"active": active, "deleted": deleted},
                                       "by_status": {"FINISHED": active + deleted}},
            "store": {"engine": "sqlite", "size_bytes": size}, "artifacts": {"kind": "local", "size_bytes": 10}}


def backups(hours_ago):
    created = (NOW - datetime.timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"changed": False, "counts": {"complete": 2, "incomplete": 1, "corrupt": 0},
            "latest": {"name": "mlflow-sqlite-x.db.zst", "created_at": created, "size_bytes": 55, "status": "complete"}}


def test_host_row_takes_every_field_and_judges_the_backup_age():
    row = fr.host_row("a", health(), stats(), backups(2), now=NOW, backup_max_age_hours=26)
    assert row["healthy"] is True and row["version"] == "3.17.2" and row["engine"] == "sqlite"
    assert row["runs"]["by_stage"] == {"active": 3, "deleted": 1}
    assert row["backup"]["age_hours"] == 2.0 and row["backup_ok"] is True
    assert row["backups_complete"] == 2 and row["backups_incomplete"] == 1 and row["errors"] == []
    old = fr.host_row("a", health(), stats(), backups(30), now=NOW, backup_max_age_hours=26)
    assert old["backup_ok"] is False


def test_a_failed_or_missing_result_is_an_error_not_a_crash():
    # failed_when: false clears `failed`; a result without the module's own key is still a failure.
    row = fr.host_row("b", {"failed": False, "msg": "connection refused"}, {"failed": False, "msg": "HTTP 503"},
                      None, now=NOW)
    assert row["healthy"] is False and row["runs"] is None and row["backup"] is None and row["backup_ok"] is False
    assert row["errors"] == ["health: connection refused", "store: HTTP 503"]
    unreachable = fr.host_row("c", None, None, None, now=NOW)
    assert unreachable["healthy"] is None and unreachable["errors"] == []


def test_report_summary_and_trend_since_the_previous_report():
    first = fr.build_report([fr.host_row("b", health(False), stats(size=100), backups(1), now=NOW),
                             fr.host_row("a", health(), stats(size=500), None, now=NOW)], now=NOW)
    assert [row["host"] for row in first["hosts"]] == ["a", "b"]
    assert first["summary"]["unhealthy"] == ["b"] and first["summary"]["backup_too_old"] == ["a"]
    assert first["summary"]["runs_total"] == 8 and first["trend"] is None
    later = NOW + datetime.timedelta(days=2)
    second = fr.build_report([fr.host_row("a", health(), stats(size=700), None, now=later),
                              fr.host_row("b", health(), stats(size=100), None, now=later),
                              fr.host_row("new", health(), stats(size=1), None, now=later)],
                             now=later, previous=json.loads(json.dumps(first)))
    trend = second["trend"]
    assert trend["interval_hours"] == 48.0
    assert trend["hosts"]["a"]["store_size_delta_bytes"] == 200 and trend["hosts"]["a"]["store_growth_bytes_per_day"] == 100
    assert trend["hosts"]["b"]["store_size_delta_bytes"] == 0 and "new" not in trend["hosts"]
    assert trend["fastest_growing"] == ["a"]


def test_markdown_and_html_escape_and_hold_every_host():
    report = fr.build_report([fr.host_row("<b>evil|host</b>", health(), stats(), backups(1), now=NOW)], now=NOW)
    markdown = fr.render_markdown(report)
    assert "\\|host" in markdown and markdown.count("\n| ") == 2
    page = fr.render_html(report)
    assert "<b>evil" not in page and "&lt;b&gt;evil|host&lt;/b&gt;" in page
    assert page.count("<svg") == 4 and "<script" not in page and "<rect" in page


def test_bar_chart_draws_bars_na_and_a_threshold():
    svg = fr.bar_chart("t", [("x", 10, "#000"), ("y", None, "#000"), ("z", [(1, "#111"), (2, "#222")], None)],
                       threshold=5, threshold_label="max")
    assert svg.count("<rect") == 3 and "n/a" in svg and "stroke-dasharray" in svg and ">max<" in svg
    signed = fr.bar_chart("s", [("up", 5, "#f00"), ("down", -5, "#0f0")], signed=True)
    assert signed.count("<rect") == 2


def test_history_pruning_only_touches_exactly_our_dated_copies():
    names = ["report-20260101T000000Z.json", "report-20260102T000000Z.json", "report-20260103T000000Z.json",
             "report-20260103T000000Z.html", "report-latest.json", "report-20260101T000000Z.json.bak", "notes.md",
             "report-2026010XT000000Z.json"]
    assert fr.history_to_prune(names, 2) == ["report-20260101T000000Z.json"]
    assert fr.history_name(NOW, "md") == "report-20260102T120000Z.md" and fr.is_history_name("report-20260102T120000Z.md")


def test_decode_slurp_json():
    content = base64.b64encode(json.dumps({"deleted": 3}).encode()).decode()
    assert fr.decode_slurp_json({"content": content, "encoding": "base64"}) == {"deleted": 3}
    assert fr.decode_slurp_json({"content": base64.b64encode(b"not json").decode()}) is None
    assert fr.decode_slurp_json({"skipped": True}) is None and fr.decode_slurp_json(None) is None


def test_store_stats_helpers(tmp_path):
    counts, truncated = tally_runs([{"info": {"lifecycle_stage": "active", "status": "FINISHED"}},
                                    {"info": {"lifecycle_stage": "deleted", "status": "FAILED"}},
                                    {"info": {"lifecycle_stage": "active", "status": "RUNNING"}}])
    assert counts["total"] == 3 and counts["by_stage"] == {"active": 2, "deleted": 1}
    assert counts["by_status"]["KILLED"] == 0 and not truncated
    assert tally_runs([{"info": {}}] * 5, limit=2)[1] is True
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"x" * 100)
    (tmp_path / "mlflow.db-wal").write_bytes(b"x" * 10)
    assert sqlite_store_size(str(store)) == 110 and sqlite_store_size(str(tmp_path / "none.db")) is None
    tree = tmp_path / "artifacts"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"y" * 7)
    (tree / "g").write_bytes(b"y" * 3)
    (tree / "link").symlink_to(store)
    assert tree_size(str(tree)) == (10, 2, False)
    assert tree_size(str(tree), max_files=1)[2] is True
    assert local_artifact_root("file:///srv/a") == "/srv/a" and local_artifact_root("s3://b/p") is None
    assert local_artifact_root("/srv/a") == "/srv/a" and local_artifact_root("") is None


def offsite(uploaded=(), kept=("s2", "s1"), incomplete=()):
    return {"changed": bool(uploaded), "offsite_url": "s3://b/mlflow-backups/a/", "uploaded": list(uploaded),
            "kept": list(kept), "incomplete_offsite": list(incomplete)}


def test_offsite_status_pending_incomplete_and_not_configured():
    assert fr.offsite_status(offsite()) == dict(url="s3://b/mlflow-backups/a/", newest="s2", sets=2, pending=0,
                                                incomplete=0, ok=True)
    behind = fr.offsite_status(offsite(uploaded=["s3"], kept=["s3", "s2"]))
    assert behind["newest"] == "s2" and behind["sets"] == 1 and behind["pending"] == 1 and behind["ok"] is False
    assert fr.offsite_status(offsite(incomplete=["s1"]))["ok"] is False
    assert fr.offsite_status(offsite(uploaded=["s1"], kept=["s1"]))["newest"] is None
    assert fr.offsite_status(None) is None and fr.offsite_status({"skipped": True}) is None


def test_offsite_in_rows_summary_and_both_renderings():
    failing = fr.host_row("b", health(), stats(), backups(1), now=NOW, offsite={"failed": False, "msg": "AccessDenied"})
    assert failing["errors"] == ["offsite: AccessDenied"] and failing["offsite"]["ok"] is False
    rows = [fr.host_row("a", health(), stats(), backups(1), now=NOW, offsite=offsite(uploaded=["s3"], kept=["s3"])),
            failing, fr.host_row("c", health(), stats(), backups(1), now=NOW),
            fr.host_row("d", health(), stats(), backups(1), now=NOW, offsite=offsite())]
    report = fr.build_report(rows, now=NOW)
    assert report["summary"]["offsite_behind"] == ["a", "b"]
    markdown = fr.render_markdown(report)
    assert "Offsite copy behind or failing:** a, b" in markdown
    assert "| 0 sets, newest none, 1 pending |" in markdown and "| not configured |" in markdown
    assert "| 2 sets, newest s2 |" in markdown and "| ERROR |" in markdown
    page = fr.render_html(report)
    assert "<th>offsite</th>" in page and "2 sets, newest s2" in page
