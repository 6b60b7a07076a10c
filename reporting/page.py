"""The retention report as one self-contained HTML page: what it shows and how it is drawn.

:class:`RetentionReportData` holds every part the page shows, computed beforehand
(``pipelines.report`` builds it from the data, the champion and the risk list);
:func:`render_retention_report` turns it into one HTML string, a section per question of the
retention team, each a named step below. Charts are inlined as SVG and the page carries its own
style, so it opens from a file or an e-mail attachment without fetching anything; a part that
is missing is replaced by a note saying why and what to run.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from reporting.analyses import (
    SEGMENT_COLUMNS,
    SEGMENT_TITLES,
    CohortRetention,
    action_legend,
    cross_sell_summary,
    top_at_risk,
    top_share,
    value_concentration,
)
from reporting.charts import (
    figure_svg,
    plot_backtest,
    plot_behaviour_deciles,
    plot_churn_over_time,
    plot_co_purchase,
    plot_cohort_curves,
    plot_cohort_heatmap,
    plot_pareto,
    plot_segments,
)

__all__ = ["RetentionReportData", "html_table", "render_retention_report"]


@dataclass(frozen=True)
class RetentionReportData:
    """Everything the page shows; each part may be missing (the page then says why)."""

    as_of: pd.Timestamp
    data_start: pd.Timestamp
    n_customers: int
    n_active: int
    churn_over_time: pd.DataFrame
    cohorts: CohortRetention
    values: pd.Series  # value of each customer (last 12 months), for the Pareto curve
    segments: dict[str, pd.DataFrame]
    deciles: pd.DataFrame
    overall_churn_rate: float | None
    backtest: pd.DataFrame | None = None
    co_purchase: pd.DataFrame | None = None
    risk_list: pd.DataFrame | None = None
    risk_list_source: str = ""
    model: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    currency: str = ""
    title: str = "Customer retention report"


_PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  color:#1f2933;background:#f5f7fa;line-height:1.45}
header{background:#1f3a5f;color:#fff;padding:22px 36px}
header h1{margin:0 0 6px;font-size:26px} header p{margin:0;opacity:.85}
nav{background:#fff;border-bottom:1px solid #e4e7eb;padding:8px 36px;font-size:14px}
nav a{margin-right:16px;color:#2c6fbb;text-decoration:none}
main{max-width:1100px;margin:0 auto;padding:12px 24px 48px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;margin:18px 0;padding:18px 24px}
h2{margin:0 0 6px;font-size:20px} p.lead{margin:0 0 12px;color:#52606d}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.kpi{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 18px;min-width:150px}
.kpi b{display:block;font-size:24px;color:#1f3a5f} .kpi span{font-size:13px;color:#52606d}
figure{margin:8px 0} figure svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7fa} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0b429;padding:8px 12px;font-size:14px}
footer{color:#7b8794;font-size:12px;text-align:center;padding:12px}
"""


def _format_cell(value: Any, column: str, currency: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td class='num'></td>"
    name = column.lower()
    if isinstance(value, bool | np.bool_):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | np.integer):
        return f"<td class='num'>{int(value):,}</td>"
    if isinstance(value, float | np.floating):
        if any(k in name for k in ("rate", "share", "probability", "capture")):
            return f"<td class='num'>{value:.1%}</td>"
        if any(k in name for k in ("value", "risk", "revenue")):
            return f"<td class='num'>{currency}{value:,.0f}</td>"
        return f"<td class='num'>{value:,.2f}</td>"
    if isinstance(value, pd.Timestamp):
        return f"<td>{value.date()}</td>"
    return f"<td>{html.escape(str(value))}</td>"


_COLUMN_TITLES: dict[str, str] = {
    "customers": "Customers",
    "active_share": "Active",
    "value": "Value (12 months)",
    "value_per_customer": "Value per customer",
    "value_share": "Share of value",
    "churn_rate": "Churn rate",
    "churn_eligible": "Active at cutoff",
    "value_at_risk": "Expected value at risk",
    "value_at_risk_at_past_rate": "Value at risk (past churn rate)",
    "flagged_churn_rate": "Churn rate, flagged",
    "others_churn_rate": "Churn rate, others",
    "overall_churn_rate": "Churn rate, all",
    "capture": "Churners caught",
    "lift": "Lift",
    "flagged": "Flagged",
    "cutoff": "Cutoff",
    "role": "For the model",
    "first_choice_for": "First choice for (customers)",
    "mean_propensity": "Mean propensity",
    "category": "Category",
}


def html_table(frame: pd.DataFrame, *, index: bool = True, currency: str = "") -> str:
    """A small, formatted HTML table (rates as %, money with the currency prefix)."""
    head = "".join(
        f"<th>{html.escape(_COLUMN_TITLES.get(str(c), str(c)))}</th>"
        for c in ([frame.index.name or ""] if index else []) + list(frame.columns)
    )
    rows = []
    columns = [(str(c), frame[c].tolist()) for c in frame.columns]  # keeps each column's type
    for i, label in enumerate(frame.index):
        cells = f"<td>{html.escape(str(label))}</td>" if index else ""
        cells += "".join(_format_cell(values[i], name, currency) for name, values in columns)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    return (
        f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"
        f"<p class='lead'>{lead}</p>{body}</section>"
    )


def _figure_html(figure, caption: str = "") -> str:
    svg = figure_svg(figure)
    caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{caption_html}</figure>"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


# --------------------------------------------------------------------------------------------
# The sections, one per question, in the order of the page
# --------------------------------------------------------------------------------------------


class Section(NamedTuple):
    """One section of the page: its anchor, its name in the navigation bar, its HTML."""

    anchor: str
    nav_title: str
    html: str


def _churn_over_time_section(data: RetentionReportData) -> Section:
    """How many customers do we lose, and is it getting worse?"""
    rates = data.churn_over_time
    lead = (
        "Each point: of the customers active at the start of the month, the share who had no "
        "purchase or visit in the following label window."
    )
    body = _figure_html(plot_churn_over_time(rates))
    if not rates.empty:
        last = rates.iloc[-1]
        trend = ""
        if len(rates) >= 4:
            before = rates["churn_rate"].iloc[-4:-1].mean()
            trend = (
                f" The latest rate is {'above' if last['churn_rate'] > before else 'below'} "
                f"the three months before ({before:.1%})."
            )
        body += (
            f"<p>Latest matured month {pd.Timestamp(last['cutoff']).date()}: "
            f"{last['churn_rate']:.1%} of {int(last['active_customers']):,} active customers "
            f"churned.{html.escape(trend)}</p>"
        )
    return Section("churn", "Churn over time", _section("churn", "Churn over time", lead, body))


def _cohort_section(data: RetentionReportData) -> Section:
    """How long do customers stay?"""
    lead = (
        "Customers grouped by the month they signed up; each cell is the share of the cohort "
        "with a purchase or visit in that month of their life with us. Steep early drops point "
        "at onboarding; later cohorts below earlier ones point at acquisition quality."
    )
    body = _figure_html(plot_cohort_curves(data.cohorts)) + _figure_html(
        plot_cohort_heatmap(data.cohorts)
    )
    curve = data.cohorts.average_curve()
    tiles = "".join(
        f"<div class='kpi'><b>{curve[month]:.0%}</b><span>active {month} month(s) after "
        "signup</span></div>"
        for month in (1, 3, 6, 12)
        if month in curve.index and np.isfinite(curve.get(month, np.nan))
    )
    body += f"<div class='kpis'>{tiles}</div>" if tiles else ""
    return Section("cohorts", "Cohorts", _section("cohorts", "Cohort retention", lead, body))


def _value_section(data: RetentionReportData) -> Section:
    """Who carries the business?"""
    pareto = value_concentration(data.values)
    share20 = top_share(data.values, 0.2)
    lead = (
        "Customers ranked by their value over the last 12 months (purchases plus 12 x the "
        "monthly subscription). The steeper the curve, the more the business depends on a few "
        "key accounts: those are the customers whose churn hurts most."
    )
    body = _figure_html(plot_pareto(pareto))
    if np.isfinite(share20):
        top_half = float(np.interp(0.5, pareto["customer_share"], pareto["value_share"]))
        body += (
            f"<p>The top 20% of customers bring <b>{share20:.0%}</b> of the value; "
            f"the bottom half brings {1 - top_half:.0%}.</p>"
        )
    return Section("value", "Value", _section("value", "Who carries the value", lead, body))


def _segments_section(data: RetentionReportData) -> Section:
    """Where is the value at risk?"""
    lead = (
        "Churn rate: realised at the last cutoff whose labels have matured. Value at risk: "
        "churn probability x value of each active customer today (from the risk list or the "
        "champion model), summed per segment. Value tiers follow the A/B/C/D practice (top 20%, "
        "next 30%, next 30%, bottom 20% by value); lifecycle stages run exploration -> "
        "formation -> stability -> decline; value-growth groups are IBM's four."
    )
    body = ""
    for column in SEGMENT_COLUMNS:
        summary = data.segments.get(column)
        if summary is None or summary.empty:
            continue
        title = SEGMENT_TITLES.get(column, column)
        body += f"<h3>{html.escape(title)}</h3>"
        body += _figure_html(plot_segments(summary))
        body += html_table(summary, currency=data.currency)
    if not body:
        body = _note("no segment columns in the feature table")
    return Section(
        "segments",
        "Segments",
        _section("segments", "Segments: churn and value at risk", lead, body),
    )


def _behaviours_section(data: RetentionReportData) -> Section:
    """Which behaviours go with churn?"""
    lead = (
        "Active customers at the last matured cutoff, split into ten equal groups by each "
        "behaviour; bars are the share of each group that churned. Rising or falling bars show "
        "which behaviours go with churn (association, not proof of cause)."
    )
    if data.deciles is not None and not data.deciles.empty:
        body = _figure_html(
            plot_behaviour_deciles(data.deciles, overall_rate=data.overall_churn_rate)
        )
    else:
        body = _note(data.notes.get("deciles", "no labelled rows for the behaviour deciles"))
    return Section(
        "behaviours",
        "Behaviours",
        _section("behaviours", "Behaviours that go with churn", lead, body),
    )


def _backtest_section(data: RetentionReportData) -> Section:
    """Would the model's earlier risk lists have worked?"""
    lead = (
        "The champion model scores each earlier snapshot cutoff whose outcome is known; the top "
        "10% by score is the risk list it would have produced. Cutoffs the model was trained "
        "or tuned on flatter it; the test cutoff and later ones are the honest check."
    )
    if data.backtest is not None and not data.backtest.empty:
        table = data.backtest.set_index("cutoff")[
            [
                "role",
                "customers",
                "flagged",
                "flagged_churn_rate",
                "others_churn_rate",
                "capture",
                "lift",
            ]
        ]
        table.index = [pd.Timestamp(c).date() for c in table.index]
        table.index.name = "Cutoff"
        body = _figure_html(plot_backtest(data.backtest)) + html_table(
            table, currency=data.currency
        )
    else:
        body = _note(data.notes.get("backtest", "no champion model to backtest"))
    return Section(
        "backtest", "Backtest", _section("backtest", "Backtest of earlier risk lists", lead, body)
    )


def _at_risk_section(data: RetentionReportData) -> Section:
    """Whom to call this week, why, and what to do."""
    lead = (
        "From the latest risk list written by <code>churn score</code>, ranked by expected value "
        "at risk: whom to call first, why the model flags them, and the suggested action."
    )
    if data.risk_list is not None and not data.risk_list.empty:
        body = f"<p>{html.escape(data.risk_list_source)}</p>"
        body += html_table(top_at_risk(data.risk_list), index=False, currency=data.currency)
        legend = action_legend(data.risk_list)
        if not legend.empty:
            body += "<h3>What the suggested actions mean (whole risk list)</h3>"
            body += html_table(legend, index=False, currency=data.currency)
    else:
        body = _note(data.notes.get("risk_list", "no risk list found: run `churn score` first"))
    return Section("at-risk", "At risk", _section("at-risk", "Top customers at risk", lead, body))


def _cross_sell_offers(risk_list: pd.DataFrame, currency: str) -> str:
    """The cross-sell table and the offers for the top of the risk list ("" without any)."""
    summary = cross_sell_summary(risk_list)
    if summary.empty:
        return ""
    body = html_table(summary.set_index("category"), currency=currency)
    with_candidates = risk_list.loc[
        risk_list["cross_sell_candidates"].map(lambda c: isinstance(c, list) and bool(c))
    ]
    if len(with_candidates):
        top = with_candidates.head(15)
        offers = pd.DataFrame(
            {
                "Customer": top["customer_id"].to_numpy(),
                "Offer first": [c[0]["category"] for c in top["cross_sell_candidates"]],
                "Then": [
                    ", ".join(x["category"] for x in c[1:]) for c in top["cross_sell_candidates"]
                ],
            }
        )
        body += "<h3>Offers for the top of the risk list</h3>"
        body += html_table(offers, index=False, currency=currency)
    return body


def _cross_sell_section(data: RetentionReportData) -> Section:
    """What to offer, and who buys what else."""
    lead = (
        "Cross-sell: categories a customer has not bought yet, most likely first (up-sell "
        "model x category popularity, from the risk list). Below, which categories the buyers "
        "of each category also buy."
    )
    body = ""
    if data.risk_list is not None and "cross_sell_candidates" in data.risk_list.columns:
        body = _cross_sell_offers(data.risk_list, data.currency)
    if not body:
        default = (
            "the risk list holds no cross-sell candidates: they need an up-sell champion "
            "(`churn train --task upsell`), then `churn score` again"
            if data.risk_list is not None
            else "no cross-sell candidates: run `churn score`"
        )
        body = _note(data.notes.get("cross_sell", default))
    if data.co_purchase is not None and not data.co_purchase.empty:
        body += _figure_html(plot_co_purchase(data.co_purchase))
    return Section(
        "cross-sell", "Cross-sell", _section("cross-sell", "Cross-sell candidates", lead, body)
    )


#: The page's sections, top to bottom.
SECTIONS = (
    _churn_over_time_section,
    _cohort_section,
    _value_section,
    _segments_section,
    _behaviours_section,
    _backtest_section,
    _at_risk_section,
    _cross_sell_section,
)


# --------------------------------------------------------------------------------------------
# The page around them
# --------------------------------------------------------------------------------------------


def _headline_figures(data: RetentionReportData) -> str:
    """The tiles above the sections: customers, active, churn rate, top-20% share, at risk."""
    currency = data.currency
    share20 = top_share(data.values, 0.2)
    kpis = [
        (f"{data.n_customers:,}", "customers with history"),
        (f"{data.n_active:,}", "active today"),
    ]
    if data.overall_churn_rate is not None and np.isfinite(data.overall_churn_rate):
        kpis.append((f"{data.overall_churn_rate:.1%}", "churn rate, last matured cutoff"))
    if np.isfinite(share20):
        kpis.append((f"{share20:.0%}", "of value from the top 20%"))
    if data.risk_list is not None and "expected_value_at_risk" in data.risk_list.columns:
        total = float(
            pd.to_numeric(data.risk_list["expected_value_at_risk"], errors="coerce").sum()
        )
        kpis.append((f"{currency}{total:,.0f}", "expected value at risk"))
    return "".join(
        f"<div class='kpi'><b>{v}</b><span>{html.escape(t)}</span></div>" for v, t in kpis
    )


def _page(data: RetentionReportData, sections: list[Section]) -> str:
    """The HTML document: header, navigation, headline figures, sections, footer."""
    nav = "".join(f"<a href='#{s.anchor}'>{html.escape(s.nav_title)}</a>" for s in sections)
    subtitle = f"Data {data.data_start.date()} to {(data.as_of - pd.Timedelta(days=1)).date()}" + (
        f" &middot; model {html.escape(data.model)}" if data.model else ""
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(data.title)}</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<header><h1>{html.escape(data.title)}</h1><p>{subtitle}</p></header>"
        f"<nav>{nav}</nav><main><div class='kpis'>{_headline_figures(data)}</div>"
        + "".join(s.html for s in sections)
        + "</main><footer>Generated by churn-crm (`churn report`). Churn = no purchase or visit "
        "in the label window after a cutoff.</footer></body></html>"
    )


def render_retention_report(data: RetentionReportData) -> str:
    """The whole page as one HTML string; charts are inline SVG, nothing is fetched."""
    return _page(data, [section(data) for section in SECTIONS])
