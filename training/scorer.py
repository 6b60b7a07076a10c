"""The trained model as one object: encode features, boost, calibrate, explain.

Training scores its test set with a ``Scorer`` and the MLflow pyfunc (``pyfunc_model.py``)
wraps the very same class loaded from the logged artifacts, so the served model cannot drift
from the evaluated one. All artifacts are pickle-free: the booster in XGBoost's native UBJ or
JSON format, the calibrator and the feature metadata as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from training.calibration import ProbabilityCalibrator
from training.datasets import FeatureSpec, encode_features
from training.explain import shap_contributions, top_reasons
from training.models import predict_xgboost

#: Artifact keys of a logged model, as passed to ``mlflow.pyfunc.log_model(artifacts=...)``.
BOOSTER_ARTIFACT = "booster"
CALIBRATION_ARTIFACT = "calibration"
METADATA_ARTIFACT = "feature_metadata"

METADATA_VERSION = 1


def conform_to_input_types(table: pd.DataFrame, input_types: Mapping[str, str]) -> pd.DataFrame:
    """The columns of ``input_types`` with the dtypes an MLflow signature declares.

    ``input_types`` maps column -> MLflow type (``double``, ``long``, ``boolean``, ``string``);
    strings become Python str with None for missing, so MLflow's schema check accepts them.
    """
    missing = [c for c in input_types if c not in table.columns]
    if missing:
        raise ValueError(f"input lacks columns the model needs: {missing}")
    frame = {}
    for column, mlflow_type in input_types.items():
        series = table[column]
        if mlflow_type == "string":
            values = series.astype("object")
            frame[column] = values.where(series.notna(), None).map(
                lambda v: None if v is None else str(v)
            )
        elif mlflow_type in ("double", "float"):
            frame[column] = series.astype("float64")
        elif mlflow_type == "long":
            frame[column] = series.astype("int64")
        elif mlflow_type == "integer":
            frame[column] = series.astype("int32")
        else:
            frame[column] = series
    return pd.DataFrame(frame, index=table.index)


class Scorer:
    """Calibrated probability and top-k reasons for rows of a snapshot-shaped table."""

    def __init__(
        self,
        booster: xgb.Booster,
        calibrator: ProbabilityCalibrator,
        spec: FeatureSpec,
        *,
        task: str = "",
        label_column: str = "",
        input_types: Mapping[str, str] | None = None,
        default_top_k: int = 3,
    ) -> None:
        self.booster = booster
        self.calibrator = calibrator
        self.spec = spec
        self.task = task
        self.label_column = label_column
        self.input_types = dict(input_types or {})
        self.default_top_k = default_top_k

    # --- scoring --------------------------------------------------------------------------
    def raw_probability(self, table: pd.DataFrame) -> np.ndarray:
        return predict_xgboost(self.booster, encode_features(table, self.spec))

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class (churn / up-sell / win-back)."""
        return self.calibrator.predict(self.raw_probability(table))

    def explain(self, table: pd.DataFrame, top_k: int | None = None) -> list[list[dict[str, Any]]]:
        """Top-k reasons per row (see ``training.explain.top_reasons``)."""
        contributions = shap_contributions(self.booster, encode_features(table, self.spec))
        return top_reasons(contributions, table, self.spec, top_k or self.default_top_k)

    def predict_frame(
        self, table: pd.DataFrame, *, explain: bool = False, top_k: int | None = None
    ) -> pd.DataFrame:
        """``probability`` per row; with ``explain`` also ``reasons``, a JSON list per row."""
        output = pd.DataFrame({"probability": self.predict_proba(table)}, index=table.index)
        if explain:
            output["reasons"] = [json.dumps(r) for r in self.explain(table, top_k)]
        return output

    # --- persistence ----------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "metadata_version": METADATA_VERSION,
            "task": self.task,
            "label_column": self.label_column,
            "input_types": self.input_types,
            "default_top_k": self.default_top_k,
            **self.spec.to_dict(),
        }

    def save(self, directory: str | Path, model_format: str = "ubj") -> dict[str, str]:
        """Write the three artifacts; return them keyed as ``load_artifacts`` expects."""
        if model_format not in ("ubj", "json"):
            raise ValueError(f"model_format must be 'ubj' or 'json', got {model_format!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        booster_path = directory / f"booster.{model_format}"
        self.booster.save_model(str(booster_path))
        calibration_path = self.calibrator.save_json(directory / "calibration.json")
        metadata_path = directory / "feature_metadata.json"
        metadata_path.write_text(json.dumps(self.metadata(), indent=2), encoding="utf-8")
        return {
            BOOSTER_ARTIFACT: str(booster_path),
            CALIBRATION_ARTIFACT: str(calibration_path),
            METADATA_ARTIFACT: str(metadata_path),
        }

    @classmethod
    def load_artifacts(cls, artifacts: Mapping[str, str]) -> Scorer:
        """Rebuild from artifact paths (no pickle anywhere)."""
        missing = {BOOSTER_ARTIFACT, CALIBRATION_ARTIFACT, METADATA_ARTIFACT} - set(artifacts)
        if missing:
            raise ValueError(f"model artifacts missing: {sorted(missing)}")
        metadata = json.loads(Path(artifacts[METADATA_ARTIFACT]).read_text(encoding="utf-8"))
        if metadata.get("metadata_version") != METADATA_VERSION:
            raise ValueError(
                f"feature metadata version {metadata.get('metadata_version')} is not supported"
            )
        booster = xgb.Booster()
        booster.load_model(artifacts[BOOSTER_ARTIFACT])
        return cls(
            booster,
            ProbabilityCalibrator.load_json(artifacts[CALIBRATION_ARTIFACT]),
            FeatureSpec.from_dict(metadata),
            task=metadata.get("task", ""),
            label_column=metadata.get("label_column", ""),
            input_types=metadata.get("input_types", {}),
            default_top_k=int(metadata.get("default_top_k", 3)),
        )
