"""Rolling-origin backtest (training.backtest) on a small synthetic snapshot table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training import backtest as bt
from training.config import TrainingConfig

#: Six monthly cutoffs with matured labels, then one whose labels have not matured yet.
MATURED = pd.date_range("2024-01-01", periods=6, freq="MS")
UNMATURED = pd.Timestamp("2024-07-01")
TUNED = {"max_depth": 2, "learning_rate": 0.3, "min_child_weight": 1.0}


def _snapshots(n_customers: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i, cutoff in enumerate([*MATURED, UNMATURED]):
        x = rng.normal(size=n_customers)
        matured = cutoff != UNMATURED
        label = (rng.random(n_customers) < 1 / (1 + np.exp(1.5 - 1.5 * x))).astype(float)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": [f"c{j:04d}" for j in range(n_customers)],
                    "cutoff": cutoff,
                    "recency_days": (30 * (x + 3)).round(),
                    "noise": rng.normal(size=n_customers),
                    "plan": rng.choice(["basic", "plus", "pro"], n_customers),
                    "month_index": float(i),
                    "churn_label": label if matured else np.nan,
                    "label_matured": matured,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _config(**overrides) -> TrainingConfig:
    settings = {"n_jobs": 1, "seed": 0, "early_stopping_rounds": 5, "backtest_cutoffs": 3}
    return TrainingConfig(**{**settings, **overrides})


def _run(table: pd.DataFrame, cfg: TrainingConfig) -> dict:
    return bt.run_backtest(table, cfg, task="churn", tuned_params=TUNED, rounds=20)


def test_origins_are_the_last_usable_cutoffs():
    table = _snapshots()
    assert bt.usable_cutoffs(table, "churn_label") == list(MATURED)  # not the unmatured one
    assert bt.backtest_origins(table, "churn_label", 3) == list(MATURED[-3:])
    assert bt.backtest_origins(table, "churn_label", 10) == list(MATURED)
    assert bt.backtest_origins(table, "churn_label", 0) == []


def test_no_origin_is_fitted_on_its_own_or_later_cutoffs(monkeypatch):
    """Every row a refit touches (training, early stopping, calibration) predates its origin,
    and the origin's test rows are the origin's own."""
    seen = {}
    real_fit = bt.fit_origin

    def spy(data, **kwargs):
        seen[data.split.test_cutoff] = data
        return real_fit(data, **kwargs)

    monkeypatch.setattr(bt, "fit_origin", spy)
    result = _run(_snapshots(), _config())
    assert sorted(seen) == list(MATURED[-3:])
    for origin, data in seen.items():
        for part in ("train", "tuning", "calibration"):
            assert getattr(data, part)["cutoff"].max() < origin, part
        assert data.train["cutoff"].max() < data.split.validation_cutoff
        assert set(data.test["cutoff"]) == {origin}
    for row in result["cutoffs"]:
        origin = pd.Timestamp(row["cutoff"])
        assert pd.Timestamp(row["validation_cutoff"]) < origin
        assert all(
            pd.Timestamp(c) < pd.Timestamp(row["validation_cutoff"]) for c in row["train_cutoffs"]
        )


def test_an_origins_result_does_not_depend_on_later_cutoffs():
    """Rewrite everything after the first origin (labels and features): its row must not move."""
    table = _snapshots()
    first = MATURED[-3]
    later = table["cutoff"] > first
    rewritten = table.copy()
    rng = np.random.default_rng(99)
    rewritten.loc[later, "recency_days"] = rng.permutation(rewritten.loc[later, "recency_days"])
    matured_later = later & rewritten["label_matured"]
    rewritten.loc[matured_later, "churn_label"] = 1.0 - rewritten.loc[matured_later, "churn_label"]
    before, after = _run(table, _config()), _run(rewritten, _config())
    assert before["cutoffs"][0]["cutoff"] == after["cutoffs"][0]["cutoff"] == str(first.date())
    assert before["cutoffs"][0] == after["cutoffs"][0]
    assert before["cutoffs"][1] != after["cutoffs"][1]  # the rewrite did change later origins


def test_summary_numbers_are_those_of_the_cutoffs():
    result = _run(_snapshots(), _config())
    assert result["n_cutoffs"] == 3 and result["skipped"] == []
    rows = result["cutoffs"]
    for metric in bt.SUMMARY_METRICS:
        values = [r[metric] for r in rows]
        assert result["mean"][metric] == pytest.approx(np.mean(values), rel=1e-12)
        assert result["std"][metric] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    for row in rows:
        assert 0.5 < row["roc_auc"] <= 1 and row["lift_at_10"] > 1
        assert row["n"] == 300 and 0 < row["positives"] < 300
        assert row["boosting_rounds"] <= 20
    logged = bt.backtest_mlflow_metrics(result)
    assert logged["backtest_roc_auc_mean"] == result["mean"]["roc_auc"]
    assert logged["backtest_lift_at_10_std"] == result["std"]["lift_at_10"]
    assert logged["backtest_n_cutoffs"] == 3
    json.dumps(result, allow_nan=False)  # plain JSON: the TrainResult field and the artifact


def test_origins_without_enough_earlier_cutoffs_are_skipped_and_named():
    result = _run(_snapshots(), _config(backtest_cutoffs=6))
    assert [s["cutoff"] for s in result["skipped"]] == [str(c.date()) for c in MATURED[:2]]
    assert all("need at least 3 cutoffs" in s["reason"] for s in result["skipped"])
    assert [r["cutoff"] for r in result["cutoffs"]] == [str(c.date()) for c in MATURED[2:]]


def test_purge_gap_is_respected_and_can_leave_one_origin():
    # monthly cutoffs and a 61-day gap: validation two months before the origin and training
    # two more months before that; only the last origin (2024-06-01) has such a history (for
    # 2024-05-01 the validation cutoff would be 2024-03-01, 61 days before 2024-01-01 = 60)
    result = _run(_snapshots(), _config(purge_gap_days=61))
    assert [r["cutoff"] for r in result["cutoffs"]] == [str(MATURED[-1].date())]
    row = result["cutoffs"][0]
    assert row["validation_cutoff"] == str(MATURED[-3].date())
    assert row["train_cutoffs"] == [str(MATURED[0].date())]
    assert [s["cutoff"] for s in result["skipped"]] == [str(c.date()) for c in MATURED[-3:-1]]
    assert all("61 days" in s["reason"] for s in result["skipped"])
    assert result["mean"]["roc_auc"] == row["roc_auc"]
    assert result["std"]["roc_auc"] is None  # no spread from one origin
    assert "backtest_roc_auc_std" not in bt.backtest_mlflow_metrics(result)


def test_summarize_ignores_missing_values():
    mean, std = bt.summarize([{"roc_auc": 0.6}, {"roc_auc": float("nan")}, {"roc_auc": 0.8}])
    assert mean["roc_auc"] == pytest.approx(0.7) and std["roc_auc"] == pytest.approx(0.1414213562)
    assert mean["pr_auc"] is None and std["pr_auc"] is None


def test_latest_origin_refit_reproduces_the_deployed_model_so_its_predictions_stand_in(
    monkeypatch,
):
    """At the test cutoff a refit is the deployed model again; ``known`` saves that fit."""
    from training.calibration import ProbabilityCalibrator
    from training.datasets import build_task_data
    from training.models import (
        applicable_monotone_constraints,
        base_xgb_params,
        fit_xgboost,
        positive_class_weight,
        predict_xgboost,
        to_dmatrix,
    )

    table, cfg = _snapshots(), _config()
    data = build_task_data(table, "churn_label", seed=cfg.seed)  # as training splits it
    assert data.split.test_cutoff == MATURED[-1]
    constraints, _ = applicable_monotone_constraints(
        data.spec, cfg.task("churn").monotone_constraints
    )
    params = base_xgb_params(
        scale_pos_weight=positive_class_weight(data.y("train"), cfg.imbalance_strategy),
        monotone_constraints=constraints,
        tuning_metric=cfg.tuning_metric,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
    )
    booster = fit_xgboost(  # like the tuner's best trial: a larger budget, early stopping
        {**params, **TUNED},
        to_dmatrix(data.X("train"), data.y("train")),
        to_dmatrix(data.X("tuning"), data.y("tuning")),
        max_rounds=300,
        early_stopping_rounds=cfg.early_stopping_rounds,
        maximize=True,
    )
    calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
        predict_xgboost(booster, data.X("calibration")), data.y("calibration")
    )
    deployed = calibrator.predict(predict_xgboost(booster, data.X("test")))
    rounds = booster.num_boosted_rounds()
    assert rounds < 300  # early stopping chose the rounds, as it does for the deployed model

    def run(**kwargs):
        return bt.run_backtest(
            table, cfg, task="churn", tuned_params=TUNED, rounds=rounds, **kwargs
        )

    refitted = run()
    fitted = []
    real_fit = bt.fit_origin
    monkeypatch.setattr(
        bt,
        "fit_origin",
        lambda data, **kw: fitted.append(data.split.test_cutoff) or real_fit(data, **kw),
    )
    reused = run(known={MATURED[-1]: (data, deployed, rounds)})
    assert fitted == list(MATURED[-3:-1])  # the latest origin was not refitted ...
    assert reused["cutoffs"] == refitted["cutoffs"]  # ... and nothing changed
