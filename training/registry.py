"""Model registry: register a version, alias it ``challenger``, promote it to ``champion`` on merit.

A new version is promoted only if it beats the current champion on the SAME test rows (the new
run's test cutoff) by the configured metric: the champion is loaded from the registry and
re-scored, so the comparison is never between numbers measured on different data. When the
champion cannot be scored (e.g. it needs a feature the new table lacks) the reason is recorded
and ``promote_when_comparison_fails`` decides. The first version of a model is promoted.

After a promotion the version carries ``champion`` and the ``challenger`` alias is removed
(no candidate is pending); otherwise the version keeps ``challenger``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training.config import METRIC_DIRECTIONS

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def metric_value(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """One promotion metric of probabilities ``p`` against labels ``y``."""
    if metric == "pr_auc":
        return float(average_precision_score(y, p))
    if metric == "roc_auc":
        return float(roc_auc_score(y, p))
    if metric == "log_loss":
        return float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if metric == "brier":
        return float(brier_score_loss(y, p))
    raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRIC_DIRECTIONS)}")


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None = None
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    metric: str,
    challenger_score: float,
    champion_score: float | None,
    *,
    champion_version: str | None = None,
) -> PromotionDecision:
    """Promote when there is no champion or the challenger is strictly better."""
    if champion_score is None:
        return PromotionDecision(True, "no champion yet", metric, challenger_score)
    higher_is_better = METRIC_DIRECTIONS[metric]
    better = (
        challenger_score > champion_score if higher_is_better else challenger_score < champion_score
    )
    verdict = "beats" if better else "does not beat"
    reason = (
        f"challenger {metric}={challenger_score:.4f} {verdict} champion v{champion_version} "
        f"{metric}={champion_score:.4f} on the same test cutoff"
    )
    return PromotionDecision(
        better, reason, metric, challenger_score, champion_score, champion_version
    )


def find_champion(client: Any, name: str, *, alias: str = CHAMPION) -> Any | None:
    """The registered version (MLflow ``ModelVersion``) ``alias`` of model ``name`` points to.

    The one champion lookup of the project (promotion, serving, monitoring, the report):
    None when the model or the alias does not exist, so each caller says what that means to
    it. ``alias`` is another alias to follow (serving may be configured with one).
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_probability_function(model_uri: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """Load a registered pyfunc once; return a function giving its calibrated probabilities.

    The function conforms a feature table to the model's signature (column types) first, so
    callers can pass tables straight from ``features.snapshots``.
    """
    import mlflow

    from training.scorer import conform_to_input_types

    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    input_types = None if schema is None else {s.name: s.type.name for s in schema.inputs}

    def probabilities(table: pd.DataFrame) -> np.ndarray:
        frame = table if input_types is None else conform_to_input_types(table, input_types)
        output = model.predict(frame)
        if isinstance(output, pd.DataFrame):
            output = output["probability"]
        return np.asarray(output, dtype=np.float64)

    return probabilities


def score_registered_model(model_uri: str, table: pd.DataFrame) -> np.ndarray:
    """Calibrated probabilities of a registered pyfunc on ``table`` (its signature columns)."""
    return load_probability_function(model_uri)(table)


def compare_with_champion(
    client: Any,
    name: str,
    *,
    metric: str,
    challenger_score: float,
    test_table: pd.DataFrame,
    y_test: np.ndarray,
    promote_when_comparison_fails: bool,
    test_cutoff: pd.Timestamp | None = None,
) -> PromotionDecision:
    """Score the current champion on the new test rows and decide.

    A champion refitted on cutoffs up to or past ``test_cutoff`` (its ``trained_through``
    version tag) has seen these rows: scoring it there would flatter it, so its own held-out
    score (the metric logged by its run) is compared instead, and the reason says so.
    """
    champion = find_champion(client, name)
    if champion is None:
        return decide_promotion(metric, challenger_score, None)
    champion_version = str(champion.version)
    tags: dict[str, str] = {}
    if test_cutoff is not None:  # only then can the champion have seen the test rows
        tags = client.get_model_version(name, champion_version).tags or {}
    seen = _champion_saw(tags, None if test_cutoff is None else pd.Timestamp(test_cutoff))
    if seen is not None:
        held_out = _held_out_score(client, tags, metric)
        if held_out is not None:
            decision = decide_promotion(
                metric, challenger_score, held_out, champion_version=champion_version
            )
            reason = decision.reason.replace(
                "on the same test cutoff",
                f"(the champion was trained through {seen}, so its own held-out score is used)",
            )
            return PromotionDecision(
                decision.promote, reason, metric, challenger_score, held_out, champion_version
            )
    try:
        champion_p = score_registered_model(f"models:/{name}@{CHAMPION}", test_table)
        champion_score = metric_value(metric, y_test, champion_p)
    except Exception as exc:  # any failure to score is a recorded decision, not a crash
        verdict = "promoting" if promote_when_comparison_fails else "keeping the champion"
        reason = (
            f"champion v{champion_version} could not be scored on the new test cutoff "
            f"({type(exc).__name__}: {exc}); {verdict} (promote_when_comparison_fails="
            f"{promote_when_comparison_fails})"
        )
        logger.warning(reason)
        return PromotionDecision(
            promote_when_comparison_fails,
            reason,
            metric,
            challenger_score,
            None,
            champion_version,
        )
    return decide_promotion(
        metric, challenger_score, champion_score, champion_version=champion_version
    )


#: Version tag: the latest cutoff whose rows the registered model was fitted on.
TRAINED_THROUGH_TAG = "trained_through"


def _champion_saw(tags: dict[str, str], test_cutoff: pd.Timestamp | None) -> str | None:
    """The champion's ``trained_through`` date when it is on or after ``test_cutoff``."""
    trained_through = tags.get(TRAINED_THROUGH_TAG)
    if test_cutoff is None or not trained_through:
        return None
    return str(trained_through) if pd.Timestamp(trained_through) >= test_cutoff else None


def _held_out_score(client: Any, tags: dict[str, str], metric: str) -> float | None:
    """The metric the champion's own run logged on its held-out test cutoff."""
    run_id = tags.get("run_id")
    if not run_id:
        return None
    value = client.get_run(run_id).data.metrics.get(metric)
    return None if value is None else float(value)


def register_version(
    client: Any, model_uri: str, name: str, *, run_id: str, tags: dict[str, str]
) -> str:
    """Register ``model_uri`` under ``name``; return the new version number."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    client.set_model_version_tag(name, version.version, "run_id", run_id)
    return str(version.version)


def apply_decision(client: Any, name: str, version: str, decision: PromotionDecision) -> str:
    """Move aliases and describe the version; return the alias the version ends up with."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
        alias = CHAMPION
    else:
        alias = CHALLENGER
    description = f"{'Promoted to champion' if decision.promote else 'Challenger'}: "
    description += decision.reason
    client.update_model_version(name, version, description=description)
    client.set_model_version_tag(name, version, "promotion_decision", alias)
    client.set_model_version_tag(
        name, version, f"test_{decision.metric}", f"{decision.challenger_score:.6f}"
    )
    return alias
