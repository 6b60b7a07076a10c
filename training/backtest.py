"""Rolling-origin backtest: how much the model's quality moves from one cutoff to the next.

One test cutoff is one draw: a retention team cannot tell from a single ROC AUC whether the
next month will look like it (an internal test estimate of 0.66 has met a future of 0.54). The
backtest replays training at each of the last ``K`` usable cutoffs (``backtest_cutoffs``;
usable = has matured, eligible rows, see ``training.datasets.eligible_mask``), the *origins*:

* the snapshot table is cut at the origin (cutoffs <= origin) and split by
  ``training.datasets.build_task_data`` exactly as training splits the full table: the origin
  is the test cutoff, the usable cutoff before it (at least ``purge_gap_days`` earlier) the
  validation cutoff (its tuning share for early stopping, its calibration share for the
  calibrator) and the cutoffs before that (again ``purge_gap_days`` apart) the training
  cutoffs, with the feature spec refitted on those training rows. No row of the origin or of a
  later cutoff is ever fitted on;
* the model is refitted with the hyper-parameters the tuner chose for the deployed model, not
  re-tuned. They were chosen on the *latest* validation cutoff, which lies after every origin
  but the latest; so the backtest is slightly optimistic about the tuning (not about the
  trees or the calibration, which never see the origin);
* boosting stops at the tuned model's number of rounds (early stopping on the validation
  cutoff can stop sooner), so the whole backtest costs at most ``K - 1`` fits of the final
  size: at the latest origin, the test cutoff, a refit would reproduce the deployed model
  exactly (same rows, parameters and seed; tested), so the caller passes that model's own
  test predictions (``known``) instead;
* the calibrated probabilities are graded on the origin: ROC AUC, PR AUC (average precision),
  lift at 10% and the expected calibration error, with the definitions of
  ``training.evaluation``.

Origins without enough earlier cutoffs (or without both classes in a part) are skipped and
named, with the reason, in ``skipped``. The summary is the mean and the sample standard
deviation (ddof=1; ``None`` from fewer than two origins) over the origins that ran.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.contract import DataContractError
from training.calibration import ProbabilityCalibrator
from training.config import TrainingConfig
from training.datasets import TaskData, build_task_data, check_snapshot_table, eligible_mask
from training.evaluation import expected_calibration_error, lift_at
from training.models import (
    XGB_EVAL_METRICS,
    applicable_monotone_constraints,
    base_xgb_params,
    fit_xgboost,
    positive_class_weight,
    predict_xgboost,
    to_dmatrix,
)

logger = logging.getLogger(__name__)

#: The per-origin metrics that are summarised (mean, std) and logged as ``backtest_*``.
SUMMARY_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "lift_at_10", "ece")


def _day(cutoff: pd.Timestamp) -> str:
    return pd.Timestamp(cutoff).date().isoformat()


def usable_cutoffs(table: pd.DataFrame, label_column: str) -> list[pd.Timestamp]:
    """Cutoffs with matured, eligible rows for the label, oldest first."""
    check_snapshot_table(table, label_column)
    eligible = eligible_mask(table, label_column)
    return sorted(pd.Timestamp(c) for c in table.loc[eligible, "cutoff"].unique())


def backtest_origins(table: pd.DataFrame, label_column: str, n_cutoffs: int) -> list[pd.Timestamp]:
    """The last ``n_cutoffs`` usable cutoffs, oldest first (all of them if there are fewer)."""
    if n_cutoffs <= 0:
        return []
    return usable_cutoffs(table, label_column)[-n_cutoffs:]


def table_until(table: pd.DataFrame, origin: pd.Timestamp) -> pd.DataFrame:
    """The rows a model trained at ``origin`` may know of: cutoffs at or before it."""
    return table.loc[table["cutoff"] <= pd.Timestamp(origin)]


def origin_task_data(
    table: pd.DataFrame,
    origin: pd.Timestamp,
    *,
    label_column: str,
    exclude_features: tuple[str, ...] = (),
    purge_gap_days: int = 0,
    calibration_fraction: float = 0.5,
    seed: int = 0,
) -> TaskData:
    """The time split of the table cut at ``origin``: test = origin, the rest strictly before.

    Raises ``DataContractError`` when the origin lacks earlier usable cutoffs or a part lacks
    a class (the caller records the origin as skipped).
    """
    origin = pd.Timestamp(origin)
    data = build_task_data(
        table_until(table, origin),
        label_column,
        exclude_features=exclude_features,
        purge_gap_days=purge_gap_days,
        calibration_fraction=calibration_fraction,
        seed=seed,
    )
    if data.split.test_cutoff != origin:
        raise DataContractError(f"{_day(origin)} has no matured, eligible rows of {label_column}")
    return data


def fit_origin(
    data: TaskData,
    *,
    tuned_params: Mapping[str, Any],
    rounds: int,
    cfg: TrainingConfig,
    monotone_constraints: Mapping[str, int],
) -> tuple[np.ndarray, int]:
    """Refit and calibrate on ``data``'s training and validation rows; score its test rows.

    Returns the calibrated test probabilities and the number of boosting rounds kept.
    """
    constraints, _ = applicable_monotone_constraints(data.spec, dict(monotone_constraints))
    y_train = data.y("train")
    params = base_xgb_params(
        scale_pos_weight=positive_class_weight(y_train, cfg.imbalance_strategy),
        monotone_constraints=constraints,
        tuning_metric=cfg.tuning_metric,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
    )
    params.update({k: v for k, v in tuned_params.items() if k not in params})
    booster = fit_xgboost(
        params,
        to_dmatrix(data.X("train"), y_train),
        to_dmatrix(data.X("tuning"), data.y("tuning")),
        max_rounds=max(1, int(rounds)),
        early_stopping_rounds=cfg.early_stopping_rounds,
        maximize=XGB_EVAL_METRICS[cfg.tuning_metric][1],
    )
    calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
        predict_xgboost(booster, data.X("calibration")), data.y("calibration")
    )
    kept = int(booster.num_boosted_rounds())
    return calibrator.predict(predict_xgboost(booster, data.X("test"))), kept


def origin_metrics(y: np.ndarray, p: np.ndarray, ece_bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, lift at 10% and ECE of one origin's calibrated probabilities."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "lift_at_10": lift_at(y, p, 0.1),
        "ece": expected_calibration_error(y, p, ece_bins),
    }


def summarize(
    rows: Iterable[Mapping[str, Any]], metrics: tuple[str, ...] = SUMMARY_METRICS
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Mean and sample standard deviation (ddof=1) of each metric over the origins.

    ``None`` where no origin (mean) or fewer than two origins (std) have a finite value.
    """
    rows = list(rows)
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for metric in metrics:
        values = np.array(
            [r[metric] for r in rows if r.get(metric) is not None and math.isfinite(r[metric])],
            dtype=np.float64,
        )
        mean[metric] = float(values.mean()) if len(values) else None
        std[metric] = float(values.std(ddof=1)) if len(values) >= 2 else None
    return mean, std


def _origin_row(
    origin: pd.Timestamp, data: TaskData, p: np.ndarray, kept: int, cfg: TrainingConfig
) -> dict[str, Any]:
    if data.split.test_cutoff != origin or len(p) != len(data.test):
        raise ValueError(f"the predictions given for {_day(origin)} are not of its test rows")
    y = data.y("test")
    return {
        "cutoff": _day(origin),
        **origin_metrics(y, p, cfg.ece_bins),
        "n": len(y),
        "positives": int(y.sum()),
        "positive_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "train_cutoffs": [_day(c) for c in data.split.train_cutoffs],
        "validation_cutoff": _day(data.split.validation_cutoff),
        "boosting_rounds": int(kept),
    }


def run_backtest(
    table: pd.DataFrame,
    cfg: TrainingConfig,
    *,
    task: str,
    tuned_params: Mapping[str, Any],
    rounds: int,
    tuned_on: pd.Timestamp | None = None,
    known: Mapping[pd.Timestamp, tuple[TaskData, np.ndarray, int]] | None = None,
) -> dict[str, Any]:
    """The rolling-origin backtest of ``task`` over the last ``cfg.backtest_cutoffs`` cutoffs.

    ``tuned_params``: the searched XGBoost parameters of the deployed model (the base ones,
    e.g. ``scale_pos_weight``, are recomputed per origin); ``rounds``: its boosting rounds;
    ``tuned_on``: the validation cutoff they were chosen on (reported); ``known``: origins
    the caller has already fitted exactly as :func:`fit_origin` would, as (task data,
    calibrated test probabilities, boosting rounds), used instead of a refit. Returns a
    JSON-able dict: ``cutoffs`` (one row per origin that ran), ``mean``, ``std``, ``skipped``.
    """
    known = {pd.Timestamp(k): v for k, v in (known or {}).items()}
    task_cfg = cfg.task(task)
    label = task_cfg.label_column
    origins = backtest_origins(table, label, cfg.backtest_cutoffs)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for origin in origins:
        if origin in known:
            data, p, kept = known[origin]
            rows.append(_origin_row(origin, data, np.asarray(p, dtype=np.float64), kept, cfg))
            continue
        try:
            data = origin_task_data(
                table,
                origin,
                label_column=label,
                exclude_features=task_cfg.exclude_features,
                purge_gap_days=cfg.purge_gap_days,
                calibration_fraction=cfg.calibration_fraction,
                seed=cfg.seed,
            )
        except DataContractError as exc:
            skipped.append({"cutoff": _day(origin), "reason": str(exc)})
            logger.info("backtest of %s: origin %s skipped: %s", task, _day(origin), exc)
            continue
        p, kept = fit_origin(
            data,
            tuned_params=tuned_params,
            rounds=rounds,
            cfg=cfg,
            monotone_constraints=task_cfg.monotone_constraints,
        )
        rows.append(_origin_row(origin, data, p, kept, cfg))
    mean, std = summarize(rows)
    return {
        "origins_requested": int(cfg.backtest_cutoffs),
        "n_cutoffs": len(rows),
        "cutoffs": rows,
        "mean": mean,
        "std": std,
        "skipped": skipped,
        "max_boosting_rounds": int(rounds),
        "params_tuned_on": None if tuned_on is None else _day(tuned_on),
        "note": (
            "refitted per origin on earlier cutoffs only; hyper-parameters chosen by the tuner "
            "on the latest validation cutoff (params_tuned_on), not re-tuned per origin"
        ),
    }


def backtest_mlflow_metrics(backtest: Mapping[str, Any]) -> dict[str, float]:
    """``backtest_<metric>_mean`` / ``_std`` (finite ones) and ``backtest_n_cutoffs``."""
    metrics = {"backtest_n_cutoffs": float(backtest["n_cutoffs"])}
    for kind in ("mean", "std"):
        for metric, value in backtest[kind].items():
            if value is not None and math.isfinite(value):
                metrics[f"backtest_{metric}_{kind}"] = float(value)
    return metrics
