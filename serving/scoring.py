"""The scoring core shared by the HTTP service and batch scoring, so both give identical results.

Public API (stable; the BentoML service and ``pipelines.scoring`` are built on it):

``load_champions(project_cfg) -> ScoringModels``
    Points MLflow at the configured store (``training.config.configure_mlflow``), resolves each
    task's URI (``models:/<name>@champion`` by default, see ``serving.config.ServingConfig``) to
    a registered version and loads it with ``mlflow.pyfunc.load_model`` (models-from-code, so it
    works with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``). The churn model is required
    (:class:`ChampionMissingError` otherwise); a missing up-sell or win-back model is a warning
    in ``ScoringModels.warnings`` and its scores are NaN. Also loads what decisions need, see
    "Risk bands and percentiles" below.

``champion_versions(project_cfg) -> dict[task, version | None]``
    The versions the configured URIs point to now, without loading anything: a cheap check for
    the service's periodic reload (compare with ``ScoringModels.model_versions()``).

``score_customers(features, models, cfg, *, events=None, explain=True,
allow_missing_features=False, category_shares=None) -> pd.DataFrame``
    Scores feature rows (``features.snapshots.build_features`` output: indexed by customer_id
    or with a ``customer_id`` column; ``is_active`` required, ``cutoff`` optional and copied
    to ``as_of``). One output row per input row, in input order, columns
    :data:`SCORE_COLUMNS`. ``events`` (optional, the raw history) enables cross-sell candidates.
    ``explain``: True explains every scored active customer, False none, an int N only the N
    high/medium-band customers with the largest expected value at risk (batch mode).
    Missing model feature columns raise ``ValueError`` unless ``allow_missing_features``
    (then scored as missing, with a warning). ``cfg`` is the ``ProjectConfig`` (its
    ``serving`` section). ``frame.attrs``: ``warnings`` (problems that did not stop scoring),
    ``risk_bands`` (thresholds used) and ``band_source``.

``score_events(events, as_of, models, cfg, *, customers=None, subscriptions=None,
customer_ids=None, stats=None, refit_stats=False, explain=True, category_shares=None)
-> pd.DataFrame``
    Builds the features with the training code (``build_features``) at ``as_of`` (events
    strictly before it) and scores them; same columns. Customers without activity before
    ``as_of`` get ``status="no_history"``, requested ids found in no table
    ``status="unknown_customer"``; both carry no scores and no action. Feature columns that
    come from a table not given (e.g. no subscriptions) are scored as missing, with a warning.
    ``frame.attrs`` as above plus ``global_stats`` (the statistics applied, a dict).

``risk_list_table(scores, models) -> pd.DataFrame``
    The ranked, flat risk list (rank by expected value at risk, reasons and cross-sell as JSON
    text plus ``reason_1..3`` texts, model versions and run ids), as written to files and SQL.

``write_risk_list(table, path, meta)``, ``read_risk_list(path) -> RiskList``
    The service's copy of the latest risk list (Parquet) and its ``<path>.meta.json`` sidecar,
    a :class:`RiskListMeta` (as_of, versions, risk bands, global statistics and category shares
    of the batch run).
    ``RiskList.frame`` has ``reasons`` / ``cross_sell_candidates`` parsed back to lists.

``filter_risk_list(frame, *, risk_band=("high",), rfm_segment=None, lifecycle_stage=None,
value_tier=None, value_growth_segment=None, suggested_action=None, min_value=None, top_n=100)
-> tuple[int, pd.DataFrame]``
    The filters of ``POST /risk_list`` (AND across fields, OR within one); returns the number
    matching before ``top_n`` and the top rows by expected value at risk.

``model_info(models, cfg) -> dict``
    The payload of ``GET /model_info`` (``serving.schemas.ModelInfo`` fields).

``result_records(scores) -> list[dict]``, ``risk_list_records(rows) -> list[dict]``
    Score rows as ``serving.schemas.ScoreResult`` dicts and risk-list rows as ``RiskListRow``
    dicts (NaN -> None, segments and model versions nested), ready for the responses.

Output columns (:data:`SCORE_COLUMNS`), one row per customer:

* ``customer_id``, ``as_of`` (the cutoff), ``status`` (scored / no_history / unknown_customer),
  ``is_active``;
* ``churn_probability`` (calibrated; NaN for lapsed customers, who cannot churn again),
  ``churn_percentile`` (0-100), ``risk_band`` (high/medium/low, None when lapsed), ``at_risk``
  (high band; nullable boolean);
* ``upsell_probability`` (active only), ``winback_probability`` (lapsed only);
* ``reasons``: list of ``{"feature", "text", "contribution"}``, the ``reasons_top_k`` strongest
  risk-raising SHAP contributions of the churn model (``serving.decisions.reason_texts``);
  ``reasons_computed`` says whether the row was explained at all (batch explains the top rows);
* ``cross_sell_candidates``: list of ``{"category", "propensity"}``, see "Cross-sell";
* ``rfm_segment``, ``lifecycle_stage``, ``value_tier``, ``value_growth_segment``;
* ``customer_value`` (``ServingConfig.customer_value_column``, default ``value_365d``: last
  year's revenue incl. 12 x MRR) and ``expected_value_at_risk`` = churn probability x value;
* ``suggested_action``, ``action_rule``, ``action_reason`` (``serving.decisions`` rule table);
* ``churn_model_version``, ``upsell_model_version``, ``winback_model_version``.

**Risk bands and percentiles.** Bands are fitted once on the churn model's test-cutoff scores
(``serving.decisions.fit_risk_bands`` with the configured shares) and percentiles are taken
against the same reference, so a customer's band and percentile do not depend on who else is in
a request. The scores come, in this order of preference, from:

1. ``reference/test_predictions.parquet`` logged with the churn champion's training run
   (columns ``customer_id``, ``cutoff``, ``probability``, ``label``; read with
   ``training.artifacts.read_reference``);
2. the latest batch risk list (``<risk_list>.meta.json``) when it was scored by the same churn
   version: its bands and its churn probabilities (the whole scored customer base);
3. otherwise there is no fixed reference: every call fits the bands on its own scored active
   customers and takes percentiles within them, and a warning says so. Fine for a batch of
   the whole base, weak for a request of a few customers (and impossible for a single score,
   which is then an error asking to run ``churn score`` once).

**Global statistics** (CLV fits, RFM and value-tier cut points) for ``score_events``: an explicit
``stats``; else, unless ``refit_stats``, those of the latest batch run (risk list sidecar) or the
``reference/global_stats.json`` artifact of the churn run; else fitted on the given data (as
training does per cutoff on the whole base, so batch scoring always refits). Small requests
fitted on their own data get unstable segments: a warning says so.

**Cross-sell.** The up-sell model gives one probability of buying more; which category is
estimated honestly with what is known: the categories the customer has not bought yet, each
with propensity = up-sell probability x the category's share among buying customers (the share
of customers with a purchase in the last 365 days before the cutoff who bought that category).
It is a ranking heuristic (popular categories first), not a calibrated per-category
probability. Shares come from the latest batch run (the whole base) when the service has them,
else from the given events. Bought categories need the purchase history: without ``events`` no
candidates are computed (a warning says so). Lapsed customers get none (win-back comes first).

**Speed.** Scores are vectorised XGBoost predictions on all cores; explanations (TreeSHAP plus
the reason texts) cost ~0.1-0.3 ms a row, hence the ``explain`` modes. ``benchmarks/scoring.py``
on 2 cores: 1,000,000 customers (812,482 active; 189/275/246 boosting rounds) in 22 s without
reasons and 24 s with the batch's 25,000 explained rows, 4.4 s more for ``risk_list_table``.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.files import write_atomically
from features.segments import GlobalStats
from serving.config import ServingConfig
from serving.decisions import (
    CROSS_SELL_NEEDS_EVENTS,
    RiskBands,
    apply_action_rules,
    assign_risk_bands,
    expected_value_at_risk,
    fit_risk_bands,
    percentile_rank,
    reason_candidate_count,
    reasons_from_contributions,
    risk_bands_for_call,
    rule_table,
    suggest_cross_sell,
)

if TYPE_CHECKING:
    from pipelines.config import ProjectConfig

__all__ = [
    "SCORE_COLUMNS",
    "SEGMENT_COLUMNS",
    "STATUSES",
    "TASKS",
    "ChampionMissingError",
    "RiskList",
    "RiskListMeta",
    "ScoringModels",
    "TaskModel",
    "bought_categories",
    "category_purchase_shares",
    "champion_versions",
    "filter_risk_list",
    "load_champions",
    "model_info",
    "read_risk_list",
    "result_records",
    "unscored_result",
    "risk_list_meta_path",
    "risk_list_records",
    "risk_list_rows",
    "risk_list_table",
    "score_customers",
    "score_events",
    "write_risk_list",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("churn", "upsell", "winback")
STATUS_SCORED = "scored"
STATUS_NO_HISTORY = "no_history"
STATUS_UNKNOWN = "unknown_customer"
STATUSES: tuple[str, ...] = (STATUS_SCORED, STATUS_NO_HISTORY, STATUS_UNKNOWN)

SEGMENT_COLUMNS: tuple[str, ...] = (
    "rfm_segment",
    "lifecycle_stage",
    "value_tier",
    "value_growth_segment",
)

#: Columns of :func:`score_customers` / :func:`score_events`, in order.
SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of",
    "status",
    "is_active",
    "churn_probability",
    "churn_percentile",
    "risk_band",
    "at_risk",
    "upsell_probability",
    "winback_probability",
    "reasons",
    "reasons_computed",
    "cross_sell_candidates",
    *SEGMENT_COLUMNS,
    "customer_value",
    "expected_value_at_risk",
    "suggested_action",
    "action_rule",
    "action_reason",
    "churn_model_version",
    "upsell_model_version",
    "winback_model_version",
)

#: Window of the category shares behind the cross-sell propensities.
CATEGORY_SHARE_WINDOW_DAYS = 365


class ChampionMissingError(RuntimeError):
    """The required churn model cannot be found or loaded: the service must not start."""


# --------------------------------------------------------------------------------------------
# loaded models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskModel:
    """One loaded registered model version and what ``/model_info`` reports about it."""

    task: str
    name: str
    version: str
    alias: str | None
    model_uri: str
    run_id: str | None
    metrics: dict[str, float | None]
    features: tuple[str, ...]
    input_types: dict[str, str]
    readable_names: dict[str, str]
    trained_at: datetime | None
    test_cutoff: str | None
    pyfunc: Any = field(repr=False)

    def predict(
        self, frame: pd.DataFrame, *, explain: bool = False, top_k: int | None = None
    ) -> pd.DataFrame:
        """The pyfunc's output (``probability``, with ``explain`` also ``reasons`` JSON) for
        ``frame``'s rows, on ``frame``'s index.

        Calls the logged ``CrmScoringModel.predict`` directly (the same code ``pyfunc.predict``
        runs) without MLflow's per-call schema enforcement: it halves the time on large
        batches and lets integer features carry missing values; the feature columns are
        checked by :func:`score_customers` instead. Models of another flavour go through
        ``pyfunc.predict`` with the signature's dtypes.
        """
        params = {"explain": True, "top_k": int(top_k or 3)} if explain else None
        python_model = _python_model(self.pyfunc)
        if python_model is not None:
            # the model reads its feature columns and ignores the others (no copy here)
            context = getattr(getattr(self.pyfunc, "_model_impl", None), "context", None)
            output = python_model.predict(context, frame, params)
        else:
            from training.scorer import conform_to_input_types

            output = self.pyfunc.predict(
                conform_to_input_types(frame, self.input_types), params=params
            )
        if not isinstance(output, pd.DataFrame):
            output = pd.DataFrame({"probability": np.asarray(output, dtype=np.float64).ravel()})
        if len(output) != len(frame):
            raise RuntimeError(
                f"{self.task} model returned {len(output)} rows for {len(frame)} inputs"
            )
        output.index = frame.index
        return output

    def info(self) -> dict[str, Any]:
        """``serving.schemas.TaskModelInfo`` fields."""
        return {
            "task": self.task,
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "metrics": dict(self.metrics),
            "features": list(self.features),
            "trained_at": self.trained_at,
        }


def _python_model(pyfunc: Any) -> Any:
    try:
        model = pyfunc.unwrap_python_model()
    except Exception:  # not a python_function model with a PythonModel inside
        return None
    return model if hasattr(model, "predict") else None


@dataclass(frozen=True)
class ScoringModels:
    """The champion models plus the reference data decisions need (see the module docstring).

    ``band_source``: ``test_predictions`` | ``risk_list`` | ``scored_population`` (no fixed
    bands: fitted per call). ``stats_source``: ``risk_list`` | ``training_run`` | ``none``.
    ``category_shares_source``: ``risk_list`` | ``none``.
    """

    tasks: Mapping[str, TaskModel]
    risk_bands: RiskBands | None = None
    reference_scores: np.ndarray | None = field(default=None, repr=False)
    band_source: str = "scored_population"
    global_stats: GlobalStats | None = field(default=None, repr=False)
    stats_source: str = "none"
    category_shares: Mapping[str, float] | None = None
    category_shares_source: str = "none"
    warnings: tuple[str, ...] = ()
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if "churn" not in self.tasks:
            raise ChampionMissingError("ScoringModels needs a churn model")

    @property
    def churn(self) -> TaskModel:
        return self.tasks["churn"]

    def get(self, task: str) -> TaskModel | None:
        return self.tasks.get(task)

    def model_versions(self) -> dict[str, str | None]:
        """Version per task (None: no model), as in ``serving.schemas.ModelVersions``."""
        return {task: (m.version if (m := self.tasks.get(task)) else None) for task in TASKS}

    def run_ids(self) -> dict[str, str | None]:
        return {task: (m.run_id if (m := self.tasks.get(task)) else None) for task in TASKS}


def model_info(models: ScoringModels, cfg: ProjectConfig) -> dict[str, Any]:
    """The ``GET /model_info`` payload (``serving.schemas.ModelInfo`` fields)."""
    policy = cfg.serving.action_policy
    return {
        "models": {task: m.info() for task, m in models.tasks.items()},
        "risk_bands": models.risk_bands,
        "action_policy": policy,
        "action_rules": rule_table(policy),
    }


def _registered_names(cfg: ProjectConfig) -> dict[str, str]:
    return {task: cfg.training.task(task).registered_model_name for task in TASKS}


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/7`` -> (name, None, "7")."""
    if not uri.startswith("models:/"):
        raise ValueError(
            f"model URI {uri!r} is not a registry URI: use models:/<name>@<alias> or "
            "models:/<name>/<version>"
        )
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias and "/" not in alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise ValueError(
        f"model URI {uri!r} is malformed: use models:/<name>@<alias> or models:/<name>/<version>"
    )


def _resolve_version(client: Any, uri: str) -> Any | None:
    """The registry's ModelVersion an URI points to, or None when there is none."""
    from mlflow.exceptions import MlflowException

    from training.registry import find_champion

    name, alias, version = _parse_models_uri(uri)
    if alias is not None:
        return find_champion(client, name, alias=alias)
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        return None


def champion_versions(cfg: ProjectConfig) -> dict[str, str | None]:
    """The version each task's configured URI resolves to right now (None: nothing there)."""
    import mlflow

    from training.config import configure_mlflow

    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    uris = cfg.serving.model_uris_for(_registered_names(cfg))
    resolved = {task: _resolve_version(client, uris[task]) for task in TASKS}
    return {task: (str(v.version) if v is not None else None) for task, v in resolved.items()}


def _finite_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in sorted(metrics.items())}


def _load_task_model(client: Any, task: str, uri: str) -> TaskModel | None:
    import mlflow

    version = _resolve_version(client, uri)
    if version is None:
        return None
    name, alias, _ = _parse_models_uri(uri)
    pinned_uri = f"models:/{version.name}/{version.version}"  # the alias may move meanwhile
    pyfunc = mlflow.pyfunc.load_model(pinned_uri)
    schema = pyfunc.metadata.get_input_schema()
    input_types = {} if schema is None else {s.name: s.type.name for s in schema.inputs}
    readable: dict[str, str] = {}
    python_model = _python_model(pyfunc)
    scorer = getattr(python_model, "_scorer", None)
    spec = getattr(scorer, "spec", None)
    if spec is not None:
        features = tuple(spec.features)
        readable = dict(spec.readable_names)
    else:
        features = tuple(input_types)
    if not features:
        raise ValueError(f"{pinned_uri} declares no input features (no signature)")
    run_id = version.run_id or None
    metrics: dict[str, float | None] = {}
    trained_at = None
    if run_id:
        run = client.get_run(run_id)
        metrics = _finite_metrics(run.data.metrics)
        stamp = run.info.end_time or run.info.start_time
        trained_at = datetime.fromtimestamp(stamp / 1000.0, tz=UTC) if stamp else None
    return TaskModel(
        task=task,
        name=str(version.name),
        version=str(version.version),
        alias=alias,
        model_uri=pinned_uri,
        run_id=run_id,
        metrics=metrics,
        features=features,
        input_types=input_types,
        readable_names=readable,
        trained_at=trained_at,
        test_cutoff=(version.tags or {}).get("test_cutoff"),
        pyfunc=pyfunc,
    )


def _test_prediction_scores(client: Any, model: TaskModel) -> np.ndarray | None:
    """The finite test-cutoff probabilities the model's run handed on, or None."""
    from training.artifacts import TEST_PREDICTIONS_ARTIFACT, read_reference

    if not model.run_id:
        return None
    reference = read_reference(model.run_id, parts=("test_predictions",), client=client)
    table = reference.test_predictions
    if table is None:
        return None
    if "probability" not in table.columns:
        raise ValueError(
            f"{TEST_PREDICTIONS_ARTIFACT} of run {model.run_id} has no 'probability' column "
            f"(columns: {list(table.columns)})"
        )
    scores = table["probability"].to_numpy(dtype=np.float64)
    return scores[np.isfinite(scores)]


def _training_run_stats(client: Any, model: TaskModel) -> GlobalStats | None:
    """The global statistics of the test cutoff the model's run handed on, or None."""
    from training.artifacts import read_reference

    if not model.run_id:
        return None
    payload = read_reference(model.run_id, parts=("global_stats",), client=client).global_stats
    return None if payload is None else GlobalStats.from_dict(payload)


def load_champions(cfg: ProjectConfig) -> ScoringModels:
    """Load the serving models and their reference data (see the module docstring)."""
    import mlflow

    from training.config import configure_mlflow

    serving = cfg.serving
    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    uris = serving.model_uris_for(_registered_names(cfg))
    warnings: list[str] = []
    tasks: dict[str, TaskModel] = {}
    for task in TASKS:
        model = _load_task_model(client, task, uris[task])
        if model is None:
            if task == "churn":
                raise ChampionMissingError(
                    f"no churn model at {uris[task]} in the registry "
                    f"{mlflow.get_registry_uri()}: train one (`churn train --task churn`) or "
                    "point serving.model_uris.churn at an existing version"
                )
            message = (
                f"no {task} model at {uris[task]}: {task} probabilities are left empty "
                f"(train one with `churn train --task {task}`)"
            )
            logger.warning(message)
            warnings.append(message)
            continue
        tasks[task] = model
    churn = tasks["churn"]

    # --- bands and the percentile reference --------------------------------------------------
    risk_bands: RiskBands | None = None
    reference: np.ndarray | None = None
    band_source = "scored_population"
    test_scores = _test_prediction_scores(client, churn)
    risk_list = _try_read_risk_list(serving.risk_list_location(cfg.output_dir), warnings)
    if test_scores is not None and test_scores.size:
        risk_bands = fit_risk_bands(test_scores, serving.high_risk_share, serving.medium_risk_share)
        reference = np.sort(test_scores)
        band_source = "test_predictions"
    elif (
        risk_list is not None
        and (risk_list.meta.model_versions or {}).get("churn") == churn.version
        and risk_list.meta.risk_bands
    ):
        risk_bands = RiskBands(**risk_list.meta.risk_bands)
        scored = risk_list.frame["churn_probability"].to_numpy(dtype=np.float64)
        reference = np.sort(scored[np.isfinite(scored)]) if np.isfinite(scored).any() else None
        band_source = "risk_list"
    else:
        warnings.append(
            f"churn model v{churn.version} (run {churn.run_id}) logged no "
            "test_predictions.parquet and no batch risk list of this version exists: risk "
            "bands and percentiles are fitted on each call's own scored customers (run "
            "`churn score` once to fix them)"
        )

    # --- global statistics and category shares ----------------------------------------------
    stats: GlobalStats | None = None
    stats_source = "none"
    shares: dict[str, float] | None = None
    shares_source = "none"
    if risk_list is not None:
        if risk_list.meta.global_stats:
            stats = GlobalStats.from_dict(risk_list.meta.global_stats)
            stats_source = "risk_list"
        if risk_list.meta.category_shares:
            shares = {str(k): float(v) for k, v in risk_list.meta.category_shares.items()}
            shares_source = "risk_list"
    if stats is None:
        stats = _training_run_stats(client, churn)
        stats_source = "training_run" if stats is not None else "none"
    for message in warnings:
        logger.warning(message)
    return ScoringModels(
        tasks=tasks,
        risk_bands=risk_bands,
        reference_scores=reference,
        band_source=band_source,
        global_stats=stats,
        stats_source=stats_source,
        category_shares=shares,
        category_shares_source=shares_source,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------------
# cross-sell inputs
# --------------------------------------------------------------------------------------------


def _purchase_pairs(
    events: pd.DataFrame, cutoff: pd.Timestamp, days: int | None = None
) -> pd.DataFrame:
    """Distinct (customer_id, category) pairs of categorised purchases before ``cutoff`` (in
    the ``days`` before it when given), both as str."""
    if "category" not in events.columns or events.empty:
        return pd.DataFrame({"customer_id": [], "category": []}, dtype=object)
    timestamps = events["timestamp"]
    mask = (events["event_type"].astype(str) == "purchase").to_numpy()
    mask &= (timestamps < cutoff).to_numpy()
    if days is not None:
        mask &= (timestamps >= cutoff - pd.Timedelta(days=days)).to_numpy()
    mask &= events["category"].notna().to_numpy()
    pairs = pd.DataFrame(
        {
            "customer_id": events["customer_id"].to_numpy()[mask].astype(str),
            "category": events["category"].to_numpy()[mask].astype(str),
        }
    )
    return pairs.drop_duplicates(ignore_index=True)


def bought_categories(events: pd.DataFrame, cutoff: object) -> pd.Series:
    """Per customer (index: customer_id, str), the sorted list of categories purchased before
    ``cutoff``. Customers without a categorised purchase are absent."""
    pairs = _purchase_pairs(events, pd.Timestamp(cutoff))
    if pairs.empty:
        return pd.Series([], index=pd.Index([], name="customer_id", dtype=object), dtype=object)
    grouped = pairs.sort_values(["customer_id", "category"]).groupby("customer_id", sort=True)
    return grouped["category"].agg(list).rename("bought_categories")


def category_purchase_shares(
    events: pd.DataFrame, cutoff: object, window_days: int = CATEGORY_SHARE_WINDOW_DAYS
) -> dict[str, float]:
    """Share of the customers with a categorised purchase in the ``window_days`` before
    ``cutoff`` who bought each category (sorted by share, descending; ties by name)."""
    pairs = _purchase_pairs(events, pd.Timestamp(cutoff), window_days)
    if pairs.empty:
        return {}
    buyers = pairs["customer_id"].nunique()
    counts = pairs["category"].value_counts()
    shares = sorted((-n / buyers, str(c)) for c, n in counts.items())
    return {c: -s for s, c in shares}


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def _customer_ids(features: pd.DataFrame) -> np.ndarray:
    """The rows' customer ids as str: the ``customer_id`` column, else the index of that name."""
    if "customer_id" in features.columns:
        ids = features["customer_id"]
    elif features.index.name == "customer_id":
        ids = features.index.to_series()
    else:
        raise ValueError(
            "feature rows need the customer ids: a 'customer_id' column or an index named "
            "'customer_id' (as build_features returns)"
        )
    if ids.isna().any():
        raise ValueError(f"{int(ids.isna().sum())} feature rows have no customer_id")
    return ids.astype(str).to_numpy(dtype=object)


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many small acyclic containers.

    Scoring builds a list (reasons, cross-sell candidates) per customer; with the hundreds of
    thousands of objects an MLflow process holds, every few thousand new lists would trigger a
    full collection (measured: 0.7 s per 200,000 empty lists instead of 0.02 s).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_active(frame: pd.DataFrame) -> np.ndarray:
    if "is_active" not in frame.columns:
        raise ValueError(
            "feature rows need 'is_active' (the churn population of labels.churn_definition: "
            "activity in the active window before the cutoff, or an active subscription): "
            "it decides between the churn and the win-back model"
        )
    column = frame["is_active"]
    valid = column.isin((True, False, 1, 0, 1.0, 0.0))
    if not valid.all():
        bad = column[~valid]
        raise ValueError(
            f"is_active must be true or false: {int((~valid).sum())} rows have "
            f"{sorted(map(str, bad.unique()))[:5]}"
        )
    return column.astype(bool).to_numpy()


def _check_features(
    frame: pd.DataFrame, models: ScoringModels, allow_missing: bool, warnings: list[str]
) -> pd.DataFrame:
    needed: dict[str, None] = {}
    for model in models.tasks.values():
        needed.update(dict.fromkeys(model.features))
    missing = [c for c in needed if c not in frame.columns]
    if not missing:
        return frame
    if not allow_missing:
        raise ValueError(
            f"feature rows lack {len(missing)} columns the models need: {missing[:20]}"
            + (" ..." if len(missing) > 20 else "")
        )
    warnings.append(
        f"{len(missing)} model feature columns were not given and are scored as missing: "
        f"{missing[:20]}" + (" ..." if len(missing) > 20 else "")
    )
    return frame.assign(**{c: np.nan for c in missing})


def _probabilities(
    model: TaskModel | None, subset: pd.DataFrame, rows: np.ndarray, n: int
) -> np.ndarray:
    """Probabilities of ``model`` on ``subset`` (the rows ``rows`` of n), NaN elsewhere."""
    result = np.full(n, np.nan)
    if model is None or rows.size == 0:
        return result
    result[rows] = model.predict(subset)["probability"].to_numpy(dtype=np.float64)
    return result


def _explain_rows(
    explain: bool | int, churn: np.ndarray, bands: np.ndarray, value_at_risk: np.ndarray
) -> np.ndarray:
    scored = np.flatnonzero(np.isfinite(churn))
    if explain is True:
        return scored
    if explain is False or int(explain) <= 0:
        return np.empty(0, dtype=np.int64)
    candidates = scored[np.isin(bands[scored], ("high", "medium"))]
    # largest expected value at risk first (unknown value last), then largest probability
    key_value = np.nan_to_num(value_at_risk[candidates], nan=-np.inf)
    order = np.lexsort((-churn[candidates], -key_value))
    return np.sort(candidates[order[: int(explain)]])


def _reasons(
    model: TaskModel,
    frame: pd.DataFrame,
    rows: np.ndarray,
    cfg: ServingConfig,
) -> list[list[dict[str, Any]]]:
    if rows.size == 0:
        return []
    candidates = reason_candidate_count(cfg.reason_candidates, cfg.reasons_top_k)
    subset = frame.iloc[rows]
    output = model.predict(subset, explain=True, top_k=candidates)
    readable = dict(model.readable_names)
    # the whole row: whether a reason reads as a plausible risk depends on related columns
    # (a count and its trend, the usual gap between purchases)
    row_values = subset[[c for c in subset.columns if c in set(model.features)]].to_dict("records")
    return [
        reasons_from_contributions(
            json.loads(text) if isinstance(text, str) else [],
            row,
            readable,
            top_k=cfg.reasons_top_k,
            currency=cfg.currency,
        )
        for text, row in zip(output["reasons"].to_numpy(dtype=object), row_values, strict=True)
    ]


def _object_column(values: Any, n: int) -> np.ndarray:
    column = np.empty(n, dtype=object)
    column[:] = values
    return column


def _empty_lists(n: int) -> np.ndarray:
    column = np.empty(n, dtype=object)
    for i in range(n):
        column[i] = []
    return column


def score_customers(
    features: pd.DataFrame,
    models: ScoringModels,
    cfg: ProjectConfig,
    *,
    events: pd.DataFrame | None = None,
    explain: bool | int = True,
    allow_missing_features: bool = False,
    category_shares: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Score feature rows; one output row per input row, columns :data:`SCORE_COLUMNS`.

    See the module docstring for the columns and the decisions. ``events``: the raw history of
    these customers (for cross-sell candidates); ``explain``: True / False / top-N (batch).
    ``allow_missing_features`` scores absent model columns as missing (with a warning) instead
    of raising. ``category_shares`` (category -> share of buyers) overrides the loaded ones;
    without either they are computed from ``events``.

    ``frame.attrs``: ``warnings`` (problems that did not stop scoring), ``risk_bands`` (the
    thresholds used, a dict, None when nothing was scored) and ``band_source``.
    """
    with _gc_paused():
        return _score_customers(
            features,
            models,
            cfg,
            events=events,
            explain=explain,
            allow_missing_features=allow_missing_features,
            category_shares=category_shares,
        )


def _score_customers(
    features: pd.DataFrame,
    models: ScoringModels,
    cfg: ProjectConfig,
    *,
    events: pd.DataFrame | None,
    explain: bool | int,
    allow_missing_features: bool,
    category_shares: Mapping[str, float] | None,
) -> pd.DataFrame:
    serving = cfg.serving
    warnings: list[str] = list(models.warnings)
    ids = _customer_ids(features)
    keys = [ids, features["cutoff"].to_numpy()] if "cutoff" in features.columns else [ids]
    duplicated = pd.MultiIndex.from_arrays(keys).duplicated()
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} feature rows repeat a customer (and cutoff): "
            f"{ids[duplicated][:5].tolist()}"
        )
    n = len(features)
    active = _is_active(features)
    frame = _check_features(features, models, allow_missing_features, warnings)
    active_rows = np.flatnonzero(active)
    lapsed_rows = np.flatnonzero(~active)
    active_frame = frame if active_rows.size == n else frame.iloc[active_rows]
    lapsed_frame = frame.iloc[lapsed_rows]

    churn = _probabilities(models.churn, active_frame, active_rows, n)
    upsell = _probabilities(models.get("upsell"), active_frame, active_rows, n)
    winback = _probabilities(models.get("winback"), lapsed_frame, lapsed_rows, n)

    bands_cfg, reference = risk_bands_for_call(
        churn,
        models.risk_bands,
        models.reference_scores,
        high_share=serving.high_risk_share,
        medium_share=serving.medium_risk_share,
        warnings=warnings,
    )
    if bands_cfg is not None:
        bands = assign_risk_bands(churn, bands_cfg)
        percentile = percentile_rank(churn, reference)
    else:
        bands = np.full(n, None, dtype=object)
        percentile = np.full(n, np.nan)
    at_risk = pd.arrays.BooleanArray(bands == "high", mask=pd.isna(bands))

    value_column = serving.customer_value_column
    if value_column in frame.columns:
        customer_value = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(
            dtype=np.float64
        )
        negative = customer_value < 0
        if negative.any():
            warnings.append(
                f"{int(negative.sum())} rows have a negative {value_column}: value unknown"
            )
            customer_value = np.where(negative, np.nan, customer_value)
    else:
        warnings.append(f"no {value_column!r} column: customer value and value at risk unknown")
        customer_value = np.full(n, np.nan)
    value_at_risk = np.asarray(expected_value_at_risk(churn, customer_value), dtype=np.float64)

    reasons = _empty_lists(n)
    reasons_computed = np.zeros(n, dtype=bool)
    explained = _explain_rows(explain, churn, bands, value_at_risk)
    for row, row_reasons in zip(
        explained, _reasons(models.churn, frame, explained, serving), strict=True
    ):
        reasons[row] = row_reasons
    reasons_computed[explained] = True

    if events is not None:
        cutoffs = frame["cutoff"] if "cutoff" in frame.columns else None
        if cutoffs is None or cutoffs.nunique() != 1:
            raise ValueError("cross-sell needs feature rows of exactly one cutoff")
        cutoff = pd.Timestamp(cutoffs.iloc[0])
        shares = category_shares or models.category_shares
        if not shares:
            shares = category_purchase_shares(events, cutoff)
        candidates = suggest_cross_sell(
            ids,
            upsell,
            _purchase_pairs(events, cutoff),
            shares,
            serving.cross_sell_top_k,
        )
    else:
        candidates = _empty_lists(n)
        if n:
            warnings.append(CROSS_SELL_NEEDS_EVENTS)

    segments = {
        c: (
            frame[c].astype("object").where(frame[c].notna(), None).to_numpy()
            if c in frame.columns
            else np.full(n, None, dtype=object)
        )
        for c in SEGMENT_COLUMNS
    }
    decisions = apply_action_rules(
        pd.DataFrame(
            {
                "is_active": active,
                "risk_band": bands,
                "upsell_probability": upsell,
                "winback_probability": winback,
                **segments,
            }
        ),
        serving.action_policy,
    )
    versions = models.model_versions()
    as_of = (
        pd.to_datetime(frame["cutoff"]).to_numpy()
        if "cutoff" in frame.columns
        else np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    )
    result = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": as_of,
            "status": _object_column(STATUS_SCORED, n),
            "is_active": active,
            "churn_probability": churn,
            "churn_percentile": percentile,
            "risk_band": bands,
            "at_risk": at_risk,
            "upsell_probability": upsell,
            "winback_probability": winback,
            "reasons": reasons,
            "reasons_computed": reasons_computed,
            "cross_sell_candidates": candidates,
            **segments,
            "customer_value": customer_value,
            "expected_value_at_risk": value_at_risk,
            "suggested_action": decisions["suggested_action"].to_numpy(dtype=object),
            "action_rule": decisions["action_rule"].to_numpy(dtype=object),
            "action_reason": decisions["action_reason"].to_numpy(dtype=object),
            **{f"{task}_model_version": _object_column(versions[task], n) for task in TASKS},
        },
        columns=list(SCORE_COLUMNS),
    )
    result.attrs["warnings"] = list(dict.fromkeys(warnings))
    result.attrs["risk_bands"] = None if bands_cfg is None else bands_cfg.model_dump()
    result.attrs["band_source"] = (
        models.band_source if models.risk_bands is not None else "scored_population"
    )
    return result


def _unscored_rows(ids: Sequence[str], status: str, as_of: pd.Timestamp, models: ScoringModels):
    n = len(ids)
    versions = models.model_versions()
    columns: dict[str, Any] = {c: _object_column(None, n) for c in SCORE_COLUMNS}
    columns.update(
        {
            "customer_id": np.asarray(list(ids), dtype=object),
            "as_of": np.full(n, as_of.to_datetime64(), dtype="datetime64[ns]"),
            "status": _object_column(status, n),
            "churn_probability": np.full(n, np.nan),
            "churn_percentile": np.full(n, np.nan),
            "at_risk": pd.array([None] * n, dtype="boolean"),
            "upsell_probability": np.full(n, np.nan),
            "winback_probability": np.full(n, np.nan),
            "reasons": _empty_lists(n),
            "reasons_computed": np.zeros(n, dtype=bool),
            "cross_sell_candidates": _empty_lists(n),
            "customer_value": np.full(n, np.nan),
            "expected_value_at_risk": np.full(n, np.nan),
            **{f"{t}_model_version": _object_column(versions[t], n) for t in TASKS},
        }
    )
    return pd.DataFrame(columns, columns=list(SCORE_COLUMNS))


def _ids_of(table: pd.DataFrame | None) -> set[str]:
    if table is None or "customer_id" not in table.columns:
        return set()
    return set(table["customer_id"].dropna().astype(str).unique())


def score_events(
    events: pd.DataFrame,
    as_of: object,
    models: ScoringModels,
    cfg: ProjectConfig,
    *,
    customers: pd.DataFrame | None = None,
    subscriptions: pd.DataFrame | None = None,
    customer_ids: Iterable[str] | None = None,
    stats: GlobalStats | None = None,
    refit_stats: bool = False,
    explain: bool | int = True,
    category_shares: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Features with the training code at ``as_of``, then :func:`score_customers`.

    Scores ``customer_ids`` (default: every customer in the given tables). Customers with no
    activity, signup or subscription before ``as_of`` get ``status="no_history"``; requested
    ids found in no table ``status="unknown_customer"``; neither is an error. Statistics: see
    the module docstring. Rows: the requested order, else scored customers first (by id)
    followed by those without history. ``frame.attrs`` as :func:`score_customers`, plus
    ``global_stats`` (the statistics applied, as a dict; None when nobody had history).
    """
    from features.lifecycle import as_cutoff
    from features.snapshots import build_features

    cutoff = as_cutoff(as_of)
    warnings: list[str] = []
    known = _ids_of(events) | _ids_of(customers) | _ids_of(subscriptions)
    if stats is None and not refit_stats and models.global_stats is not None:
        stats = models.global_stats
    has_history = bool((events["timestamp"] < cutoff).any()) if len(events) else False
    if customers is not None and "signup_date" in customers.columns:
        has_history |= bool((customers["signup_date"] < cutoff).any())
    if subscriptions is not None and "start_date" in subscriptions.columns:
        has_history |= bool((subscriptions["start_date"] < cutoff).any())
    if has_history:
        if stats is None and not refit_stats:
            warnings.append(
                "segment cut points and CLV models fitted on the given customers at "
                f"{cutoff.date()} (no statistics of a full batch run or training run are "
                "loaded): with few customers the segments are unstable"
            )
        table, used_stats = build_features(
            events,
            cutoff,
            customers=customers,
            subscriptions=subscriptions,
            params=cfg.features,
            stats=stats,
            label_params=cfg.labels,
        )
    else:
        table, used_stats = pd.DataFrame(), None
    if customer_ids is not None:
        customer_ids = list(dict.fromkeys(str(c) for c in customer_ids))
        if len(table):
            table = table.loc[table.index.isin(customer_ids)]
    if len(table):
        for name, given in (("customers", customers), ("subscriptions", subscriptions)):
            if given is None:
                warnings.append(
                    f"no {name} table given: features computed from it are scored as missing"
                )
        # Features built here can only lack a model column when a table was not given.
        scored = score_customers(
            table,
            models,
            cfg,
            events=events,
            explain=explain,
            allow_missing_features=True,
            category_shares=category_shares,
        )
    else:
        scored = _unscored_rows([], STATUS_SCORED, cutoff, models)
        scored.attrs.update(warnings=list(models.warnings), risk_bands=None, band_source=None)
    featured = set(scored["customer_id"])
    if customer_ids is None:
        requested = sorted(featured) + sorted(known - featured)
    else:
        requested = customer_ids
    no_history = [c for c in requested if c not in featured and c in known]
    unknown = [c for c in requested if c not in featured and c not in known]
    parts = [scored.loc[scored["customer_id"].isin(set(requested))]]
    if no_history:
        parts.append(_unscored_rows(no_history, STATUS_NO_HISTORY, cutoff, models))
        warnings.append(f"{len(no_history)} customers have no history before {cutoff.date()}")
    if unknown:
        parts.append(_unscored_rows(unknown, STATUS_UNKNOWN, cutoff, models))
        warnings.append(f"{len(unknown)} requested customers are in none of the given tables")
    parts = [p for p in parts if len(p)]
    if parts:
        result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    else:
        result = scored.iloc[0:0]
    order = pd.Index(result["customer_id"]).get_indexer(requested)
    result = result.iloc[order[order >= 0]].reset_index(drop=True)
    result.attrs["warnings"] = list(
        dict.fromkeys([*scored.attrs.get("warnings", []), *(w for w in warnings if w)])
    )
    result.attrs["risk_bands"] = scored.attrs.get("risk_bands")
    result.attrs["band_source"] = scored.attrs.get("band_source")
    result.attrs["global_stats"] = None if used_stats is None else used_stats.to_dict()
    return result


# --------------------------------------------------------------------------------------------
# the risk list
# --------------------------------------------------------------------------------------------

#: Columns of the flat risk list (files, SQL), in order.
RISK_LIST_COLUMNS: tuple[str, ...] = (
    "as_of",
    "rank",
    "customer_id",
    "churn_probability",
    "churn_percentile",
    "risk_band",
    "at_risk",
    "customer_value",
    "expected_value_at_risk",
    *SEGMENT_COLUMNS,
    "suggested_action",
    "action_rule",
    "action_reason",
    "reason_1",
    "reason_2",
    "reason_3",
    "reasons",
    "upsell_probability",
    "cross_sell_candidates",
    "churn_model_version",
    "upsell_model_version",
    "churn_run_id",
    "upsell_run_id",
)


def _json_list(values: np.ndarray) -> list[str]:
    return [json.dumps(v if isinstance(v, list) else [], separators=(",", ":")) for v in values]


def risk_list_table(scores: pd.DataFrame, models: ScoringModels) -> pd.DataFrame:
    """The risk list: scored active customers ranked by expected value at risk (unknown value
    last, ties by churn probability then id), flat columns :data:`RISK_LIST_COLUMNS`.

    Lapsed customers are not on it (they have no churn score; their win-back scores are in the
    full score table). ``reasons`` / ``cross_sell_candidates`` are JSON text,
    ``reason_1..3`` the readable reason sentences (empty when not explained).
    """
    active = scores.loc[(scores["status"] == STATUS_SCORED) & scores["churn_probability"].notna()]
    value = active["expected_value_at_risk"].to_numpy(dtype=np.float64)
    order = np.lexsort(
        (
            active["customer_id"].to_numpy(dtype=object).astype(str),
            -active["churn_probability"].to_numpy(dtype=np.float64),
            -np.nan_to_num(value, nan=-np.inf),
        )
    )
    ranked = active.iloc[order]
    return risk_list_rows(
        ranked,
        rank=np.arange(1, len(ranked) + 1, dtype=np.int64),
        reasons=ranked["reasons"].to_numpy(dtype=object),
        cross_sell=ranked["cross_sell_candidates"].to_numpy(dtype=object),
        run_ids=models.run_ids(),
    )


def risk_list_rows(
    rows: pd.DataFrame,
    *,
    rank: np.ndarray,
    reasons: np.ndarray,
    cross_sell: np.ndarray,
    run_ids: Mapping[str, Any],
) -> pd.DataFrame:
    """Score rows (:func:`score_customers` output) as flat :data:`RISK_LIST_COLUMNS`, in their
    order: ``rank`` per row; ``reasons`` and ``cross_sell`` per row (lists, anything else
    counts as none) written as JSON text, the first three reason sentences as ``reason_1..3``.
    The one layout of a risk-list row, for the ranked list and for rows kept off it."""
    texts = {
        f"reason_{k + 1}": [
            r[k]["text"] if isinstance(r, list) and len(r) > k else None for r in reasons
        ]
        for k in range(3)
    }
    n = len(rows)
    return pd.DataFrame(
        {
            "as_of": rows["as_of"].to_numpy(),
            "rank": rank,
            "customer_id": rows["customer_id"].to_numpy(dtype=object),
            "churn_probability": rows["churn_probability"].to_numpy(dtype=np.float64),
            "churn_percentile": rows["churn_percentile"].to_numpy(dtype=np.float64),
            "risk_band": rows["risk_band"].to_numpy(dtype=object),
            "at_risk": rows["risk_band"].to_numpy(dtype=object) == "high",
            "customer_value": rows["customer_value"].to_numpy(dtype=np.float64),
            "expected_value_at_risk": rows["expected_value_at_risk"].to_numpy(dtype=np.float64),
            **{c: rows[c].to_numpy(dtype=object) for c in SEGMENT_COLUMNS},
            "suggested_action": rows["suggested_action"].to_numpy(dtype=object),
            "action_rule": rows["action_rule"].to_numpy(dtype=object),
            "action_reason": rows["action_reason"].to_numpy(dtype=object),
            **texts,
            "reasons": _json_list(reasons),
            "upsell_probability": rows["upsell_probability"].to_numpy(dtype=np.float64),
            "cross_sell_candidates": _json_list(cross_sell),
            "churn_model_version": rows["churn_model_version"].to_numpy(dtype=object),
            "upsell_model_version": rows["upsell_model_version"].to_numpy(dtype=object),
            "churn_run_id": _object_column(run_ids["churn"], n),
            "upsell_run_id": _object_column(run_ids["upsell"], n),
        },
        columns=list(RISK_LIST_COLUMNS),
    )


def risk_list_meta_path(path: str | Path) -> Path:
    """The sidecar of a risk list file: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


@dataclass(frozen=True)
class RiskListMeta:
    """The sidecar of a risk list (``<path>.meta.json``): the batch run behind the list.

    Written by the batch flows (``pipelines.scoring``, ``pipelines.spark_flows``) beside the
    service's copy of the list; read by the service, which takes over the run's risk bands
    (when scored by the churn version it serves), global statistics and category shares of the
    whole scored base, and by the report. A key missing from a sidecar is None; keys this
    record does not know are ignored.
    """

    #: The scored cutoff (ISO date).
    as_of: str | None = None
    #: When the batch ran (ISO timestamp, UTC).
    scored_at: str | None = None
    rows: int | None = None
    #: Task -> registered version (None: no model), as in ``ScoringModels.model_versions()``.
    model_versions: dict[str, str | None] | None = None
    run_ids: dict[str, str | None] | None = None
    #: ``serving.decisions.RiskBands`` fields (``high``, ``medium``) the batch used.
    risk_bands: dict[str, float] | None = None
    band_source: str | None = None
    #: ``features.segments.GlobalStats.to_dict()`` of the scored cutoff.
    global_stats: dict[str, Any] | None = None
    #: Category -> share of buying customers, behind the cross-sell propensities.
    category_shares: dict[str, float] | None = None
    explained_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> RiskListMeta:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in known})


def write_risk_list(table: pd.DataFrame, path: str | Path, meta: RiskListMeta) -> Path:
    """Write the service's risk list (Parquet) and its sidecar (``meta``), each atomically.

    The table goes first and the sidecar second, both by rename; a reader that sees a new
    sidecar therefore also sees the new table.
    """
    path = Path(path)
    if path.suffix not in (".parquet", ".pq"):
        raise ValueError(f"the service's risk list must be a .parquet file, got {path.name!r}")
    write_atomically(path, lambda p: table.to_parquet(p, index=False))
    text = json.dumps(meta.to_dict(), indent=2, sort_keys=True, default=str)
    write_atomically(
        risk_list_meta_path(path), lambda p: p.write_text(text + "\n", encoding="utf-8")
    )
    return path


@dataclass(frozen=True)
class RiskList:
    """A risk list read back: the ranked rows (JSON columns parsed) and the run's sidecar."""

    frame: pd.DataFrame
    meta: RiskListMeta
    path: Path

    @property
    def as_of(self) -> str | None:
        return self.meta.as_of


def read_risk_list(path: str | Path) -> RiskList:
    """Read a risk list written by :func:`write_risk_list`; ``FileNotFoundError`` if absent."""
    path = Path(path)
    frame = pd.read_parquet(path)
    for column in ("reasons", "cross_sell_candidates"):
        if column in frame.columns:
            frame[column] = [
                json.loads(v) if isinstance(v, str) and v else [] for v in frame[column]
            ]
    meta_path = risk_list_meta_path(path)
    payload = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return RiskList(frame=frame, meta=RiskListMeta.from_dict(payload), path=path)


def _try_read_risk_list(path: Path, warnings: list[str]) -> RiskList | None:
    if not path.is_file():
        return None
    try:
        return read_risk_list(path)
    except Exception as exc:  # a broken file must not stop the service from starting
        warnings.append(f"risk list {path} could not be read ({type(exc).__name__}: {exc})")
        return None


def filter_risk_list(
    frame: pd.DataFrame,
    *,
    risk_band: Sequence[str] | None = ("high",),
    rfm_segment: Sequence[str] | None = None,
    lifecycle_stage: Sequence[str] | None = None,
    value_tier: Sequence[str] | None = None,
    value_growth_segment: Sequence[str] | None = None,
    suggested_action: Sequence[str] | None = None,
    min_value: float | None = None,
    top_n: int = 100,
) -> tuple[int, pd.DataFrame]:
    """The ``POST /risk_list`` filters: fields combine with AND, values of one field with OR.

    Returns how many rows match and the first ``top_n`` of them in risk-list order (largest
    expected value at risk first). ``min_value`` keeps customers whose value is known and at
    least that much.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    mask = np.ones(len(frame), dtype=bool)
    for column, allowed in (
        ("risk_band", risk_band),
        ("rfm_segment", rfm_segment),
        ("lifecycle_stage", lifecycle_stage),
        ("value_tier", value_tier),
        ("value_growth_segment", value_growth_segment),
        ("suggested_action", suggested_action),
    ):
        if allowed is not None:
            mask &= frame[column].isin(list(allowed)).to_numpy()
    if min_value is not None:
        values = frame["customer_value"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            mask &= values >= float(min_value)
    matching = frame.loc[mask]
    if "rank" in matching.columns:
        matching = matching.sort_values("rank", kind="stable")
    return int(mask.sum()), matching.head(top_n)


# --------------------------------------------------------------------------------------------
# JSON-able records for the HTTP responses
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """NaN/NA -> None, numpy scalars -> Python scalars (JSON and pydantic friendly)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _segments(row: Mapping[str, Any]) -> dict[str, Any]:
    """A scored row's CRM segments (None where a segment column is missing or NaN)."""
    return {c: _plain(row.get(c)) for c in SEGMENT_COLUMNS}


def unscored_result(customer_id: str, status: str, versions: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ScoreResult`` of a customer that was not scored (unknown, no history): its id,
    why, and the model versions asked; every score field is left to the schema's null."""
    return {"customer_id": customer_id, "status": status, "model_versions": dict(versions)}


def result_records(scores: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of :func:`score_customers` / :func:`score_events` as ``serving.schemas.ScoreResult``
    dicts (NaN -> None, segments and model versions nested), in row order: the same records
    the service's fast path builds for feature rows (``serving.rows.RowScorer``)."""
    records = []
    for row in scores.to_dict(orient="records"):
        versions = {t: _plain(row[f"{t}_model_version"]) for t in TASKS}
        if row["status"] != STATUS_SCORED:
            records.append(unscored_result(str(row["customer_id"]), row["status"], versions))
            continue
        records.append(
            {
                "customer_id": str(row["customer_id"]),
                "status": row["status"],
                "churn_probability": _plain(row["churn_probability"]),
                "churn_percentile": _plain(row["churn_percentile"]),
                "risk_band": _plain(row["risk_band"]),
                "at_risk": _plain(row["at_risk"]),
                "upsell_probability": _plain(row["upsell_probability"]),
                "cross_sell_candidates": list(row["cross_sell_candidates"] or []),
                "reasons": list(row["reasons"] or []),
                "winback_probability": _plain(row["winback_probability"]),
                "segments": _segments(row),
                "suggested_action": _plain(row["suggested_action"]),
                "action_reason": _plain(row["action_reason"]),
                "model_versions": versions,
            }
        )
    return records


def risk_list_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a risk list (:func:`read_risk_list` frame, e.g. after :func:`filter_risk_list`)
    as ``serving.schemas.RiskListRow`` dicts."""
    records = []
    for row in rows.to_dict(orient="records"):
        reasons = row.get("reasons")
        if isinstance(reasons, str):
            reasons = json.loads(reasons) if reasons else []
        records.append(
            {
                "rank": int(row["rank"]),
                "customer_id": str(row["customer_id"]),
                "churn_probability": float(row["churn_probability"]),
                "churn_percentile": _plain(row["churn_percentile"]),
                "risk_band": row["risk_band"],
                "customer_value": _plain(row["customer_value"]),
                "expected_value_at_risk": _plain(row["expected_value_at_risk"]),
                "segments": _segments(row),
                "suggested_action": _plain(row["suggested_action"]),
                "action_reason": _plain(row["action_reason"]),
                "reasons": list(reasons or []),
            }
        )
    return records
