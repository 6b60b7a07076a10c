"""The project configuration: one YAML file, validated into frozen pydantic models.

Every command accepts ``--config FILE``; command-line flags override single values through
dotted keys (``labels.horizon_days=60``). Secrets and tracking URIs can also come from the
environment (``CHURN_MLFLOW_TRACKING_URI``), never from a committed file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from features.config import CutoffConfig, DataConfig, FeatureParams, LabelParams
from monitoring.config import MonitoringConfig
from serving.config import ServingConfig
from training.config import TrainingConfig

#: Environment variables that override config values (secrets and URIs stay out of files).
ENV_OVERRIDES: dict[str, str] = {
    "CHURN_MLFLOW_TRACKING_URI": "training.mlflow.tracking_uri",
    "CHURN_MLFLOW_REGISTRY_URI": "training.mlflow.registry_uri",
}


class ProjectConfig(BaseModel):
    """All settings of the service; sections mirror the stages of the pipeline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureParams = Field(default_factory=FeatureParams)
    labels: LabelParams = Field(default_factory=LabelParams)
    cutoffs: CutoffConfig = Field(default_factory=CutoffConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    output_dir: str = Field("data/output", description="Where feature tables and reports go.")


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted_key.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> ProjectConfig:
    """Read the YAML file (if any), then environment overrides, then dotted-key overrides.

    ``None`` override values are ignored, so unset CLI flags keep the file's value. Relative
    paths in the file stay relative to the working directory, like every CLI path.
    """
    environ = dict(os.environ) if environ is None else environ
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
        tree = loaded
    for variable, key in ENV_OVERRIDES.items():
        if environ.get(variable):
            _set_dotted(tree, key, environ[variable])
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    return ProjectConfig.model_validate(tree)
