"""The hand-over of a training run (training.artifacts): what the writer logs, the reader reads.

Round trips through a real MLflow run in a temporary SQLite store, without training a model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.artifacts import (
    GLOBAL_STATS_ARTIFACT,
    REFERENCE_DIR,
    REFERENCE_FEATURES_ARTIFACT,
    REFERENCE_INFO_ARTIFACT,
    REFERENCE_PARTS,
    TEST_PREDICTIONS_ARTIFACT,
    ReferenceInfo,
    RunReference,
    log_reference,
    read_reference,
    write_reference,
)

STATS = {"cutoff": "2025-01-01", "rfm": {"recency": [10.0, 30.0]}, "clv": None}


@pytest.fixture()
def mlflow_run(tmp_path):
    """A function that opens a run in a fresh store, calls ``body`` in it, returns its id."""
    import mlflow

    from training.config import MlflowConfig, configure_mlflow

    configure_mlflow(
        MlflowConfig(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_location=str(tmp_path / "artifacts"),
            experiment_name="artifacts-tests",
        )
    )

    def run(body) -> str:
        with mlflow.start_run() as active:
            body()
        return active.info.run_id

    return run


def _reference(global_stats: dict | None = STATS) -> RunReference:
    predictions = pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "cutoff": pd.to_datetime(["2025-01-01"] * 3),
            "probability": [0.1, 0.7, 0.4],
            "label": [0.0, 1.0, 0.0],
        }
    )
    features = predictions[["customer_id", "cutoff"]].assign(
        recency_days=[3, 40, 12], country=["NL", "DE", None], churn_label=[0.0, 1.0, 0.0]
    )
    features["probability"] = predictions["probability"]
    info = ReferenceInfo(
        task="churn",
        label_column="churn_label",
        test_cutoff="2025-01-01",
        features=("recency_days", "country"),
        n_test_rows=3,
        n_reference_rows=3,
        reference_sample_seed=7,
        has_global_stats=global_stats is not None,
    )
    return RunReference(
        info=info,
        test_predictions=predictions,
        reference_features=features,
        global_stats=global_stats,
    )


def test_reference_info_round_trips_through_its_json_layout():
    info = _reference().info
    payload = json.loads(json.dumps(info.to_dict()))
    assert payload["features"] == ["recency_days", "country"]
    assert list(payload) == [
        "task",
        "label_column",
        "test_cutoff",
        "features",
        "n_test_rows",
        "n_reference_rows",
        "reference_sample_seed",
        "has_global_stats",
    ]
    assert ReferenceInfo.from_dict(payload) == info


def test_the_writer_lays_out_the_reference_directory(tmp_path):
    directory = write_reference(_reference(), tmp_path / REFERENCE_DIR)
    written = {p.relative_to(tmp_path).as_posix() for p in directory.iterdir()}
    assert written == set(REFERENCE_PARTS.values())
    assert json.loads((tmp_path / GLOBAL_STATS_ARTIFACT).read_text()) == STATS
    assert json.loads((tmp_path / REFERENCE_INFO_ARTIFACT).read_text())["task"] == "churn"


def test_the_writer_refuses_an_incomplete_or_inconsistent_reference(tmp_path):
    whole = _reference()
    with pytest.raises(ValueError, match="needs its info"):
        write_reference(RunReference(info=whole.info), tmp_path / "a")
    with pytest.raises(ValueError, match="has_global_stats"):
        write_reference(
            RunReference(
                info=whole.info,
                test_predictions=whole.test_predictions,
                reference_features=whole.reference_features,
            ),
            tmp_path / "b",
        )


def test_what_the_writer_logs_the_reader_reads_back(mlflow_run):
    import mlflow

    reference = _reference()
    run_id = mlflow_run(lambda: log_reference(reference))
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id, REFERENCE_DIR)}
    assert logged == {
        TEST_PREDICTIONS_ARTIFACT,
        REFERENCE_FEATURES_ARTIFACT,
        GLOBAL_STATS_ARTIFACT,
        REFERENCE_INFO_ARTIFACT,
    }

    read = read_reference(run_id)
    assert read.complete
    assert read.info == reference.info
    assert read.global_stats == STATS
    pd.testing.assert_frame_equal(read.test_predictions, reference.test_predictions)
    pd.testing.assert_frame_equal(read.reference_features, reference.reference_features)


def test_the_reader_reads_only_the_parts_asked_for(mlflow_run):
    run_id = mlflow_run(lambda: log_reference(_reference()))
    read = read_reference(run_id, parts=("test_predictions",))
    np.testing.assert_allclose(read.test_predictions["probability"], [0.1, 0.7, 0.4])
    assert read.info is None and read.reference_features is None and read.global_stats is None
    assert not read.complete
    with pytest.raises(ValueError, match="unknown reference parts"):
        read_reference(run_id, parts=("model",))


def test_parts_a_run_did_not_log_read_as_none(mlflow_run):
    without_stats = read_reference(mlflow_run(lambda: log_reference(_reference(None))))
    assert without_stats.complete and without_stats.global_stats is None
    assert without_stats.info.has_global_stats is False

    nothing = read_reference(mlflow_run(lambda: None))
    assert nothing == RunReference()
    assert not nothing.complete
