"""Hyper-parameter search for XGBoost with Optuna: seeded TPE, median pruning, a time budget.

Every trial boosts with early stopping on the tuning share of the validation cutoff and
reports the validation metric each round, so the median pruner can stop a trial that is
clearly worse than earlier ones at the same round. The search ends after ``n_trials`` or once
``time_budget_s`` has elapsed (checked between trials), whichever comes first. With
``log_trial_runs`` every trial is a nested MLflow run under the training run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import xgboost as xgb

from training.models import XGB_EVAL_METRICS, fit_xgboost

logger = logging.getLogger(__name__)


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The search space: tree shape, learning rate, sampling and regularisation."""
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 30.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "gamma": trial.suggest_float("gamma", 1e-3, 5.0, log=True),
    }


class OptunaPruningCallback(xgb.callback.TrainingCallback):
    """Reports the validation metric to Optuna each round and stops pruned trials."""

    def __init__(self, trial: optuna.Trial, metric_name: str) -> None:
        super().__init__()
        self.trial = trial
        self.metric_name = metric_name

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        history = evals_log.get("validation", {}).get(self.metric_name)
        if not history:
            return False
        self.trial.report(float(history[-1]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {epoch}")
        return False


@dataclass
class TuningResult:
    """The best booster found and how the search went."""

    booster: xgb.Booster
    params: dict[str, Any]
    best_value: float
    best_iteration: int
    n_trials: int
    n_complete: int
    n_pruned: int
    elapsed_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def tune_xgboost(
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    base_params: dict[str, Any],
    *,
    tuning_metric: str,
    n_trials: int,
    time_budget_s: float | None,
    seed: int,
    max_rounds: int,
    early_stopping_rounds: int,
    log_trial_runs: bool = False,
    progress: bool = False,
    description: str = "tuning",
) -> TuningResult:
    """Search XGBoost hyper-parameters; return the best booster (already early-stopped)."""
    metric_name, maximize = XGB_EVAL_METRICS[tuning_metric]
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20, interval_steps=5)
    best: dict[str, Any] = {}
    history: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **suggest_params(trial)}
        booster = fit_xgboost(
            params,
            dtrain,
            dvalid,
            max_rounds=max_rounds,
            early_stopping_rounds=early_stopping_rounds,
            maximize=maximize,
            callbacks=[OptunaPruningCallback(trial, metric_name)],
        )
        value = float(booster.best_score)
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        improved = not best or (value > best["value"] if maximize else value < best["value"])
        if improved:
            best.update(value=value, booster=booster, params=params, trial=trial.number)
        return value

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record = {
            "trial": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "params": dict(trial.params),
            "best_iteration": trial.user_attrs.get("best_iteration"),
        }
        history.append(record)
        if log_trial_runs:
            _log_trial_run(trial, tuning_metric)

    from tqdm.auto import tqdm

    start = time.monotonic()
    with tqdm(total=n_trials, desc=description, disable=not progress, unit="trial") as bar:

        def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.update(1)
            if best:
                bar.set_postfix({f"best_{tuning_metric}": f"{best['value']:.4f}"})

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says enough
        try:
            study = optuna.create_study(
                direction="maximize" if maximize else "minimize", sampler=sampler, pruner=pruner
            )
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=time_budget_s,
                callbacks=[log_trial, advance],
                gc_after_trial=False,
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
    elapsed = time.monotonic() - start
    if not best:
        raise RuntimeError(
            f"no tuning trial completed ({len(study.trials)} trials, all pruned or failed)"
        )
    states = [t.state for t in study.trials]
    return TuningResult(
        booster=best["booster"],
        params={k: v for k, v in best["params"].items()},
        best_value=best["value"],
        best_iteration=int(best["booster"].best_iteration),
        n_trials=len(study.trials),
        n_complete=sum(s == optuna.trial.TrialState.COMPLETE for s in states),
        n_pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
        elapsed_s=elapsed,
        history=history,
    )


def _log_trial_run(trial: optuna.trial.FrozenTrial, tuning_metric: str) -> None:
    """One nested MLflow run per trial, under the active training run."""
    import mlflow

    with mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True):
        mlflow.log_params(trial.params)
        mlflow.set_tags({"optuna_trial": str(trial.number), "optuna_state": trial.state.name})
        if trial.value is not None:
            mlflow.log_metric(f"val_{tuning_metric}", trial.value)
        if "best_iteration" in trial.user_attrs:
            mlflow.log_metric("best_iteration", trial.user_attrs["best_iteration"])
