"""What a training run hands on: the artifact paths of a run, and one writer and one reader.

Monitoring, serving and reporting never see the training code; they see what its MLflow run
logged. So the paths live here, once, and the part of the run that is read back later (the
``reference/`` directory) is one frozen record, :class:`RunReference`, written by
:func:`log_reference` (``training.train``) and read by :func:`read_reference` (every consumer).

``reference/`` holds the test cutoff's out-of-sample rows (the latest matured cutoff, the rows
the run's metrics were measured on), so a later batch is compared like for like:

* ``test_predictions.parquet``: every test row (``customer_id``, ``cutoff``, ``probability``,
  ``label``); serving fits its risk bands and percentiles on it;
* ``reference_features.parquet``: a seeded sample of those rows with the model's input columns,
  the label column and ``probability``; monitoring measures drift against it;
* ``global_stats.json``: ``features.segments.GlobalStats.to_dict()`` of the test cutoff (CLV
  fits, RFM and value-tier cut points), so later features use the same segment definitions;
  only when the caller gave it;
* ``reference_info.json``: :class:`ReferenceInfo`, what the rows are (task, label column, test
  cutoff, feature list, row counts).

The run's other artifacts (plots, feature list and importance, the backtest, the LR baseline,
the config, the model) are logged where they are made; their paths are the constants below.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: The directory of the run's reference data (:class:`RunReference`).
REFERENCE_DIR = "reference"
TEST_PREDICTIONS_ARTIFACT = f"{REFERENCE_DIR}/test_predictions.parquet"
REFERENCE_FEATURES_ARTIFACT = f"{REFERENCE_DIR}/reference_features.parquet"
GLOBAL_STATS_ARTIFACT = f"{REFERENCE_DIR}/global_stats.json"
REFERENCE_INFO_ARTIFACT = f"{REFERENCE_DIR}/reference_info.json"

#: The feature spec (``training.datasets.FeatureSpec.to_dict()``) and the SHAP importance.
FEATURE_LIST_ARTIFACT = "features/feature_list.json"
FEATURE_IMPORTANCE_ARTIFACT = "features/importance.json"
#: The rolling-origin backtest (``training.backtest.run_backtest``), when it ran.
BACKTEST_ARTIFACT = "backtest/backtest.json"
#: The run's ``TrainingConfig``, as JSON.
TRAINING_CONFIG_ARTIFACT = "config/training_config.json"
#: Directories: evaluation plots (PNG), the logistic-regression baseline (skops + calibration).
PLOTS_DIR = "plots"
BASELINE_LR_DIR = "baseline_lr"
#: Name of the logged pyfunc model inside the run.
MODEL_ARTIFACT = "model"

#: The parts of a :class:`RunReference`, by field name, and where each is logged.
REFERENCE_PARTS: dict[str, str] = {
    "info": REFERENCE_INFO_ARTIFACT,
    "test_predictions": TEST_PREDICTIONS_ARTIFACT,
    "reference_features": REFERENCE_FEATURES_ARTIFACT,
    "global_stats": GLOBAL_STATS_ARTIFACT,
}


@dataclass(frozen=True)
class ReferenceInfo:
    """``reference_info.json``: what the reference rows are, so a reader needs no training code."""

    task: str
    label_column: str
    #: The test cutoff, ISO date.
    test_cutoff: str
    #: The model's input columns, in the model's order.
    features: tuple[str, ...]
    n_test_rows: int
    n_reference_rows: int
    #: Seed of the sample of test rows kept as reference features.
    reference_sample_seed: int
    has_global_stats: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ReferenceInfo:
        return cls(
            task=str(payload["task"]),
            label_column=str(payload["label_column"]),
            test_cutoff=str(payload["test_cutoff"]),
            features=tuple(payload["features"]),
            n_test_rows=int(payload["n_test_rows"]),
            n_reference_rows=int(payload["n_reference_rows"]),
            reference_sample_seed=int(payload["reference_sample_seed"]),
            has_global_stats=bool(payload["has_global_stats"]),
        )


@dataclass(frozen=True)
class RunReference:
    """The reference data of one training run (see the module docstring).

    Written whole by :func:`log_reference`; read back by :func:`read_reference`, where a part
    that was not asked for, or that the run did not log, is None.
    """

    info: ReferenceInfo | None = None
    test_predictions: pd.DataFrame | None = field(default=None, repr=False)
    reference_features: pd.DataFrame | None = field(default=None, repr=False)
    #: ``features.segments.GlobalStats.to_dict()`` layout, as logged (JSON).
    global_stats: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether the parts every run logs (all but the global statistics) are here."""
        return (
            self.info is not None
            and self.test_predictions is not None
            and self.reference_features is not None
        )


def write_reference(reference: RunReference, directory: Path) -> Path:
    """Write ``reference``'s files into ``directory`` (created); the layout of ``reference/``."""
    if not reference.complete:
        raise ValueError("a run's reference needs its info, test predictions and features")
    if reference.info.has_global_stats != (reference.global_stats is not None):
        raise ValueError("reference info says has_global_stats but the statistics disagree")
    directory.mkdir(parents=True, exist_ok=True)
    reference.test_predictions.to_parquet(_local(directory, TEST_PREDICTIONS_ARTIFACT), index=False)
    reference.reference_features.to_parquet(
        _local(directory, REFERENCE_FEATURES_ARTIFACT), index=False
    )
    if reference.global_stats is not None:
        _local(directory, GLOBAL_STATS_ARTIFACT).write_text(
            json.dumps(reference.global_stats, indent=2, default=str), encoding="utf-8"
        )
    _local(directory, REFERENCE_INFO_ARTIFACT).write_text(
        json.dumps(reference.info.to_dict(), indent=2), encoding="utf-8"
    )
    return directory


def log_reference(reference: RunReference) -> None:
    """Log ``reference`` as the active MLflow run's ``reference/`` artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_reference(reference, Path(tmp) / REFERENCE_DIR)
        mlflow.log_artifacts(str(directory), REFERENCE_DIR)


def read_reference(
    run_id: str, *, parts: Collection[str] = tuple(REFERENCE_PARTS), client: Any | None = None
) -> RunReference:
    """The reference data a run logged: the ``parts`` asked for (:data:`REFERENCE_PARTS`).

    A part the run did not log is None, as is every part when the artifact store cannot be
    listed; a logged part that cannot be downloaded or read raises.
    """
    import mlflow

    unknown = sorted(set(parts) - set(REFERENCE_PARTS))
    if unknown:
        raise ValueError(f"unknown reference parts {unknown}; choose from {list(REFERENCE_PARTS)}")
    client = client if client is not None else mlflow.MlflowClient()
    try:
        logged = {entry.path for entry in client.list_artifacts(run_id, REFERENCE_DIR)}
    except Exception:  # an artifact store we cannot list: treat as absent
        logged = set()
    values: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            path = REFERENCE_PARTS[part]
            if path not in logged:
                continue
            local = Path(
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
            )
            values[part] = _read_part(part, local)
    return RunReference(**values)


def _read_part(part: str, local: Path) -> Any:
    if part in ("test_predictions", "reference_features"):
        return pd.read_parquet(local)
    payload = json.loads(local.read_text(encoding="utf-8"))
    return ReferenceInfo.from_dict(payload) if part == "info" else payload


def _local(directory: Path, artifact: str) -> Path:
    """Where ``artifact`` (a path under ``reference/``) goes in a local copy ``directory``."""
    return directory / Path(artifact).relative_to(REFERENCE_DIR)
