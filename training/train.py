"""Training pipeline of one task: split by time, tune, calibrate, evaluate, log, register, promote.

``train(cfg, snapshots, task=..., data_source=...)`` is the stage's one entry point (the CLI
command ``churn train`` only parses arguments and calls it). One MLflow run per call holds:

* tags: task, git commit, data source, imbalance handling, calibration, leakage warning,
  baseline rule, promotion decision; params: the task's config, cutoffs, tuned parameters;
* inputs: the train / validation / test rows as MLflow datasets (digest, cutoffs as tags);
* metrics on the test cutoff for XGBoost (no prefix), the logistic-regression baseline
  (``lr_``) and the naive rule (``baseline_``), plus promotion scores;
* the rolling-origin backtest (``training.backtest``, ``backtest_cutoffs``): the model refitted
  with the tuned hyper-parameters at each of the last K cutoffs, as metrics
  ``backtest_<metric>_mean`` / ``_std`` and the per-cutoff table ``backtest/backtest.json``
  (also ``TrainResult.backtest``);
* artifacts: plots, feature list and importance, the LR pipeline (skops), the config, and the
  reference data monitoring and serving compare against (``reference/``, see
  :func:`reference_frames`); their paths, and the one writer and reader of the reference, are
  in ``training.artifacts``;
* the model: a models-from-code pyfunc over pickle-free artifacts (``training.scorer``), with
  signature and input example, registered and aliased ``challenger`` / ``champion``.

``train`` runs named steps in order: :func:`prepare_task` (split, checks: fails before a run
exists), :func:`log_run_setup`, :func:`tune_model`, calibration, :func:`fit_lr_baseline`,
:func:`evaluate_on_test`, :func:`log_backtest`, :func:`check_leakage`,
:func:`registered_booster`, :func:`log_explanations`, :func:`log_lr_baseline`,
:func:`log_reference_data`, :func:`log_model` and :func:`register_and_promote`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, ConfigDict

from training.artifacts import (
    BACKTEST_ARTIFACT,
    BASELINE_LR_DIR,
    FEATURE_IMPORTANCE_ARTIFACT,
    FEATURE_LIST_ARTIFACT,
    MODEL_ARTIFACT,
    PLOTS_DIR,
    TRAINING_CONFIG_ARTIFACT,
    ReferenceInfo,
    RunReference,
    log_reference,
)
from training.backtest import backtest_mlflow_metrics, run_backtest
from training.calibration import ProbabilityCalibrator
from training.config import TaskConfig, TrainingConfig, configure_mlflow
from training.datasets import (
    FeatureSpec,
    TaskData,
    build_task_data,
    encode_features,
    unseen_category_counts,
)
from training.evaluation import (
    ProfitCurve,
    baseline_metrics,
    choose_naive_baseline,
    customer_values,
    expected_calibration_error,
    leakage_suspected,
    probability_metrics,
    profit_curve,
    suspicious_features,
)
from training.explain import mean_abs_contributions, shap_contributions
from training.models import (
    applicable_monotone_constraints,
    base_xgb_params,
    build_logistic_regression,
    lr_input,
    positive_class_weight,
    predict_logistic_regression,
    predict_xgboost,
    to_dmatrix,
)
from training.registry import (
    TRAINED_THROUGH_TAG,
    PromotionDecision,
    apply_decision,
    compare_with_champion,
    register_version,
)
from training.scorer import Scorer, conform_to_input_types
from training.tuning import TuningResult, tune_xgboost

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: The models-from-code file logged as the pyfunc (never imported).
PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")

#: Rows used for the SHAP summary plot and global importance (seeded sample of the test rows).
SHAP_SAMPLE_ROWS = 2000

#: At most this many test-cutoff rows are logged as ``reference/reference_features.parquet``.
REFERENCE_MAX_ROWS = 50_000

#: MLflow type of each feature kind in the model signature.
SIGNATURE_TYPES: dict[str, str] = {
    "integer": "long",
    "float": "double",
    "boolean": "boolean",
    "categorical": "string",
}

IMBALANCE_NOTES: dict[str, str] = {
    "class_weight": (
        "positives up-weighted by negatives/positives in training (XGBoost scale_pos_weight, "
        "LR class_weight=balanced); probabilities calibrated back to observed rates on held-out "
        "validation customers"
    ),
    "none": "unweighted training; probabilities calibrated on held-out validation customers",
}


class TrainResult(BaseModel):
    """What a training run produced; ``model_dump_json()`` is the CLI's one-line output."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    task: str
    model_name: str
    model_version: str
    model_uri: str
    alias: str
    promoted: bool
    promotion_reason: str
    metrics: dict[str, float]
    split: dict[str, Any]
    n_rows: dict[str, int]
    n_features: int
    best_params: dict[str, Any]
    leakage_warning: bool
    warnings: list[str]
    #: The rolling-origin backtest (``training.backtest.run_backtest``); None when disabled.
    backtest: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def git_commit() -> str:
    """The checked-out commit of the project, or "unknown" (no git, no commits, ...)."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = completed.stdout.strip()
    return (
        commit if completed.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else "unknown"
    )


def redact(source: str) -> str:
    """Hide a password in a URL-like data source (``user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(://[^/:@\s]+):[^@/\s]+@", r"\1:***@", source)


def _flatten(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        for key, child in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, child, into)
    else:
        into[prefix] = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def run_params(cfg: TrainingConfig, task: str) -> dict[str, str]:
    """The run's params: the config without other tasks and without the MLflow section.

    The MLflow section is left out on purpose: a tracking URI can carry credentials.
    """
    tree = cfg.model_dump(mode="json", exclude={"tasks", "mlflow"})
    tree["task"] = cfg.task(task).model_dump(mode="json")
    params: dict[str, str] = {}
    _flatten("", tree, params)
    return params


def refit_on_all_cutoffs(
    data: TaskData, params: dict[str, Any], rounds: int, imbalance_strategy: str
) -> xgb.Booster:
    """The tuned model refitted on the training, validation and test rows together.

    Same parameters and number of rounds as the held-out model (its early-stopped best), the
    positive weight recomputed on all rows. The held-out model's calibrator is kept: the refit
    sees more rows of the same kind with the same rounds, so its raw scores are on the same
    scale, while no row is left to calibrate a new map on honestly.
    """
    rows = pd.concat([data.train, data.validation, data.test])
    y = rows[data.label_column].to_numpy(dtype=np.int8)
    fitted = {**params, "scale_pos_weight": positive_class_weight(y, imbalance_strategy)}
    matrix = to_dmatrix(encode_features(rows, data.spec), y)
    return xgb.train(fitted, matrix, num_boost_round=rounds)


def label_horizon_note(horizons: dict[str, Any]) -> str | None:
    """What the run says when its labels use a shorter window than the scores are read for.

    ``horizons`` is the snapshot table's ``attrs["labels"]`` (``horizon_days``,
    ``training_horizon_days``, ``lead_days``), written by ``pipelines.data``.
    """
    scoring = horizons.get("horizon_days")
    training = horizons.get("training_horizon_days")
    if scoring is None or training is None or int(training) == int(scoring):
        return None
    return (
        f"trained on a {int(training)}-day label window because the {int(scoring)}-day scoring "
        "horizon cannot mature for enough cutoffs: the model ranks customers for the "
        f"{int(scoring)}-day horizon, its probabilities are calibrated to {int(training)} days"
    )


def _mlflow_dataset(frame: pd.DataFrame, source: str, label_column: str, name: str):
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    # MLflow warns about integer columns and ambiguous sources; both are expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return mlflow.data.from_pandas(frame, source=source, targets=label_column, name=name)
        except Exception:  # a source MLflow cannot interpret (e.g. "synthetic", a SQL URL)
            return mlflow.data.from_pandas(
                frame,
                source=CodeDatasetSource({"data_source": source}),
                targets=label_column,
                name=name,
            )


def _signature(input_types: dict[str, str], default_top_k: int):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(t, name) for name, t in input_types.items()]),
        outputs=Schema(
            [ColSpec("double", "probability"), ColSpec("string", "reasons", required=False)]
        ),
        params=ParamSchema(
            [ParamSpec("explain", "boolean", False), ParamSpec("top_k", "long", default_top_k)]
        ),
    )


def reference_frames(
    data: TaskData, probabilities: np.ndarray, *, max_rows: int = REFERENCE_MAX_ROWS, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference data of a run: test predictions, and test feature rows with predictions.

    Both come from the test cutoff (the latest matured cutoff), not from the training cutoffs:
    they are the out-of-sample rows the run's metrics were measured on, so a later batch can be
    compared with them like for like (predictions on training rows are optimistic and would
    make any later batch look drifted). ``test_predictions`` holds every test row
    (``customer_id``, ``cutoff``, ``probability``, ``label``); ``reference_features`` holds the
    model's input columns of a seeded sample of at most ``max_rows`` of them, plus the label
    column and ``probability``.
    """
    test = data.test
    probability = np.asarray(probabilities, dtype=np.float64)
    if len(probability) != len(test):
        raise ValueError(f"{len(probability)} probabilities for {len(test)} test rows")
    predictions = pd.DataFrame(
        {
            "customer_id": test["customer_id"].astype(str).to_numpy(),
            "cutoff": pd.to_datetime(test["cutoff"]).to_numpy(),
            "probability": probability,
            "label": test[data.label_column].to_numpy(dtype=np.float64),
        }
    )
    columns = ["customer_id", "cutoff", *data.spec.features, data.label_column]
    features = test[columns].copy()
    features["customer_id"] = features["customer_id"].astype(str)
    features["probability"] = probability
    if len(features) > max_rows:
        features = features.sample(n=max_rows, random_state=seed).sort_index()
    return predictions, features.reset_index(drop=True)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("mlflow", "xgboost", "scikit-learn", "pandas", "numpy"):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


# --------------------------------------------------------------------------------------------
# The pipeline: named steps, run in this order by train()
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedTask:
    """What is settled before the MLflow run opens: the task's rows split by time, and notes."""

    task: str
    task_cfg: TaskConfig
    data: TaskData
    #: The snapshot table's ``attrs["labels"]`` (the horizons its labels were built with).
    horizons: dict[str, Any]
    monotone_constraints: dict[str, int]
    #: Customer values of the test rows, for the profit metrics.
    values_test: np.ndarray = field(repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def spec(self) -> FeatureSpec:
        return self.data.spec

    @property
    def test_day(self) -> str:
        return self.data.split.test_cutoff.date().isoformat()


@dataclass(frozen=True)
class DesignMatrices:
    """Encoded features and labels of the parts models are fitted and graded on, made once."""

    features: dict[str, pd.DataFrame] = field(repr=False)
    labels: dict[str, np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class Evaluation:
    """The run's grades on the test cutoff, and what the plots show."""

    metrics: dict[str, float]
    #: Model name -> test scores (XGBoost, logistic regression, the naive rule when there is one).
    scores: dict[str, np.ndarray] = field(repr=False)
    profit_curves: dict[str, ProfitCurve] = field(repr=False)
    #: The ``baseline_rule`` tag: the naive rule described, or "none".
    baseline_rule: str = "none"
    warnings: tuple[str, ...] = ()


def prepare_task(
    cfg: TrainingConfig,
    snapshots: pd.DataFrame,
    task: str,
    global_stats: dict[str, Any] | None,
) -> PreparedTask:
    """Split the snapshot table for ``task`` and collect what the run must warn about.

    Everything that can fail on the input fails here, before an MLflow run exists.
    """
    if global_stats is not None:
        from features.segments import GlobalStats

        GlobalStats.from_dict(global_stats)  # a wrong layout fails before any work is done

    task_cfg = cfg.task(task)
    data = build_task_data(
        snapshots,
        task_cfg.label_column,
        exclude_features=task_cfg.exclude_features,
        purge_gap_days=cfg.purge_gap_days,
        calibration_fraction=cfg.calibration_fraction,
        seed=cfg.seed,
    )
    notes: list[str] = []
    horizons = dict(snapshots.attrs.get("labels") or {})
    horizon_note = label_horizon_note(horizons)
    if horizon_note:
        notes.append(horizon_note)
    constraints, skipped = applicable_monotone_constraints(data.spec, task_cfg.monotone_constraints)
    if skipped:
        notes.append(f"monotone constraints skipped (not numeric features): {skipped}")
    unseen = unseen_category_counts(data.test, data.spec)
    if unseen:
        notes.append(f"test rows with categorical levels unseen in training: {unseen}")
    values_test = customer_values(data.test, cfg.economics)  # fail fast on a bad value column
    stats_cutoff = (global_stats or {}).get("cutoff")
    test_day = data.split.test_cutoff.date().isoformat()
    if stats_cutoff is not None and str(stats_cutoff) != test_day:
        notes.append(
            f"global_stats were fitted at {stats_cutoff}, not at the test cutoff {test_day}"
        )
    return PreparedTask(
        task=task,
        task_cfg=task_cfg,
        data=data,
        horizons=horizons,
        monotone_constraints=constraints,
        values_test=values_test,
        warnings=tuple(notes),
    )


def log_run_setup(cfg: TrainingConfig, prepared: PreparedTask, source: str) -> dict[str, Any]:
    """Log the run's tags, params, input datasets and feature list; return the split as JSON."""
    import mlflow

    task, task_cfg, data, horizons = (
        prepared.task,
        prepared.task_cfg,
        prepared.data,
        prepared.horizons,
    )
    mlflow.set_tags(
        {
            "task": task,
            "git_commit": git_commit(),
            "data_source": source,
            "label_column": task_cfg.label_column,
            "model_family": "xgboost",
            "baseline_model": "logistic_regression",
            "imbalance_strategy": cfg.imbalance_strategy,
            "imbalance_handling": IMBALANCE_NOTES[cfg.imbalance_strategy],
            "calibration_method": cfg.calibration_method,
            "label_horizon_days": str(horizons.get("horizon_days", "unknown")),
            "training_horizon_days": str(
                horizons.get("training_horizon_days", horizons.get("horizon_days", "unknown"))
            ),
            "monotone_constraints": json.dumps(prepared.monotone_constraints),
        }
    )
    mlflow.log_params(run_params(cfg, task))
    split = data.split.to_dict()
    mlflow.log_params(
        {
            "train_cutoffs": ",".join(split["train_cutoffs"]),
            "validation_cutoff": split["validation_cutoff"],
            "test_cutoff": split["test_cutoff"],
            "n_features": len(prepared.spec.features),
        }
    )
    _log_datasets(data, source)
    mlflow.log_dict(prepared.spec.to_dict(), FEATURE_LIST_ARTIFACT)
    return split


def design_matrices(data: TaskData) -> DesignMatrices:
    """Encode each part once: training, the tuning and calibration halves of validation, test."""
    parts = ("train", "tuning", "calibration", "test")
    return DesignMatrices(
        features={part: data.X(part) for part in parts},
        labels={part: data.y(part) for part in parts},
    )


def tune_model(
    cfg: TrainingConfig,
    prepared: PreparedTask,
    matrices: DesignMatrices,
    *,
    progress: bool,
) -> tuple[TuningResult, dict[str, Any]]:
    """XGBoost tuned by Optuna with early stopping on the tuning share of validation.

    Logs the tuned parameters and the positive weight; returns the tuning result and the fixed
    (untuned) parameters it started from.
    """
    import mlflow

    X, y = matrices.features, matrices.labels
    scale_pos_weight = positive_class_weight(y["train"], cfg.imbalance_strategy)
    base_params = base_xgb_params(
        scale_pos_weight=scale_pos_weight,
        monotone_constraints=prepared.monotone_constraints,
        tuning_metric=cfg.tuning_metric,
        seed=cfg.seed,
        n_jobs=cfg.n_jobs,
    )
    tuning = tune_xgboost(
        to_dmatrix(X["train"], y["train"]),
        to_dmatrix(X["tuning"], y["tuning"]),
        base_params,
        tuning_metric=cfg.tuning_metric,
        n_trials=cfg.n_trials,
        time_budget_s=cfg.time_budget_s,
        seed=cfg.seed,
        max_rounds=cfg.max_boosting_rounds,
        early_stopping_rounds=cfg.early_stopping_rounds,
        log_trial_runs=cfg.log_trial_runs,
        progress=progress,
        description=f"tuning {prepared.task}",
    )
    mlflow.log_params({f"xgb_{k}": v for k, v in tuning.params.items() if k not in base_params})
    mlflow.log_params({"scale_pos_weight": round(scale_pos_weight, 6)})
    return tuning, base_params


def fit_lr_baseline(
    cfg: TrainingConfig, spec: FeatureSpec, matrices: DesignMatrices
) -> tuple[Pipeline, ProbabilityCalibrator]:
    """The logistic-regression baseline, calibrated like XGBoost on held-out validation rows."""
    X, y = matrices.features, matrices.labels
    lr_pipeline = build_logistic_regression(spec, cfg.imbalance_strategy, cfg.seed)
    lr_pipeline.fit(lr_input(X["train"]), y["train"])
    lr_calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
        predict_logistic_regression(lr_pipeline, X["calibration"]), y["calibration"]
    )
    return lr_pipeline, lr_calibrator


def evaluate_on_test(
    cfg: TrainingConfig,
    prepared: PreparedTask,
    matrices: DesignMatrices,
    tuning: TuningResult,
    *,
    raw_test: np.ndarray,
    p_test: np.ndarray,
    p_lr_test: np.ndarray,
) -> Evaluation:
    """Grade XGBoost, the LR baseline and the naive rule on the test cutoff.

    ``raw_test`` / ``p_test``: XGBoost's uncalibrated and calibrated test scores; ``p_lr_test``
    the baseline's. Metrics without a prefix are XGBoost's, ``lr_`` the baseline's and
    ``baseline_`` the naive rule's (chosen on the validation cutoff).
    """
    data, task_cfg, values_test = prepared.data, prepared.task_cfg, prepared.values_test
    y_test = matrices.labels["test"]
    metric_kwargs = {
        "fractions": cfg.top_fractions,
        "ece_bins": cfg.ece_bins,
        "values": values_test,
        "economics": cfg.economics,
    }
    metrics = probability_metrics(y_test, p_test, **metric_kwargs)
    metrics["uncalibrated_ece"] = expected_calibration_error(y_test, raw_test, cfg.ece_bins)
    metrics[f"val_{cfg.tuning_metric}"] = tuning.best_value
    metrics["best_iteration"] = float(tuning.best_iteration)
    metrics["n_trials"] = float(tuning.n_trials)
    metrics["n_trials_pruned"] = float(tuning.n_pruned)
    metrics["tuning_seconds"] = tuning.elapsed_s
    metrics["test_positive_rate"] = float(y_test.mean())
    lr_metrics = probability_metrics(y_test, p_lr_test, **metric_kwargs)
    metrics.update({f"lr_{k}": v for k, v in lr_metrics.items()})

    baseline = choose_naive_baseline(data.validation, data.y("validation"), task_cfg.baseline_rules)
    profit_curves = {
        "XGBoost": profit_curve(y_test, p_test, values_test, cfg.economics),
        "logistic regression": profit_curve(y_test, p_lr_test, values_test, cfg.economics),
    }
    scores = {"XGBoost": p_test, "logistic regression": p_lr_test}
    notes: list[str] = []
    if baseline is None:
        notes.append(
            "no naive baseline: none of the columns "
            f"{[r.column for r in task_cfg.baseline_rules]} is in the table"
        )
        baseline_rule = "none"
    else:
        metrics.update(
            baseline_metrics(
                baseline,
                data.test,
                y_test,
                **{k: metric_kwargs[k] for k in ("fractions", "values", "economics")},
            )
        )
        baseline_rule = baseline.describe()
        baseline_name = f"rule: {baseline.rule.column}"
        scores[baseline_name] = baseline.score(data.test)
        profit_curves[baseline_name] = profit_curve(
            y_test, scores[baseline_name], values_test, cfg.economics
        )
    for key, n in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        metrics[f"n_{key}"] = float(len(n))
    return Evaluation(metrics, scores, profit_curves, baseline_rule, tuple(notes))


def log_backtest(
    cfg: TrainingConfig,
    snapshots: pd.DataFrame,
    prepared: PreparedTask,
    tuning: TuningResult,
    best_params: dict[str, Any],
    p_test: np.ndarray,
) -> tuple[dict[str, Any] | None, dict[str, float], list[str]]:
    """The rolling-origin backtest: refits at the last K cutoffs with the tuned params fixed.

    Logs the per-cutoff table and the origins; returns the backtest (None when disabled), its
    summary metrics and a warning when it ran on fewer than two cutoffs.
    """
    import mlflow

    if cfg.backtest_cutoffs <= 0:
        return None, {}, []
    data = prepared.data
    backtest = run_backtest(
        snapshots,
        cfg,
        task=prepared.task,
        tuned_params=best_params,
        rounds=tuning.best_iteration + 1,
        tuned_on=data.split.validation_cutoff,
        # the latest origin is this split: a refit would reproduce this very model
        known={data.split.test_cutoff: (data, p_test, tuning.booster.num_boosted_rounds())},
    )
    mlflow.log_dict(backtest, BACKTEST_ARTIFACT)
    mlflow.set_tag("backtest_origins", ",".join(r["cutoff"] for r in backtest["cutoffs"]))
    notes = []
    if backtest["n_cutoffs"] < 2:
        notes.append(
            f"backtest ran on {backtest['n_cutoffs']} of {cfg.backtest_cutoffs} cutoffs "
            f"(no spread); skipped: {[s['cutoff'] for s in backtest['skipped']]}"
        )
    return backtest, backtest_mlflow_metrics(backtest), notes


def check_leakage(
    cfg: TrainingConfig, metrics: dict[str, float], matrices: DesignMatrices
) -> tuple[bool, str | None]:
    """Tag (and log a warning for) a test ROC AUC too good to be true, naming the features
    that separate the classes on their own; returns the verdict and the warning, if any."""
    import mlflow

    leakage = leakage_suspected(metrics["roc_auc"], cfg.leakage_auc_threshold)
    suspects = suspicious_features(
        matrices.features["test"], matrices.labels["test"], cfg.leakage_auc_threshold
    )
    mlflow.set_tag("leakage_warning", str(leakage).lower())
    if suspects:
        mlflow.set_tag("suspicious_features", json.dumps(suspects))
    if not leakage:
        return False, None
    message = (
        f"possible leakage: test ROC AUC {metrics['roc_auc']:.3f} > "
        f"{cfg.leakage_auc_threshold}; features separating the classes alone: "
        f"{suspects or 'none'}"
    )
    logger.warning(message)
    return True, message


def registered_booster(
    cfg: TrainingConfig,
    prepared: PreparedTask,
    tuning: TuningResult,
    base_params: dict[str, Any],
    split: dict[str, Any],
) -> tuple[xgb.Booster, pd.Timestamp]:
    """The booster to register and the latest cutoff it was fitted on (tagged on the run).

    The held-out model, unless ``refit_on_all_cutoffs``: then a refit on every matured cutoff
    with the tuned parameters and rounds (the metrics stay the held-out model's).
    """
    import mlflow

    data = prepared.data
    if not cfg.refit_on_all_cutoffs:
        mlflow.set_tag("registered_model_fit", "the held-out model (training cutoffs only)")
        return tuning.booster, data.split.validation_cutoff
    refit = refit_on_all_cutoffs(
        data,
        {**base_params, **tuning.params},
        tuning.best_iteration + 1,
        cfg.imbalance_strategy,
    )
    fitted_on = [*split["train_cutoffs"], split["validation_cutoff"], prepared.test_day]
    mlflow.set_tag(
        "registered_model_fit",
        f"refitted on cutoffs {fitted_on} with {refit.num_boosted_rounds()} rounds; "
        "the metrics are the held-out model's",
    )
    return refit, data.split.test_cutoff


def log_explanations(
    cfg: TrainingConfig,
    prepared: PreparedTask,
    matrices: DesignMatrices,
    booster: xgb.Booster,
    evaluation: Evaluation,
) -> None:
    """SHAP importance of a seeded sample of test rows, and the evaluation plots."""
    import mlflow

    from training.plots import save_evaluation_plots

    data, spec = prepared.data, prepared.spec
    sample = data.test.sample(n=min(SHAP_SAMPLE_ROWS, len(data.test)), random_state=cfg.seed)
    X_sample = matrices.features["test"].loc[sample.index]
    contributions = shap_contributions(booster, X_sample)
    importance = mean_abs_contributions(contributions, spec)
    mlflow.log_dict(
        {
            "mean_abs_shap": importance.to_dict(),
            "readable_names": spec.readable_names,
        },
        FEATURE_IMPORTANCE_ARTIFACT,
    )
    with tempfile.TemporaryDirectory() as tmp:
        plots_dir = Path(tmp) / PLOTS_DIR
        save_evaluation_plots(
            plots_dir,
            y=matrices.labels["test"],
            scores=evaluation.scores,
            probabilities={
                name: evaluation.scores[name] for name in ("XGBoost", "logistic regression")
            },
            profit_curves=evaluation.profit_curves,
            importance=importance,
            contributions=contributions,
            X=X_sample,
            spec=spec,
            n_bins=cfg.ece_bins,
        )
        mlflow.log_artifacts(str(plots_dir), PLOTS_DIR)


def log_lr_baseline(
    cfg: TrainingConfig, lr_pipeline: Pipeline, lr_calibrator: ProbabilityCalibrator
) -> None:
    """The LR baseline, pickle-free (skops and calibration JSON), and the run's config."""
    import mlflow
    import skops.io

    with tempfile.TemporaryDirectory() as tmp:
        lr_dir = Path(tmp) / BASELINE_LR_DIR
        lr_dir.mkdir()
        skops.io.dump(lr_pipeline, lr_dir / "pipeline.skops")
        lr_calibrator.save_json(lr_dir / "calibration.json")
        mlflow.log_artifacts(str(lr_dir), BASELINE_LR_DIR)
    mlflow.log_dict(cfg.model_dump(mode="json"), TRAINING_CONFIG_ARTIFACT)


def log_reference_data(
    cfg: TrainingConfig,
    prepared: PreparedTask,
    p_test: np.ndarray,
    global_stats: dict[str, Any] | None,
) -> None:
    """The reference monitoring and serving compare against (``training.artifacts``)."""
    test_predictions, reference_features = reference_frames(prepared.data, p_test, seed=cfg.seed)
    info = ReferenceInfo(
        task=prepared.task,
        label_column=prepared.task_cfg.label_column,
        test_cutoff=prepared.test_day,
        features=tuple(prepared.spec.features),
        n_test_rows=len(test_predictions),
        n_reference_rows=len(reference_features),
        reference_sample_seed=cfg.seed,
        has_global_stats=global_stats is not None,
    )
    log_reference(
        RunReference(
            info=info,
            test_predictions=test_predictions,
            reference_features=reference_features,
            global_stats=global_stats,
        )
    )


def log_model(
    cfg: TrainingConfig, prepared: PreparedTask, scorer: Scorer, input_types: dict[str, str]
) -> Any:
    """Log the models-from-code pyfunc over the scorer's pickle-free files; its ModelInfo."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = scorer.save(Path(tmp) / "model_artifacts", cfg.model_format)
        input_example = conform_to_input_types(prepared.data.test.head(5), input_types)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts=artifacts,
            signature=_signature(input_types, cfg.explain_top_k),
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            metadata={"task": prepared.task, "label_column": prepared.task_cfg.label_column},
        )


def register_and_promote(
    client: Any,
    cfg: TrainingConfig,
    prepared: PreparedTask,
    *,
    model_uri: str,
    run_id: str,
    trained_through: pd.Timestamp,
    challenger_score: float,
    y_test: np.ndarray,
) -> tuple[str, PromotionDecision, str]:
    """Register the model as ``challenger``, promote it to ``champion`` if it beats the
    current one on the same test cutoff, and log the decision; returns the version, the
    decision and the alias the version ends up with."""
    import mlflow

    data = prepared.data
    model_name = prepared.task_cfg.registered_model_name
    version = register_version(
        client,
        model_uri,
        model_name,
        run_id=run_id,
        tags={
            "task": prepared.task,
            "test_cutoff": prepared.test_day,
            TRAINED_THROUGH_TAG: trained_through.date().isoformat(),
        },
    )
    decision = compare_with_champion(
        client,
        model_name,
        metric=cfg.promotion_metric,
        challenger_score=challenger_score,
        test_table=data.test,
        y_test=y_test,
        promote_when_comparison_fails=cfg.promote_when_comparison_fails,
        test_cutoff=data.split.test_cutoff,
    )
    alias = apply_decision(client, model_name, version, decision)
    promotion_metrics = {f"challenger_{decision.metric}": decision.challenger_score}
    if decision.champion_score is not None:
        promotion_metrics[f"champion_{decision.metric}"] = decision.champion_score
    mlflow.log_metrics(promotion_metrics)
    mlflow.set_tags(
        {
            "promotion_decision": "promoted" if decision.promote else "kept_challenger",
            "promotion_reason": decision.reason[:5000],
            "promotion_metric": decision.metric,
            "champion_version_before": decision.champion_version or "none",
            "registered_model": f"{model_name}/{version}",
            "model_alias": alias,
        }
    )
    return version, decision, alias


def train(
    cfg: TrainingConfig,
    snapshots: pd.DataFrame,
    *,
    task: str,
    data_source: str,
    progress: bool = True,
    global_stats: dict[str, Any] | None = None,
) -> TrainResult:
    """Train, evaluate, log and register the model of ``task`` on a stacked snapshot table.

    ``global_stats``: the ``features.segments.GlobalStats.to_dict()`` of the test cutoff (CLV
    parameters, RFM and value-tier cut points), logged as ``reference/global_stats.json`` so
    that scoring and monitoring compute later features with the same segment definitions.
    """
    import mlflow

    prepared = prepare_task(cfg, snapshots, task, global_stats)
    data, spec = prepared.data, prepared.spec
    run_warnings = list(prepared.warnings)
    source = redact(data_source)
    configure_mlflow(cfg.mlflow)
    client = mlflow.MlflowClient()
    input_types = {f: SIGNATURE_TYPES[spec.kinds[f]] for f in spec.features}

    run_name = f"{task}-{data.split.test_cutoff.date()}"
    # nested under a caller's run (e.g. a pipeline flow) when one is active
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        split = log_run_setup(cfg, prepared, source)
        matrices = design_matrices(data)
        X_test, y_test = matrices.features["test"], matrices.labels["test"]

        tuning, base_params = tune_model(cfg, prepared, matrices, progress=progress)
        calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
            predict_xgboost(tuning.booster, matrices.features["calibration"]),
            matrices.labels["calibration"],
        )
        raw_test = predict_xgboost(tuning.booster, X_test)
        p_test = calibrator.predict(raw_test)
        lr_pipeline, lr_calibrator = fit_lr_baseline(cfg, spec, matrices)
        p_lr_test = lr_calibrator.predict(predict_logistic_regression(lr_pipeline, X_test))

        evaluation = evaluate_on_test(
            cfg, prepared, matrices, tuning, raw_test=raw_test, p_test=p_test, p_lr_test=p_lr_test
        )
        metrics = dict(evaluation.metrics)
        run_warnings.extend(evaluation.warnings)
        mlflow.set_tag("baseline_rule", evaluation.baseline_rule)

        best_params = {k: v for k, v in tuning.params.items() if k not in base_params}
        backtest, backtest_metrics, backtest_warnings = log_backtest(
            cfg, snapshots, prepared, tuning, best_params, p_test
        )
        metrics.update(backtest_metrics)
        run_warnings.extend(backtest_warnings)

        leakage, leakage_warning = check_leakage(cfg, metrics, matrices)
        if leakage_warning:
            run_warnings.append(leakage_warning)
        mlflow.log_metrics(metrics)

        booster, trained_through = registered_booster(cfg, prepared, tuning, base_params, split)
        scorer = Scorer(
            booster,
            calibrator,
            spec,
            task=task,
            label_column=prepared.task_cfg.label_column,
            input_types=input_types,
            default_top_k=cfg.explain_top_k,
        )
        log_explanations(cfg, prepared, matrices, tuning.booster, evaluation)
        log_lr_baseline(cfg, lr_pipeline, lr_calibrator)
        log_reference_data(cfg, prepared, p_test, global_stats)
        model_info = log_model(cfg, prepared, scorer, input_types)

        version, decision, alias = register_and_promote(
            client,
            cfg,
            prepared,
            model_uri=model_info.model_uri,
            run_id=run.info.run_id,
            trained_through=trained_through,
            challenger_score=metrics[cfg.promotion_metric],
            y_test=y_test,
        )
        if run_warnings:
            mlflow.set_tag("warnings", json.dumps(run_warnings)[:5000])

    model_name = prepared.task_cfg.registered_model_name
    return TrainResult(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        task=task,
        model_name=model_name,
        model_version=version,
        model_uri=f"models:/{model_name}/{version}",
        alias=alias,
        promoted=decision.promote,
        promotion_reason=decision.reason,
        metrics={k: float(v) for k, v in metrics.items() if np.isfinite(v)},
        split=split,
        n_rows={
            "train": len(data.train),
            "validation": len(data.validation),
            "test": len(data.test),
        },
        n_features=len(spec.features),
        best_params=best_params,
        leakage_warning=leakage,
        warnings=run_warnings,
        backtest=backtest,
    )


def _log_datasets(data: TaskData, source: str) -> None:
    import mlflow

    parts = (
        ("training", data.train, data.split.train_cutoffs),
        ("validation", data.validation, (data.split.validation_cutoff,)),
        ("testing", data.test, (data.split.test_cutoff,)),
    )
    for context, frame, cutoffs in parts:
        dataset = _mlflow_dataset(
            frame, source, data.label_column, name=f"{data.label_column}-{context}"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.log_input(
                dataset,
                context=context,
                tags={"cutoffs": ",".join(c.date().isoformat() for c in cutoffs)},
            )
