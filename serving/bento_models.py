"""The champions baked into a Bento: export to the BentoML model store, and load back.

``churn bento`` copies the champions into the BentoML model store (:func:`export_champions`)
and runs ``bentoml build`` (``bentofile.yaml``); served from the Bento, the service loads those
models (:func:`load_bento_champions`) and needs no registry. Which source a worker uses is
``serving.state.model_source``'s choice (``CHURN_MODEL_SOURCE``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from serving import scoring
from serving.decisions import fit_risk_bands

if TYPE_CHECKING:
    from pipelines.config import ProjectConfig
    from serving.config import ServingConfig

__all__ = [
    "BENTO_MODEL_PREFIX",
    "MODEL_SOURCE_ENV",
    "bento_model_tags",
    "export_champions",
    "load_bento_champions",
]

#: Environment variable choosing where the models come from: ``registry`` (MLflow) or ``bento``
#: (the BentoML models ``bentoml build`` put into the Bento); default: see
#: ``serving.state.model_source``.
MODEL_SOURCE_ENV = "CHURN_MODEL_SOURCE"
#: Name of the BentoML model holding a task's champion: ``churn-crm-<task>``.
BENTO_MODEL_PREFIX = "churn-crm-"
_BENTO_INFO_FILE = "serving.json"
_BENTO_MLFLOW_DIR = "mlflow_model"


def _registry_facts(task: str, models: scoring.ScoringModels) -> dict[str, Any]:
    """What ``/model_info`` reports of a task's champion and, for churn, the reference the
    risk bands, percentiles and segments need: the content of ``serving.json``."""
    model = models.tasks[task]
    info: dict[str, Any] = {
        "task": task,
        "name": model.name,
        "version": model.version,
        "alias": model.alias,
        "model_uri": model.model_uri,
        "run_id": model.run_id,
        "metrics": model.metrics,
        "trained_at": model.trained_at.isoformat() if model.trained_at else None,
        "test_cutoff": model.test_cutoff,
    }
    if task == "churn":
        reference = models.reference_scores
        info["reference_scores"] = None if reference is None else reference.tolist()
        info["global_stats"] = (
            None if models.global_stats is None else models.global_stats.to_dict()
        )
    return info


def export_champions(cfg: ProjectConfig) -> dict[str, str]:
    """Copy the served champions into the local BentoML model store (``bentoml build`` then
    puts them into the Bento); returns task -> BentoML tag.

    Each BentoML model ``churn-crm-<task>`` holds the MLflow model directory (pickle-free,
    models from code) and ``serving.json``: the registry facts ``/model_info`` reports and, for
    churn, the test-cutoff scores the risk bands and percentiles are fitted on and the global
    statistics of the segments. Labels: task, registered name and version, run id.
    """
    import mlflow

    models = scoring.load_champions(cfg)
    tags = {}
    for task, model in models.tasks.items():
        info = _registry_facts(task, models)
        labels = {
            "churn_task": task,
            "registered_model": model.name,
            "registered_version": model.version,
            "run_id": model.run_id or "",
        }
        with bentoml.models.create(
            f"{BENTO_MODEL_PREFIX}{task}", labels=labels, metadata={"model_uri": model.model_uri}
        ) as bento_model:
            target = Path(bento_model.path) / _BENTO_MLFLOW_DIR
            downloaded = Path(mlflow.artifacts.download_artifacts(model.model_uri))
            shutil.copytree(downloaded, target)
            (Path(bento_model.path) / _BENTO_INFO_FILE).write_text(
                json.dumps(info, default=str), encoding="utf-8"
            )
        tags[task] = str(bento_model.tag)
    return tags


def bento_model_tags(bento: Any | None) -> list[str] | None:
    """The model tags of the Bento a service was loaded from (None: not from a Bento)."""
    if bento is None:
        return None
    return [str(model.tag) for model in bento.info.models]


def _latest_per_task(candidates: Iterable[Any]) -> dict[str, Any]:
    """The newest ``churn-crm-<task>`` BentoML model of each task among ``candidates``."""
    latest: dict[str, Any] = {}
    for stored in candidates:
        task = stored.info.labels.get("churn_task")
        if not stored.tag.name.startswith(BENTO_MODEL_PREFIX) or task not in scoring.TASKS:
            continue
        if task not in latest or stored.creation_time > latest[task].creation_time:
            latest[task] = stored
    return latest


def _task_model(task: str, stored: Any) -> tuple[scoring.TaskModel, dict[str, Any]]:
    """One stored champion loaded as a ``TaskModel``, and its ``serving.json``."""
    import mlflow

    info = json.loads((Path(stored.path) / _BENTO_INFO_FILE).read_text(encoding="utf-8"))
    pyfunc = mlflow.pyfunc.load_model(str(Path(stored.path) / _BENTO_MLFLOW_DIR))
    scorer = getattr(scoring._python_model(pyfunc), "_scorer", None)
    schema = pyfunc.metadata.get_input_schema()
    input_types = {} if schema is None else {s.name: s.type.name for s in schema.inputs}
    spec = getattr(scorer, "spec", None)
    trained_at = info.get("trained_at")
    model = scoring.TaskModel(
        task=task,
        name=info["name"],
        version=str(info["version"]),
        alias=info.get("alias"),
        model_uri=info["model_uri"],
        run_id=info.get("run_id"),
        metrics=dict(info.get("metrics") or {}),
        features=tuple(spec.features) if spec is not None else tuple(input_types),
        input_types=input_types,
        readable_names=dict(spec.readable_names) if spec is not None else {},
        trained_at=datetime.fromisoformat(trained_at) if trained_at else None,
        test_cutoff=info.get("test_cutoff"),
        pyfunc=pyfunc,
    )
    return model, info


def _scoring_models(
    tasks: dict[str, scoring.TaskModel], churn_info: dict[str, Any], serving: ServingConfig
) -> scoring.ScoringModels:
    """The loaded tasks with the bands, percentile reference and statistics of the churn
    model's ``serving.json``."""
    from features.segments import GlobalStats

    warnings = [
        f"no {task} model in the Bento: {task} probabilities are left empty"
        for task in scoring.TASKS
        if task not in tasks
    ]
    reference = churn_info.get("reference_scores")
    bands = None
    if reference:
        scores = np.sort(np.asarray(reference, dtype=np.float64))
        bands = fit_risk_bands(scores, serving.high_risk_share, serving.medium_risk_share)
    stats = churn_info.get("global_stats")
    return scoring.ScoringModels(
        tasks=tasks,
        risk_bands=bands,
        reference_scores=np.sort(np.asarray(reference, dtype=np.float64)) if reference else None,
        band_source="test_predictions" if reference else "scored_population",
        global_stats=GlobalStats.from_dict(stats) if stats else None,
        stats_source="training_run" if stats else "none",
        warnings=tuple(warnings),
    )


def load_bento_champions(
    cfg: ProjectConfig, tags: Sequence[str] | None = None
) -> scoring.ScoringModels:
    """The champions a Bento carries (see :func:`export_champions`), as ``ScoringModels``.

    ``tags``: the BentoML models to use (those of the Bento being served,
    :func:`bento_model_tags`); None: the latest ``churn-crm-<task>`` of each task in the model
    store.
    """
    candidates = (
        [bentoml.models.get(tag) for tag in tags] if tags is not None else bentoml.models.list()
    )
    latest = _latest_per_task(candidates)
    if "churn" not in latest:
        raise scoring.ChampionMissingError(
            f"no BentoML model {BENTO_MODEL_PREFIX}churn in the model store: export the "
            "champions (`churn bento`) before `bentoml build`, or unset "
            f"{MODEL_SOURCE_ENV} to load them from the MLflow registry"
        )
    tasks: dict[str, scoring.TaskModel] = {}
    churn_info: dict[str, Any] = {}
    for task, stored in latest.items():
        tasks[task], info = _task_model(task, stored)
        if task == "churn":
            churn_info = info
    return _scoring_models(tasks, churn_info, cfg.serving)
