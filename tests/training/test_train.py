"""End to end: train -> MLflow run -> registered version -> aliases, on a tmp MLflow store.

Three churn runs on the same snapshot table (built by the real feature pipeline, see
``conftest.py``) and test cutoff:

1. only the static attributes (tenure, customer type, acquisition channel, country)
                                             -> first version, promoted (no champion yet);
2. only the country                          -> worse than the champion, stays challenger;
3. with every feature                        -> beats the champion, promoted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import TrainingConfig
from training.train import TrainResult, train

pytestmark = pytest.mark.slow

MODEL_NAME = "churn-e2e"
#: The features each run keeps (None = all of them).
RUN_FEATURES: tuple[tuple[str, ...] | None, ...] = (
    ("tenure_days", "customer_type", "acquisition_channel", "country"),
    ("country",),
    None,
)


def _exclusions(snapshots: pd.DataFrame, keep: tuple[str, ...] | None) -> tuple[str, ...]:
    from training.datasets import feature_columns

    if keep is None:
        return ()
    return tuple(f for f in feature_columns(snapshots) if f not in keep)


def _config(mlflow_store, fast_config_kwargs, *, model_name: str, exclude=(), **overrides):
    base = TrainingConfig(mlflow=mlflow_store, **fast_config_kwargs, **overrides)
    churn = base.task("churn").model_copy(
        update={"registered_model_name": model_name, "exclude_features": tuple(exclude)}
    )
    return base.model_copy(update={"tasks": {**base.tasks, "churn": churn}})


def _aliases(client, name: str) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()
    }


@pytest.fixture(scope="module")
def promotion_runs(snapshots, mlflow_store, fast_config_kwargs):
    import mlflow

    results: list[TrainResult] = []
    aliases: list[dict[str, str]] = []
    for keep in RUN_FEATURES:
        exclude = _exclusions(snapshots, keep)
        cfg = _config(mlflow_store, fast_config_kwargs, model_name=MODEL_NAME, exclude=exclude)
        results.append(
            train(cfg, snapshots, task="churn", data_source="fixture:test", progress=False)
        )
        aliases.append(_aliases(mlflow.MlflowClient(), MODEL_NAME))
    return results, aliases


def test_first_version_becomes_champion(promotion_runs):
    results, aliases = promotion_runs
    assert results[0].model_version == "1" and results[0].alias == "champion"
    assert results[0].promotion_reason == "no champion yet"
    assert aliases[0] == {"champion": "1"}


def test_worse_version_stays_challenger(promotion_runs):
    import mlflow

    results, aliases = promotion_runs
    worse = results[1]
    assert worse.alias == "challenger" and not worse.promoted
    assert aliases[1] == {"champion": "1", "challenger": "2"}
    run = mlflow.get_run(worse.run_id)
    assert run.data.tags["promotion_decision"] == "kept_challenger"
    assert run.data.metrics["champion_pr_auc"] > run.data.metrics["challenger_pr_auc"]
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, "2")
    assert "does not beat" in version.description


def test_better_version_is_promoted(promotion_runs):
    import mlflow

    results, aliases = promotion_runs
    better = results[2]
    assert better.alias == "champion" and better.promoted
    assert aliases[2] == {"champion": "3"}
    run = mlflow.get_run(better.run_id)
    assert run.data.tags["promotion_decision"] == "promoted"
    # the champion was re-scored on this run's test rows: its score equals run 1's own
    assert run.data.metrics["champion_pr_auc"] == pytest.approx(results[0].metrics["pr_auc"])
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, "3")
    assert version.description.startswith("Promoted to champion")


def test_train_result_is_json_with_the_headline_metrics(promotion_runs, snapshot_cutoffs):
    result = promotion_runs[0][2]
    payload = json.loads(result.model_dump_json())
    for key in ("run_id", "model_name", "model_version", "alias", "metrics"):
        assert key in payload
    for metric in ("roc_auc", "pr_auc", "brier", "lift_at_10", "baseline_roc_auc", "lr_roc_auc"):
        assert np.isfinite(payload["metrics"][metric])
    assert payload["split"]["test_cutoff"] == str(snapshot_cutoffs.test.date())
    assert payload["split"]["unusable_cutoffs"] == [str(snapshot_cutoffs.unmatured.date())]

    # rolling-origin backtest over the last 3 matured cutoffs: the oldest of them has only one
    # earlier cutoff (no training + validation), so it is skipped and named
    backtest = payload["backtest"]
    days = [str(c.date()) for c in snapshot_cutoffs.matured]
    assert [r["cutoff"] for r in backtest["cutoffs"]] == days[-2:]
    assert [s["cutoff"] for s in backtest["skipped"]] == [days[-3]]
    for row in backtest["cutoffs"]:
        assert row["validation_cutoff"] < row["cutoff"]
        assert all(c < row["validation_cutoff"] for c in row["train_cutoffs"])
        assert 0.5 < row["roc_auc"] <= 1 and row["boosting_rounds"] >= 1
    assert backtest["cutoffs"][-1]["n"] == result.n_rows["test"]
    # the latest origin is the test cutoff, graded with the deployed model itself
    assert backtest["cutoffs"][-1]["roc_auc"] == payload["metrics"]["roc_auc"]
    assert backtest["cutoffs"][-1]["pr_auc"] == payload["metrics"]["pr_auc"]
    assert backtest["params_tuned_on"] == str(snapshot_cutoffs.validation.date())
    for metric in ("roc_auc", "pr_auc", "lift_at_10"):
        values = [r[metric] for r in backtest["cutoffs"]]
        assert backtest["mean"][metric] == pytest.approx(np.mean(values))
        assert backtest["std"][metric] == pytest.approx(np.std(values, ddof=1))
        assert payload["metrics"][f"backtest_{metric}_mean"] == backtest["mean"][metric]


def test_run_logs_tags_params_metrics_inputs_and_plots(promotion_runs, snapshot_cutoffs):
    import mlflow

    result = promotion_runs[0][2]
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    tags = run.data.tags
    assert tags["task"] == "churn"
    assert tags["data_source"] == "fixture:test"
    assert tags["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    assert tags["leakage_warning"] == "false"
    assert "scale_pos_weight" in tags["imbalance_handling"]
    assert tags["baseline_rule"].startswith("recency_days >= ")
    assert run.data.params["test_cutoff"] == str(snapshot_cutoffs.test.date())
    assert run.data.params["n_trials"] == "3"
    for prefix in ("", "lr_", "baseline_"):
        for metric in (
            "roc_auc",
            "pr_auc",
            "lift_at_5",
            "lift_at_10",
            "lift_at_20",
            "capture_at_10",
        ):
            assert f"{prefix}{metric}" in run.data.metrics
    for metric in ("log_loss", "brier", "ece", "profit_best", "profit_best_depth"):
        assert metric in run.data.metrics and f"lr_{metric}" in run.data.metrics

    contexts = {}
    for dataset_input in run.inputs.dataset_inputs:
        input_tags = {t.key: t.value for t in dataset_input.tags}
        contexts[input_tags["mlflow.data.context"]] = (dataset_input.dataset.digest, input_tags)
    assert set(contexts) == {"training", "validation", "testing"}
    assert contexts["training"][1]["cutoffs"] == ",".join(
        str(c.date()) for c in snapshot_cutoffs.train
    )
    assert contexts["validation"][1]["cutoffs"] == str(snapshot_cutoffs.validation.date())
    assert contexts["testing"][1]["cutoffs"] == str(snapshot_cutoffs.test.date())
    assert all(digest for digest, _ in contexts.values())

    plots = {Path(a.path).name for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {
        "roc_curve.png",
        "pr_curve.png",
        "calibration.png",
        "gains_lift.png",
        "profit_curve.png",
        "feature_importance.png",
        "shap_summary.png",
    }
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == result.metrics["n_trials"]

    assert tags["calibration_method"] == "beta"
    for metric in ("roc_auc", "pr_auc", "lift_at_10"):
        for kind in ("mean", "std"):
            assert run.data.metrics[f"backtest_{metric}_{kind}"] == result.backtest[kind][metric]
    assert run.data.metrics["backtest_n_cutoffs"] == len(result.backtest["cutoffs"])
    logged = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/backtest/backtest.json")
    assert logged == json.loads(json.dumps(result.backtest))


def test_logged_model_is_pickle_free_with_signature_and_example(
    promotion_runs, snapshots, tmp_path
):
    import mlflow

    from training.datasets import feature_columns

    result = promotion_runs[0][2]
    local = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path)))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    assert {"booster.ubj", "calibration.json", "feature_metadata.json", "pyfunc_model.py"} <= files
    assert "input_example.json" in files
    model = mlflow.models.Model.load(str(local))
    assert "model_code_path" in model.flavors["python_function"]
    # the signature holds the feature columns in table order (tenure_days, recency_days, ...)
    assert model.signature.inputs.input_names()[:2] == feature_columns(snapshots)[:2]
    assert {p.name for p in model.signature.params.params} == {"explain", "top_k"}


def test_baseline_lr_loads_through_skops_and_reproduces_its_metric(
    promotion_runs, churn_task_data, tmp_path
):
    import mlflow
    import skops.io
    from sklearn.metrics import average_precision_score

    from training.calibration import ProbabilityCalibrator
    from training.models import predict_logistic_regression

    result = promotion_runs[0][2]
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id, artifact_path="baseline_lr", dst_path=str(tmp_path)
        )
    )
    untrusted = skops.io.get_untrusted_types(file=local / "pipeline.skops")
    assert all(t.startswith(("sklearn.", "numpy.")) for t in untrusted)
    pipeline = skops.io.load(local / "pipeline.skops", trusted=untrusted)
    calibrator = ProbabilityCalibrator.load_json(local / "calibration.json")
    p = calibrator.predict(predict_logistic_regression(pipeline, churn_task_data.X("test")))
    assert average_precision_score(churn_task_data.y("test"), p) == pytest.approx(
        result.metrics["lr_pr_auc"]
    )


_SUBPROCESS_SCORING = textwrap.dedent(
    """
    import pickle
    import sys

    import cloudpickle
    import mlflow
    import pandas as pd
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

    def refuse(*args, **kwargs):
        raise RuntimeError("something tried to unpickle")

    # belt and braces: MLflow refuses pickled pyfuncs with the variable set; refuse anyway
    pickle.load = pickle.loads = cloudpickle.load = cloudpickle.loads = refuse
    assert MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get() is False
    uri, rows_path, out_path = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/churn-e2e@champion")
    rows = pd.read_parquet(rows_path)
    model.predict(rows, params={"explain": True, "top_k": 3}).to_parquet(out_path)
    """
)


def test_registered_champion_scores_identically_without_pickle(
    promotion_runs, churn_task_data, mlflow_store, tmp_path
):
    import mlflow
    from sklearn.metrics import average_precision_score

    from training.config import resolved_tracking_uri

    result = promotion_runs[0][2]
    rows = churn_task_data.test.head(300)
    rows.to_parquet(tmp_path / "rows.parquet")
    script = tmp_path / "score.py"
    script.write_text(_SUBPROCESS_SCORING)
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            resolved_tracking_uri(mlflow_store),
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "out.parquet"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    served = pd.read_parquet(tmp_path / "out.parquet")

    in_process = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    expected = in_process.predict(rows, params={"explain": True, "top_k": 3})
    pd.testing.assert_frame_equal(served, expected)
    assert all(len(json.loads(r)) <= 3 for r in served["reasons"])
    # the served model is the evaluated one: it reproduces the run's test metric
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, result.model_version)
    assert version.tags["trained_through"] == result.split["validation_cutoff"]
    full = in_process.predict(churn_task_data.test)["probability"]
    assert average_precision_score(churn_task_data.y("test"), full) == pytest.approx(
        result.metrics["pr_auc"]
    )


def test_with_the_refit_the_served_model_has_seen_every_matured_cutoff(
    snapshots, churn_task_data, mlflow_store, fast_config_kwargs
):
    import mlflow
    from sklearn.metrics import average_precision_score

    cfg = _config(
        mlflow_store, fast_config_kwargs, model_name="churn-refit", refit_on_all_cutoffs=True
    )
    first = train(cfg, snapshots, task="churn", data_source="fixture:test", progress=False)
    client = mlflow.MlflowClient()
    version = client.get_model_version("churn-refit", first.model_version)
    assert version.tags["trained_through"] == first.split["test_cutoff"]
    served = mlflow.pyfunc.load_model(f"models:/churn-refit/{first.model_version}")
    full = served.predict(churn_task_data.test)["probability"]
    # it has now seen the test rows: at least as good there as the held-out score
    assert average_precision_score(churn_task_data.y("test"), full) >= first.metrics["pr_auc"]
    # a second run on the same cutoffs cannot re-score that champion on rows it has seen: it is
    # compared by its own held-out score, and the reason says so
    second = train(cfg, snapshots, task="churn", data_source="fixture:test", progress=False)
    run = mlflow.get_run(second.run_id)
    assert run.data.metrics["champion_pr_auc"] == pytest.approx(first.metrics["pr_auc"])
    assert "its own held-out score is used" in run.data.tags["promotion_reason"]


def test_feature_equal_to_label_raises_a_leakage_warning(
    snapshots, mlflow_store, fast_config_kwargs, caplog
):
    import mlflow

    leaky = snapshots.assign(leaky_copy=snapshots["churn_label"])
    cfg = _config(mlflow_store, fast_config_kwargs, model_name="churn-leak")
    with caplog.at_level(logging.WARNING, logger="training.train"):
        result = train(cfg, leaky, task="churn", data_source="fixture:leaky", progress=False)
    assert result.leakage_warning
    assert result.metrics["roc_auc"] > 0.95
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["leakage_warning"] == "true"
    assert "leaky_copy" in json.loads(tags["suspicious_features"])
    assert any("possible leakage" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("task", ["upsell", "winback"])
def test_upsell_and_winback_models_train_on_the_real_snapshot_table(
    task, snapshots, snapshot_cutoffs, mlflow_store, fast_config_kwargs
):
    cfg = TrainingConfig(mlflow=mlflow_store, **{**fast_config_kwargs, "n_trials": 2})
    result = train(cfg, snapshots, task=task, data_source="fixture:test", progress=False)
    assert result.task == task and result.model_name == task
    assert result.split["test_cutoff"] == str(snapshot_cutoffs.test.date())
    assert result.alias == "champion"  # the first version of its registered model
    assert result.metrics["roc_auc"] > 0.6


def test_a_shorter_training_window_is_said_in_the_run() -> None:
    from training.train import label_horizon_note

    assert label_horizon_note({}) is None
    assert label_horizon_note({"horizon_days": 90, "training_horizon_days": 90}) is None
    note = label_horizon_note({"horizon_days": 273, "training_horizon_days": 92, "lead_days": 0})
    assert note is not None and "92-day label window" in note and "273-day" in note
