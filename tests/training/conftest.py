"""Fixtures of the training tests: a snapshot table built by the real feature pipeline.

The data are a small generated CRM history (``features.synthetic``, fixed seed), turned into
the training table exactly as ``churn snapshots`` does it: ``features.snapshots.build_snapshots``
over monthly cutoffs. The generator's churn, up-sell and win-back are driven by behaviour the
features can see (falling activity, complaints, unresolved tickets, campaign clicks, ...), so
models have something real to find, and the columns, dtypes, gaps and label eligibility are the
ones production training meets.

Cutoffs (``SnapshotCutoffs``): four monthly cutoffs whose 90-day label windows have matured,
the last of them the latest matured month start, plus one later cutoff whose window has not
(features present, labels NaN, ``label_matured`` False), as in a table that also serves scoring.
Built once per session (about a second); tests must not mutate the table (copy first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import pytest

#: Size and seed of the generated history; the period is the generator's default
#: (2023-01-01..2025-06-30), so the data end on 2025-07-01.
N_CUSTOMERS = 2500
SEED = 7
MATURED_CUTOFFS = ("2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01")
UNMATURED_CUTOFF = "2025-05-01"


@dataclass(frozen=True)
class SnapshotCutoffs:
    """The fixture's cutoffs: ``matured`` oldest first, and the one ``unmatured`` cutoff."""

    matured: tuple[pd.Timestamp, ...]
    unmatured: pd.Timestamp

    @property
    def test(self) -> pd.Timestamp:
        """Where a time split tests: the latest matured cutoff."""
        return self.matured[-1]

    @property
    def validation(self) -> pd.Timestamp:
        return self.matured[-2]

    @property
    def train(self) -> tuple[pd.Timestamp, ...]:
        return self.matured[:-2]


def build_fixture_snapshots() -> tuple[pd.DataFrame, SnapshotCutoffs]:
    """Generate the history and build the snapshot table with the default parameters."""
    from features.config import FeatureParams, LabelParams
    from features.snapshots import build_snapshots
    from features.synthetic import GeneratorParams, generate_crm_data

    crm = generate_crm_data(
        GeneratorParams(n_customers=N_CUSTOMERS, seed=SEED, end=date(2025, 6, 30))
    )
    data_end = (crm.events["timestamp"].max() + pd.Timedelta(days=1)).normalize()
    label_params = LabelParams()
    cutoffs = SnapshotCutoffs(
        matured=tuple(pd.Timestamp(c) for c in MATURED_CUTOFFS),
        unmatured=pd.Timestamp(UNMATURED_CUTOFF),
    )
    label_span = pd.Timedelta(days=label_params.lead_days + label_params.horizon_days)
    if not cutoffs.test + label_span <= data_end < cutoffs.unmatured + label_span:
        raise RuntimeError(
            f"the fixture cutoffs no longer straddle the end of the generated data ({data_end})"
        )
    table, _ = build_snapshots(
        crm.events,
        [*cutoffs.matured, cutoffs.unmatured],
        customers=crm.customers,
        subscriptions=crm.subscriptions,
        feature_params=FeatureParams(),
        label_params=label_params,
        data_end=data_end,
    )
    return table, cutoffs


@pytest.fixture(scope="session")
def _built_snapshots() -> tuple[pd.DataFrame, SnapshotCutoffs]:
    return build_fixture_snapshots()


@pytest.fixture(scope="session")
def snapshots(_built_snapshots) -> pd.DataFrame:
    """The shared snapshot table; tests must not mutate it (copy first)."""
    return _built_snapshots[0]


@pytest.fixture(scope="session")
def snapshot_cutoffs(_built_snapshots) -> SnapshotCutoffs:
    """Which cutoffs the snapshot table holds and how a time split uses them."""
    return _built_snapshots[1]


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
