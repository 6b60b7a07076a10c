"""The models a service worker serves, and what tells it to load them anew.

A :class:`ServedState` holds everything one request needs (the champions with their reference
data, the fast row path, the latest risk list); :func:`load_state` builds one (slow: seconds).
The service replaces its state as a whole (one assignment) when :func:`registry_versions`
shows moved champions or :func:`file_signature` a new risk list, so requests in flight finish
on the old models and none is refused.

The models come from the MLflow registry or from the Bento the service runs in
(:func:`model_source`; ``serving.bento_models``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving import scoring
from serving.bento_models import MODEL_SOURCE_ENV, bento_model_tags, load_bento_champions
from serving.rows import RowScorer

if TYPE_CHECKING:
    from pipelines.config import ProjectConfig

__all__ = [
    "ServedState",
    "file_signature",
    "load_state",
    "model_source",
    "registry_versions",
    "risk_list_changed",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedState:
    """Everything one request needs, replaced as a whole by a reload."""

    models: scoring.ScoringModels
    rows: RowScorer | None
    risk_list: scoring.RiskList | None
    risk_signature: tuple | None
    loaded_at: datetime


def file_signature(path: Path) -> tuple | None:
    """(mtime, size) of the risk list and its sidecar: changes when ``churn score`` runs."""
    parts = []
    for candidate in (path, scoring.risk_list_meta_path(path)):
        try:
            stat = candidate.stat()
        except OSError:
            parts.append(None)
        else:
            parts.append((stat.st_mtime_ns, stat.st_size))
    return None if parts == [None, None] else tuple(parts)


def _single_threaded(models: scoring.ScoringModels) -> None:
    """Score on one thread per request: OpenMP threads only contend on a small, shared
    machine, and requests already run side by side."""
    for model in models.tasks.values():
        scorer = getattr(scoring._python_model(model.pyfunc), "_scorer", None)
        booster = getattr(scorer, "booster", None)
        if booster is not None:
            booster.set_param({"nthread": 1})


def model_source(environ: Mapping[str, str] | None = None, bento: Any | None = None) -> str:
    """``CHURN_MODEL_SOURCE`` when set; else ``bento`` when the service runs from a Bento
    (``bento``: the one it was loaded from, for ``bentoml serve <bento>`` or a container),
    ``registry`` when it runs from source."""
    environ = os.environ if environ is None else environ
    source = environ.get(MODEL_SOURCE_ENV) or ("bento" if bento is not None else "registry")
    if source not in ("registry", "bento"):
        raise ValueError(f"{MODEL_SOURCE_ENV} must be 'registry' or 'bento', got {source!r}")
    return source


def load_state(
    cfg: ProjectConfig, source: str | None = None, bento: Any | None = None
) -> ServedState:
    """Load the champions (from the registry, or from the Bento: :func:`model_source`), the
    fast path and the latest risk list (slow: seconds). ``bento``: the Bento the service was
    loaded from (its models are the ones served), None when it runs from source."""
    path = cfg.serving.risk_list_location(cfg.output_dir)
    signature = file_signature(path)
    source = source or model_source(bento=bento)
    if source == "bento":
        models = load_bento_champions(cfg, bento_model_tags(bento))
    else:
        models = scoring.load_champions(cfg)
    _single_threaded(models)
    risk_list = None
    if path.is_file():
        try:
            risk_list = scoring.read_risk_list(path)
        except Exception as exc:  # a broken file must not stop the service from serving scores
            logger.warning("risk list %s could not be read: %s", path, exc)
    return ServedState(
        models=models,
        rows=RowScorer.build(models, cfg),
        risk_list=risk_list,
        risk_signature=signature,
        loaded_at=datetime.now(UTC),
    )


def registry_versions(
    cfg: ProjectConfig, source: str, served: Mapping[str, str | None]
) -> dict[str, str | None]:
    """The version each task's configured URI points to now (a cheap registry query, nothing
    loaded); the ``served`` ones for models from a Bento, which never move."""
    if source == "bento":
        return dict(served)
    return scoring.champion_versions(cfg)


def risk_list_changed(cfg: ProjectConfig, state: ServedState) -> bool:
    """Whether the risk list file (or its sidecar) changed since ``state`` was loaded."""
    path = cfg.serving.risk_list_location(cfg.output_dir)
    return file_signature(path) != state.risk_signature
