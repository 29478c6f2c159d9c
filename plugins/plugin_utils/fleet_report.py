# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report, as pure functions: per-host rows from the collected task results, the report dict
(JSON), its Markdown summary and one self-contained HTML page with inline SVG charts (no script, no fetch:
it opens offline). The action plugin ``fleet_report`` only reads task results and writes files."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import html

REPORT_FORMAT = 1
TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f+00:00", "%Y-%m-%dT%H:%M:%S+00:00")


def parse_time(value):
    """A UTC datetime from an ISO-8601 UTC string, or None."""
    if not value or not isinstance(value, str):
        return None
    for fmt in TIME_FORMATS:
        try:
            return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    return None


def format_time(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_bytes(value):
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0
    return "-"


def human_hours(value):
    if value is None:
        return "-"
    if value < 1:
        return "%d min" % round(value * 60)
    if value < 48:
        return "%.1f h" % value
    return "%.1f d" % (value / 24.0)


def _usable(result, key=None):
    """A registered task result that ran and did not fail (and has ``key``), else None.

    The role registers with ``failed_when: false``, which turns ``failed`` off: a result without the module's
    own key (``healthy``, ``runs``, ``counts``) is a failure too."""
    if not isinstance(result, dict) or result.get("failed") or result.get("skipped") or result.get("unreachable"):
        return None
    if key is not None and key not in result:
        return None
    return result


def _failure(result, key=None):
    """The one-line reason a registered result failed, or None (also None for a missing or skipped one)."""
    if not isinstance(result, dict) or result.get("skipped"):
        return None
    if result.get("failed") or result.get("unreachable") or (key is not None and key not in result):
        return str(result.get("msg") or "failed")[:300]
    return None


def offsite_status(result):
    """The offsite part of a host's row from backup_offsite's check-mode result (state=present), or None when the
    host has no offsite copy configured (no result, or a skipped task).

    ``pending`` are local sets retention keeps that are not (completely) offsite yet; ``newest`` is the newest set
    already offsite. ``ok`` means something is offsite and nothing is pending or incomplete there."""
    result = _usable(result, "offsite_url")
    if not result:
        return None
    pending = list(result.get("uploaded") or [])
    offsite = [name for name in result.get("kept") or [] if name not in pending]
    incomplete = list(result.get("incomplete_offsite") or [])
    return dict(url=result.get("offsite_url"), newest=offsite[0] if offsite else None, sets=len(offsite),
                pending=len(pending), incomplete=len(incomplete),
                ok=bool(offsite) and not pending and not incomplete)


def host_row(name, health=None, stats=None, backups=None, cleanup=None, now=None, backup_max_age_hours=26.0,
             offsite=None):
    """One host's row of the report from its registered results (server_info, store_info, backup_info,
    backup_offsite in check mode, the cleanup state file's JSON). A missing or failed result leaves its fields
    null and is named in ``errors``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    errors = []
    for what, result, key in (("health", health, "healthy"), ("store", stats, "runs"), ("backups", backups, "counts"),
                              ("offsite", offsite, "offsite_url")):
        message = _failure(result, key)
        if message:
            errors.append("%s: %s" % (what, message))
    row = dict(host=name, healthy=None, version=None, failed_checks=[], engine=None, store_size_bytes=None,
               runs=None, runs_truncated=False, experiments={}, artifacts_kind=None, artifacts_size_bytes=None,
               artifacts_file_count=None, backup=None, backups_complete=0, backups_incomplete=0, backups_corrupt=0,
               backup_max_age_hours=backup_max_age_hours, backup_ok=False, offsite=None, cleanup=None,
               errors=errors)
    health = _usable(health, "healthy")
    if health:
        row["healthy"] = bool(health.get("healthy"))
        server = health.get("server") or {}
        row["version"] = server.get("version")
        row["failed_checks"] = [dict(name=check.get("name"), msg=check.get("msg"))
                                for check in health.get("checks") or [] if not check.get("ok")]
    if any(item.startswith("health:") for item in errors):
        row["healthy"] = False
    stats = _usable(stats, "runs")
    if stats:
        store = stats.get("store") or {}
        row["engine"] = store.get("engine")
        row["store_size_bytes"] = store.get("size_bytes")
        row["runs"] = stats.get("runs")
        row["runs_truncated"] = bool(stats.get("runs_truncated"))
        row["experiments"] = stats.get("experiments") or {}
        artifacts = stats.get("artifacts") or {}
        row["artifacts_kind"] = artifacts.get("kind")
        row["artifacts_size_bytes"] = artifacts.get("size_bytes")
        row["artifacts_file_count"] = artifacts.get("file_count")
    backups = _usable(backups, "counts")
    if backups:
        counts = backups.get("counts") or {}
        row["backups_complete"] = int(counts.get("complete") or 0)
        row["backups_incomplete"] = int(counts.get("incomplete") or 0)
        row["backups_corrupt"] = int(counts.get("corrupt") or 0)
        latest = backups.get("latest")
        if latest:
            created = parse_time(latest.get("created_at"))
            age = (now - created).total_seconds() / 3600.0 if created else None
            row["backup"] = dict(name=latest.get("name"), created_at=latest.get("created_at"),
                                 age_hours=round(age, 3) if age is not None else None,
                                 size_bytes=latest.get("size_bytes"), status=latest.get("status"),
                                 engine=latest.get("engine"))
            row["backup_ok"] = age is not None and age <= backup_max_age_hours
    row["offsite"] = offsite_status(offsite)
    if row["offsite"] is None and _failure(offsite, "offsite_url"):
        row["offsite"] = dict(url=None, newest=None, sets=0, pending=0, incomplete=0, ok=False)
    if isinstance(cleanup, dict):
        row["cleanup"] = cleanup
    return row


def _trend(rows, previous):
    """Per host, the change since the previous report: store and artifact bytes, runs, and bytes per day."""
    if not previous:
        return None
    before = dict((row.get("host"), row) for row in previous.get("hosts") or [])
    then = parse_time(previous.get("generated_at"))
    trend = dict(previous_generated_at=previous.get("generated_at"), hosts={})
    for row in rows:
        old = before.get(row["host"])
        if not old:
            continue

        def delta(key, row=row, old=old):
            if row.get(key) is None or old.get(key) is None:
                return None
            return row[key] - old[key]
        runs_now = (row.get("runs") or {}).get("total")
        runs_then = (old.get("runs") or {}).get("total")
        trend["hosts"][row["host"]] = dict(
            store_size_delta_bytes=delta("store_size_bytes"),
            artifacts_size_delta_bytes=delta("artifacts_size_bytes"),
            runs_delta=(runs_now - runs_then) if runs_now is not None and runs_then is not None else None)
    trend["interval_hours"] = None
    return trend, then


def build_report(rows, now=None, previous=None, backup_max_age_hours=26.0):
    """The report dict (what report.json holds): rows sorted by host, a summary, and the trend since ``previous``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    rows = sorted(rows, key=lambda row: row["host"])
    summary = dict(
        hosts=len(rows),
        healthy=sum(1 for row in rows if row.get("healthy") is True),
        unhealthy=[row["host"] for row in rows if row.get("healthy") is not True],
        backup_too_old=[row["host"] for row in rows if not row.get("backup_ok")],
        offsite_behind=[row["host"] for row in rows if row.get("offsite") and not row["offsite"].get("ok")],
        runs_total=sum((row.get("runs") or {}).get("total") or 0 for row in rows),
        store_size_bytes=sum(row.get("store_size_bytes") or 0 for row in rows),
        artifacts_size_bytes=sum(row.get("artifacts_size_bytes") or 0 for row in rows),
    )
    report = dict(format=REPORT_FORMAT, generated_at=format_time(now), backup_max_age_hours=backup_max_age_hours,
                  summary=summary, hosts=rows, trend=None)
    found = _trend(rows, previous)
    if found:
        trend, then = found
        if then:
            trend["interval_hours"] = round((now - then).total_seconds() / 3600.0, 3)
            for values in trend["hosts"].values():
                days = trend["interval_hours"] / 24.0
                change = values.get("store_size_delta_bytes")
                values["store_growth_bytes_per_day"] = round(change / days) if change is not None and days > 0 else None
        growing = sorted(((values.get("store_growth_bytes_per_day") or 0, host)
                          for host, values in trend["hosts"].items()), reverse=True)
        trend["fastest_growing"] = [host for rate, host in growing if rate > 0][:5]
        report["trend"] = trend
    return report


# ------------------------------------------------------------------------------------------------ markdown
def _offsite_text(offsite):
    if not offsite:
        return "not configured"
    if offsite.get("url") is None:
        return "ERROR"
    text = "%d sets, newest %s" % (offsite["sets"], offsite.get("newest") or "none")
    if offsite.get("pending"):
        text += ", %d pending" % offsite["pending"]
    if offsite.get("incomplete"):
        text += ", %d incomplete" % offsite["incomplete"]
    return text


def _cleanup_text(cleanup):
    if not cleanup:
        return "-"
    parts = []
    for key in ("deleted", "reaped", "purged_runs", "purged_experiments", "freed_bytes"):
        if cleanup.get(key) is not None:
            value = human_bytes(cleanup[key]) if key.endswith("_bytes") else cleanup[key]
            parts.append("%s %s" % (key.replace("_", " "), value))
    if cleanup.get("finished_at"):
        parts.append("at %s" % cleanup["finished_at"])
    return ", ".join(parts) or "-"


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report):
    summary = report["summary"]
    lines = [
        "# MLflow fleet report %s" % report["generated_at"],
        "",
        "%d hosts, %d healthy; %d runs; stores %s, artifacts %s." % (
            summary["hosts"], summary["healthy"], summary["runs_total"], human_bytes(summary["store_size_bytes"]),
            human_bytes(summary["artifacts_size_bytes"])),
    ]
    if summary["unhealthy"]:
        lines.append("**Unhealthy:** %s" % ", ".join(summary["unhealthy"]))
    if summary["backup_too_old"]:
        lines.append("**Newest backup missing or older than %s:** %s" % (
            human_hours(report["backup_max_age_hours"]), ", ".join(summary["backup_too_old"])))
    if summary.get("offsite_behind"):
        lines.append("**Offsite copy behind or failing:** %s" % ", ".join(summary["offsite_behind"]))
    trend = report.get("trend")
    if trend and trend.get("fastest_growing"):
        lines.append("**Fastest growing stores:** %s" % ", ".join(trend["fastest_growing"]))
    lines += ["", "| host | health | MLflow | store | runs (active/deleted) | newest backup | offsite | artifacts |"
              " last cleanup |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["hosts"]:
        runs = row.get("runs") or {}
        stages = runs.get("by_stage") or {}
        backup = row.get("backup")
        backup_text = "none"
        if backup:
            backup_text = "%s ago, %s, %s%s" % (human_hours(backup.get("age_hours")), human_bytes(backup.get("size_bytes")),
                                                backup.get("status"), "" if row.get("backup_ok") else " (TOO OLD)")
        health = {True: "healthy", False: "UNHEALTHY", None: "unknown"}[row.get("healthy")]
        lines.append("| %s |" % " | ".join(_md(cell) for cell in (
            row["host"], health, row.get("version") or "-",
            "%s %s" % (row.get("engine") or "-", human_bytes(row.get("store_size_bytes"))),
            "%s (%s/%s)" % (runs.get("total", "-"), stages.get("active", "-"), stages.get("deleted", "-")),
            backup_text, _offsite_text(row.get("offsite")), human_bytes(row.get("artifacts_size_bytes")),
            _cleanup_text(row.get("cleanup")))))
    errors = [(row["host"], error) for row in report["hosts"] for error in row.get("errors") or []]
    if errors:
        lines += ["", "Errors:"] + ["- %s: %s" % (host, _md(error)) for host, error in errors]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ SVG
COLORS = dict(ok="#2e7d32", bad="#c62828", neutral="#1565c0", muted="#9e9e9e", deleted="#ef6c00", grid="#e0e0e0",
              text="#212121", threshold="#6a1b9a")


def _esc(value):
    return html.escape(str(value), quote=True)


def bar_chart(title, items, value_label=str, threshold=None, threshold_label=None, width=560, bar_height=18,
              signed=False):
    """A horizontal bar chart as one <svg> element. ``items`` are (label, value or None, color) tuples; a
    stacked bar gives value as a list of (value, color). None draws a grey 'n/a'."""
    label_width, gap, top = 150, 6, 30
    plot_width = width - label_width - 90
    values = []
    for _label, value, _color in items:
        if isinstance(value, list):
            values.append(sum(part for part, _c in value))
        elif value is not None:
            values.append(abs(value) if signed else value)
    scale_max = max(values + ([threshold] if threshold is not None else []) + [0]) or 1
    height = top + len(items) * (bar_height + gap) + 24
    origin = label_width + (plot_width / 2.0 if signed else 0)
    span = plot_width / 2.0 if signed else plot_width
    out = ['<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="%d" height="%d" viewBox="0 0 %d %d" '
           'role="img" aria-label="%s">' % (width, height, width, height, _esc(title)),
           '<text x="0" y="18" font-size="14" font-weight="bold" fill="%s">%s</text>' % (COLORS["text"], _esc(title))]
    out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>' % (
        origin, top - 4, origin, height - 20, COLORS["grid"]))
    for index, (label, value, color) in enumerate(items):
        y = top + index * (bar_height + gap)
        out.append('<text x="%d" y="%d" font-size="12" text-anchor="end" fill="%s">%s</text>' % (
            label_width - 8, y + bar_height - 5, COLORS["text"], _esc(label)))
        if value is None:
            out.append('<text x="%.1f" y="%d" font-size="12" fill="%s">n/a</text>' % (
                origin + 4, y + bar_height - 5, COLORS["muted"]))
            continue
        parts = value if isinstance(value, list) else [(value, color)]
        x = origin
        total = 0
        for part, part_color in parts:
            length = abs(part) / float(scale_max) * span
            start = x - length if (signed and part < 0) else x
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
                start, y, max(length, 1.0 if part else 0.0), bar_height, part_color))
            if not signed:
                x += length
            total += part
        end = x if not signed else origin + (abs(total) / float(scale_max) * span if total >= 0 else 0)
        out.append('<text x="%.1f" y="%d" font-size="11" fill="%s">%s</text>' % (
            end + 4, y + bar_height - 5, COLORS["text"], _esc(value_label(total))))
    if threshold is not None:
        x = origin + threshold / float(scale_max) * span
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="5,3"/>' % (
            x, top - 6, x, height - 20, COLORS["threshold"]))
        out.append('<text x="%.1f" y="%d" font-size="11" fill="%s">%s</text>' % (
            x + 3, height - 6, COLORS["threshold"], _esc(threshold_label or threshold)))
    out.append("</svg>")
    return "".join(out)


def charts(report):
    """The report's four charts as SVG strings, in page order."""
    rows = report["hosts"]
    threshold = report["backup_max_age_hours"]
    store = bar_chart("Backend store size per host",
                      [(row["host"], row.get("store_size_bytes"), COLORS["neutral"]) for row in rows],
                      value_label=human_bytes)
    ages = []
    for row in rows:
        backup = row.get("backup") or {}
        age = backup.get("age_hours")
        ages.append((row["host"], age, COLORS["ok"] if row.get("backup_ok") else COLORS["bad"]))
    backup = bar_chart("Newest backup age (threshold %s)" % human_hours(threshold), ages, value_label=human_hours,
                       threshold=threshold, threshold_label="max %s" % human_hours(threshold))
    stages = []
    for row in rows:
        by_stage = (row.get("runs") or {}).get("by_stage")
        stages.append((row["host"], None if by_stage is None else [
            (by_stage.get("active", 0), COLORS["neutral"]), (by_stage.get("deleted", 0), COLORS["deleted"])], None))
    runs = bar_chart("Runs by lifecycle stage (blue active, orange deleted)", stages, value_label=lambda total: "%d" % total)
    trend = report.get("trend")
    if trend:
        items = [(row["host"], (trend["hosts"].get(row["host"]) or {}).get("store_size_delta_bytes"), None)
                 for row in rows]
        items = [(label, value, COLORS["bad"] if (value or 0) > 0 else COLORS["ok"]) for label, value, _c in items]
        change = bar_chart("Store size change since %s" % trend.get("previous_generated_at"), items, signed=True,
                           value_label=lambda value: ("+" if value > 0 else "") + human_bytes(value))
    else:
        change = bar_chart("Store size change (no previous report yet)", [(row["host"], None, None) for row in rows])
    return [store, backup, runs, change]


def render_html(report):
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    summary = report["summary"]
    rows_html = []
    for row in report["hosts"]:
        runs = row.get("runs") or {}
        stages = runs.get("by_stage") or {}
        statuses = runs.get("by_status") or {}
        backup = row.get("backup")
        health = {True: "healthy", False: "UNHEALTHY", None: "unknown"}[row.get("healthy")]
        cells = [
            row["host"], health, row.get("version") or "-", row.get("engine") or "-",
            human_bytes(row.get("store_size_bytes")),
            "%s (%s active, %s deleted)" % (runs.get("total", "-"), stages.get("active", "-"), stages.get("deleted", "-")),
            ", ".join("%s %s" % (key, value) for key, value in sorted(statuses.items()) if value) or "-",
            ("%s ago, %s, %s" % (human_hours(backup.get("age_hours")), human_bytes(backup.get("size_bytes")),
                                 backup.get("status"))) if backup else "none",
            _offsite_text(row.get("offsite")),
            human_bytes(row.get("artifacts_size_bytes")), _cleanup_text(row.get("cleanup")),
            "; ".join(row.get("errors") or []) or "; ".join(
                "%s: %s" % (check["name"], check["msg"]) for check in row.get("failed_checks") or []) or "",
        ]
        offsite = row.get("offsite")
        css = "bad" if row.get("healthy") is not True or not row.get("backup_ok") or (offsite and not offsite["ok"]) else "ok"
        rows_html.append('<tr class="%s">%s</tr>' % (css, "".join("<td>%s</td>" % _esc(cell) for cell in cells)))
    alerts = []
    if summary["unhealthy"]:
        alerts.append("Unhealthy: %s" % ", ".join(summary["unhealthy"]))
    if summary["backup_too_old"]:
        alerts.append("Newest backup missing or older than %s: %s" % (
            human_hours(report["backup_max_age_hours"]), ", ".join(summary["backup_too_old"])))
    if summary.get("offsite_behind"):
        alerts.append("Offsite copy behind or failing: %s" % ", ".join(summary["offsite_behind"]))
    trend = report.get("trend")
    if trend and trend.get("fastest_growing"):
        alerts.append("Fastest growing stores: %s" % ", ".join(trend["fastest_growing"]))
    head = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<title>MLflow fleet report %s</title><style>"
            "body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}"
            "table{border-collapse:collapse;font-size:12px;margin-top:16px}td,th{border:1px solid #ddd;padding:4px 6px}"
            "tr.bad td{background:#ffebee}th{background:#f5f5f5}.charts{display:flex;flex-wrap:wrap;gap:24px}"
            ".alert{color:#c62828;font-weight:bold}</style></head><body>") % _esc(report["generated_at"])
    body = [head, "<h1>MLflow fleet report</h1>",
            "<p>Generated %s: %d hosts, %d healthy, %d runs; stores %s, artifacts %s.</p>" % (
                _esc(report["generated_at"]), summary["hosts"], summary["healthy"], summary["runs_total"],
                _esc(human_bytes(summary["store_size_bytes"])), _esc(human_bytes(summary["artifacts_size_bytes"])))]
    body += ['<p class="alert">%s</p>' % _esc(alert) for alert in alerts]
    body.append('<div class="charts">%s</div>' % "".join('<div>%s</div>' % chart for chart in charts(report)))
    headers = ["host", "health", "MLflow", "engine", "store", "runs", "statuses", "newest backup", "offsite", "artifacts",
               "last cleanup", "problems"]
    body.append("<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (
        "".join("<th>%s</th>" % name for name in headers), "".join(rows_html)))
    body.append("</body></html>\n")
    return "".join(body)


# ------------------------------------------------------------------------------------------------ files
HISTORY_DIR = "history"
KINDS = ("json", "html", "md")


def history_name(now, kind):
    return "report-%s.%s" % (now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), kind)


def is_history_name(name):
    """Whether ``name`` is exactly a dated copy this report writes (the only files history pruning may remove)."""
    if not name.startswith("report-") or name.count(".") != 1:
        return False
    stamp, kind = name[len("report-"):].split(".")
    if kind not in KINDS or len(stamp) != 16 or stamp[8] != "T" or stamp[15] != "Z":
        return False
    return (stamp[:8] + stamp[9:15]).isdigit()


def history_to_prune(names, keep):
    """The dated copies beyond the ``keep`` newest of each kind (names sort by time); other names never."""
    prune = []
    for kind in KINDS:
        ours = sorted((name for name in names if is_history_name(name) and name.endswith("." + kind)), reverse=True)
        prune.extend(ours[keep:])
    return sorted(prune)


def decode_slurp_json(result):
    """The JSON object inside a registered ansible.builtin.slurp result, or None (missing file, bad JSON)."""
    import base64  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel
    if not _usable(result) or not result.get("content"):
        return None
    try:
        value = json.loads(base64.b64decode(result["content"]).decode("utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
