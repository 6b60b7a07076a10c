"""PNG plots of a training run: ROC, PR, calibration, gains/lift, profit, SHAP importance.

Figures are drawn on ``matplotlib.figure.Figure`` objects with an explicit Agg canvas created
inside each function: rendering works headless and nothing touches pyplot's global backend or
state (a notebook that imports this module keeps its inline backend).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from training.datasets import FeatureSpec
from training.evaluation import ProfitCurve, reliability_table


def _figure(width: float = 6.4, height: float = 4.8):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, for this figure only
    return figure


def plot_roc(y: np.ndarray, scores: Mapping[str, np.ndarray]):
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = _figure()
    ax = figure.add_subplot()
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, score):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return figure


def plot_pr(y: np.ndarray, scores: Mapping[str, np.ndarray]):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = _figure()
    ax = figure.add_subplot()
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(y, score)
        ap = average_precision_score(y, score)
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
    ax.axhline(np.mean(y), linestyle=":", color="grey", label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return figure


def plot_calibration(y: np.ndarray, probabilities: Mapping[str, np.ndarray], n_bins: int):
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    for name, p in probabilities.items():
        table = reliability_table(y, p, n_bins)
        ax.plot(table["mean_p"], table["rate"], marker="o", label=name)
    ax.set(
        xlabel="predicted probability",
        ylabel="observed rate",
        title="Calibration (reliability diagram)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    return figure


def plot_gains_lift(y: np.ndarray, scores: Mapping[str, np.ndarray]):
    figure = _figure(10, 4.5)
    gains_ax, lift_ax = figure.subplots(1, 2)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    depth = np.arange(1, n + 1) / n
    for name, score in scores.items():
        ordered = y[np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")]
        captured = np.cumsum(ordered) / max(1.0, y.sum())
        lift = (np.cumsum(ordered) / np.arange(1, n + 1)) / max(1e-12, y.mean())
        gains_ax.plot(np.concatenate([[0], depth]), np.concatenate([[0], captured]), label=name)
        lift_ax.plot(depth, lift, label=name)
    gains_ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    gains_ax.set(
        xlabel="share of customers contacted",
        ylabel="share of positives reached",
        title="Cumulative gains",
    )
    lift_ax.axhline(1.0, linestyle=":", color="grey")
    lift_ax.set(xlabel="share of customers contacted", ylabel="lift", title="Lift")
    gains_ax.legend(loc="lower right")
    return figure


def plot_profit(curves: Mapping[str, ProfitCurve]):
    figure = _figure()
    ax = figure.add_subplot()
    for name, curve in curves.items():
        line = ax.plot(curve.depth, curve.profit, label=name)[0]
        ax.scatter([curve.best_depth], [curve.best_profit], color=line.get_color(), zorder=3)
    ax.axhline(0.0, linestyle=":", color="grey")
    ax.set(
        xlabel="share of customers contacted (by score)",
        ylabel="expected campaign profit",
        title="Expected profit by contact depth",
    )
    ax.legend(loc="best")
    return figure


def plot_importance(importance: pd.Series, spec: FeatureSpec, top_n: int = 20):
    top = importance.head(top_n)[::-1]
    figure = _figure(7, max(3.0, 0.3 * len(top) + 1))
    ax = figure.add_subplot()
    labels = [spec.readable_names.get(c, c) for c in top.index]
    ax.barh(labels, top.to_numpy())
    ax.set(xlabel="mean |SHAP contribution| (log-odds)", title="Feature importance")
    return figure


def plot_shap_summary(
    contributions: np.ndarray,
    X: pd.DataFrame,
    spec: FeatureSpec,
    importance: pd.Series,
    top_n: int = 15,
    seed: int = 0,
):
    """A beeswarm-style summary: one row per feature, one dot per customer, coloured by value."""
    features = list(importance.head(top_n).index)[::-1]
    figure = _figure(8, max(3.0, 0.35 * len(features) + 1))
    ax = figure.add_subplot()
    rng = np.random.default_rng(seed)
    position = {f: i for i, f in enumerate(spec.features)}
    scatter = None
    for row, feature in enumerate(features):
        shap_values = contributions[:, position[feature]]
        column = X[feature]
        if isinstance(column.dtype, pd.CategoricalDtype):
            colour = np.full(len(column), 0.5)
        else:
            values = column.to_numpy(dtype=np.float64)
            ranks = pd.Series(values).rank(pct=True).to_numpy()
            colour = np.where(np.isfinite(ranks), ranks, 0.5)
        jitter = rng.uniform(-0.3, 0.3, size=len(shap_values))
        scatter = ax.scatter(
            shap_values, row + jitter, c=colour, cmap="coolwarm", s=4, alpha=0.6, vmin=0, vmax=1
        )
    ax.set_yticks(range(len(features)), [spec.readable_names.get(f, f) for f in features])
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="SHAP contribution (log-odds)", title="SHAP summary")
    if scatter is not None:
        colorbar = figure.colorbar(scatter, ax=ax)
        colorbar.set_label("feature value (low -> high; grey-ish = categorical/missing)")
    return figure


def save_evaluation_plots(
    directory: str | Path,
    *,
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    probabilities: Mapping[str, np.ndarray],
    profit_curves: Mapping[str, ProfitCurve],
    importance: pd.Series,
    contributions: np.ndarray,
    X: pd.DataFrame,
    spec: FeatureSpec,
    n_bins: int = 10,
) -> list[Path]:
    """Render every plot of a run into ``directory``; return the PNG paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = {
        "roc_curve.png": plot_roc(y, scores),
        "pr_curve.png": plot_pr(y, scores),
        "calibration.png": plot_calibration(y, probabilities, n_bins),
        "gains_lift.png": plot_gains_lift(y, scores),
        "profit_curve.png": plot_profit(profit_curves),
        "feature_importance.png": plot_importance(importance, spec),
        "shap_summary.png": plot_shap_summary(contributions, X, spec, importance),
    }
    paths = []
    for name, figure in figures.items():
        path = directory / name
        figure.savefig(path)
        paths.append(path)
    return paths
