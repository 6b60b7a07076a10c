"""Tiny trained MLflow stores on generated data: the set-up the scoring and serving benchmarks
and the scoring tests share (not a benchmark itself).

A store is built in three steps, each a function here so that every caller keeps its own size,
seed, cutoffs and training budget: :func:`generate_history` (synthetic CRM files and a snapshot
table over monthly cutoffs), :func:`project_settings` (the ``churn.yaml`` mapping pointing at
those files and an MLflow store from :func:`mlflow_settings`) and :func:`train_tasks` (churn,
up-sell and win-back trained and registered; each becomes its task's champion).

``benchmarks.scoring``, ``benchmarks.serving`` and ``tests/conftest.py`` import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

TASKS = ("churn", "upsell", "winback")

#: One Optuna trial and a tiny boosting budget: three models in seconds, good enough to score.
TINY_TRAINING: dict[str, Any] = {
    "n_trials": 1,
    "time_budget_s": 30,
    "max_boosting_rounds": 60,
    "early_stopping_rounds": 10,
    "log_trial_runs": False,
}


@dataclass(frozen=True)
class History:
    """Generated CRM data, where it was written and its snapshot table."""

    data: Any  # features.synthetic.SyntheticCRM
    paths: dict[str, Path]
    data_end: pd.Timestamp
    cutoffs: list[pd.Timestamp]
    snapshots: pd.DataFrame
    stats: dict[str, Any]

    @property
    def test_stats(self):
        """Global statistics of the last cutoff, the one a time split tests on."""
        from features.snapshots import stats_key

        return self.stats[stats_key(self.cutoffs[-1])]


def monthly_cutoffs(data_end: pd.Timestamp, n_cutoffs: int) -> list[pd.Timestamp]:
    """``n_cutoffs`` cutoffs 30 days apart, oldest first, the last one 90 days before the data
    end so that every 90-day label window has matured."""
    last = data_end - pd.Timedelta(days=90)
    return [last - pd.Timedelta(days=30 * k) for k in range(n_cutoffs - 1, -1, -1)]


def generate_history(root: Path, *, n_customers: int, seed: int, n_cutoffs: int = 4) -> History:
    """Generate a CRM history from 2024-01-01, write it as Parquet under ``root / "data"`` and
    build its snapshots (default feature and label settings) over :func:`monthly_cutoffs`."""
    from features.config import FeatureParams, LabelParams
    from features.snapshots import build_snapshots
    from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data

    data = generate_crm_data(
        GeneratorParams(n_customers=n_customers, seed=seed, start=date(2024, 1, 1))
    )
    paths = write_crm_data(data, Path(root) / "data")
    data_end = (data.events["timestamp"].max() + pd.Timedelta(days=1)).normalize()
    cutoffs = monthly_cutoffs(data_end, n_cutoffs)
    snapshots, stats = build_snapshots(
        data.events,
        cutoffs,
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=FeatureParams(),
        label_params=LabelParams(),
        data_end=data_end,
    )
    return History(data, paths, data_end, cutoffs, snapshots, stats)


def mlflow_settings(root: Path, experiment_name: str | None = None) -> dict[str, str]:
    """An MLflow store inside ``root``: SQLite tracking database and local artifacts."""
    settings = {
        "tracking_uri": f"sqlite:///{Path(root) / 'mlflow.db'}",
        "artifact_location": str(Path(root) / "artifacts"),
    }
    if experiment_name is not None:
        settings["experiment_name"] = experiment_name
    return settings


def project_settings(
    paths: dict[str, Any],
    output_dir: Path,
    *,
    training: dict[str, Any],
    serving: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The project config as ``churn.yaml`` holds it: the generated files in ``paths`` as the
    data, quarantine and outputs under ``output_dir``."""
    sources = {
        name: {"path": str(paths[name])} for name in ("events", "customers", "subscriptions")
    }
    return {
        "data": {**sources, "quarantine_dir": str(Path(output_dir) / "quarantine")},
        "output_dir": str(output_dir),
        "training": training,
        "serving": serving or {},
    }


def train_tasks(training, history: History, *, global_stats: bool = True) -> None:
    """Train and register the three tasks on the history's snapshots (``training`` is a
    ``training.config.TrainingConfig``). With ``global_stats`` the last cutoff's statistics are
    logged with each model, as ``churn train`` does."""
    from training.train import train

    extra = {"global_stats": history.test_stats.to_dict()} if global_stats else {}
    for task in TASKS:
        train(
            training, history.snapshots, task=task, data_source="synthetic", progress=False, **extra
        )
