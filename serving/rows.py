"""The service's fast path for feature rows: :class:`RowScorer`.

``serving.scoring.score_customers`` for feature rows given as dicts, without DataFrames: the
models' own boosters and calibrators on a NumPy matrix built straight from the request,
XGBoost on one thread (``nthread=1``: OpenMP threads only contend on a small, shared machine),
TreeSHAP (``pred_contribs``) only for the scored active customers, the action rule table looked
up in a cache keyed by everything the rules read. The decisions are ``serving.decisions``'s,
the same functions batch scoring calls (bands: ``risk_bands_for_call``; reasons:
``reasons_from_contributions``; actions: ``apply_action_rules``), so the fast path gives the
same results as ``serving.scoring.score_customers`` (the tests compare them row by row).
Events, and models that are not this project's pyfunc, go through ``serving.scoring``.

Also the place that checks feature names, value types and ranges against the models' feature
lists (400 with the offending customers and features named).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from serving import scoring
from serving.decisions import (
    ACTION_RULES,
    CROSS_SELL_NEEDS_EVENTS,
    RULE_INPUT_COLUMNS,
    ActionPolicy,
    RiskBands,
    RiskBandsUnknownError,
    apply_action_rules,
    assign_risk_bands,
    percentile_rank,
    reason_candidate_count,
    reasons_from_contributions,
    risk_bands_for_call,
)
from serving.guard import RequestError
from serving.schemas import CustomerFeatures

if TYPE_CHECKING:
    from pipelines.config import ProjectConfig
    from serving.config import ServingConfig

__all__ = ["MAX_ABS_VALUE", "CheckedRows", "RowScorer"]

logger = logging.getLogger(__name__)

#: Largest magnitude accepted for a numeric feature value or event amount: beyond it XGBoost's
#: float32 would turn sums and values into infinity, and no CRM figure is that large.
MAX_ABS_VALUE = 1e15

_SEGMENT_VALUES: dict[str, tuple[str, ...]] = {
    "rfm_segment": RFM_SEGMENTS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "value_tier": VALUE_TIERS,
    "value_growth_segment": VALUE_GROWTH_SEGMENTS,
}


def _number(value: Any) -> float | None:
    """A finite float, or None for NaN/None (responses carry no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_value(value: Any) -> Any:
    """The value as ``training.explain.top_reasons`` reports it (None for NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
        X = numeric[np.ix_(rows, self.columns)]  # a copy
        for column, feature, codes in self.categorical:
            values = strings[feature]
            X[:, column] = [codes.get(values[r], np.nan) for r in rows]
        return X

    def probability(self, X: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return self.calibrator.predict(raw)

    def contributions(self, X: np.ndarray) -> np.ndarray:
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


def _task_model(task: str, spec: Any, pyfunc: Any, columns: Mapping[str, int]) -> _TaskModel:
    """The booster, calibrator and matrix layout of one ``training.scorer.Scorer`` pyfunc."""
    from training.explain import readable_feature_name

    scorer = scoring._python_model(pyfunc)._scorer
    categorical = tuple(
        (j, f, {level: float(code) for code, level in enumerate(spec.categorical_levels[f])})
        for j, f in enumerate(spec.features)
        if spec.kinds[f] == "categorical"
    )
    return _TaskModel(
        task=task,
        booster=scorer.booster,
        calibrator=scorer.calibrator,
        features=tuple(spec.features),
        columns=np.array([columns[f] for f in spec.features], dtype=np.intp),
        categorical=categorical,
        names={f: spec.readable_names.get(f, readable_feature_name(f)) for f in spec.features},
        feature_types=list(scorer.booster.feature_types or []) or None,
    )


def _feature_kinds(specs: Mapping[str, Any], serving: ServingConfig) -> dict[str, str]:
    """Kind of every column a request may carry: the models' features (one kind across the
    models), ``is_active``, the segments and the customer value column."""
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
    kinds.setdefault(serving.customer_value_column, "float")
    return kinds


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
class CheckedRows:
    """Feature rows of a request, checked and laid out for the models."""

    ids: list[str]
    known: np.ndarray  # rows with at least one feature value
    active: np.ndarray
    numeric: np.ndarray  # rows x request columns, NaN where missing or categorical
    strings: dict[str, list[Any]]  # categorical column -> value per row (None: missing)
    raw: list[dict[str, Any]]
    absent: set[str]  # model features some known row did not give


def _concat(requests: Sequence[CheckedRows]) -> CheckedRows:
    """Several checked requests as one set of rows (in order)."""
    return CheckedRows(
        ids=[i for r in requests for i in r.ids],
        known=np.concatenate([r.known for r in requests]),
        active=np.concatenate([r.active for r in requests]),
        numeric=np.vstack([r.numeric for r in requests]),
        strings={c: [v for r in requests for v in r.strings[c]] for c in requests[0].strings},
        raw=[v for r in requests for v in r.raw],
        absent=set().union(*(r.absent for r in requests)),
    )


@dataclass(frozen=True)
class _Scores:
    """The probabilities and bands of a set of checked rows (NaN / None where they do not
    apply) and the warnings of the bands."""

    churn: np.ndarray
    upsell: np.ndarray
    winback: np.ndarray
    bands: np.ndarray
    percentile: np.ndarray
    warnings: list[str]


def _unknown_features(names: list[str]) -> RequestError:
    return RequestError(
        400,
        f"{len(names)} unknown feature name(s) {names[:10]}"
        + (" ..." if len(names) > 10 else "")
        + ": the models use the features listed by GET /model_info",
        [{"loc": ["features", name], "msg": "unknown feature"} for name in names[:50]],
    )


def _invalid_values(problems: list[str]) -> RequestError:
    return RequestError(
        400,
        f"{len(problems)} invalid feature value(s): "
        + "; ".join(problems[:5])
        + (" ..." if len(problems) > 5 else ""),
        [{"msg": p} for p in problems[:50]],
    )


class RowScorer:
    """``serving.scoring.score_customers`` for feature rows given as dicts, without DataFrames.

    Built once per loaded model set from the models' own ``training.scorer.Scorer`` objects
    (booster, calibrator, feature spec); :meth:`build` returns None for models of another
    kind, which then go through ``serving.scoring``. Also the place that checks feature names,
    value types and ranges against the models' feature lists.
    """

    def __init__(self, models: scoring.ScoringModels, cfg: ProjectConfig, specs: dict) -> None:
        self.models = models
        self.serving = cfg.serving
        self.versions = models.model_versions()
        kinds = _feature_kinds(specs, self.serving)
        self.kinds = kinds
        self.model_features = frozenset(f for spec in specs.values() for f in spec.features)
        self.columns = {name: j for j, name in enumerate(kinds)}
        self.categorical = tuple(f for f, k in kinds.items() if k == "categorical")
        self._slots = {f: (j, kinds[f] == "categorical") for f, j in self.columns.items()}
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._flag_columns = np.array(
            [j for f, j in self.columns.items() if kinds[f] == "boolean"], dtype=np.intp
        )
        self.tasks: dict[str, _TaskModel] = {
            task: _task_model(task, spec, models.tasks[task].pyfunc, self.columns)
            for task, spec in specs.items()
        }
        self.actions = _ActionTable(self.serving.action_policy)

    @classmethod
    def build(cls, models: scoring.ScoringModels, cfg: ProjectConfig) -> RowScorer | None:
        """The fast path for these models, or None when one is not a ``Scorer`` pyfunc."""
        specs = {}
        for task, model in models.tasks.items():
            python_model = scoring._python_model(model.pyfunc)
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

    def check(self, customers: Sequence[CustomerFeatures]) -> CheckedRows:
        """Lay out the rows; 400 for unknown features and values of the wrong kind.

        Requests usually send the same feature names in the same order for every customer, so
        the layout of a name list (which value goes to which column, which are categories) is
        worked out once and cached; a row is then split with C-level calls, and the range and
        flag checks run on the whole matrix at once.
        """
        rows, unknown, problems = self._lay_out(customers)
        if unknown:
            raise _unknown_features(unknown)
        problems.extend(self._matrix_problems(customers, rows.known, rows.numeric, rows.strings))
        if problems:
            raise _invalid_values(problems)
        return rows

    def _lay_out(
        self, customers: Sequence[CustomerFeatures]
    ) -> tuple[CheckedRows, list[str], list[str]]:
        """The rows in the request matrix, the unknown feature names and the values of the
        wrong kind (a string for a number, a number for a category)."""
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
        rows = CheckedRows(
            ids=[c.customer_id for c in customers],
            known=known,
            active=known & (numeric[:, self.columns["is_active"]] == 1.0),
            numeric=numeric,
            strings=strings,
            raw=raw,
            absent=absent,
        )
        return rows, list(unknown), problems

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
    def score(
        self, customers: Sequence[CustomerFeatures]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One ``ScoreResult`` payload per customer (request order) and the warnings."""
        return self.score_checked([self.check(customers)])[0]

    def score_checked(
        self, requests: Sequence[CheckedRows]
    ) -> list[tuple[list[dict[str, Any]], list[str]]]:
        """Score several checked requests with one call per model; results and warnings per
        request. With fixed risk bands (a stored reference) the results do not depend on who
        else is in the call; without, bands are fitted per request, so each is scored alone."""
        if len(requests) > 1 and self.models.risk_bands is None:
            return [self.score_checked([r])[0] for r in requests]
        rows = _concat(requests) if len(requests) > 1 else requests[0]
        active_rows = np.flatnonzero(rows.known & rows.active)
        scores = self._scores(rows, active_rows)
        reasons = dict(zip(active_rows.tolist(), self._reasons(rows, active_rows), strict=True))
        actions = self._actions(rows, scores)
        results = [self._result(rows, r, scores, reasons, actions) for r in range(len(rows.ids))]
        answers = []
        start = 0
        for request in requests:
            stop = start + len(request.ids)
            answers.append((results[start:stop], self._warnings(request, scores.warnings)))
            start = stop
        return answers

    def _probabilities(self, task: str, rows: CheckedRows, which: np.ndarray) -> np.ndarray:
        result = np.full(len(rows.ids), np.nan)
        model = self.tasks.get(task)
        if model is None or which.size == 0:
            return result
        result[which] = model.probability(model.matrix(rows.numeric, rows.strings, which))
        return result

    def _scores(self, rows: CheckedRows, active_rows: np.ndarray) -> _Scores:
        """Churn and up-sell probabilities of the active rows, win-back of the lapsed ones,
        the churn risk bands and percentiles."""
        lapsed_rows = np.flatnonzero(rows.known & ~rows.active)
        churn = self._probabilities("churn", rows, active_rows)
        upsell = self._probabilities("upsell", rows, active_rows)
        winback = self._probabilities("winback", rows, lapsed_rows)
        warnings: list[str] = []
        bands_cfg, reference = self._bands(churn, warnings)
        if bands_cfg is not None:
            bands = assign_risk_bands(churn, bands_cfg)
            percentile = percentile_rank(churn, reference)
        else:
            bands = np.full(len(rows.ids), None, dtype=object)
            percentile = np.full(len(rows.ids), np.nan)
        return _Scores(churn, upsell, winback, bands, percentile, warnings)

    def _bands(
        self, churn: np.ndarray, warnings: list[str]
    ) -> tuple[RiskBands | None, np.ndarray | None]:
        """``serving.decisions.risk_bands_for_call``, as batch scoring decides them; 503 when
        no bands can be drawn (a missing reference, not a bad request)."""
        try:
            return risk_bands_for_call(
                churn,
                self.models.risk_bands,
                self.models.reference_scores,
                high_share=self.serving.high_risk_share,
                medium_share=self.serving.medium_risk_share,
                warnings=warnings,
            )
        except RiskBandsUnknownError as exc:
            raise RequestError(503, str(exc)) from exc

    def _reasons(self, rows: CheckedRows, which: np.ndarray) -> list[list[dict[str, Any]]]:
        """``serving.scoring``'s reasons: among the ``reason_candidates`` largest contributions
        by size, the ``reasons_top_k`` strongest plausible risk-raising ones, in words.

        The candidates are taken as ``training.explain.top_reasons`` takes them for batch
        scoring; selection and sentences are ``serving.decisions.reasons_from_contributions``'s
        (one implementation for the service and batch scoring), judged on the customer's
        whole row.
        """
        model = self.tasks["churn"]
        if which.size == 0:
            return []
        contributions = model.contributions(model.matrix(rows.numeric, rows.strings, which))
        per_feature = contributions[:, : len(model.features)]
        candidates = reason_candidate_count(
            self.serving.reason_candidates, self.serving.reasons_top_k
        )
        order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :candidates]
        picked = np.take_along_axis(per_feature, order, axis=1)
        features = model.features
        result = []
        for k, row in enumerate(which):
            values = {feature: _json_value(value) for feature, value in rows.raw[row].items()}
            explained = [
                {"feature": features[j], "contribution": float(c), "value": values.get(features[j])}
                for j, c in zip(order[k], picked[k], strict=True)
            ]
            result.append(
                reasons_from_contributions(
                    explained,
                    values,
                    model.names,
                    top_k=self.serving.reasons_top_k,
                    currency=self.serving.currency,
                )
            )
        return result

    def _actions(self, rows: CheckedRows, scores: _Scores) -> dict[int, tuple[str, str, str]]:
        """The rule table's (action, rule, reason) of every known row, by row."""
        scored = np.flatnonzero(rows.known)
        rule_inputs = [
            {
                "is_active": bool(rows.active[r]),
                "risk_band": scores.bands[r],
                "upsell_probability": scores.upsell[r],
                "winback_probability": scores.winback[r],
                **{c: rows.strings[c][r] for c in scoring.SEGMENT_COLUMNS},
            }
            for r in scored
        ]
        return dict(zip(scored.tolist(), self.actions.decide(rule_inputs), strict=True))

    def _result(
        self,
        rows: CheckedRows,
        r: int,
        scores: _Scores,
        reasons: Mapping[int, list[dict[str, Any]]],
        actions: Mapping[int, tuple[str, str, str]],
    ) -> dict[str, Any]:
        """The ``ScoreResult`` payload of row ``r`` (as ``serving.scoring.result_records``)."""
        if not rows.known[r]:
            return scoring.unscored_result(rows.ids[r], scoring.STATUS_UNKNOWN, self.versions)
        band = scores.bands[r]
        action, _rule, reason = actions[r]
        return {
            "customer_id": rows.ids[r],
            "status": scoring.STATUS_SCORED,
            "churn_probability": _number(scores.churn[r]),
            "churn_percentile": _number(scores.percentile[r]),
            "risk_band": band,
            "at_risk": None if band is None else band == "high",
            "upsell_probability": _number(scores.upsell[r]),
            "cross_sell_candidates": [],
            "reasons": reasons.get(r, []),
            "winback_probability": _number(scores.winback[r]),
            "segments": {c: rows.strings[c][r] for c in scoring.SEGMENT_COLUMNS},
            "suggested_action": action,
            "action_reason": reason,
            "model_versions": self.versions,
        }

    def _warnings(self, rows: CheckedRows, band_warnings: list[str]) -> list[str]:
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
            warnings.append(CROSS_SELL_NEEDS_EVENTS)
        return list(dict.fromkeys(warnings))
