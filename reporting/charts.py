"""The retention report's charts: one matplotlib figure per analysis of :mod:`reporting.analyses`.

Each ``plot_*`` takes what its analysis returns and gives back a ``matplotlib.figure.Figure``
(made without pyplot, so no global figure state); the report inlines it as SVG with
:func:`figure_svg`, the exploration notebook displays it. An empty analysis draws a figure that
says what is missing rather than failing. matplotlib is imported inside the functions, so
importing this module stays cheap.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from reporting.analyses import CohortRetention

__all__ = [
    "figure_svg",
    "plot_backtest",
    "plot_behaviour_deciles",
    "plot_churn_over_time",
    "plot_co_purchase",
    "plot_cohort_curves",
    "plot_cohort_heatmap",
    "plot_pareto",
    "plot_segments",
]

# Colours: one accent for "bad" (churn), one for value, greys for context.
_RED = "#c0392b"
_BLUE = "#2c6fbb"
_GREY = "#8a94a6"


def _figure(width: float = 8.0, height: float = 3.6):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure


def _style(ax, *, percent_y: bool = False) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    if percent_y:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def plot_churn_over_time(rates: pd.DataFrame):
    """Monthly churn rate (line) over the number of active customers (bars)."""
    figure = _figure()
    ax = figure.add_subplot()
    if rates.empty:
        ax.text(0.5, 0.5, "no matured cutoff yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    x = pd.to_datetime(rates["cutoff"])
    bars = ax.twinx()
    bars.bar(x, rates["active_customers"], width=20, color="#dfe6ee", zorder=0)
    bars.set_ylabel("active customers", color=_GREY)
    bars.tick_params(axis="y", colors=_GREY)
    bars.spines[["top"]].set_visible(False)
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(x, rates["churn_rate"], color=_RED, marker="o", linewidth=2)
    ax.set_ylabel("churn rate in the next horizon")
    ax.set_ylim(0, max(0.05, float(rates["churn_rate"].max()) * 1.25))
    ax.set_title("Share of active customers who churned, by month", loc="left")
    _style(ax, percent_y=True)
    return figure


def plot_cohort_heatmap(cohorts: CohortRetention, max_cohorts: int = 30):
    """Cohort table: share of each signup month active N months later."""
    shares = cohorts.shares.tail(max_cohorts)
    figure = _figure(9.0, max(3.0, 0.22 * len(shares) + 1.2))
    ax = figure.add_subplot()
    if shares.empty:
        ax.text(0.5, 0.5, "no cohort with a full month yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    image = ax.imshow(
        shares.to_numpy(dtype=np.float64), aspect="auto", cmap="Blues", vmin=0, vmax=1
    )
    ax.set_yticks(range(len(shares)), [f"{c} ({cohorts.sizes[c]:,})" for c in shares.index])
    ax.set_xticks(range(0, shares.shape[1], 3))
    ax.set_xlabel("months since signup")
    ax.set_title("Signup cohorts: share active each month (customers per cohort)", loc="left")
    ax.tick_params(axis="y", labelsize=7)
    from matplotlib.ticker import PercentFormatter

    colorbar = figure.colorbar(image, ax=ax, fraction=0.03)
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def plot_cohort_curves(cohorts: CohortRetention):
    """Retention curves of signup quarters, with the customer-weighted average."""
    figure = _figure()
    ax = figure.add_subplot()
    shares = cohorts.shares
    if shares.empty:
        ax.text(0.5, 0.5, "no cohort with a full month yet", ha="center", va="center")
        ax.set_axis_off()
        return figure
    quarters = pd.PeriodIndex(shares.index, freq="M").asfreq("Q")
    weights = cohorts.sizes.reindex(shares.index).to_numpy(dtype=np.float64)
    import matplotlib

    colours = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.9, len(set(quarters))))
    for colour, quarter in zip(colours, sorted(set(quarters)), strict=False):
        rows = quarters == quarter
        part = shares.loc[rows]
        w = weights[rows]
        known = part.notna()
        curve = (part.fillna(0).mul(w, axis=0)).sum() / known.mul(w, axis=0).sum()
        curve = curve[known.any()]
        ax.plot(curve.index, curve.to_numpy(), color=colour, linewidth=1.2, label=str(quarter))
    average = cohorts.average_curve().dropna()
    ax.plot(average.index, average.to_numpy(), color="black", linewidth=2.5, label="all cohorts")
    ax.set_xlabel("months since signup")
    ax.set_ylabel("share of the cohort active")
    ax.set_ylim(0, 1.02)
    ax.set_title("Retention curves by signup quarter", loc="left")
    ax.legend(ncol=2, fontsize=7, frameon=False, loc="upper right")
    _style(ax, percent_y=True)
    return figure


def plot_pareto(curve: pd.DataFrame, *, fraction: float = 0.2):
    """The Pareto curve of value, the top ``fraction`` marked."""
    figure = _figure(6.0, 4.2)
    ax = figure.add_subplot()
    ax.plot(curve["customer_share"], curve["value_share"], color=_BLUE, linewidth=2.2)
    ax.plot([0, 1], [0, 1], color=_GREY, linestyle="--", linewidth=1, label="every customer equal")
    share = float(np.interp(fraction, curve["customer_share"], curve["value_share"]))
    ax.axvline(fraction, color=_RED, linewidth=1, linestyle=":")
    ax.scatter([fraction], [share], color=_RED, zorder=3)
    ax.annotate(
        f"top {fraction:.0%} of customers\nbring {share:.0%} of the value",
        (fraction, share),
        xytext=(fraction + 0.08, share - 0.2),
        arrowprops={"arrowstyle": "->", "color": _RED},
    )
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("customers, most valuable first")
    ax.set_ylabel("share of the value (last 12 months)")
    ax.set_title("Pareto curve of customer value", loc="left")
    ax.legend(frameon=False, loc="lower right")
    _style(ax, percent_y=True)
    return figure


def plot_segments(summary: pd.DataFrame, *, title: str | None = None):
    """Churn rate and value at risk per segment, side by side."""
    figure = _figure(9.0, max(2.6, 0.38 * len(summary) + 1.2))
    left, right = figure.subplots(1, 2, sharey=True)
    labels = [str(i) for i in summary.index][::-1]
    if "churn_rate" in summary.columns:
        left.barh(labels, summary["churn_rate"].to_numpy()[::-1], color=_RED)
        from matplotlib.ticker import PercentFormatter

        left.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        left.set_title("churn rate (last matured cutoff)", loc="left", fontsize=10)
    risk_column = next(
        (c for c in ("value_at_risk", "value_at_risk_at_past_rate") if c in summary.columns), None
    )
    if risk_column is not None:
        right.barh(labels, summary[risk_column].fillna(0).to_numpy()[::-1], color=_BLUE)
        right.set_title(
            "expected value at risk"
            if risk_column == "value_at_risk"
            else "value at risk at the past churn rate",
            loc="left",
            fontsize=10,
        )
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", color="#e4e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize=12)
    return figure


def plot_behaviour_deciles(deciles: pd.DataFrame, *, overall_rate: float | None = None):
    """Small multiples: churn rate by decile of each behaviour."""
    from training.explain import readable_feature_name

    metrics = list(dict.fromkeys(deciles["metric"]))
    n_cols = 3
    n_rows = max(1, math.ceil(len(metrics) / n_cols))
    figure = _figure(10.0, 2.3 * n_rows + 0.6)
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False)).ravel()
    top = float(deciles["churn_rate"].max()) if len(deciles) else 1.0
    for ax, metric in zip(axes, metrics, strict=False):
        part = deciles.loc[(deciles["metric"] == metric) & (deciles["decile"] >= 0)]
        ax.bar(range(len(part)), part["churn_rate"], color=_RED, width=0.8)
        ax.set_xticks(
            range(len(part)),
            [_short_number(v) for v in part["high"]],
            fontsize=6,
            rotation=45,
        )
        ax.set_title(readable_feature_name(metric), fontsize=8, loc="left", wrap=True)
        ax.set_ylim(0, max(top * 1.1, 0.01))
        if overall_rate is not None:
            ax.axhline(overall_rate, color=_GREY, linewidth=0.8, linestyle="--")
        _style(ax, percent_y=True)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    figure.suptitle(
        "Churn rate by decile of each behaviour (x: upper end of the decile; dashed: overall)",
        x=0.01,
        ha="left",
        fontsize=11,
    )
    return figure


def _short_number(value: float) -> str:
    if not np.isfinite(value):
        return ""
    if abs(value) >= 1000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 10 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2f}"


def plot_backtest(backtest: pd.DataFrame, *, fraction: float = 0.1):
    """Churn among the customers each earlier risk list flagged vs all the others."""
    figure = _figure()
    ax = figure.add_subplot()
    if backtest.empty:
        ax.text(0.5, 0.5, "no matured cutoff to backtest", ha="center", va="center")
        ax.set_axis_off()
        return figure
    x = np.arange(len(backtest))
    ax.bar(
        x - 0.2,
        backtest["flagged_churn_rate"],
        width=0.4,
        color=_RED,
        label=f"top {fraction:.0%} flagged",
    )
    ax.bar(x + 0.2, backtest["others_churn_rate"], width=0.4, color=_GREY, label="everyone else")
    labels = [
        f"{pd.Timestamp(c).date()}\n{role}" if role else str(pd.Timestamp(c).date())
        for c, role in zip(backtest["cutoff"], backtest["role"], strict=True)
    ]
    ax.set_xticks(x, labels, fontsize=7)
    for xi, (rate, capture) in enumerate(
        zip(backtest["flagged_churn_rate"], backtest["capture"], strict=True)
    ):
        ax.annotate(f"caught {capture:.0%}", (xi - 0.2, rate), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("realised churn rate")
    ax.set_title("Backtest: churn among the flagged customers vs the rest", loc="left")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(ax, percent_y=True)
    return figure


def plot_co_purchase(shares: pd.DataFrame):
    """Heatmap: share of the buyers of a category (row) who also bought another (column)."""
    figure = _figure(6.5, 5.0)
    ax = figure.add_subplot()
    if shares.empty:
        ax.text(0.5, 0.5, "no purchases with categories", ha="center", va="center")
        ax.set_axis_off()
        return figure
    image = ax.imshow(shares.to_numpy(dtype=np.float64), cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(shares.shape[1]), shares.columns, rotation=45, ha="right")
    ax.set_yticks(range(shares.shape[0]), shares.index)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            value = shares.iat[i, j]
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")  # fmt: skip
    ax.set_xlabel("... also bought")
    ax.set_ylabel("buyers of")
    ax.set_title("Who buys what else (diagonal: share of all buyers)", loc="left")
    from matplotlib.ticker import PercentFormatter

    colorbar = figure.colorbar(image, ax=ax, fraction=0.04)
    colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def figure_svg(figure) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text, no XML prologue)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
