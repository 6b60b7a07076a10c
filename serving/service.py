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

This module holds the service class, its endpoints and the adaptive batching; the rest lives
beside it, one module per reason to change: ``serving.settings`` (config file, API key, worker
count, the ``bentoml serve`` command line), ``serving.guard`` (API key, body size and content
type; :class:`~serving.guard.RequestError`), ``serving.rows`` (the fast path for feature rows),
``serving.state`` (the served models and what triggers a reload), ``serving.bento_models``
(the champions inside a Bento), ``serving.schemas`` (requests and responses) and
``serving.decisions`` (bands, reasons, actions, cross-sell: the rules batch scoring uses too).

**Start.** The models are loaded in the worker before it serves anything. A missing churn
champion (or any load failure) stops the server with the reason in the log, instead of letting
``bentoml serve``'s supervisor restart the worker forever.

**Input.** A customer without any feature value is answered ``status="unknown_customer"``, one
without activity before the cutoff ``status="no_history"``; neither is an error. Bad values
are 400s with ``{"error", "detail"}`` (``serving.guard``).

**Speed.** Feature rows take the fast path (``serving.rows.RowScorer``). Adaptive batching:
small requests arriving together are scored in one call (:class:`_Batcher`; BentoML's own
``batchable=True`` would turn the body of ``/score`` into a list of requests). The API methods
are ``async`` and score on the event loop: BentoML runs plain ``def`` APIs in a thread pool, a
thread hop per request that costs more than scoring one customer. No
``traffic.max_concurrency``: requests beyond the cores queue instead of getting 429.

**Reload.** Every ``serving.reload_interval_s`` a background thread asks the registry which
versions the configured URIs point to and whether the risk list file changed; if so it loads
everything anew next to the running state and swaps it in with one assignment, so requests in
flight finish on the old models and none is refused. If the new models fail to load, the old
ones keep serving and the failure is logged, counted in ``/metrics`` and returned by
``POST /admin/reload``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np
import pandas as pd
import prometheus_client
from fastapi import FastAPI
from starlette.responses import JSONResponse

from features.contract import DataContractError
from serving import scoring
from serving.decisions import RiskBandsUnknownError
from serving.guard import RequestError, RequestGuard
from serving.rows import MAX_ABS_VALUE, CheckedRows
from serving.schemas import (
    MAX_CUSTOMERS_PER_REQUEST,
    CustomerFeatures,
    EventIn,
    ModelInfo,
    ModelVersions,
    ReloadResponse,
    RiskListRequest,
    RiskListResponse,
    ScoreRequest,
    ScoreResponse,
)
from serving.settings import load_settings, worker_count
from serving.state import (
    ServedState,
    load_state,
    model_source,
    registry_versions,
    risk_list_changed,
)

__all__ = ["INLINE_MAX_ROWS", "ChurnService", "ServiceStartupError"]

logger = logging.getLogger(__name__)

#: Timestamps and dates outside these years are rejected (pandas' datetime64 ends in 2262).
MIN_YEAR, MAX_YEAR = 1900, 2200
#: Feature-row requests up to this many customers are scored on the event loop; larger ones
#: (and every events request) in a worker thread, so probes stay answered meanwhile.
INLINE_MAX_ROWS = 200

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


class ServiceStartupError(RuntimeError):
    """The service cannot serve (no churn model, a model that does not load)."""


# --------------------------------------------------------------------------------------------
# adaptive batching of small requests
# --------------------------------------------------------------------------------------------


class _Batcher:
    """Merges the small ``/score`` requests of one worker that arrive together into one call
    of ``RowScorer.score_checked`` (one booster call per model, one TreeSHAP call).

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
        self._pending: list[tuple[ServedState, CheckedRows, asyncio.Future]] = []
        self._draining = False

    async def score(
        self, state: ServedState, rows: CheckedRows
    ) -> tuple[list[dict[str, Any]], list[str]]:
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


def _served_bento() -> Any | None:
    """The Bento this service was loaded from (``bentoml serve <bento>``, a container), else
    None (served from source)."""
    return getattr(ChurnService, "bento", None)


@bentoml.service(
    name="churn",
    workers=worker_count(),
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
        self._source = model_source(bento=_served_bento())
        self._state: ServedState | None = self._load_first_state()
        state = self._state
        logger.info(
            "serving %s (fast path %s), risk list %s",
            state.models.model_versions(),
            "on" if state.rows is not None else "off",
            state.risk_list.as_of if state.risk_list is not None else "none",
        )
        self._watcher = self._start_watcher(self.cfg.serving.reload_interval_s)

    def _load_first_state(self) -> ServedState:
        """The models to serve, or a stopped server with the reason in the log."""
        try:
            return load_state(self.cfg, self._source, bento=_served_bento())
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

    def _start_watcher(self, interval: float) -> threading.Thread | None:
        """The periodic reload thread (None when ``serving.reload_interval_s`` is 0)."""
        if interval <= 0:
            return None
        watcher = threading.Thread(
            target=self._watch, args=(interval,), name="churn-reload", daemon=True
        )
        watcher.start()
        return watcher

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
            try:
                registry = registry_versions(self.cfg, self._source, served)
            except Exception as exc:
                return self._reload_failed(
                    current,
                    message=f"registry unreachable ({type(exc).__name__}: "
                    f"{exc}); still serving {served}",
                )
            moved = {t: v for t, v in registry.items() if v != served.get(t)}
            file_changed = risk_list_changed(self.cfg, current)
            if not (moved or file_changed or force):
                MODEL_RELOADS.labels(outcome="unchanged").inc()
                return self._reload_response("unchanged", current, registry=registry)
            if registry.get("churn") is None:
                return self._reload_failed(
                    current,
                    registry=registry,
                    message="the churn model URI resolves to nothing in the registry now; "
                    f"still serving churn v{served.get('churn')}",
                )
            why = []
            if moved:
                why.append(f"models moved {moved}")
            if file_changed:
                why.append("risk list changed")
            if force and not why:
                why.append("forced")
            return self._swap_in(current, registry, why)

    def _swap_in(
        self, current: ServedState, registry: dict[str, str | None], why: list[str]
    ) -> ReloadResponse:
        """Load a new state beside the current one and serve it (one assignment: requests
        see the old or the new state); on failure the current one stays."""
        served = current.models.model_versions()
        started = time.perf_counter()
        try:
            state = load_state(self.cfg, self._source, bento=_served_bento())
        except Exception as exc:
            logger.exception("reload failed; the previous models keep serving")
            return self._reload_failed(
                current,
                registry=registry,
                message=f"loading failed ({type(exc).__name__}: {exc}); still serving {served}",
            )
        self._state = state
        MODEL_RELOADS.labels(outcome="reloaded").inc()
        return self._reload_response(
            "reloaded",
            state,
            previous=served,
            registry=registry,
            message=f"{', '.join(why)}; loaded in {time.perf_counter() - started:.1f} s",
        )

    def _reload_failed(
        self, current: ServedState, *, registry: dict | None = None, message: str
    ) -> ReloadResponse:
        MODEL_RELOADS.labels(outcome="failed").inc()
        return self._reload_response("failed", current, registry=registry, message=message)

    @staticmethod
    def _reload_response(
        status: str,
        state: ServedState,
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
    def _current(self) -> ServedState:
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
        self, state: ServedState, customers: Sequence[CustomerFeatures], as_of: date | None
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
        self, state: ServedState, customers: Sequence[CustomerFeatures]
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
        self, state: ServedState, events: Sequence[EventIn], as_of: date | None
    ) -> dict[str, Any]:
        raw = _events_frame(events)
        cutoff = None if as_of is None else _events_cutoff(as_of)
        clean, warnings = _validated_events(raw)
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
        except RiskBandsUnknownError as exc:
            raise RequestError(503, str(exc)) from exc
        except (ValueError, DataContractError) as exc:
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

    def _risk_list(self, state: ServedState, request: RiskListRequest) -> dict[str, Any]:
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
        versions = risk_list.meta.model_versions or state.models.model_versions()
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
# the steps of an events request
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


def _events_cutoff(as_of: date) -> pd.Timestamp:
    """The requested ``as_of`` as a cutoff; 400 for dates out of range or in the future."""
    _check_date(as_of, "as_of")
    cutoff = pd.Timestamp(as_of)
    tomorrow = pd.Timestamp(datetime.now(UTC).date()) + pd.Timedelta(days=1)
    if cutoff > tomorrow:
        raise RequestError(
            400,
            f"as_of {as_of} is in the future: scores at a later date would read the "
            "days not yet seen as silence",
        )
    return cutoff


def _validated_events(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The events the data contract accepts and a warning per problem it reported; 400 when
    none is usable or the events break the contract."""
    from features.validation import NoUsableRowsError, validate_events

    try:
        validated = validate_events(raw)
    except NoUsableRowsError as exc:
        raise RequestError(
            400, "no usable events: " + exc.result.report.render().replace("\n", " ")
        ) from exc
    except (ValueError, DataContractError) as exc:
        raise RequestError(400, f"events are invalid: {exc}") from exc
    warnings = [
        f"events: {problem.count:,} row(s) {problem.action}: {problem.reason}"
        for problem in validated.report.problems
        if problem.severity in ("error", "warning")
    ]
    return validated.clean, warnings


def _count(source: str, results: Sequence[Mapping[str, Any]]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    for status, n in counts.items():
        SCORED_CUSTOMERS.labels(source=source, status=status).inc(n)
