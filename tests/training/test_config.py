from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import MlflowConfig, TrainingConfig, configure_mlflow


def test_config_refuses_unknown_keys_and_is_frozen():
    with pytest.raises(ValidationError, match="n_trails"):
        TrainingConfig.model_validate({"n_trails": 5})
    cfg = TrainingConfig()
    with pytest.raises(ValidationError):
        cfg.n_trials = 3  # type: ignore[misc]


def test_default_tasks_name_their_labels_and_registered_models():
    cfg = TrainingConfig()
    assert {t: cfg.task(t).label_column for t in ("churn", "upsell", "winback")} == {
        "churn": "churn_label",
        "upsell": "upsell_label",
        "winback": "winback_label",
    }
    assert cfg.task("churn").registered_model_name == "churn"
    with pytest.raises(ValueError, match="unknown task"):
        cfg.task("fraud")


def test_a_task_in_the_config_overrides_only_the_keys_it_names():
    cfg = TrainingConfig.model_validate({"tasks": {"churn": {"registered_model_name": "c2"}}})
    assert cfg.task("churn").registered_model_name == "c2"
    assert cfg.task("churn").label_column == "churn_label"
    assert (
        cfg.task("churn").monotone_constraints
        == TrainingConfig().task("churn").monotone_constraints
    )
    assert cfg.task("winback") == TrainingConfig().task("winback")
    with pytest.raises(ValidationError, match="lable_column"):
        TrainingConfig.model_validate({"tasks": {"churn": {"lable_column": "x"}}})


def test_default_mlflow_store_is_local_sqlite_under_mlruns():
    cfg = MlflowConfig()
    assert cfg.tracking_uri == "sqlite:///mlruns/mlflow.db"
    assert cfg.registry_uri is None
    assert cfg.artifact_location == "mlruns/artifacts"


def test_configure_mlflow_resolves_relative_paths_against_cwd(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    configure_mlflow(MlflowConfig(experiment_name="config-test"))
    db = tmp_path / "mlruns" / "mlflow.db"
    assert mlflow.get_tracking_uri() == f"sqlite:///{db}"
    assert mlflow.get_registry_uri() == f"sqlite:///{db}"
    assert db.exists()
    experiment = mlflow.get_experiment_by_name("config-test")
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert Path(tmp_path / "mlruns" / "artifacts").is_dir()
    configure_mlflow(MlflowConfig(experiment_name="config-test"))  # idempotent
