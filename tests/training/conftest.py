"""Fixtures of the training tests: a small, realistic snapshot table and an MLflow store in tmp.

``make_snapshots`` imitates what ``features.snapshots.build_snapshots`` produces (one row per
customer and cutoff, numeric and categorical features with gaps, ``is_active``, the three
labels with NaN where not eligible, ``label_matured``), with labels that depend on a few
features plus noise so that models have something real to find:

* churn (active customers): longer silence (``recency_days``), more complaints, fewer visits
  and the basic plan raise it;
* up-sell (active customers): more categories bought and a rising spend trend raise it;
* win-back (lapsed customers): a shorter silence and more past purchases raise it.

The last cutoff has not matured: its labels are NaN and ``label_matured`` is False.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

CUTOFFS = ("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_snapshots(
    n_customers: int = 1500, cutoffs: tuple[str, ...] = CUTOFFS, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{i:05d}" for i in range(n_customers)])
    engagement = rng.normal(size=n_customers)
    plan = rng.choice(["basic", "pro", "premium"], size=n_customers, p=[0.5, 0.35, 0.15])
    country = rng.choice(["DE", "FR", "NL", "IT", "ES"], size=n_customers)
    channel = rng.choice(["search", "social", "referral", "direct"], size=n_customers).astype(
        object
    )
    channel[rng.random(n_customers) < 0.1] = None
    signup_age = rng.uniform(30, 900, size=n_customers)
    frames = []
    for k, cutoff in enumerate(cutoffs):
        recency = rng.exponential(35 * np.exp(-0.6 * engagement)) + rng.uniform(0, 10, n_customers)
        active = recency < 90
        visits_30d = rng.poisson(np.exp(1.0 + 0.5 * engagement) * active)
        purchases_90d = rng.poisson(np.exp(0.3 + 0.5 * engagement) * active)
        purchases_365d = purchases_90d + rng.poisson(np.exp(0.8 + 0.4 * engagement))
        spend_90d = purchases_90d * rng.lognormal(3.5, 0.5, n_customers)
        complaints_90d = rng.poisson(0.25 + 0.35 * (plan == "basic"))
        categories = rng.poisson(1.0 + 0.8 * np.clip(engagement, -1, None)) + 1
        spend_trend = rng.normal(0, 1, n_customers)
        spend_trend[purchases_90d == 0] = np.nan
        avg_order_value = np.where(
            purchases_90d > 0, spend_90d / np.maximum(purchases_90d, 1), np.nan
        )
        clv = np.exp(4.5 + 0.5 * engagement + rng.normal(0, 0.3, n_customers))
        stage = np.where(
            ~active, "lapsed", np.where(signup_age + 31 * k < 120, "new", "established")
        )
        rfm = np.where(recency < 30, "champions", np.where(recency < 90, "at_risk", "hibernating"))

        churn_logit = (
            -1.2
            + 0.03 * (recency - 30)
            + 0.7 * complaints_90d
            - 0.35 * np.log1p(visits_30d)
            + 0.5 * (plan == "basic")
            + rng.normal(0, 0.6, n_customers)
        )
        upsell_logit = (
            -2.0 + 0.45 * categories + 0.7 * np.nan_to_num(spend_trend) + 0.3 * (plan == "pro")
        )
        winback_logit = -0.5 - 0.012 * (recency - 90) + 0.25 * np.log1p(purchases_365d)
        churn = (rng.random(n_customers) < _sigmoid(churn_logit)).astype(float)
        upsell = (rng.random(n_customers) < _sigmoid(upsell_logit)).astype(float)
        winback = (rng.random(n_customers) < _sigmoid(winback_logit)).astype(float)
        matured = k < len(cutoffs) - 1
        frame = pd.DataFrame(
            {
                "customer_id": ids,
                "cutoff": pd.Timestamp(cutoff),
                "recency_days": recency,
                "tenure_days": signup_age + 31 * k,
                "visits_30d": visits_30d.astype("int64"),
                "purchases_90d": purchases_90d.astype("int64"),
                "purchases_365d": purchases_365d.astype("int64"),
                "spend_90d": spend_90d,
                "avg_order_value": avg_order_value,
                "spend_trend": spend_trend,
                "complaints_90d": complaints_90d.astype("int64"),
                "distinct_categories_365d": categories.astype("int64"),
                "clv": clv,
                "plan": plan,
                "country": country,
                "acquisition_channel": channel,
                "lifecycle_stage": stage,
                "rfm_segment": rfm,
                "is_active": active,
                "churn_label": np.where(active & matured, churn, np.nan),
                "upsell_label": np.where(active & matured, upsell, np.nan),
                "winback_label": np.where(~active & matured, winback, np.nan),
                "label_matured": matured,
            }
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def snapshots() -> pd.DataFrame:
    """The shared snapshot table; tests must not mutate it (copy first)."""
    return make_snapshots()


@pytest.fixture(scope="session")
def fast_config_kwargs() -> dict:
    """Settings that keep a full training run to a few seconds on 2 shared cores."""
    return {
        "n_trials": 3,
        "time_budget_s": 60.0,
        "max_boosting_rounds": 150,
        "early_stopping_rounds": 15,
        "n_jobs": 1,
        "seed": 0,
    }


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """An MlflowConfig pointing at a fresh sqlite store and artifact root in tmp."""
    from training.config import MlflowConfig

    root = tmp_path_factory.mktemp("mlruns")
    return MlflowConfig(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=str(root / "artifacts"),
        experiment_name="training-tests",
    )


@pytest.fixture(scope="session")
def churn_task_data(snapshots):
    from training.datasets import build_task_data

    return build_task_data(snapshots, "churn_label", seed=0)


@pytest.fixture(scope="session")
def churn_scorer(churn_task_data):
    """A calibrated churn model fitted directly (no MLflow, no tuning), with the default
    monotone constraints of the churn task: recency_days and complaints_90d (+1)."""
    from training.calibration import ProbabilityCalibrator
    from training.models import (
        applicable_monotone_constraints,
        base_xgb_params,
        fit_xgboost,
        positive_class_weight,
        predict_xgboost,
        to_dmatrix,
    )
    from training.scorer import Scorer

    data = churn_task_data
    constraints, _ = applicable_monotone_constraints(
        data.spec, {"recency_days": 1, "complaints_90d": 1}
    )
    params = base_xgb_params(
        scale_pos_weight=positive_class_weight(data.y("train"), "class_weight"),
        monotone_constraints=constraints,
        tuning_metric="log_loss",
        seed=0,
        n_jobs=1,
    )
    params.update(max_depth=3, learning_rate=0.1)
    booster = fit_xgboost(
        params,
        to_dmatrix(data.X("train"), data.y("train")),
        to_dmatrix(data.X("tuning"), data.y("tuning")),
        max_rounds=200,
        early_stopping_rounds=20,
        maximize=False,
    )
    calibrator = ProbabilityCalibrator("isotonic").fit(
        predict_xgboost(booster, data.X("calibration")), data.y("calibration")
    )
    return Scorer(booster, calibrator, data.spec, task="churn", label_column="churn_label")
