"""The monitor's HTML page: the verdict and tables, then the Evidently charts, in one document.

Rendered from the JSON summary (``pipelines.monitoring``), so the page says exactly what the
summary says.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from monitoring.performance import PERFORMANCE_METRICS

__all__ = ["render_monitor_html"]

#: Styles of the monitor's summary, scoped to its own section so Evidently's page is untouched.
_SUMMARY_STYLE = """
#crm-summary{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
  margin:0 0 16px}
#crm-summary header{padding:16px 32px;color:#fff}
#crm-summary header.ok{background:#2f7d4f}
#crm-summary header.alarm{background:#b4232a}
#crm-summary .body{padding:4px 32px}
#crm-summary h2{margin:22px 0 8px;font-size:20px}
#crm-summary table{border-collapse:collapse;font-size:14px}
#crm-summary td,#crm-summary th{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left}
#crm-summary th{background:#f5f7fa}
#crm-summary td.num{text-align:right;font-variant-numeric:tabular-nums}
#crm-summary tr.alarm td{background:#fdecea}
#crm-summary tr.info td{color:#7b8794}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{"" if not math.isfinite(value) else f"{value:.3f}"}</td>'
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _number_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _drift_table(report: dict[str, Any], limit: int = 40) -> str:
    rows = []
    for column in report["columns"][:limit]:
        css = "alarm" if column["alarm"] else ("info" if column["informational"] else "")
        verdict = (
            "drift" if column["drifted"] else ("missing share" if column["missing_drifted"] else "")
        )
        if column["informational"] and verdict:
            verdict += " (informational)"
        score = column["score"] if column["score"] is not None else float("nan")
        limit_value = (
            column["effective_threshold"]
            if column["effective_threshold"] is not None
            else float("nan")
        )
        rows.append(
            f'<tr class="{css}">'
            + _cell(column["column"])
            + _cell(score)
            + _cell(limit_value)
            + _cell(column["method"])
            + _cell(verdict or column.get("note") or "")
            + "</tr>"
        )  # fmt: skip
    more = len(report["columns"]) - limit
    footer = (
        f"<p>{more} more columns without drift are in the JSON summary.</p>" if more > 0 else ""
    )
    return (
        "<table><tr><th>column</th><th>score</th><th>drifts at</th><th>method</th>"
        "<th>verdict</th></tr>" + "".join(rows) + "</table>" + footer
    )


def _summary_section(summary: dict[str, Any]) -> str:
    alarm = bool(summary.get("alarm"))
    reasons = summary.get("alarm_reasons", [])
    verdict = (
        "ALARM: " + "; ".join(reasons)
        if alarm
        else "No alarm: no drift or decay past the thresholds"
    )
    model = html.escape(str(summary.get("model", "")))
    parts = [
        f"<section id='crm-summary'><style>{_SUMMARY_STYLE}</style>",
        f"<header class='{'alarm' if alarm else 'ok'}'><h1>Model monitor: {model}</h1>",
        f"<p>{html.escape(verdict)}</p>",
        f"<p>Reference: test cutoff {html.escape(str(summary.get('reference_cutoff')))} "
        f"({summary.get('n_reference', 0):,} customers) &middot; current batch: "
        f"{html.escape(str(summary.get('current_cutoff')))} "
        f"({summary.get('n_current', 0):,} customers)</p></header><div class='body'>",
    ]
    for key, title in (
        ("feature_drift", "Customer features"),
        ("prediction_drift", "Predictions"),
        ("event_drift", "Raw events (equal windows before each cutoff)"),
    ):
        if summary.get(key):
            parts.append(f"<h2>{html.escape(title)}</h2>" + _drift_table(summary[key]))
    performance = summary.get("performance")
    if performance and performance.get("sufficient"):
        rows = "".join(
            "<tr>"
            + _cell(name)
            + _cell(_number_or_nan(performance["promised"].get(name)))
            + _cell(_number_or_nan(performance["realised"].get(name)))
            + "</tr>"
            for name in PERFORMANCE_METRICS
        )
        parts.append(
            "<h2>Realised performance on matured labels</h2>"
            f"<p>Cutoff {html.escape(str(performance.get('cutoff')))}: "
            f"{performance['n_rows']:,} customers, {performance['n_positive']:,} positives.</p>"
            "<table><tr><th>metric</th><th>promised (test cutoff)</th><th>realised</th></tr>"
            + rows
            + "</table>"
        )
        for reason in performance.get("reasons", []):
            parts.append(f"<p><strong>Decay:</strong> {html.escape(reason)}</p>")
    else:
        note = (performance or {}).get("note") or summary.get("performance_note")
        if note:
            parts.append(f"<h2>Realised performance</h2><p>{html.escape(str(note))}</p>")
    parts.append(
        "<p>Detailed Evidently charts follow (drifted columns first, then the closest to "
        "drifting); every column's score is in the JSON summary.</p></div></section>"
    )
    return "".join(parts)


def render_monitor_html(summary: dict[str, Any], snapshots: Sequence[tuple[str, Any]]) -> str:
    """One self-contained page: the verdict and tables, then the Evidently reports.

    ``snapshots``: (title, Evidently snapshot) pairs, drawn as titled groups in one Evidently
    dashboard (one copy of its JavaScript, however many reports).
    """
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget

    widgets = []
    for title, snapshot in snapshots:
        if snapshot is not None:
            model = snapshot.to_snapshot_model()
            widgets.append(group_widget(title=title, widgets=list(model.widgets)))
    section = _summary_section(summary)
    if not widgets:
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Model monitor</title></head><body>{section}</body></html>"
        )
    document = render_widgets(widgets, as_iframe=False)
    body = document.index("<body>") + len("<body>")
    return document[:body] + section + document[body:]
