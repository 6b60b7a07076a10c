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
  :func:`reference_frames`);
* the model: a models-from-code pyfunc over pickle-free artifacts (``training.scorer``), with
  signature and input example, registered and aliased ``challenger`` / ``champion``.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, ConfigDict

from training.backtest import backtest_mlflow_metrics, run_backtest
from training.calibration import ProbabilityCalibrator
from training.config import TrainingConfig, configure_mlflow
from training.datasets import (
    TaskData,
    build_task_data,
    encode_features,
    unseen_category_counts,
)
from training.evaluation import (
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
    apply_decision,
    compare_with_champion,
    register_version,
)
from training.scorer import Scorer, conform_to_input_types
from training.tuning import tune_xgboost

logger = logging.getLogger(__name__)

#: The models-from-code file logged as the pyfunc (never imported).
PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")

#: Rows used for the SHAP summary plot and global importance (seeded sample of the test rows).
SHAP_SAMPLE_ROWS = 2000

#: At most this many test-cutoff rows are logged as ``reference/reference_features.parquet``.
REFERENCE_MAX_ROWS = 50_000

#: Artifact paths of the reference data (read by ``pipelines.monitoring`` and serving).
REFERENCE_DIR = "reference"
TEST_PREDICTIONS_ARTIFACT = f"{REFERENCE_DIR}/test_predictions.parquet"
REFERENCE_FEATURES_ARTIFACT = f"{REFERENCE_DIR}/reference_features.parquet"
GLOBAL_STATS_ARTIFACT = f"{REFERENCE_DIR}/global_stats.json"
REFERENCE_INFO_ARTIFACT = f"{REFERENCE_DIR}/reference_info.json"

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
    ``training_horizon_days``, ``lead_days``), written by ``pipelines.flows``.
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
# The pipeline
# --------------------------------------------------------------------------------------------


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
    spec = data.spec
    run_warnings: list[str] = []
    horizons = dict(snapshots.attrs.get("labels") or {})
    horizon_note = label_horizon_note(horizons)
    if horizon_note:
        run_warnings.append(horizon_note)
    constraints, skipped = applicable_monotone_constraints(spec, task_cfg.monotone_constraints)
    if skipped:
        run_warnings.append(f"monotone constraints skipped (not numeric features): {skipped}")
    unseen = unseen_category_counts(data.test, spec)
    if unseen:
        run_warnings.append(f"test rows with categorical levels unseen in training: {unseen}")
    values_test = customer_values(data.test, cfg.economics)  # fail fast on a bad value column
    stats_cutoff = (global_stats or {}).get("cutoff")
    test_day = data.split.test_cutoff.date().isoformat()
    if stats_cutoff is not None and str(stats_cutoff) != test_day:
        run_warnings.append(
            f"global_stats were fitted at {stats_cutoff}, not at the test cutoff {test_day}"
        )

    source = redact(data_source)
    configure_mlflow(cfg.mlflow)
    client = mlflow.MlflowClient()
    input_types = {f: SIGNATURE_TYPES[spec.kinds[f]] for f in spec.features}

    run_name = f"{task}-{data.split.test_cutoff.date()}"
    # nested under a caller's run (e.g. a pipeline flow) when one is active
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
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
                "monotone_constraints": json.dumps(constraints),
            }
        )
        mlflow.log_params(run_params(cfg, task))
        split = data.split.to_dict()
        mlflow.log_params(
            {
                "train_cutoffs": ",".join(split["train_cutoffs"]),
                "validation_cutoff": split["validation_cutoff"],
                "test_cutoff": split["test_cutoff"],
                "n_features": len(spec.features),
            }
        )
        _log_datasets(data, source)
        mlflow.log_dict(spec.to_dict(), "features/feature_list.json")

        # --- XGBoost: tune with early stopping on the tuning share of validation ----------
        y_train, y_tuning = data.y("train"), data.y("tuning")
        y_cal, y_test = data.y("calibration"), data.y("test")
        X_train, X_tuning = data.X("train"), data.X("tuning")  # noqa: N806
        X_cal, X_test = data.X("calibration"), data.X("test")  # noqa: N806
        scale_pos_weight = positive_class_weight(y_train, cfg.imbalance_strategy)
        base_params = base_xgb_params(
            scale_pos_weight=scale_pos_weight,
            monotone_constraints=constraints,
            tuning_metric=cfg.tuning_metric,
            seed=cfg.seed,
            n_jobs=cfg.n_jobs,
        )
        tuning = tune_xgboost(
            to_dmatrix(X_train, y_train),
            to_dmatrix(X_tuning, y_tuning),
            base_params,
            tuning_metric=cfg.tuning_metric,
            n_trials=cfg.n_trials,
            time_budget_s=cfg.time_budget_s,
            seed=cfg.seed,
            max_rounds=cfg.max_boosting_rounds,
            early_stopping_rounds=cfg.early_stopping_rounds,
            log_trial_runs=cfg.log_trial_runs,
            progress=progress,
            description=f"tuning {task}",
        )
        mlflow.log_params({f"xgb_{k}": v for k, v in tuning.params.items() if k not in base_params})
        mlflow.log_params({"scale_pos_weight": round(scale_pos_weight, 6)})

        # --- calibration on held-out validation customers -------------------------------
        booster = tuning.booster
        calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
            predict_xgboost(booster, X_cal), y_cal
        )

        def scorer_of(model: xgb.Booster) -> Scorer:
            return Scorer(
                model,
                calibrator,
                spec,
                task=task,
                label_column=task_cfg.label_column,
                input_types=input_types,
                default_top_k=cfg.explain_top_k,
            )

        scorer = scorer_of(booster)
        raw_test = predict_xgboost(booster, X_test)
        p_test = calibrator.predict(raw_test)

        # --- logistic-regression baseline, calibrated the same way ------------------------
        lr_pipeline = build_logistic_regression(spec, cfg.imbalance_strategy, cfg.seed)
        lr_pipeline.fit(lr_input(X_train), y_train)
        lr_calibrator = ProbabilityCalibrator(cfg.calibration_method).fit(
            predict_logistic_regression(lr_pipeline, X_cal), y_cal
        )
        p_lr_test = lr_calibrator.predict(predict_logistic_regression(lr_pipeline, X_test))

        # --- metrics on the test cutoff ----------------------------------------------------
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

        baseline = choose_naive_baseline(
            data.validation, data.y("validation"), task_cfg.baseline_rules
        )
        profit_curves = {
            "XGBoost": profit_curve(y_test, p_test, values_test, cfg.economics),
            "logistic regression": profit_curve(y_test, p_lr_test, values_test, cfg.economics),
        }
        scores = {"XGBoost": p_test, "logistic regression": p_lr_test}
        if baseline is None:
            run_warnings.append(
                "no naive baseline: none of the columns "
                f"{[r.column for r in task_cfg.baseline_rules]} is in the table"
            )
            mlflow.set_tag("baseline_rule", "none")
        else:
            metrics.update(
                baseline_metrics(
                    baseline,
                    data.test,
                    y_test,
                    **{k: metric_kwargs[k] for k in ("fractions", "values", "economics")},
                )
            )
            mlflow.set_tag("baseline_rule", baseline.describe())
            baseline_name = f"rule: {baseline.rule.column}"
            scores[baseline_name] = baseline.score(data.test)
            profit_curves[baseline_name] = profit_curve(
                y_test, scores[baseline_name], values_test, cfg.economics
            )
        for key, n in (("train", data.train), ("validation", data.validation), ("test", data.test)):
            metrics[f"n_{key}"] = float(len(n))

        # --- rolling-origin backtest: refits at the last K cutoffs, tuned params fixed ----
        best_params = {k: v for k, v in tuning.params.items() if k not in base_params}
        backtest = None
        if cfg.backtest_cutoffs > 0:
            backtest = run_backtest(
                snapshots,
                cfg,
                task=task,
                tuned_params=best_params,
                rounds=tuning.best_iteration + 1,
                tuned_on=data.split.validation_cutoff,
                # the latest origin is this split: a refit would reproduce this very model
                known={data.split.test_cutoff: (data, p_test, booster.num_boosted_rounds())},
            )
            metrics.update(backtest_mlflow_metrics(backtest))
            mlflow.log_dict(backtest, "backtest/backtest.json")
            mlflow.set_tag("backtest_origins", ",".join(r["cutoff"] for r in backtest["cutoffs"]))
            if backtest["n_cutoffs"] < 2:
                run_warnings.append(
                    f"backtest ran on {backtest['n_cutoffs']} of {cfg.backtest_cutoffs} cutoffs "
                    f"(no spread); skipped: {[s['cutoff'] for s in backtest['skipped']]}"
                )

        # --- leakage check -----------------------------------------------------------------
        leakage = leakage_suspected(metrics["roc_auc"], cfg.leakage_auc_threshold)
        suspects = suspicious_features(X_test, y_test, cfg.leakage_auc_threshold)
        mlflow.set_tag("leakage_warning", str(leakage).lower())
        if suspects:
            mlflow.set_tag("suspicious_features", json.dumps(suspects))
        if leakage:
            message = (
                f"possible leakage: test ROC AUC {metrics['roc_auc']:.3f} > "
                f"{cfg.leakage_auc_threshold}; features separating the classes alone: "
                f"{suspects or 'none'}"
            )
            logger.warning(message)
            run_warnings.append(message)

        mlflow.log_metrics(metrics)

        # --- the registered model: refitted on every matured cutoff --------------------
        trained_through = data.split.validation_cutoff
        if cfg.refit_on_all_cutoffs:
            refit = refit_on_all_cutoffs(
                data,
                {**base_params, **tuning.params},
                tuning.best_iteration + 1,
                cfg.imbalance_strategy,
            )
            trained_through = data.split.test_cutoff
            scorer = scorer_of(refit)
            fitted_on = [*split["train_cutoffs"], split["validation_cutoff"], test_day]
            mlflow.set_tag(
                "registered_model_fit",
                f"refitted on cutoffs {fitted_on} with {refit.num_boosted_rounds()} rounds; "
                "the metrics are the held-out model's",
            )
        else:
            mlflow.set_tag("registered_model_fit", "the held-out model (training cutoffs only)")

        with tempfile.TemporaryDirectory() as tmp:
            tmp_dir = Path(tmp)
            # --- explanations and plots ----------------------------------------------------
            sample = data.test.sample(
                n=min(SHAP_SAMPLE_ROWS, len(data.test)), random_state=cfg.seed
            )
            X_sample = X_test.loc[sample.index]  # noqa: N806
            contributions = shap_contributions(booster, X_sample)
            importance = mean_abs_contributions(contributions, spec)
            mlflow.log_dict(
                {
                    "mean_abs_shap": importance.to_dict(),
                    "readable_names": spec.readable_names,
                },
                "features/importance.json",
            )
            from training.plots import save_evaluation_plots

            save_evaluation_plots(
                tmp_dir / "plots",
                y=y_test,
                scores=scores,
                probabilities={"XGBoost": p_test, "logistic regression": p_lr_test},
                profit_curves=profit_curves,
                importance=importance,
                contributions=contributions,
                X=X_sample,
                spec=spec,
                n_bins=cfg.ece_bins,
            )
            mlflow.log_artifacts(str(tmp_dir / "plots"), "plots")

            # --- the LR baseline, pickle-free ----------------------------------------------
            import skops.io

            lr_dir = tmp_dir / "baseline_lr"
            lr_dir.mkdir()
            skops.io.dump(lr_pipeline, lr_dir / "pipeline.skops")
            lr_calibrator.save_json(lr_dir / "calibration.json")
            mlflow.log_artifacts(str(lr_dir), "baseline_lr")
            mlflow.log_dict(cfg.model_dump(mode="json"), "config/training_config.json")

            # --- reference data for monitoring and serving ------------------------------
            reference_dir = tmp_dir / REFERENCE_DIR
            reference_dir.mkdir()
            test_predictions, reference_features = reference_frames(data, p_test, seed=cfg.seed)
            test_predictions.to_parquet(reference_dir / "test_predictions.parquet", index=False)
            reference_features.to_parquet(reference_dir / "reference_features.parquet", index=False)
            if global_stats is not None:
                (reference_dir / "global_stats.json").write_text(
                    json.dumps(global_stats, indent=2, default=str), encoding="utf-8"
                )
            reference_info = {
                "task": task,
                "label_column": task_cfg.label_column,
                "test_cutoff": test_day,
                "features": list(spec.features),
                "n_test_rows": len(test_predictions),
                "n_reference_rows": len(reference_features),
                "reference_sample_seed": cfg.seed,
                "has_global_stats": global_stats is not None,
            }
            (reference_dir / "reference_info.json").write_text(
                json.dumps(reference_info, indent=2), encoding="utf-8"
            )
            mlflow.log_artifacts(str(reference_dir), REFERENCE_DIR)

            # --- the model -----------------------------------------------------------------
            artifacts = scorer.save(tmp_dir / "model_artifacts", cfg.model_format)
            input_example = conform_to_input_types(data.test.head(5), input_types)
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_MODEL_FILE),
                artifacts=artifacts,
                signature=_signature(input_types, cfg.explain_top_k),
                input_example=input_example,
                pip_requirements=_pip_requirements(),
                metadata={"task": task, "label_column": task_cfg.label_column},
            )

        # --- registry: challenger, maybe champion ---------------------------------------
        model_name = task_cfg.registered_model_name
        version = register_version(
            client,
            model_info.model_uri,
            model_name,
            run_id=run.info.run_id,
            tags={
                "task": task,
                "test_cutoff": split["test_cutoff"],
                TRAINED_THROUGH_TAG: trained_through.date().isoformat(),
            },
        )
        decision = compare_with_champion(
            client,
            model_name,
            metric=cfg.promotion_metric,
            challenger_score=metrics[cfg.promotion_metric],
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
        if run_warnings:
            mlflow.set_tag("warnings", json.dumps(run_warnings)[:5000])

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
