"""The HTTP service of the churn models: one BentoML 1.4 service class, ``ChurnService``.

    CHURN_CONFIG=churn.yaml bentoml serve serving.service:ChurnService --port 3000
    churn serve --config churn.yaml            # the same, after checking the models exist

Endpoints (the OpenAPI document BentoML generates is at ``/docs.json``, the UI at ``/``):

* ``POST /score``: customers as ready feature rows, or raw recent events (plus ``as_of``) that
  go through the training feature code (``serving.scoring.score_events``). Per customer: churn
  probability, its percentile, risk band and at-risk flag, up-sell probability and cross-sell
  candidates, the top reasons in words, the win-back probability of lapsed customers, the CRM
  segments, the suggested action of the rule table and the model versions.
* ``POST /risk_list``: the latest batch risk list (written by ``churn score``), filtered and
  ranked by expected value at risk.
* ``GET /model_info`` (also ``POST``, for ``bentoml.SyncHTTPClient``): versions, aliases, runs,
  test metrics, features, training time, risk bands and the action rule table.
* ``POST /admin/reload``: check the registry now and swap in moved champions (see "Reload").
* ``/livez``, ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), from BentoML; ``/readyz``
  answers 200 only once the models are loaded (``__is_ready__``).

**Configuration.** The project YAML named by ``CHURN_CONFIG`` (else ``./churn.yaml`` when it
exists, else the defaults); the ``serving:`` section (``serving.config.ServingConfig``) holds
the model URIs, limits, reload interval and the NAME of the environment variable with the API
key. Worker processes: ``CHURN_SERVICE_WORKERS`` (default 1; each worker loads the models and
checks the registry on its own).

**Start.** The models are loaded in the worker before it serves anything. A missing churn
champion (or any load failure) stops the server with the reason in the log, instead of letting
``bentoml serve``'s supervisor restart the worker forever.

**Security and input.** With the API key set, every endpoint except the health, metrics and
documentation ones needs ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``, which is what
``bentoml.SyncHTTPClient(token=...)`` sends), compared in constant time. Bodies above
``serving.max_request_bytes`` get 413 before they are read, other content types than JSON 415.
Request schemas (``serving.schemas``) reject wrong types, missing fields, NaN/infinity, empty
and oversized batches and unknown fields with 400 and BentoML's ``{"error", "detail"}`` body;
the service adds the checks that need the models (unknown feature names, wrong value types per
feature, values out of range, bad dates) with the same body shape. A customer without any
feature value is answered ``status="unknown_customer"``, one without activity before the
cutoff ``status="no_history"``; neither is an error.

**Speed.** Feature rows take a fast path (:class:`RowScorer`): the models' own boosters and
calibrators on a NumPy matrix built straight from the request (no DataFrame), XGBoost on one
thread (``nthread=1``: OpenMP threads only contend on a small, shared machine), TreeSHAP
(``pred_contribs``) only for the scored active customers, the action rule table looked up in a
cache keyed by everything the rules read, reason sentences remembered per (feature, value). It
gives the same results as ``serving.scoring.score_customers`` (the tests compare them row by
row); events, and models that are not this project's pyfunc, go through ``serving.scoring``.
Adaptive batching: small requests arriving together are scored in one call (:class:`_Batcher`;
BentoML's own ``batchable=True`` would turn the body of ``/score`` into a list of requests).
The API methods are ``async`` and score on the event loop: BentoML runs plain ``def`` APIs in a
thread pool, a thread hop per request that costs more than scoring one customer.

**Connections.** ``bentoml serve`` closes idle keep-alive connections after 5 s (uvicorn's
default), exactly when clients still reuse them (httpx keeps them 5 s, aiohttp 15 s, load
balancers 60 s): a request sent on a connection the server is closing at that moment fails
with a reset (httpx ``ReadError``/``RemoteProtocolError``, aiohttp
``ServerDisconnectedError``). :func:`serve_command` (``churn serve``) keeps them 75 s. No
``traffic.max_concurrency`` either: requests beyond the cores queue instead of getting 429.

**Reload.** Every ``serving.reload_interval_s`` a background thread asks the registry which
versions the configured URIs point to and whether the risk list file changed; if so it loads
everything anew next to the running state and swaps it in with one assignment, so requests in
flight finish on the old models and none is refused. If the new models fail to load, the old
ones keep serving and the failure is logged, counted in ``/metrics`` and returned by
``POST /admin/reload``.

**Bento.** ``churn bento`` copies the champions into the BentoML model store
(:func:`export_champions`) and runs ``bentoml build`` (``bentofile.yaml``); served from the
Bento, the service loads those models (:func:`load_bento_champions`) and needs no registry.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import bentoml
import numpy as np
import pandas as pd
import prometheus_client
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from features.contract import DataContractError
from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from pipelines.config import ProjectConfig, load_config
from serving import scoring
from serving.decisions import (
    ACTION_RULES,
    RULE_INPUT_COLUMNS,
    ActionPolicy,
    RiskBands,
    apply_action_rules,
    assign_risk_bands,
    fit_risk_bands,
    percentile_rank,
    reason_texts,
)
from serving.schemas import (
    MAX_CUSTOMERS_PER_REQUEST,
    CustomerFeatures,
    EventIn,
    ModelInfo,
    ModelVersions,
    RiskListRequest,
    RiskListResponse,
    ScoreRequest,
    ScoreResponse,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BENTO_MODEL_PREFIX",
    "CONFIG_ENV",
    "MODEL_SOURCE_ENV",
    "OPEN_PATHS",
    "WORKERS_ENV",
    "ChurnService",
    "ReloadResponse",
    "RequestError",
    "RequestGuard",
    "RowScorer",
    "ServiceSettings",
    "export_champions",
    "load_bento_champions",
    "load_settings",
    "load_state",
    "model_source",
    "serve_command",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the project config file the service reads.
CONFIG_ENV = "CHURN_CONFIG"
#: Environment variable with the number of worker processes (default 1).
WORKERS_ENV = "CHURN_SERVICE_WORKERS"
#: Config file used when ``CHURN_CONFIG`` is not set and the file exists in the working dir.
DEFAULT_CONFIG_FILE = "churn.yaml"

#: Paths that never need the API key: probes, metrics and the API documentation.
OPEN_PATHS: frozenset[str] = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json", "/"}
)
OPEN_PREFIXES: tuple[str, ...] = ("/static_content/", "/assets/")

#: Largest magnitude accepted for a numeric feature value or event amount: beyond it XGBoost's
#: float32 would turn sums and values into infinity, and no CRM figure is that large.
MAX_ABS_VALUE = 1e15
#: Timestamps and dates outside these years are rejected (pandas' datetime64 ends in 2262).
MIN_YEAR, MAX_YEAR = 1900, 2200
#: Feature-row requests up to this many customers are scored on the event loop; larger ones
#: (and every events request) in a worker thread, so probes stay answered meanwhile.
INLINE_MAX_ROWS = 200

_SEGMENT_VALUES: dict[str, tuple[str, ...]] = {
    "rfm_segment": RFM_SEGMENTS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "value_tier": VALUE_TIERS,
    "value_growth_segment": VALUE_GROWTH_SEGMENTS,
}

# Prometheus metrics next to BentoML's on /metrics (BentoML runs the client in multiprocess
# mode, so every worker's counts are summed).
SCORED_CUSTOMERS = prometheus_client.Counter(
    "churn_scored_customers",
    "Customers answered by POST /score, by input path and status.",
    labelnames=["source", "status"],
)
BATCH_REQUESTS = prometheus_client.Histogram(
    "churn_score_batch_requests",
    "Requests merged into one scoring call by the adaptive batching of /score.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
MODEL_RELOADS = prometheus_client.Counter(
    "churn_model_reloads",
    "Registry checks of the periodic and admin reload, by outcome.",
    labelnames=["outcome"],
)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings:
    """What a worker reads at start: the project config and the API key (if any)."""

    config: ProjectConfig
    config_path: str | None
    api_key: str | None = field(default=None, repr=False)

    @property
    def max_request_bytes(self) -> int:
        return self.config.serving.max_request_bytes


def load_settings(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """The config named by ``CHURN_CONFIG`` (else ``./churn.yaml`` if present, else defaults)
    with its environment overrides, and the API key from ``serving.api_key_env``."""
    environ = dict(os.environ if environ is None else environ)
    path = environ.get(CONFIG_ENV) or None
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    config = load_config(Path(path) if path else None, environ=environ)
    api_key = environ.get(config.serving.api_key_env) or None
    return ServiceSettings(config=config, config_path=path, api_key=api_key)


def serve_command(
    *,
    host: str,
    port: int,
    timeout_keep_alive_s: int = 75,
    development: bool = False,
) -> list[str]:
    """The ``bentoml serve`` command line of the service (``churn serve`` runs it).

    ``timeout_keep_alive_s``: uvicorn closes idle keep-alive connections after 5 s by
    default, the same age at which clients (httpx: 5 s, aiohttp: 15 s, browsers and load
    balancers: 60 s and more) still reuse them; a request sent on a connection the server is
    closing at that moment fails with a connection reset. An idle timeout longer than any
    client's closes that race.
    """
    executable = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
    command = [
        executable,
        "serve",
        "serving.service:ChurnService",
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-keep-alive",
        str(int(timeout_keep_alive_s)),
    ]
    if development:
        command.append("--development")
    return command


# --------------------------------------------------------------------------------------------
# errors and the request guard (auth, size, content type)
# --------------------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the service cannot answer as asked: HTTP ``status`` with a readable message."""

    def __init__(self, status: int, message: str, detail: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = list(detail)

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.detail:
            body["detail"] = self.detail
        return JSONResponse(body, status_code=self.status)


class ServiceStartupError(RuntimeError):
    """The service cannot serve (no churn model, a model that does not load)."""


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestGuard:
    """ASGI middleware run before BentoML reads a body: API key, body size, content type.

    Health, metrics and documentation paths (:data:`OPEN_PATHS`) pass untouched. Everything
    else needs the key when one is configured (401 otherwise). Bodies larger than the limit are
    refused with 413 from their ``Content-Length`` without being read; a chunked body is
    counted while it arrives. A body that is not JSON gets 415.
    """

    def __init__(
        self, app: ASGIApp, settings_loader: Callable[[], ServiceSettings] = load_settings
    ) -> None:
        self.app = app
        settings = settings_loader()
        self.api_key = settings.api_key.encode("utf-8") if settings.api_key else None
        self.max_bytes = settings.max_request_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> tuple[bool, str]:
        assert self.api_key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            authorization = headers.get(b"authorization", b"")
            if authorization[:7].lower() == b"bearer ":
                given = authorization[7:].strip()
        if given is None:
            return False, "missing API key: send it in the X-API-Key header"
        # Both sides as bytes: compare_digest takes the same time wherever they differ.
        if not hmac.compare_digest(given, self.api_key):
            return False, "invalid API key"
        return True, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        if self.api_key is not None:
            ok, why = self._authorized(headers)
            if not ok:
                await _send_json(
                    send, 401, {"error": why}, headers=[(b"www-authenticate", b"ApiKey")]
                )
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type")
        if content_type is not None:
            media_type = content_type.split(b";", 1)[0].strip().lower()
            if media_type not in (b"application/json", b""):
                await _send_json(
                    send,
                    415,
                    {
                        "error": f"unsupported content type {media_type.decode('latin-1')!r}: "
                        "send JSON with Content-Type: application/json"
                    },
                )
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await _send_json(send, 400, {"error": "Content-Length is not a number"})
                return
            if size > self.max_bytes:
                await _send_json(send, 413, {"error": self._too_large(size)})
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read at most the limit, then replay it to the app.
        chunks: list[Message] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await _send_json(send, 413, {"error": self._too_large(received)})
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return (
            f"request body of {size:,} bytes exceeds the limit of {self.max_bytes:,} bytes "
            "(serving.max_request_bytes): split the batch"
        )


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or None for NaN/None (responses carry no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------------------------
# the fast path for feature rows
# --------------------------------------------------------------------------------------------


def _python_model(pyfunc: Any) -> Any:
    """The ``PythonModel`` inside an MLflow pyfunc (None for other flavours)."""
    try:
        return pyfunc.unwrap_python_model()
    except Exception:  # not a python_function model with a PythonModel inside
        return None


class _ActionTable:
    """``serving.decisions.apply_action_rules`` with a memory.

    The rules read probabilities only through ``>=`` thresholds and everything else through
    equality with a few segment names, so each row is reduced to a key (probabilities replaced
    by the largest threshold they reach) and each distinct key is decided once, by the rule
    table itself. No rule logic is repeated here.
    """

    def __init__(self, policy: ActionPolicy) -> None:
        self.policy = policy
        thresholds: dict[str, set[float]] = {}
        other_ops: set[str] = set()
        for rule in ACTION_RULES:
            for clause in rule.clauses:
                if clause.op == ">=":
                    thresholds.setdefault(clause.column, set()).add(float(clause.resolve(policy)))
                else:
                    other_ops.add(clause.column)
        if other_ops & set(thresholds):
            raise ValueError("a rule column is compared both by threshold and by value")
        self.thresholds = {c: sorted(v) for c, v in thresholds.items()}
        self._decided: dict[tuple, tuple[str, str, str]] = {}

    def _representative(self, column: str, value: Any) -> Any:
        limits = self.thresholds.get(column)
        if limits is None:
            return value
        if value is None or not math.isfinite(value):
            return None
        reached = [t for t in limits if value >= t]
        return reached[-1] if reached else None

    def decide(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
        """(suggested_action, action_rule, action_reason) per row of rule inputs."""
        keys = [
            tuple(self._representative(c, row.get(c)) for c in RULE_INPUT_COLUMNS) for row in rows
        ]
        missing = list(dict.fromkeys(k for k in keys if k not in self._decided))
        if missing:
            frame = pd.DataFrame(missing, columns=list(RULE_INPUT_COLUMNS))
            for column in self.thresholds:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
            decided = apply_action_rules(frame, self.policy)
            for key, action, rule, reason in zip(
                missing,
                decided["suggested_action"],
                decided["action_rule"],
                decided["action_reason"],
                strict=True,
            ):
                self._decided[key] = (action, rule, reason)
        return [self._decided[k] for k in keys]


@dataclass(frozen=True)
class _TaskModel:
    """One model's booster and calibrator, and how to lay out its input matrix."""

    task: str
    booster: Any
    calibrator: Any
    features: tuple[str, ...]
    columns: np.ndarray  # position of each model feature in the request matrix
    categorical: tuple[tuple[int, str, dict[str, float]], ...]  # (column, feature, codes)
    names: dict[str, str]  # readable name of each feature
    feature_types: list[str]  # the booster's, read once (the property goes to C every time)

    def matrix(
        self, numeric: np.ndarray, strings: dict[str, list[Any]], rows: np.ndarray
    ) -> np.ndarray:
        X = numeric[np.ix_(rows, self.columns)]  # noqa: N806 (a copy)
        for column, feature, codes in self.categorical:
            values = strings[feature]
            X[:, column] = [codes.get(values[r], np.nan) for r in rows]
        return X

    def probability(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raw = np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return self.calibrator.predict(raw)

    def contributions(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        import xgboost as xgb

        # Columns are in the booster's order (checked by RowScorer.build), so names need not
        # be passed and validated on every call; the types mark the categorical columns.
        matrix = xgb.DMatrix(
            X, feature_types=self.feature_types, enable_categorical=True, nthread=1
        )
        return np.asarray(
            self.booster.predict(matrix, pred_contribs=True, validate_features=False),
            dtype=np.float64,
        )


@dataclass(frozen=True)
class _Layout:
    """Where the values of one list of feature names go (see :meth:`RowScorer.check`)."""

    numbers: Callable[[list[Any]], tuple[Any, ...]]  # the numeric values, in order
    numeric_names: tuple[str, ...]
    numeric_columns: np.ndarray
    categorical: tuple[tuple[int, str], ...]  # (position in the request, feature)
    unknown: tuple[str, ...]
    absent: frozenset[str]  # model features not in the list


@dataclass
class _Rows:
    """Feature rows of a request, checked and laid out for the models."""

    ids: list[str]
    known: np.ndarray  # rows with at least one feature value
    active: np.ndarray
    numeric: np.ndarray  # rows x request columns, NaN where missing or categorical
    strings: dict[str, list[Any]]  # categorical column -> value per row (None: missing)
    raw: list[dict[str, Any]]
    absent: set[str]  # model features some known row did not give


def _json_value(value: Any) -> Any:
    """The value as ``training.explain.top_reasons`` reports it (None for NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RowScorer:
    """``serving.scoring.score_customers`` for feature rows given as dicts, without DataFrames.

    Built once per loaded model set from the models' own ``training.scorer.Scorer`` objects
    (booster, calibrator, feature spec); :meth:`build` returns None for models of another
    kind, which then go through ``serving.scoring``. Also the place that checks feature names,
    value types and ranges against the models' feature lists.
    """

    def __init__(self, models: scoring.ScoringModels, cfg: ProjectConfig, specs: dict) -> None:
        from training.explain import readable_feature_name

        self.models = models
        self.serving = cfg.serving
        self.versions = models.model_versions()
        kinds: dict[str, str] = {}
        for spec in specs.values():
            for feature in spec.features:
                kind = spec.kinds[feature]
                if kinds.setdefault(feature, kind) != kind and "categorical" in (
                    kind,
                    kinds[feature],
                ):
                    raise ValueError(f"feature {feature!r} is categorical in one model only")
        kinds.setdefault("is_active", "boolean")
        for column in scoring.SEGMENT_COLUMNS:
            kinds.setdefault(column, "categorical")
        kinds.setdefault(self.serving.customer_value_column, "float")
        self.kinds = kinds
        self.model_features = frozenset(f for spec in specs.values() for f in spec.features)
        self.columns = {name: j for j, name in enumerate(kinds)}
        self.categorical = tuple(f for f, k in kinds.items() if k == "categorical")
        self._slots = {f: (j, kinds[f] == "categorical") for f, j in self.columns.items()}
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._flag_columns = np.array(
            [j for f, j in self.columns.items() if kinds[f] == "boolean"], dtype=np.intp
        )
        self.tasks: dict[str, _TaskModel] = {}
        for task, spec in specs.items():
            scorer = _python_model(models.tasks[task].pyfunc)._scorer
            categorical = tuple(
                (
                    j,
                    f,
                    {level: float(code) for code, level in enumerate(spec.categorical_levels[f])},
                )
                for j, f in enumerate(spec.features)
                if spec.kinds[f] == "categorical"
            )
            self.tasks[task] = _TaskModel(
                task=task,
                booster=scorer.booster,
                calibrator=scorer.calibrator,
                features=tuple(spec.features),
                columns=np.array([self.columns[f] for f in spec.features], dtype=np.intp),
                categorical=categorical,
                names={
                    f: spec.readable_names.get(f, readable_feature_name(f)) for f in spec.features
                },
                feature_types=list(scorer.booster.feature_types or []) or None,
            )
        self.actions = _ActionTable(self.serving.action_policy)

    @classmethod
    def build(cls, models: scoring.ScoringModels, cfg: ProjectConfig) -> RowScorer | None:
        """The fast path for these models, or None when one is not a ``Scorer`` pyfunc."""
        specs = {}
        for task, model in models.tasks.items():
            python_model = _python_model(model.pyfunc)
            scorer = getattr(python_model, "_scorer", None)
            booster = getattr(scorer, "booster", None)
            spec = getattr(scorer, "spec", None)
            if booster is None or spec is None or tuple(spec.features) != model.features:
                return None
            if list(booster.feature_names or []) != list(spec.features):
                return None
            specs[task] = spec
        try:
            return cls(models, cfg, specs)
        except ValueError as exc:
            logger.warning("fast scoring path off: %s", exc)
            return None

    # --- checks and layout ----------------------------------------------------------------
    def _value_problem(self, name: str, value: Any) -> str | None:
        kind = self.kinds[name]
        if value is None:
            return (
                "is required: it decides between the churn and the win-back model"
                if (name == "is_active")
                else None
            )
        if kind == "categorical":
            if not isinstance(value, str):
                return f"is a category: expected a string, got {value!r}"
            allowed = _SEGMENT_VALUES.get(name)
            if allowed is not None and value not in allowed:
                return f"is {value!r}: expected one of {list(allowed)}"
            return None
        if isinstance(value, str):
            return f"is a number: got the string {value!r}"
        if abs(value) > MAX_ABS_VALUE:
            return f"is {value:g}: values beyond +-{MAX_ABS_VALUE:g} are not accepted"
        if kind == "boolean" and value not in (0.0, 1.0):
            return f"is a flag: expected true/false (or 1/0), got {value:g}"
        return None

    def check(self, customers: Sequence[CustomerFeatures]) -> _Rows:
        """Lay out the rows; 400 for unknown features and values of the wrong kind.

        Requests usually send the same feature names in the same order for every customer, so
        the layout of a name list (which value goes to which column, which are categories) is
        worked out once and cached; a row is then split with C-level calls, and the range and
        flag checks run on the whole matrix at once.
        """
        unknown: dict[str, None] = {}
        problems: list[str] = []
        n = len(customers)
        numeric = np.full((n, len(self.columns)), np.nan)
        strings: dict[str, list[Any]] = {f: [None] * n for f in self.categorical}
        known = np.zeros(n, dtype=bool)
        absent: set[str] = set()
        raw = []
        for i, customer in enumerate(customers):
            values = customer.features
            raw.append(values)
            layout = self._layout(tuple(values))
            if layout.unknown:
                unknown.update(dict.fromkeys(layout.unknown))
                continue
            given = list(values.values())
            numbers = layout.numbers(given)
            if str in set(map(type, numbers)):  # a string where a number belongs
                for name in layout.numeric_names:
                    if values[name].__class__ is str:
                        problems.append(self._problem(customer, name, values[name]))
                continue
            row = np.array(numbers, dtype=np.float64)  # None becomes NaN (NaN is refused)
            is_known = bool(row.size) and not np.isnan(row).all()
            for k, name in layout.categorical:
                value = given[k]
                if value is None:
                    continue
                is_known = True
                if value.__class__ is str:
                    strings[name][i] = value
                else:
                    problems.append(self._problem(customer, name, value))
            if is_known:  # else nothing is known: answered unknown_customer
                known[i] = True
                numeric[i, layout.numeric_columns] = row
                absent.update(layout.absent)
        if unknown:
            names = list(unknown)
            raise RequestError(
                400,
                f"{len(names)} unknown feature name(s) {names[:10]}"
                + (" ..." if len(names) > 10 else "")
                + ": the models use the features listed by GET /model_info",
                [{"loc": ["features", name], "msg": "unknown feature"} for name in names[:50]],
            )
        problems.extend(self._matrix_problems(customers, known, numeric, strings))
        if problems:
            raise RequestError(
                400,
                f"{len(problems)} invalid feature value(s): "
                + "; ".join(problems[:5])
                + (" ..." if len(problems) > 5 else ""),
                [{"msg": p} for p in problems[:50]],
            )
        active = known & (numeric[:, self.columns["is_active"]] == 1.0)
        return _Rows(
            ids=[c.customer_id for c in customers],
            known=known,
            active=active,
            numeric=numeric,
            strings=strings,
            raw=raw,
            absent=absent,
        )

    def _layout(self, names: tuple[str, ...]) -> _Layout:
        layout = self._layouts.get(names)
        if layout is not None:
            return layout
        numeric_at, numeric_names, numeric_columns, categorical, unknown = [], [], [], [], []
        for k, name in enumerate(names):
            slot = self._slots.get(name)
            if slot is None:
                unknown.append(name)
            elif slot[1]:
                categorical.append((k, name))
            else:
                numeric_at.append(k)
                numeric_names.append(name)
                numeric_columns.append(slot[0])
        if len(numeric_at) > 1:
            pick = itemgetter(*numeric_at)
        elif numeric_at:
            only = numeric_at[0]

            def pick(values: list[Any]) -> tuple[Any, ...]:
                return (values[only],)
        else:

            def pick(values: list[Any]) -> tuple[Any, ...]:
                return ()

        layout = _Layout(
            numbers=pick,
            numeric_names=tuple(numeric_names),
            numeric_columns=np.array(numeric_columns, dtype=np.intp),
            categorical=tuple(categorical),
            unknown=tuple(unknown),
            absent=frozenset(self.model_features.difference(names)),
        )
        if len(self._layouts) < 256:  # bounded: clients send few distinct name lists
            self._layouts[names] = layout
        return layout

    def _problem(self, customer: CustomerFeatures, name: str, value: Any) -> str:
        why = self._value_problem(name, value) or "is invalid"
        return f"customer {customer.customer_id!r}: feature {name!r} {why}"

    def _matrix_problems(
        self,
        customers: Sequence[CustomerFeatures],
        known: np.ndarray,
        numeric: np.ndarray,
        strings: dict[str, list[Any]],
    ) -> list[str]:
        """Values out of range, flags that are not 0/1, unknown segment names, and known
        customers without ``is_active``."""
        problems = []
        with np.errstate(invalid="ignore"):
            bad = np.abs(numeric) > MAX_ABS_VALUE
            bad[:, self._flag_columns] |= ~np.isin(numeric[:, self._flag_columns], (0.0, 1.0))
        bad[:, self._flag_columns] &= ~np.isnan(numeric[:, self._flag_columns])
        names = list(self.columns)
        for i, j in zip(*np.nonzero(bad), strict=True):
            problems.append(self._problem(customers[i], names[j], float(numeric[i, j])))
        for column, allowed in _SEGMENT_VALUES.items():
            for i, value in enumerate(strings[column]):
                if value is not None and value not in allowed:
                    problems.append(self._problem(customers[i], column, value))
        missing_flag = known & np.isnan(numeric[:, self.columns["is_active"]])
        for i in np.flatnonzero(missing_flag):
            problems.append(self._problem(customers[i], "is_active", None))
        return problems

    # --- scoring --------------------------------------------------------------------------
    def _probabilities(self, task: str, rows: _Rows, which: np.ndarray) -> np.ndarray:
        result = np.full(len(rows.ids), np.nan)
        model = self.tasks.get(task)
        if model is None or which.size == 0:
            return result
        result[which] = model.probability(model.matrix(rows.numeric, rows.strings, which))
        return result

    def _bands(
        self, churn: np.ndarray, warnings: list[str]
    ) -> tuple[RiskBands | None, np.ndarray | None]:
        """As ``serving.scoring`` decides them: the loaded bands and reference, else fitted on
        this call's scores (with a warning), else an error when that is impossible."""
        if self.models.risk_bands is not None:
            return self.models.risk_bands, self.models.reference_scores
        scored = churn[np.isfinite(churn)]
        if scored.size == 0:
            return None, None
        if np.unique(scored).size < 2:
            raise RequestError(
                503,
                "risk bands are unknown: the churn model has no stored test-cutoff scores and "
                f"this call has only {scored.size} distinct score(s) to fit them on; run "
                "`churn score` once (or log test_predictions.parquet with the training run)",
            )
        warnings.append(
            f"risk bands and percentiles fitted on this call's {scored.size} scored active "
            "customers (no stored reference): they depend on who is scored together"
        )
        return (
            fit_risk_bands(scored, self.serving.high_risk_share, self.serving.medium_risk_share),
            None,
        )

    def _reasons(self, rows: _Rows, which: np.ndarray) -> list[list[dict[str, Any]]]:
        """``serving.scoring``'s reasons: among the ``reason_candidates`` largest contributions
        by size, the ``reasons_top_k`` strongest plausible risk-raising ones, in words.

        Selection and sentences are ``serving.decisions.reason_texts``'s (one implementation
        for the service and batch scoring), judged on the customer's whole row.
        """
        model = self.tasks["churn"]
        if which.size == 0:
            return []
        contributions = model.contributions(model.matrix(rows.numeric, rows.strings, which))
        per_feature = contributions[:, : len(model.features)]
        candidates = max(self.serving.reason_candidates, self.serving.reasons_top_k)
        order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :candidates]
        picked = np.take_along_axis(per_feature, order, axis=1)
        features = model.features
        names = model.names
        result = []
        for k, row in enumerate(which):
            given = rows.raw[row]
            result.append(
                reason_texts(
                    {features[j]: float(c) for j, c in zip(order[k], picked[k], strict=True)},
                    {feature: _json_value(value) for feature, value in given.items()},
                    names,
                    top_k=self.serving.reasons_top_k,
                    currency=self.serving.currency,
                )
            )
        return result

    def score(
        self, customers: Sequence[CustomerFeatures]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One ``ScoreResult`` payload per customer (request order) and the warnings."""
        return self.score_checked([self.check(customers)])[0]

    def score_checked(
        self, requests: Sequence[_Rows]
    ) -> list[tuple[list[dict[str, Any]], list[str]]]:
        """Score several checked requests with one call per model; results and warnings per
        request. With fixed risk bands (a stored reference) the results do not depend on who
        else is in the call; without, bands are fitted per request, so each is scored alone."""
        if len(requests) > 1 and self.models.risk_bands is None:
            return [self.score_checked([r])[0] for r in requests]
        rows = _concat(requests) if len(requests) > 1 else requests[0]
        n = len(rows.ids)
        active_rows = np.flatnonzero(rows.known & rows.active)
        lapsed_rows = np.flatnonzero(rows.known & ~rows.active)
        churn = self._probabilities("churn", rows, active_rows)
        upsell = self._probabilities("upsell", rows, active_rows)
        winback = self._probabilities("winback", rows, lapsed_rows)
        band_warnings: list[str] = []
        bands_cfg, reference = self._bands(churn, band_warnings)
        if bands_cfg is not None:
            bands = assign_risk_bands(churn, bands_cfg)
            percentile = percentile_rank(churn, reference)
        else:
            bands = np.full(n, None, dtype=object)
            percentile = np.full(n, np.nan)
        reasons = dict(zip(active_rows.tolist(), self._reasons(rows, active_rows), strict=True))
        scored = np.flatnonzero(rows.known)
        segments = {column: rows.strings[column] for column in scoring.SEGMENT_COLUMNS}
        rule_inputs = [
            {
                "is_active": bool(rows.active[r]),
                "risk_band": bands[r],
                "upsell_probability": upsell[r],
                "winback_probability": winback[r],
                **{c: segments[c][r] for c in scoring.SEGMENT_COLUMNS},
            }
            for r in scored
        ]
        decisions = dict(zip(scored.tolist(), self.actions.decide(rule_inputs), strict=True))
        versions = self.versions
        results = []
        for r in range(n):
            if not rows.known[r]:
                results.append(
                    scoring.unscored_result(rows.ids[r], scoring.STATUS_UNKNOWN, versions)
                )
                continue
            band = bands[r]
            action, _rule, reason = decisions[r]
            results.append(
                {
                    "customer_id": rows.ids[r],
                    "status": scoring.STATUS_SCORED,
                    "churn_probability": _number(churn[r]),
                    "churn_percentile": _number(percentile[r]),
                    "risk_band": band,
                    "at_risk": None if band is None else band == "high",
                    "upsell_probability": _number(upsell[r]),
                    "cross_sell_candidates": [],
                    "reasons": reasons.get(r, []),
                    "winback_probability": _number(winback[r]),
                    "segments": {c: segments[c][r] for c in scoring.SEGMENT_COLUMNS},
                    "suggested_action": action,
                    "action_reason": reason,
                    "model_versions": versions,
                }
            )
        answers = []
        start = 0
        for request in requests:
            stop = start + len(request.ids)
            answers.append((results[start:stop], self._warnings(request, band_warnings)))
            start = stop
        return answers

    def _warnings(self, rows: _Rows, band_warnings: list[str]) -> list[str]:
        """The warnings ``serving.scoring.score_customers`` gives for these rows."""
        warnings = list(self.models.warnings)
        if rows.absent:
            names = sorted(rows.absent)
            warnings.append(
                f"{len(names)} model feature columns were not given for some customers and "
                f"are scored as missing: {names[:20]}" + (" ..." if len(names) > 20 else "")
            )
        warnings.extend(band_warnings)
        scored = np.flatnonzero(rows.known)
        value_column = self.serving.customer_value_column
        values = rows.numeric[scored, self.columns[value_column]]
        negative = int((values < 0).sum())
        if negative:
            warnings.append(f"{negative} rows have a negative {value_column}: value unknown")
        if scored.size and not any(value_column in rows.raw[r] for r in scored):
            warnings.append(f"no {value_column!r} column: customer value and value at risk unknown")
        if scored.size:
            warnings.append(
                "cross-sell candidates need the purchase history (events): not computed"
            )
        return list(dict.fromkeys(warnings))


def _concat(requests: Sequence[_Rows]) -> _Rows:
    """Several checked requests as one set of rows (in order)."""
    return _Rows(
        ids=[i for r in requests for i in r.ids],
        known=np.concatenate([r.known for r in requests]),
        active=np.concatenate([r.active for r in requests]),
        numeric=np.vstack([r.numeric for r in requests]),
        strings={c: [v for r in requests for v in r.strings[c]] for c in requests[0].strings},
        raw=[v for r in requests for v in r.raw],
        absent=set().union(*(r.absent for r in requests)),
    )


# --------------------------------------------------------------------------------------------
# the served state and its reload
# --------------------------------------------------------------------------------------------


def _file_signature(path: Path) -> tuple | None:
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
    """Score on one thread per request (see the module docstring, "Speed")."""
    for model in models.tasks.values():
        scorer = getattr(_python_model(model.pyfunc), "_scorer", None)
        booster = getattr(scorer, "booster", None)
        if booster is not None:
            booster.set_param({"nthread": 1})


@dataclass(frozen=True)
class _State:
    """Everything one request needs, replaced as a whole by a reload."""

    models: scoring.ScoringModels
    rows: RowScorer | None
    risk_list: scoring.RiskList | None
    risk_signature: tuple | None
    loaded_at: datetime


# --------------------------------------------------------------------------------------------
# models baked into a Bento
# --------------------------------------------------------------------------------------------

#: Environment variable choosing where the models come from: ``registry`` (MLflow) or ``bento``
#: (the BentoML models ``bentoml build`` put into the Bento); default: see :func:`model_source`.
MODEL_SOURCE_ENV = "CHURN_MODEL_SOURCE"
#: Name of the BentoML model holding a task's champion: ``churn-crm-<task>``.
BENTO_MODEL_PREFIX = "churn-crm-"
_BENTO_INFO_FILE = "serving.json"
_BENTO_MLFLOW_DIR = "mlflow_model"


def model_source(environ: Mapping[str, str] | None = None) -> str:
    """``CHURN_MODEL_SOURCE`` when set; else ``bento`` when this service runs from a Bento
    (``bentoml serve <bento>``, a container), ``registry`` when it runs from source."""
    environ = os.environ if environ is None else environ
    source = environ.get(MODEL_SOURCE_ENV) or (
        "bento" if getattr(ChurnService, "bento", None) is not None else "registry"
    )
    if source not in ("registry", "bento"):
        raise ValueError(f"{MODEL_SOURCE_ENV} must be 'registry' or 'bento', got {source!r}")
    return source


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


def _bento_model_tags() -> list[str] | None:
    """The model tags of the Bento this service was loaded from (None: not from a Bento)."""
    bento = getattr(ChurnService, "bento", None)
    if bento is None:
        return None
    return [str(model.tag) for model in bento.info.models]


def load_bento_champions(
    cfg: ProjectConfig, tags: Sequence[str] | None = None
) -> scoring.ScoringModels:
    """The champions a Bento carries (see :func:`export_champions`), as ``ScoringModels``.

    ``tags``: the BentoML models to use (default: those of the Bento being served, else the
    latest ``churn-crm-<task>`` of each task in the model store).
    """
    import mlflow

    from features.segments import GlobalStats

    tags = _bento_model_tags() if tags is None else tags
    candidates = (
        [bentoml.models.get(tag) for tag in tags] if tags is not None else bentoml.models.list()
    )
    latest: dict[str, Any] = {}
    for stored in candidates:
        task = stored.info.labels.get("churn_task")
        if not stored.tag.name.startswith(BENTO_MODEL_PREFIX) or task not in scoring.TASKS:
            continue
        if task not in latest or stored.creation_time > latest[task].creation_time:
            latest[task] = stored
    if "churn" not in latest:
        raise scoring.ChampionMissingError(
            f"no BentoML model {BENTO_MODEL_PREFIX}churn in the model store: export the "
            "champions (`churn bento`) before `bentoml build`, or unset "
            f"{MODEL_SOURCE_ENV} to load them from the MLflow registry"
        )
    tasks: dict[str, scoring.TaskModel] = {}
    churn_info: dict[str, Any] = {}
    for task, stored in latest.items():
        info = json.loads((Path(stored.path) / _BENTO_INFO_FILE).read_text(encoding="utf-8"))
        pyfunc = mlflow.pyfunc.load_model(str(Path(stored.path) / _BENTO_MLFLOW_DIR))
        scorer = getattr(_python_model(pyfunc), "_scorer", None)
        schema = pyfunc.metadata.get_input_schema()
        input_types = {} if schema is None else {s.name: s.type.name for s in schema.inputs}
        spec = getattr(scorer, "spec", None)
        trained_at = info.get("trained_at")
        tasks[task] = scoring.TaskModel(
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
        if task == "churn":
            churn_info = info
    warnings = [
        f"no {task} model in the Bento: {task} probabilities are left empty"
        for task in scoring.TASKS
        if task not in tasks
    ]
    reference = churn_info.get("reference_scores")
    serving = cfg.serving
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


def load_state(cfg: ProjectConfig, source: str | None = None) -> _State:
    """Load the champions (from the registry, or from the Bento: :func:`model_source`), the
    fast path and the latest risk list (slow: seconds)."""
    path = cfg.serving.risk_list_location(cfg.output_dir)
    signature = _file_signature(path)
    source = source or model_source()
    models = load_bento_champions(cfg) if source == "bento" else scoring.load_champions(cfg)
    _single_threaded(models)
    risk_list = None
    if path.is_file():
        try:
            risk_list = scoring.read_risk_list(path)
        except Exception as exc:  # a broken file must not stop the service from serving scores
            logger.warning("risk list %s could not be read: %s", path, exc)
    return _State(
        models=models,
        rows=RowScorer.build(models, cfg),
        risk_list=risk_list,
        risk_signature=signature,
        loaded_at=datetime.now(UTC),
    )


class ReloadResponse(BaseModel):
    """The outcome of a registry check (``POST /admin/reload``)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["reloaded", "unchanged", "failed"] = Field(
        ...,
        description=(
            "reloaded: new models or a new risk list are served; unchanged: nothing moved; "
            "failed: the new state could not be loaded and the previous one keeps serving."
        ),
    )
    model_versions: ModelVersions = Field(..., description="The versions served now.")
    previous_versions: ModelVersions | None = Field(
        None, description="The versions served before (reloaded only)."
    )
    registry_versions: dict[str, str | None] = Field(
        default_factory=dict, description="What the configured URIs point to in the registry."
    )
    risk_list_as_of: str | None = Field(None, description="Date of the risk list served.")
    message: str = ""
    loaded_at: datetime


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(
        False, description="Load everything anew even if no alias moved and no file changed."
    )


# --------------------------------------------------------------------------------------------
# adaptive batching of small requests
# --------------------------------------------------------------------------------------------


class _Batcher:
    """Merges the small ``/score`` requests of one worker that arrive together into one call
    of :meth:`RowScorer.score_checked` (one booster call per model, one TreeSHAP call).

    Nothing waits for a batch to fill: the first request schedules a drain that runs as soon as
    the requests already received in the same turn of the event loop have been parsed. Alone, a
    request is scored at once; under load, the requests that queued up while the previous
    batch was scored form the next one. Scoring runs on the event loop (a few milliseconds at
    most for :data:`INLINE_MAX_ROWS` rows), so a batch needs no locks.
    """

    #: Event-loop turns the drain lets pass before it scores (other handlers reach submit).
    SETTLE_TURNS = 3

    def __init__(self, max_rows: int = INLINE_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._pending: list[tuple[_State, _Rows, asyncio.Future]] = []
        self._draining = False

    async def score(self, state: _State, rows: _Rows) -> tuple[list[dict[str, Any]], list[str]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((state, rows, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            for _ in range(self.SETTLE_TURNS):
                await asyncio.sleep(0)
            pending, self._pending = self._pending, []
            for batch in self._batches(pending):
                state = batch[0][0]
                BATCH_REQUESTS.observe(len(batch))
                try:
                    assert state.rows is not None
                    answers = state.rows.score_checked([rows for _, rows, _ in batch])
                except Exception as exc:  # every waiting request gets the failure
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._draining = False
            if self._pending:  # arrived while the last batch was being answered
                self._draining = True
                asyncio.get_running_loop().create_task(self._drain())

    def _batches(self, pending: list) -> list[list]:
        """Consecutive requests of the same state, at most ``max_rows`` rows per batch."""
        batches: list[list] = []
        rows = 0
        for item in pending:
            size = len(item[1].ids)
            if not batches or batches[-1][0][0] is not item[0] or rows + size > self.max_rows:
                batches.append([])
                rows = 0
            batches[-1].append(item)
            rows += size
        return batches


# --------------------------------------------------------------------------------------------
# start-up failure
# --------------------------------------------------------------------------------------------


def _stop_supervisor() -> None:
    """Ask ``bentoml serve``'s supervisor to stop: it would otherwise restart a worker that
    cannot start, forever. Only when this process is one of its workers."""
    from bentoml._internal.context import server_context

    if server_context.worker_index is None:
        return
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        command = parent.cmdline()
    except Exception:  # no parent information: leave the supervisor alone
        return
    if "serve" in command and any(Path(part).name == "bentoml" for part in command):
        logger.critical("stopping the server (supervisor pid %d)", parent.pid)
        parent.send_signal(signal.SIGTERM)


# --------------------------------------------------------------------------------------------
# the service
# --------------------------------------------------------------------------------------------

_http = FastAPI(
    title="churn",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    description="GET endpoints of the churn service (the POST ones are BentoML APIs).",
)


def _workers() -> int:
    try:
        return max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


@bentoml.service(
    name="churn",
    workers=_workers(),
    # XGBoost, NumPy and OpenMP use one thread: several per request only contend for the cores.
    envs=[
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "OPENBLAS_NUM_THREADS", "value": "1"},
        {"name": "MKL_NUM_THREADS", "value": "1"},
    ],
    # No max_concurrency: requests beyond the cores queue instead of being refused (429).
    traffic={"timeout": 60},
)
@bentoml.asgi_app(_http, path="/")
class ChurnService:
    """Churn, up-sell and win-back scores with reasons, segments and suggested actions."""

    def __init__(self) -> None:
        settings = load_settings()
        self.settings = settings
        self.cfg = settings.config
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._heavy = anyio.CapacityLimiter(1)
        self._batcher = _Batcher()
        self._admin = anyio.CapacityLimiter(1)
        logger.info(
            "config %s; API key %s",
            settings.config_path or "(defaults)",
            "required" if settings.api_key else "NOT set: the API is open",
        )
        self._source = model_source()
        try:
            self._state: _State | None = load_state(self.cfg, self._source)
        except scoring.ChampionMissingError as exc:
            logger.critical("refusing to start: %s", exc)
            _stop_supervisor()
            raise ServiceStartupError(f"refusing to start: {exc}") from exc
        except Exception as exc:
            logger.critical("refusing to start: the models could not be loaded: %s", exc)
            _stop_supervisor()
            raise ServiceStartupError(
                f"refusing to start: the models could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        state = self._state
        logger.info(
            "serving %s (fast path %s), risk list %s",
            state.models.model_versions(),
            "on" if state.rows is not None else "off",
            state.risk_list.as_of if state.risk_list is not None else "none",
        )
        self._watcher: threading.Thread | None = None
        interval = self.cfg.serving.reload_interval_s
        if interval > 0:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval,), name="churn-reload", daemon=True
            )
            self._watcher.start()

    def __is_ready__(self) -> bool:
        return self._state is not None

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()

    # --- reload -----------------------------------------------------------------------------
    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                result = self.refresh(force=False)
            except Exception:  # the watcher must survive anything
                logger.exception("periodic model check failed")
                continue
            if result.status != "unchanged":
                logger.info("periodic model check: %s %s", result.status, result.message)

    def refresh(self, *, force: bool = False) -> ReloadResponse:
        """Check the registry and the risk list; load and swap in a new state if they moved.

        The old state serves until the new one is complete; if loading fails it stays.
        """
        with self._reload_lock:
            current = self._state
            assert current is not None
            served = current.models.model_versions()
            path = self.cfg.serving.risk_list_location(self.cfg.output_dir)
            try:
                if self._source == "bento":  # the models are part of the Bento: none moves
                    registry = dict(served)
                else:
                    registry = scoring.champion_versions(self.cfg)
            except Exception as exc:
                MODEL_RELOADS.labels(outcome="failed").inc()
                return self._reload_response(
                    "failed",
                    current,
                    message=f"registry unreachable ({type(exc).__name__}: "
                    f"{exc}); still serving {served}",
                )
            moved = {t: v for t, v in registry.items() if v != served.get(t)}
            file_changed = _file_signature(path) != current.risk_signature
            if not (moved or file_changed or force):
                MODEL_RELOADS.labels(outcome="unchanged").inc()
                return self._reload_response("unchanged", current, registry=registry)
            if registry.get("churn") is None:
                MODEL_RELOADS.labels(outcome="failed").inc()
                return self._reload_response(
                    "failed",
                    current,
                    registry=registry,
                    message="the churn model URI resolves to nothing in the registry now; "
                    f"still serving churn v{served.get('churn')}",
                )
            started = time.perf_counter()
            try:
                state = load_state(self.cfg, self._source)
            except Exception as exc:
                logger.exception("reload failed; the previous models keep serving")
                MODEL_RELOADS.labels(outcome="failed").inc()
                return self._reload_response(
                    "failed",
                    current,
                    registry=registry,
                    message=f"loading failed ({type(exc).__name__}: {exc}); still serving {served}",
                )
            self._state = state  # one assignment: requests see the old or the new state
            MODEL_RELOADS.labels(outcome="reloaded").inc()
            why = []
            if moved:
                why.append(f"models moved {moved}")
            if file_changed:
                why.append("risk list changed")
            if force and not why:
                why.append("forced")
            return self._reload_response(
                "reloaded",
                state,
                previous=served,
                registry=registry,
                message=f"{', '.join(why)}; loaded in {time.perf_counter() - started:.1f} s",
            )

    @staticmethod
    def _reload_response(
        status: str,
        state: _State,
        *,
        previous: dict | None = None,
        registry: dict | None = None,
        message: str = "",
    ) -> ReloadResponse:
        return ReloadResponse(
            status=status,
            model_versions=ModelVersions(**state.models.model_versions()),
            previous_versions=None if previous is None else ModelVersions(**previous),
            registry_versions=registry or {},
            risk_list_as_of=state.risk_list.as_of if state.risk_list is not None else None,
            message=message,
            loaded_at=state.loaded_at,
        )

    # --- helpers ----------------------------------------------------------------------------
    def _current(self) -> _State:
        state = self._state
        if state is None:  # pragma: no cover - __init__ fails instead
            raise RequestError(503, "the models are not loaded")
        return state

    async def _run(self, func: Callable[[], Any], inline: bool) -> Any:
        if inline:
            return func()
        return await anyio.to_thread.run_sync(func, limiter=self._heavy)

    @staticmethod
    async def _answer(work: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await work()
        except RequestError as exc:
            return exc.response()

    # --- POST /score ------------------------------------------------------------------------
    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score customers given as feature rows (``customers``) or raw events (``events``).

        Feature rows are scored as given (names: see GET /model_info; a customer with no
        feature value is answered ``unknown_customer``). Events go through the training
        feature code at ``as_of`` (default: the day after the latest event); customers with no
        activity before it are answered ``no_history``.
        """
        state = self._current()

        async def answer() -> ScoreResponse:
            if request.events is not None:
                payload = await self._run(
                    lambda: self._score_events(state, request.events or [], request.as_of),
                    inline=False,
                )
            else:
                payload = await self._score_rows(state, request.customers or [], request.as_of)
            return ScoreResponse.model_validate(payload)

        return await self._answer(answer)

    async def _score_rows(
        self, state: _State, customers: Sequence[CustomerFeatures], as_of: date | None
    ) -> dict[str, Any]:
        limit = min(self.cfg.serving.max_batch_customers, MAX_CUSTOMERS_PER_REQUEST)
        if len(customers) > limit:
            raise RequestError(
                400,
                f"at most {limit:,} customers per request, got {len(customers):,}: split the "
                "batch (serving.max_batch_customers)",
            )
        if as_of is not None:
            _check_date(as_of, "as_of")
        if state.rows is None:
            results, warnings = await self._run(
                lambda: self._score_rows_general(state, customers), inline=False
            )
        elif len(customers) <= INLINE_MAX_ROWS:
            # Small requests are merged with those arriving at the same time (one model call).
            results, warnings = await self._batcher.score(state, state.rows.check(customers))
        else:
            results, warnings = await self._run(lambda: state.rows.score(customers), inline=False)
        _count("features", results)
        return {
            "results": results,
            "as_of": as_of or datetime.now(UTC).date(),
            "model_versions": state.models.model_versions(),
            "warnings": warnings,
        }

    def _score_rows_general(
        self, state: _State, customers: Sequence[CustomerFeatures]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Models without the fast path: the same checks, then ``serving.scoring``."""
        known = [c for c in customers if any(v is not None for v in c.features.values())]
        unknown_names = sorted(
            {n for c in known for n in c.features}
            - {f for m in state.models.tasks.values() for f in m.features}
            - {"is_active", self.cfg.serving.customer_value_column, *scoring.SEGMENT_COLUMNS}
        )
        if unknown_names:
            raise RequestError(
                400,
                f"{len(unknown_names)} unknown feature name(s) {unknown_names[:10]}: the models "
                "use the features listed by GET /model_info",
            )
        versions = state.models.model_versions()
        by_id: dict[str, dict[str, Any]] = {}
        warnings: list[str] = list(state.models.warnings)
        if known:
            frame = pd.DataFrame([{"customer_id": c.customer_id, **c.features} for c in known])
            try:
                scored = scoring.score_customers(
                    frame, state.models, self.cfg, allow_missing_features=True
                )
            except (ValueError, DataContractError) as exc:
                raise RequestError(400, str(exc)) from exc
            by_id = {r["customer_id"]: r for r in scoring.result_records(scored)}
            warnings = list(scored.attrs.get("warnings", warnings))
        results = [
            by_id.get(c.customer_id)
            or scoring.unscored_result(c.customer_id, scoring.STATUS_UNKNOWN, versions)
            for c in customers
        ]
        return results, warnings

    def _score_events(
        self, state: _State, events: Sequence[EventIn], as_of: date | None
    ) -> dict[str, Any]:
        from features.validation import NoUsableRowsError, validate_events

        raw = _events_frame(events)
        cutoff = None
        if as_of is not None:
            _check_date(as_of, "as_of")
            cutoff = pd.Timestamp(as_of)
            tomorrow = pd.Timestamp(datetime.now(UTC).date()) + pd.Timedelta(days=1)
            if cutoff > tomorrow:
                raise RequestError(
                    400,
                    f"as_of {as_of} is in the future: scores at a later date would read the "
                    "days not yet seen as silence",
                )
        warnings: list[str] = []
        try:
            validated = validate_events(raw)
        except NoUsableRowsError as exc:
            raise RequestError(
                400, "no usable events: " + exc.result.report.render().replace("\n", " ")
            ) from exc
        except (ValueError, DataContractError) as exc:
            raise RequestError(400, f"events are invalid: {exc}") from exc
        for problem in validated.report.problems:
            if problem.severity in ("error", "warning"):
                warnings.append(
                    f"events: {problem.count:,} row(s) {problem.action}: {problem.reason}"
                )
        clean = validated.clean
        if cutoff is None:
            cutoff = (clean["timestamp"].max() + pd.Timedelta(days=1)).normalize()
        later = int((clean["timestamp"] >= cutoff).sum())
        if later:
            warnings.append(
                f"{later:,} events at or after as_of {cutoff.date()} are ignored (scores use "
                "only what was known before the cutoff)"
            )
        ids = list(dict.fromkeys(e.customer_id for e in events))
        try:
            frame = scoring.score_events(
                clean, cutoff, state.models, self.cfg, customer_ids=ids, explain=True
            )
        except (ValueError, DataContractError) as exc:
            if "risk bands are unknown" in str(exc):
                raise RequestError(503, str(exc)) from exc
            raise RequestError(400, f"the events could not be scored: {exc}") from exc
        results = scoring.result_records(frame)
        _count("events", results)
        return {
            "results": results,
            "as_of": cutoff.date(),
            "model_versions": state.models.model_versions(),
            "warnings": list(dict.fromkeys([*frame.attrs.get("warnings", []), *warnings])),
        }

    # --- POST /risk_list --------------------------------------------------------------------
    @bentoml.api(route="/risk_list")
    async def risk_list(self, request: RiskListRequest, /) -> RiskListResponse:
        """The latest batch risk list (``churn score``), filtered (AND across fields, OR
        within one) and ranked by expected value at risk, largest first."""

        async def answer() -> RiskListResponse:
            return RiskListResponse.model_validate(self._risk_list(self._current(), request))

        return await self._answer(answer)

    def _risk_list(self, state: _State, request: RiskListRequest) -> dict[str, Any]:
        risk_list = state.risk_list
        if risk_list is None:
            path = self.cfg.serving.risk_list_location(self.cfg.output_dir)
            raise RequestError(
                404,
                f"no risk list yet at {path}: run `churn score` (the service picks it up "
                "within serving.reload_interval_s, or at once with POST /admin/reload)",
            )
        as_of = risk_list.as_of
        if request.as_of is not None and str(request.as_of) != str(as_of):
            raise RequestError(
                404,
                f"the service holds the risk list of {as_of} only, not of {request.as_of}: "
                "older lists are in the files and tables `churn score` wrote",
            )
        total, rows = scoring.filter_risk_list(
            risk_list.frame,
            risk_band=request.risk_band,
            rfm_segment=request.rfm_segment,
            lifecycle_stage=request.lifecycle_stage,
            value_tier=request.value_tier,
            value_growth_segment=request.value_growth_segment,
            suggested_action=request.suggested_action,
            min_value=request.min_value,
            top_n=request.top_n,
        )
        versions = risk_list.meta.get("model_versions") or state.models.model_versions()
        return {
            "as_of": as_of,
            "total_matching": total,
            "rows": scoring.risk_list_records(rows),
            "model_versions": {t: versions.get(t) for t in scoring.TASKS},
        }

    # --- GET/POST /model_info ---------------------------------------------------------------
    def _model_info(self) -> ModelInfo:
        return ModelInfo.model_validate(scoring.model_info(self._current().models, self.cfg))

    @bentoml.api(route="/model_info")
    async def model_info(self) -> ModelInfo:
        """The served models: versions, aliases, runs, test metrics, features, training time;
        the risk band thresholds, the action policy and the rule table."""
        return self._model_info()

    @_http.get("/model_info", response_model=ModelInfo, summary="The served models")
    async def model_info_get(self) -> ModelInfo:
        """Same as POST /model_info."""
        return self._model_info()

    # --- POST /admin/reload -----------------------------------------------------------------
    @bentoml.api(route="/admin/reload")
    async def reload(self, force: bool = False) -> ReloadResponse:
        """Check the registry now: load moved champions (and a new risk list) without
        downtime. If loading fails the previous models keep serving (status ``failed``, 503)."""
        result = await anyio.to_thread.run_sync(
            lambda: self.refresh(force=force), limiter=self._admin
        )
        if result.status == "failed":
            return JSONResponse(result.model_dump(mode="json"), status_code=503)
        return result


# API key, body size and content type are checked before BentoML reads a body.
ChurnService.add_asgi_middleware(RequestGuard)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _check_date(value: date, name: str) -> None:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise RequestError(
            400, f"{name} {value} is out of range: dates between {MIN_YEAR} and {MAX_YEAR}"
        )


def _events_frame(events: Sequence[EventIn]) -> pd.DataFrame:
    """The request's events in the canonical raw layout; 400 for values out of range."""
    problems = []
    for i, event in enumerate(events):
        if not MIN_YEAR <= event.timestamp.year <= MAX_YEAR:
            problems.append(f"events[{i}].timestamp {event.timestamp} is out of range")
        for name in ("amount", "quantity"):
            value = getattr(event, name)
            if value is not None and value > MAX_ABS_VALUE:
                problems.append(f"events[{i}].{name} {value:g} exceeds {MAX_ABS_VALUE:g}")
    if problems:
        raise RequestError(
            400,
            f"{len(problems)} invalid event value(s): " + "; ".join(problems[:5]),
            [{"msg": p} for p in problems[:50]],
        )
    return pd.DataFrame(
        {
            "customer_id": [e.customer_id for e in events],
            "timestamp": pd.to_datetime([e.timestamp for e in events]),
            "event_type": [e.event_type for e in events],
            "amount": np.array([np.nan if e.amount is None else e.amount for e in events]),
            "quantity": np.array([np.nan if e.quantity is None else e.quantity for e in events]),
            "category": [e.category for e in events],
            "channel": [e.channel for e in events],
        }
    )


def _count(source: str, results: Sequence[Mapping[str, Any]]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    for status, n in counts.items():
        SCORED_CUSTOMERS.labels(source=source, status=status).inc(n)
