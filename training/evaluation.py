"""Evaluation a retention team understands, on the test cutoff.

Beyond ROC AUC / PR AUC / log loss / Brier score and the expected calibration error, the
questions a campaign manager asks are "if I call the top 10%, how many more churners do I
reach than at random?" (lift), "what share of all churners is that?" (capture rate) and "how
deep should I go?" (the expected-profit curve under the configured campaign economics).

Every model is graded against a naive rule computed in the same run on the same rows, e.g.
for churn "flag customers without activity in the last X days": the rule's score is the
column, X is chosen on the validation cutoff, and its ranking quality is ``baseline_*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

from training.config import BaselineRule, CampaignEconomics


def fraction_label(fraction: float) -> str:
    """0.05 -> "5", 0.1 -> "10": the suffix of ``lift_at_*`` / ``capture_at_*`` metrics."""
    return f"{fraction * 100:g}"


def top_k_count(n_rows: int, fraction: float) -> int:
    """How many customers a contact depth covers: ceil(fraction * n), at least 1."""
    return int(min(n_rows, max(1, math.ceil(fraction * n_rows - 1e-9))))


def _descending_order(score: np.ndarray) -> np.ndarray:
    # stable sort: ties keep input order, so results are reproducible
    return np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")


def lift_at(y: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Positive rate among the top ``fraction`` by score, divided by the overall positive rate."""
    y = np.asarray(y, dtype=np.float64)
    base_rate = y.mean()
    if base_rate == 0:
        return float("nan")
    k = top_k_count(len(y), fraction)
    return float(y[_descending_order(score)[:k]].mean() / base_rate)


def capture_at(y: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Share of all positives found in the top ``fraction`` by score."""
    y = np.asarray(y, dtype=np.float64)
    total = y.sum()
    if total == 0:
        return float("nan")
    k = top_k_count(len(y), fraction)
    return float(y[_descending_order(score)[:k]].sum() / total)


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: count, mean predicted and observed rate per bin."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
    table = frame.groupby("bin").agg(count=("y", "size"), mean_p=("p", "mean"), rate=("y", "mean"))
    return table.reset_index()


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |mean predicted - observed rate| over equal-width bins."""
    table = reliability_table(y, p, n_bins)
    weights = table["count"] / table["count"].sum()
    return float((weights * (table["mean_p"] - table["rate"]).abs()).sum())


# --------------------------------------------------------------------------------------------
# Profit curve
# --------------------------------------------------------------------------------------------


def customer_values(table: pd.DataFrame, economics: CampaignEconomics) -> np.ndarray:
    """Each row's customer value: the configured column, its gaps filled with the default."""
    if economics.customer_value_column is None:
        return np.full(len(table), economics.default_customer_value, dtype=np.float64)
    column = economics.customer_value_column
    if column not in table.columns:
        raise ValueError(
            f"economics.customer_value_column {column!r} is not a column of the snapshot table"
        )
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isfinite(values), values, economics.default_customer_value)


def contact_profit(y: np.ndarray, values: np.ndarray, economics: CampaignEconomics) -> np.ndarray:
    """Expected profit of contacting each customer, given whether they are a positive."""
    y = np.asarray(y, dtype=np.float64)
    won = economics.save_rate * (np.asarray(values, dtype=np.float64) - economics.offer_cost)
    wasted_offer = economics.offer_cost if economics.negatives_redeem_offer else 0.0
    return y * won - (1 - y) * wasted_offer - economics.contact_cost


@dataclass(frozen=True)
class ProfitCurve:
    """Cumulative expected profit of contacting the top n customers, n = 0..N."""

    n_contacted: np.ndarray
    profit: np.ndarray

    @property
    def depth(self) -> np.ndarray:
        return self.n_contacted / max(1, int(self.n_contacted[-1]))

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.profit))  # first maximum: the shallowest best depth

    @property
    def best_n(self) -> int:
        return int(self.n_contacted[self.best_index])

    @property
    def best_depth(self) -> float:
        return float(self.depth[self.best_index])

    @property
    def best_profit(self) -> float:
        return float(self.profit[self.best_index])


def profit_curve(
    y: np.ndarray, score: np.ndarray, values: np.ndarray, economics: CampaignEconomics
) -> ProfitCurve:
    """Expected profit by contact depth when customers are contacted in score order."""
    per_customer = contact_profit(y, values, economics)[_descending_order(score)]
    profit = np.concatenate([[0.0], np.cumsum(per_customer)])
    return ProfitCurve(n_contacted=np.arange(len(profit)), profit=profit)


# --------------------------------------------------------------------------------------------
# Metric sets
# --------------------------------------------------------------------------------------------


def ranking_metrics(
    y: np.ndarray, score: np.ndarray, fractions: Sequence[float]
) -> dict[str, float]:
    """Metrics that only need an order: ROC AUC, PR AUC, lift and capture by depth."""
    metrics = {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
    }
    for fraction in fractions:
        label = fraction_label(fraction)
        metrics[f"lift_at_{label}"] = lift_at(y, score, fraction)
        metrics[f"capture_at_{label}"] = capture_at(y, score, fraction)
    return metrics


def probability_metrics(
    y: np.ndarray,
    p: np.ndarray,
    *,
    fractions: Sequence[float],
    ece_bins: int,
    values: np.ndarray,
    economics: CampaignEconomics,
) -> dict[str, float]:
    """All test metrics of a probabilistic model, including its profit curve optimum."""
    metrics = ranking_metrics(y, p, fractions)
    metrics["log_loss"] = float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    metrics["brier"] = float(brier_score_loss(y, p))
    metrics["ece"] = expected_calibration_error(y, p, ece_bins)
    metrics["mean_probability"] = float(np.mean(p))
    curve = profit_curve(y, p, values, economics)
    metrics["profit_best"] = curve.best_profit
    metrics["profit_best_depth"] = curve.best_depth
    metrics["profit_best_contacts"] = float(curve.best_n)
    metrics["profit_contact_all"] = float(curve.profit[-1])
    return metrics


# --------------------------------------------------------------------------------------------
# Naive baseline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaiveBaseline:
    """A one-column rule with its threshold chosen on the validation cutoff."""

    rule: BaselineRule
    threshold: float  # on the rule's score scale: flag when score >= threshold
    validation_roc_auc: float

    def score(self, table: pd.DataFrame) -> np.ndarray:
        return rule_score(table, self.rule)

    def flagged(self, table: pd.DataFrame) -> np.ndarray:
        return self.score(table) >= self.threshold

    def describe(self) -> str:
        column = self.rule.column
        if self.rule.higher_means_positive:
            return f"{column} >= {self.threshold:g}"
        return f"{column} <= {-self.threshold:g}"


def rule_score(table: pd.DataFrame, rule: BaselineRule) -> np.ndarray:
    """The rule's score: the column (negated if lower means positive); missing ranks last."""
    values = pd.to_numeric(table[rule.column], errors="coerce").to_numpy(dtype=np.float64)
    score = values if rule.higher_means_positive else -values
    finite = np.isfinite(score)
    floor = (score[finite].min() - 1.0) if finite.any() else 0.0
    return np.where(finite, score, floor)


def _best_f1_threshold(y: np.ndarray, score: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, score)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def choose_naive_baseline(
    validation: pd.DataFrame, y_validation: np.ndarray, rules: Sequence[BaselineRule]
) -> NaiveBaseline | None:
    """The candidate rule with the best validation ROC AUC; its threshold maximises F1 there.

    Rules whose column is absent from the table are skipped; ``None`` when none is present.
    """
    best: NaiveBaseline | None = None
    for rule in rules:
        if rule.column not in validation.columns:
            continue
        score = rule_score(validation, rule)
        auc = float(roc_auc_score(y_validation, score))
        if best is None or auc > best.validation_roc_auc:
            threshold = _best_f1_threshold(y_validation, score)
            best = NaiveBaseline(rule=rule, threshold=threshold, validation_roc_auc=auc)
    return best


def baseline_metrics(
    baseline: NaiveBaseline,
    test: pd.DataFrame,
    y_test: np.ndarray,
    *,
    fractions: Sequence[float],
    values: np.ndarray,
    economics: CampaignEconomics,
) -> dict[str, float]:
    """``baseline_*`` metrics: the rule's ranking on the test cutoff and its flagged set."""
    score = baseline.score(test)
    metrics = {f"baseline_{k}": v for k, v in ranking_metrics(y_test, score, fractions).items()}
    flagged = baseline.flagged(test)
    y = np.asarray(y_test, dtype=np.float64)
    n_flagged = int(flagged.sum())
    metrics["baseline_rule_contacted_share"] = n_flagged / len(y)
    metrics["baseline_rule_precision"] = float(y[flagged].mean()) if n_flagged else 0.0
    metrics["baseline_rule_recall"] = float(y[flagged].sum() / max(1.0, y.sum()))
    metrics["baseline_rule_profit"] = float(contact_profit(y, values, economics)[flagged].sum())
    metrics["baseline_validation_roc_auc"] = baseline.validation_roc_auc
    return metrics


# --------------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------------


def leakage_suspected(test_roc_auc: float, threshold: float) -> bool:
    """Churn is hard to predict: a test ROC AUC above ``threshold`` usually means leakage."""
    return bool(test_roc_auc > threshold)


def suspicious_features(X: pd.DataFrame, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Numeric features that alone separate the classes with ROC AUC above ``threshold``.

    A feature that is (a copy of) the label, or computed from the label window, shows up here.
    Returns the separating power max(AUC, 1 - AUC) by column, largest first.
    """
    found: dict[str, float] = {}
    for column in X.columns:
        if isinstance(X[column].dtype, pd.CategoricalDtype):
            continue
        values = X[column].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        if finite.sum() < 2 or len(np.unique(y[finite])) < 2:
            continue
        auc = float(roc_auc_score(y[finite], values[finite]))
        power = max(auc, 1 - auc)
        if power > threshold:
            found[column] = power
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------

#: Segment name given to rows whose segment column is missing.
MISSING_SEGMENT = "(missing)"


def segment_lift_table(
    scored: pd.DataFrame,
    segment_column: str,
    *,
    label_column: str = "churn_label",
    score_column: str = "probability",
    top_fraction: float = 0.1,
) -> pd.DataFrame:
    """Observed and predicted rates per segment, and how well the model ranks inside it.

    ``scored`` holds one row per customer of the test cutoff with its label (1.0/0.0; rows
    without a label are left out), its model score and the segment column (e.g.
    ``rfm_segment``, ``lifecycle_stage``, ``value_tier``). One row per segment, highest rate
    lift first:

    * ``customers``, ``share`` (of all customers), ``positives`` and ``rate``: the observed
      label rate in the segment (for churn, the churn rate);
    * ``rate_lift``: ``rate`` / the overall rate, i.e. how much more often than average the
      segment churns (a segment a team could target without a model);
    * ``mean_score``: the mean model score, next to ``rate`` a per-segment calibration check;
    * ``in_top_share``: share of the segment among the overall top ``top_fraction`` by score
      (who a campaign at that depth would contact), and ``captured_in_top_share``: the share
      of all positives that are in the segment AND in that top slice (columns named with the
      depth, e.g. ``in_top_10_share`` and ``captured_in_top_10_share`` for 0.1);
    * ``model_lift_at_<depth>``: the model's lift at ``top_fraction`` inside the segment
      (positive rate of the segment's own top slice / the segment's rate): does the model
      still rank customers once the segment is known? NaN where the segment has no positive.
    """
    missing = [c for c in (segment_column, label_column, score_column) if c not in scored.columns]
    if missing:
        raise ValueError(f"scored table lacks column(s) {missing}")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    labelled = scored.loc[scored[label_column].notna()]
    if labelled.empty:
        raise ValueError(f"no row of the scored table has a {label_column}")
    y = labelled[label_column].to_numpy(dtype=np.float64)
    score = pd.to_numeric(labelled[score_column], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(score).all():
        raise ValueError(f"{score_column} has missing or non-finite values")
    segment = (
        labelled[segment_column]
        .astype("object")
        .where(labelled[segment_column].notna(), MISSING_SEGMENT)
    )
    segment = segment.map(str).to_numpy()
    in_top = np.zeros(len(y), dtype=bool)
    in_top[_descending_order(score)[: top_k_count(len(y), top_fraction)]] = True
    overall_rate = y.mean()
    total_positives = y.sum()
    label = fraction_label(top_fraction)
    rows = []
    for name in pd.unique(segment):
        member = segment == name
        y_segment = y[member]
        rate = float(y_segment.mean())
        rows.append(
            {
                "segment": name,
                "customers": int(member.sum()),
                "share": float(member.mean()),
                "positives": int(y_segment.sum()),
                "rate": rate,
                "rate_lift": rate / overall_rate if overall_rate > 0 else float("nan"),
                "mean_score": float(score[member].mean()),
                f"in_top_{label}_share": float(in_top[member].mean()),
                f"captured_in_top_{label}_share": (
                    float(y[member & in_top].sum() / total_positives)
                    if total_positives > 0
                    else float("nan")
                ),
                f"model_lift_at_{label}": lift_at(y_segment, score[member], top_fraction),
            }
        )
    table = pd.DataFrame(rows).sort_values(
        ["rate_lift", "customers"], ascending=[False, False], kind="stable"
    )
    table.index = pd.Index(table.pop("segment").to_numpy(), name=segment_column)
    return table
