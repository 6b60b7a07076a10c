"""What the service decides from scores: risk bands, percentiles, actions, readable reasons
and cross-sell candidates.

Pure functions and frozen settings, no I/O and no serving framework: the one implementation of
each rule, called by batch scoring (``serving.scoring``), the Spark batch
(``pipelines.spark_flows``) and the service's fast path (``serving.rows``); the tests call them
directly, and the docs render the same rule table the API returns.

**Risk bands.** A calibrated churn probability says how likely a customer is to leave; a
retention team works from a list it can afford to call. :func:`fit_risk_bands` turns the score
distribution of the test cutoff into two thresholds: by default the top 10% of scores are
``high`` (the retention list) and the next 30% ``medium`` (the early-warning watch list), the
rest ``low``. The thresholds are fixed at training time and shipped with the model, so the band
of a customer does not depend on who else is in a scoring request.

**Suggested actions.** :data:`ACTION_RULES` is an ordered rule table (first match wins) over the
scores and the CRM segments of ``features.segments``. It writes down the practice of the
background reading (``../shared/seeds``):

* the lifecycle view: exploration and formation customers are still building the relationship
  (nurture them), stable customers are the repurchase and up-sell base, declining ones need
  churn early warning and lapsed ones win-back;
* value tiers (A 20% / B 30% / C 30% / D 20%) and the 80/20 rule: scarce retention budget goes
  to the tiers that carry the profit, the bottom tier gets low-cost contact only;
* IBM's value-growth groups: loyal customers get their service secured, fast-growing ones more
  sales attention, sleeping ones a new need created, worth-nurturing ones active follow-up;
* retention economics: keeping a customer costs a fifth of winning a new one, and selling to an
  existing customer succeeds far more often (50%) than to a new one (15%);
* win-back with coupons or calls only where a return is likely, and no spending on hopeless
  cases.

Thresholds live in :class:`ActionPolicy`; :func:`rule_table` renders the rules with them.

**Reasons.** :func:`reason_texts` turns SHAP-like contributions of one customer into the few
sentences a retention agent reads ("no activity for 63 days (raises risk)"): only contributions
that push the churn risk up are reasons, largest first, and only those whose value reads as a
plausible risk to a person (:func:`is_plausible_risk`: high engagement such as "90 days with
activity in the last 90 days" or a rising activity trend is skipped, however the model weighs
it). Column names are parsed once, by ``training.explain.parse_feature_name``, for the readable
names and the sentences alike: the canonical lifecycle columns and the per-event-type
``ev_<type>_*`` / ``ratio_<a>_per_<b>_<N>d`` / ``attr_*`` columns ("add contact events in the
last 90 days: 3, down from 11 in the 90 days before"). No percentage beyond +-999% is shown.

**Cross-sell.** :func:`suggest_cross_sell`: the categories a customer has not bought yet, by
their share among buying customers, each with propensity = up-sell probability x share (a
ranking heuristic, see ``serving.scoring``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from training.explain import (
    FeatureName,
    base_words,
    event_words,
    parse_feature_name,
    readable_feature_name,
)

__all__ = [
    "ACTIONS",
    "ACTION_RULES",
    "CROSS_SELL_NEEDS_EVENTS",
    "MAX_PERCENT",
    "RISK_BANDS",
    "RULE_INPUT_COLUMNS",
    "Action",
    "ActionPolicy",
    "ActionRule",
    "Clause",
    "RiskBand",
    "RiskBands",
    "RiskBandsUnknownError",
    "apply_action_rules",
    "assign_risk_bands",
    "expected_value_at_risk",
    "feature_unit",
    "fit_risk_bands",
    "event_polarity",
    "format_feature_value",
    "is_missing",
    "is_plausible_risk",
    "percentile_among",
    "percentile_rank",
    "reason_candidate_count",
    "reason_texts",
    "reasons_from_contributions",
    "risk_bands_for_call",
    "rule_table",
    "suggest_cross_sell",
]

RiskBand = Literal["high", "medium", "low"]
RISK_BANDS: tuple[str, ...] = ("high", "medium", "low")

Action = Literal["retain", "win_back", "nurture", "upsell", "no_action"]
ACTIONS: tuple[str, ...] = ("retain", "win_back", "nurture", "upsell", "no_action")


# --------------------------------------------------------------------------------------------
# risk bands and percentiles
# --------------------------------------------------------------------------------------------


class RiskBands(BaseModel):
    """Probability thresholds of the churn risk bands: ``>= high`` is high, ``>= medium`` medium.

    Fitted once on the test cutoff's calibrated scores (:func:`fit_risk_bands`) and stored with
    the model, so a band means the same thing in every request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    high: float = Field(..., ge=0.0, le=1.0, description="Lowest churn probability that is high.")
    medium: float = Field(
        ..., ge=0.0, le=1.0, description="Lowest churn probability that is medium."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if not self.medium < self.high:
            raise ValueError(
                f"risk bands need 0 <= medium < high <= 1, got medium={self.medium}, "
                f"high={self.high}"
            )
        return self


def _finite_probabilities(probs: Any, name: str) -> np.ndarray:
    values = np.asarray(probs, dtype=np.float64).ravel()
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} of {values.size} values are NaN or infinite; pass only "
            "the scored customers"
        )
    outside = (values < 0.0) | (values > 1.0)
    if outside.any():
        raise ValueError(
            f"{name}: {int(outside.sum())} of {values.size} values lie outside [0, 1]; "
            "expected calibrated probabilities"
        )
    return values


def fit_risk_bands(
    calibrated_probs: np.ndarray, high_share: float = 0.10, medium_share: float = 0.30
) -> RiskBands:
    """Band thresholds so that the top ``high_share`` of the scores are high, the next
    ``medium_share`` medium.

    ``high`` is the ``ceil(n * high_share)``-th largest score and ``medium`` the
    ``ceil(n * (high_share + medium_share))``-th largest, so with distinct scores exactly that
    many customers are at or above each threshold. Ties (equal scores, e.g. from the optional
    isotonic calibration) move whole steps into the higher band: a band never splits customers
    with the same score. If the medium cut falls on the same step as the high cut, ``medium``
    becomes the next lower distinct score, so the medium band is never empty while any lower
    score exists.

    Raises ``ValueError`` for empty input, NaN/infinite or out-of-range values, shares outside
    (0, 1) or summing above 1, and when all scores are equal (no band can be drawn).
    """
    if not 0.0 < high_share < 1.0:
        raise ValueError(f"high_share must be in (0, 1), got {high_share}")
    if not 0.0 < medium_share < 1.0 or high_share + medium_share > 1.0:
        raise ValueError(
            f"medium_share must be in (0, 1) with high_share + medium_share <= 1, "
            f"got {high_share} + {medium_share}"
        )
    scores = _finite_probabilities(calibrated_probs, "calibrated_probs")
    if scores.size == 0:
        raise ValueError("calibrated_probs is empty: no scores to fit risk bands on")
    descending = np.sort(scores)[::-1]
    n = descending.size
    high = float(descending[min(n, math.ceil(n * high_share)) - 1])
    medium = float(descending[min(n, math.ceil(n * (high_share + medium_share))) - 1])
    if medium >= high:
        lower = descending[descending < high]
        if lower.size == 0:
            raise ValueError(
                f"all {n} scores are {high} or more: risk bands need at least two distinct scores"
            )
        medium = float(lower[0])
    return RiskBands(high=high, medium=medium)


def assign_risk_bands(probs: np.ndarray, bands: RiskBands) -> np.ndarray:
    """The band of each probability, an object array: "high" at or above ``bands.high``,
    "medium" at or above ``bands.medium``, else "low"; None for NaN (e.g. a lapsed customer)."""
    values = np.asarray(probs, dtype=np.float64)
    result = np.full(values.shape, None, dtype=object)
    with np.errstate(invalid="ignore"):
        result[values < bands.medium] = "low"
        result[values >= bands.medium] = "medium"
        result[values >= bands.high] = "high"
    return result


def percentile_rank(probs: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Percentile (0-100) of each score; NaN scores stay NaN.

    Without ``reference``: the share of the *other* scored customers with a lower score, ties
    counting half, i.e. ``100 * (average rank - 1) / (n - 1)``; the lowest score gets 0, the
    highest 100, equal scores the same value; a single score gets 50.

    With ``reference`` (e.g. the stored scores of the last full scoring run, so that a request
    for one customer still gets a meaningful percentile): the share of the reference scores
    below the score, ties counting half. NaN reference values are an error.
    """
    values = np.asarray(probs, dtype=np.float64)
    result = np.full(values.shape, np.nan)
    scored = np.isfinite(values)
    if reference is not None:
        ref = np.sort(_finite_reference(reference))
        below = np.searchsorted(ref, values[scored], side="left")
        at_or_below = np.searchsorted(ref, values[scored], side="right")
        result[scored] = 100.0 * (below + 0.5 * (at_or_below - below)) / ref.size
        return result
    return percentile_among(values, np.sort(values[scored]))


def percentile_among(probs: np.ndarray, population: np.ndarray) -> np.ndarray:
    """:func:`percentile_rank` without a reference, for scores that belong to a larger scored
    population: the share of the population's *other* members with a lower score, ties
    counting half, i.e. ``100 * (average rank - 1) / (n - 1)``; a population of one gets 50,
    NaN scores stay NaN.

    ``population``: the scores of every scored member, sorted ascending, ``probs`` among them
    (e.g. a whole Spark batch, of which ``probs`` is one bucket), so that the percentiles of
    the parts are those of the whole.
    """
    values = np.asarray(probs, dtype=np.float64)
    result = np.full(values.shape, np.nan)
    scored = np.isfinite(values)
    n = population.size
    if n == 1:
        result[scored] = 50.0
    elif n > 1:
        below = np.searchsorted(population, values[scored], side="left")
        ties = np.searchsorted(population, values[scored], side="right") - below
        result[scored] = 100.0 * (below + 0.5 * (ties - 1)) / (n - 1)
    return result


#: The end of :class:`RiskBandsUnknownError`'s message: how to give the model fixed bands.
RISK_BANDS_ADVICE = (
    "; run `churn score` once (or log test_predictions.parquet with the training run)"
)


class RiskBandsUnknownError(ValueError):
    """No stored risk bands, and too few distinct churn scores to fit them on (the service
    answers 503: the request is fine, the models lack their reference)."""


def risk_bands_for_call(
    churn: np.ndarray,
    stored: RiskBands | None,
    stored_reference: np.ndarray | None,
    *,
    high_share: float,
    medium_share: float,
    warnings: list[str],
    scored_together: str = "this call",
    advice: str = RISK_BANDS_ADVICE,
) -> tuple[RiskBands | None, np.ndarray | None]:
    """The risk bands and the percentile reference one scoring call uses.

    The stored bands and reference when the models carry them (fitted on the test cutoff, so a
    band means the same in every call). Otherwise the bands are fitted on the call's own
    finite churn scores with the configured shares and ``warnings`` gets a note that they
    depend on who is scored together; the reference is then None (percentiles within the
    call). (None, None) when nothing is scored. Fewer than two distinct scores cannot be
    banded: :class:`RiskBandsUnknownError`, naming ``scored_together`` and ending in
    ``advice``.

    One rule for the service's fast path, ``serving.scoring`` and the Spark batch (which fits
    on the whole batch at once).
    """
    if stored is not None:
        return stored, stored_reference
    scored = churn[np.isfinite(churn)]
    if scored.size == 0:
        return None, None
    if np.unique(scored).size < 2:
        raise RiskBandsUnknownError(
            "risk bands are unknown: the churn model has no stored test-cutoff scores and "
            f"{scored_together} has only {scored.size} distinct score(s) to fit them on{advice}"
        )
    warnings.append(
        f"risk bands and percentiles fitted on this call's {scored.size} scored active "
        "customers (no stored reference): they depend on who is scored together"
    )
    return fit_risk_bands(scored, high_share, medium_share), None


def _finite_reference(reference: np.ndarray) -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if ref.size == 0:
        raise ValueError("reference scores are empty")
    if not np.isfinite(ref).all():
        raise ValueError(
            f"reference scores: {int((~np.isfinite(ref)).sum())} values are NaN or infinite"
        )
    return ref


def expected_value_at_risk(churn_probability: Any, customer_value: Any) -> Any:
    """Churn probability x customer value: the revenue a retention team stands to lose.

    Elementwise on scalars or arrays (a scalar in, a float out). NaN in either input gives NaN
    (unknown, not zero); negative values or probabilities outside [0, 1] are an error.
    """
    p = np.asarray(churn_probability, dtype=np.float64)
    value = np.asarray(customer_value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if ((p < 0) | (p > 1)).any():
            raise ValueError("churn_probability must lie in [0, 1]")
        if (value < 0).any() or np.isinf(value).any():
            raise ValueError("customer_value must be finite and non-negative")
    result = p * value
    return float(result) if result.ndim == 0 else result


# --------------------------------------------------------------------------------------------
# suggested actions: the rule table
# --------------------------------------------------------------------------------------------


def _subset_of(allowed: tuple[str, ...], what: str) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; expected some of {list(allowed)}")
        return values

    return check


class ActionPolicy(BaseModel):
    """Thresholds and groups the rule table refers to; defaults follow the CRM practice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    winback_threshold: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="A lapsed customer with at least this win-back probability is likely back.",
    )
    upsell_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="An active customer with at least this up-sell probability is ready to grow.",
    )
    winback_value_tiers: tuple[str, ...] = Field(
        ("A", "B"), description="Value tiers worth a paid win-back offer (coupon, call)."
    )
    retain_value_tiers: tuple[str, ...] = Field(
        ("A", "B", "C"), description="Value tiers worth a retention offer at high churn risk."
    )
    top_value_tiers: tuple[str, ...] = Field(
        ("A", "B"), description="Value tiers retained already at medium churn risk."
    )
    frequent_buyer_segments: tuple[str, ...] = Field(
        ("champions", "loyal", "cannot_lose_them", "at_risk"),
        description="RFM segments of frequent past buyers, worth a personal contact.",
    )
    young_stages: tuple[str, ...] = Field(
        ("exploration", "formation"),
        description="Lifecycle stages where the relationship is still being built.",
    )

    _tiers = field_validator("winback_value_tiers", "retain_value_tiers", "top_value_tiers")(
        _subset_of(VALUE_TIERS, "value tiers")
    )
    _rfm = field_validator("frequent_buyer_segments")(_subset_of(RFM_SEGMENTS, "RFM segments"))
    _stages = field_validator("young_stages")(_subset_of(LIFECYCLE_STAGES, "lifecycle stages"))


@dataclass(frozen=True)
class Clause:
    """One condition on one column: ``column op value``.

    ``op`` is ``"=="``, ``"in"`` or ``">="``. ``value`` is a literal, or with ``policy`` set the
    name of the :class:`ActionPolicy` field holding it. A missing value (NaN/None) never
    satisfies a clause.
    """

    column: str
    op: Literal["==", "in", ">="]
    value: Any = None
    policy: str | None = None

    def resolve(self, policy: ActionPolicy) -> Any:
        return getattr(policy, self.policy) if self.policy is not None else self.value

    def mask(self, frame: pd.DataFrame, policy: ActionPolicy) -> np.ndarray:
        value = self.resolve(policy)
        column = frame[self.column]
        if self.op == "==":
            return (column == value).to_numpy(dtype=bool)
        if self.op == "in":
            return column.isin(tuple(value)).to_numpy(dtype=bool)
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return numbers >= float(value)

    def render(self, policy: ActionPolicy) -> str:
        value = self.resolve(policy)
        if self.op == "==":
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            return f"{self.column} is {shown}"
        if self.op == "in":
            return f"{self.column} in {{{', '.join(str(v) for v in value)}}}"
        return f"{self.column} >= {float(value):g}"


@dataclass(frozen=True)
class ActionRule:
    """One row of the rule table: all clauses hold -> ``action``, because ``rationale``."""

    name: str
    clauses: tuple[Clause, ...]
    action: Action
    rationale: str

    def condition(self, policy: ActionPolicy) -> str:
        if not self.clauses:
            return "otherwise (no earlier rule matched)"
        return " and ".join(clause.render(policy) for clause in self.clauses)


_LAPSED = Clause("is_active", "==", False)
_ACTIVE = Clause("is_active", "==", True)
_LIKELY_BACK = Clause("winback_probability", ">=", policy="winback_threshold")
_READY_TO_GROW = Clause("upsell_probability", ">=", policy="upsell_threshold")
_FREQUENT_BUYER = Clause("rfm_segment", "in", policy="frequent_buyer_segments")


def _band(*bands: str) -> Clause:
    return (
        Clause("risk_band", "==", bands[0]) if len(bands) == 1 else Clause("risk_band", "in", bands)
    )


#: The rule table, first match wins. Lapsed customers (no churn score) first, then active ones.
ACTION_RULES: tuple[ActionRule, ...] = (
    ActionRule(
        "lapsed_valuable_likely_back",
        (_LAPSED, _LIKELY_BACK, Clause("value_tier", "in", policy="winback_value_tiers")),
        "win_back",
        "Decline stage calls for win-back: a lapsed top-tier customer likely to return is worth "
        "a coupon or a call.",
    ),
    ActionRule(
        "lapsed_frequent_buyer_likely_back",
        (_LAPSED, _LIKELY_BACK, _FREQUENT_BUYER),
        "win_back",
        "A former frequent buyer likely to return: a personal win-back call recovers a proven "
        "relationship for a fifth of the cost of a new customer.",
    ),
    ActionRule(
        "lapsed_likely_back",
        (_LAPSED, _LIKELY_BACK),
        "nurture",
        "Likely to return but of low value: a low-cost reminder, since a paid win-back offer "
        "would not pay back.",
    ),
    ActionRule(
        "lapsed_unlikely_back",
        (_LAPSED,),
        "no_action",
        "Lapsed and unlikely to return: do not spend on hopeless cases; learn from the churn "
        "reasons instead.",
    ),
    ActionRule(
        "high_risk_valuable",
        (_ACTIVE, _band("high"), Clause("value_tier", "in", policy="retain_value_tiers")),
        "retain",
        "Churn early warning on a valuable customer: keeping a customer costs a fifth of "
        "winning a new one, so act before the customer lapses.",
    ),
    ActionRule(
        "medium_risk_top_tier",
        (_ACTIVE, _band("medium"), Clause("value_tier", "in", policy="top_value_tiers")),
        "retain",
        "Top tiers carry most of the profit (80/20): secure their service satisfaction at the "
        "first warning sign, as for IBM's loyal customers.",
    ),
    ActionRule(
        "frequent_buyer_at_risk",
        (_ACTIVE, _band("high", "medium"), _FREQUENT_BUYER),
        "retain",
        "A frequent buyer by RFM showing churn risk: the purchase history makes a personal "
        "retention contact worthwhile even when this year's revenue is low.",
    ),
    ActionRule(
        "low_risk_upsell",
        (_ACTIVE, _band("low"), _READY_TO_GROW),
        "upsell",
        "Stable, low-risk customer likely to buy more: selling to an existing customer succeeds "
        "far more often (50%) than to a new one (15%).",
    ),
    ActionRule(
        "fast_growing_upsell",
        (
            _ACTIVE,
            _band("medium"),
            Clause("value_growth_segment", "==", "fast_growing"),
            _READY_TO_GROW,
        ),
        "upsell",
        "IBM's fast-growing customers get more sales attention to capture their growth, even "
        "with a moderate churn risk.",
    ),
    ActionRule(
        "young_relationship_at_risk",
        (_ACTIVE, _band("high", "medium"), Clause("lifecycle_stage", "in", policy="young_stages")),
        "nurture",
        "Exploration/formation stage: the relationship is still being built; onboarding and "
        "follow-up build the trust that keeps the customer.",
    ),
    ActionRule(
        "medium_risk_lower_tier",
        (_ACTIVE, _band("medium")),
        "nurture",
        "Lower-tier customer showing warning signs: follow up actively and create new needs at "
        "low cost (IBM's worth-nurturing and sleeping customers).",
    ),
    ActionRule(
        "high_risk_bottom_tier",
        (_ACTIVE, _band("high")),
        "nurture",
        "Bottom-tier customer at high risk: a paid retention offer would cost more than the "
        "customer brings, so only low-cost automated contact.",
    ),
    ActionRule(
        "no_signal",
        (),
        "no_action",
        "Low churn risk and no up-sell signal: leave the customer alone; unneeded contact costs "
        "money and can annoy.",
    ),
)

#: Columns the rule table reads (``apply_action_rules`` checks them).
RULE_INPUT_COLUMNS: tuple[str, ...] = (
    "is_active",
    "risk_band",
    "upsell_probability",
    "winback_probability",
    "value_tier",
    "lifecycle_stage",
    "value_growth_segment",
    "rfm_segment",
)

_CATEGORICAL_INPUTS: dict[str, tuple[str, ...]] = {
    "risk_band": RISK_BANDS,
    "value_tier": VALUE_TIERS,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "value_growth_segment": VALUE_GROWTH_SEGMENTS,
    "rfm_segment": RFM_SEGMENTS,
}


def rule_table(policy: ActionPolicy | None = None) -> list[dict[str, Any]]:
    """The rule table as JSON-able rows (order, name, condition, action, rationale)."""
    policy = policy or ActionPolicy()
    return [
        {
            "order": order,
            "name": rule.name,
            "condition": rule.condition(policy),
            "action": rule.action,
            "rationale": rule.rationale,
        }
        for order, rule in enumerate(ACTION_RULES, start=1)
    ]


def _check_rule_inputs(frame: pd.DataFrame) -> None:
    missing = [c for c in RULE_INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"apply_action_rules needs columns {missing}")
    active = frame["is_active"]
    not_bool = ~active.isin((True, False))
    if not_bool.any():
        raise ValueError(
            f"is_active must be true or false: {int(not_bool.sum())} rows have "
            f"{sorted(map(str, active[not_bool].unique()))[:5]}"
        )
    for column, allowed in _CATEGORICAL_INPUTS.items():
        values = frame[column]
        unknown = values.notna() & ~values.isin(allowed)
        if unknown.any():
            raise ValueError(
                f"{column}: {int(unknown.sum())} rows have unknown values "
                f"{sorted(map(str, values[unknown].unique()))[:5]}; expected {list(allowed)}"
            )
    unbanded = active.astype(bool) & frame["risk_band"].isna()
    if unbanded.any():
        raise ValueError(
            f"{int(unbanded.sum())} active customers have no risk_band: score them with the "
            "churn model before suggesting actions"
        )
    for column in ("upsell_probability", "winback_probability"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = (frame[column].notna() & numbers.isna()) | (numbers < 0) | (numbers > 1)
        if bad.any():
            raise ValueError(f"{column}: {int(bad.sum())} rows are not probabilities in [0, 1]")


def _matched_rule_index(frame: pd.DataFrame, policy: ActionPolicy) -> np.ndarray:
    _check_rule_inputs(frame)
    matched = np.full(len(frame), -1, dtype=np.int64)
    for index, rule in enumerate(ACTION_RULES):
        hits = matched < 0
        for clause in rule.clauses:
            hits &= clause.mask(frame, policy)
        matched[hits] = index
    return matched


def apply_action_rules(frame: pd.DataFrame, policy: ActionPolicy | None = None) -> pd.DataFrame:
    """The matched rule of every row: columns ``action_rule``, ``suggested_action``,
    ``action_reason``, indexed like ``frame`` (which is not modified).

    Input columns: see :data:`RULE_INPUT_COLUMNS` (``churn_probability`` enters through
    ``risk_band``). Missing probabilities or segments never satisfy a clause, so e.g. a lapsed
    customer without a win-back score falls to ``lapsed_unlikely_back``. Unknown segment or band
    values, non-boolean ``is_active``, probabilities outside [0, 1] and active customers without
    a ``risk_band`` are errors.
    """
    policy = policy or ActionPolicy()
    matched = _matched_rule_index(frame, policy)
    names = np.array([rule.name for rule in ACTION_RULES], dtype=object)
    actions = np.array([rule.action for rule in ACTION_RULES], dtype=object)
    rationales = np.array([rule.rationale for rule in ACTION_RULES], dtype=object)
    return pd.DataFrame(
        {
            "action_rule": names[matched],
            "suggested_action": actions[matched],
            "action_reason": rationales[matched],
        },
        index=frame.index,
    )


# --------------------------------------------------------------------------------------------
# cross-sell
# --------------------------------------------------------------------------------------------


#: The warning of a call that scores feature rows without the purchase history.
CROSS_SELL_NEEDS_EVENTS = "cross-sell candidates need the purchase history (events): not computed"


def suggest_cross_sell(
    customer_ids: np.ndarray,
    upsell: np.ndarray,
    bought_pairs: pd.DataFrame,
    shares: Mapping[str, float],
    top_k: int,
) -> np.ndarray:
    """The cross-sell candidates of each row: a list of ``{"category", "propensity"}``.

    The categories the customer has not bought yet (``bought_pairs``: (customer_id, category)
    rows), by their share among buying customers (largest first, ties by name, NaN shares
    never), at most ``top_k``; propensity = the row's up-sell probability x the share. Rows
    without an up-sell probability (lapsed customers) get none. The one cross-sell rule of
    batch scoring, the service's events path and the Spark batch.
    """
    result = np.empty(len(customer_ids), dtype=object)
    for i in range(len(customer_ids)):
        result[i] = []
    categories = sorted(
        (c for c in shares if math.isfinite(shares[c])), key=lambda c: (-shares[c], c)
    )
    rows = np.flatnonzero(np.isfinite(upsell))
    if not categories or rows.size == 0:
        return result
    owned = np.zeros((len(customer_ids), len(categories)), dtype=bool)
    if len(bought_pairs):
        row_of = pd.Index(np.asarray(customer_ids, dtype=object)).get_indexer(
            bought_pairs["customer_id"].to_numpy(dtype=object)
        )
        column_of = pd.Index(categories).get_indexer(bought_pairs["category"].to_numpy(object))
        hit = (row_of >= 0) & (column_of >= 0)
        owned[row_of[hit], column_of[hit]] = True
    share_values = [float(shares[c]) for c in categories]
    available = ~owned[rows]
    picked = available & (np.cumsum(available, axis=1) <= top_k)
    probabilities = upsell[rows].tolist()
    for row, p, mask in zip(rows.tolist(), probabilities, picked, strict=True):
        result[row] = [
            {"category": categories[j], "propensity": p * share_values[j]}
            for j in np.flatnonzero(mask).tolist()
        ]
    return result


# --------------------------------------------------------------------------------------------
# reasons
# --------------------------------------------------------------------------------------------

FeatureUnit = Literal[
    "days",
    "weeks",
    "months",
    "count",
    "rate",
    "currency",
    "share",
    "trend",
    "ratio",
    "flag",
    "number",
]

_CURRENCY_TOKENS = frozenset({"spend", "revenue", "amount", "mrr", "monetary", "price"})
_CURRENCY_NAMES = frozenset(
    {"value_365d", "clv_value", "clv", "avg_order_value", "average_order_value", "customer_value"}
)
_COUNT_NAMES = frozenset({"unresolved_tickets", "clv_frequency", "purchase_days_total", "seats"})
_FLAG_NAMES = frozenset({"renewal_in_horizon"})

#: Units of the per-event-type families (``training.explain.FeatureName.family``).
_EVENT_UNITS: dict[str, FeatureUnit] = {
    "event_count": "count",
    "event_rate": "rate",
    "event_days_since_last": "days",
    "event_trend": "trend",
    "event_share": "share",
    "event_amount": "currency",
    "event_ratio": "rate",
}

#: (singular, plural) words of counted things, by the base of a ``<base>_<N>d``/``_total`` name.
_COUNT_WORDS: dict[str, tuple[str, str]] = {
    "events": ("interaction", "interactions"),
    "purchases": ("purchase", "purchases"),
    "visits": ("visit", "visits"),
    "complaints": ("complaint", "complaints"),
    "support_tickets": ("support ticket", "support tickets"),
    "campaign_opens": ("campaign e-mail opened", "campaign e-mails opened"),
    "campaign_clicks": ("campaign e-mail clicked", "campaign e-mails clicked"),
    "categories": ("product category bought", "product categories bought"),
    "new_categories": ("new product category bought", "new product categories bought"),
    "active_days": ("day with activity", "days with activity"),
    "active_weeks": ("week with activity", "weeks with activity"),
    "plan_changes": ("plan change", "plan changes"),
    "purchase_days": ("day with a purchase", "days with a purchase"),
    "unresolved_tickets": ("unresolved support ticket", "unresolved support tickets"),
}

#: Names for features whose column name reads badly; used before the caller's readable names,
#: which are usually derived from the column name too (``training.explain``).
_FEATURE_NAMES: dict[str, str] = {
    "clv_T_weeks": "time since first purchase",
    "clv_recency_weeks": "time between first and last purchase",
    "clv_frequency": "repeat purchase days",
    "clv_p_alive": "probability of still being a customer",
    "clv_expected_purchases": "expected purchases over the next year",
    "clv_monetary": "average repeat purchase value",
    "clv_expected_avg_spend": "expected average spend per purchase",
    "clv_value": "expected customer lifetime value",
    "interpurchase_mean_days": "usual time between purchases",
    "interpurchase_std_days": "variation of the time between purchases",
    "value_365d": "revenue over the last year incl. subscription",
    "mrr": "monthly recurring revenue",
    "mrr_change_90d": "change in monthly recurring revenue over 90 days",
    "has_subscription": "has a subscription",
    "subscription_tenure_days": "time as a subscriber",
    "last_purchase_channel": "channel of the last purchase",
    "campaign_click_rate_180d": "campaign e-mail click rate over 180 days",
    "avg_order_value": "average order value",
}

RAISES_RISK_SUFFIX = " (raises risk)"

#: Percentages are shown up to this size; beyond it a value reads as a multiple.
MAX_PERCENT = 999


def feature_unit(feature: str) -> FeatureUnit:
    """The unit a feature's values are in, from its name (the naming of ``features.lifecycle``
    and ``features.vocabulary``, parsed by ``training.explain.parse_feature_name``).

    Trends are log-ratios (shown as % change), shares and rates fractions (shown as %), money
    in the currency of the data; ``<base>_<N>d`` and ``*_total`` columns count things; per-day,
    per-active-day, per-seat and ``ratio_<A>_per_<B>_<N>d`` columns are rates (plain numbers).
    Event type slugs never decide the unit: ``ev_share_30d`` counts "share" events.
    """
    parts = parse_feature_name(feature)
    if parts is not None and parts.is_event:
        return _EVENT_UNITS[parts.family]
    if parts is not None and parts.family == "attribute_days":
        return "days"
    if parts is not None and parts.family == "attribute":
        return "number"
    tokens = set(feature.split("_"))
    if feature.startswith(("is_", "has_")) or feature in _FLAG_NAMES:
        return "flag"
    if "trend" in tokens:
        return "trend"
    if feature.startswith("share_") or tokens & {"rate", "share"} or feature == "clv_p_alive":
        return "share"
    if feature.endswith("_probability"):
        return "share"
    if feature == "recency_vs_rhythm":
        return "ratio"
    if tokens & _CURRENCY_TOKENS or feature in _CURRENCY_NAMES:
        return "currency"
    if (
        (parts is not None and parts.days is not None)
        or feature.endswith("_total")
        or feature in _COUNT_NAMES
    ):
        return "count"
    if feature.endswith("_days") or feature.startswith("days_"):
        return "days"
    if feature.endswith("_weeks"):
        return "weeks"
    if feature.endswith("_months"):
        return "months"
    if feature.endswith("_count") or feature.startswith(("n_", "num_")):
        return "count"
    return "number"


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA: a value a row does not have (lists and other objects are not)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plural(amount: float, words: tuple[str, str]) -> str:
    return words[0] if amount == 1 else words[1]


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _percent(fraction: float) -> str:
    """A fraction as a percentage; beyond +-``MAX_PERCENT``% as a multiple ("15x")."""
    percent = 100.0 * fraction
    if abs(round(percent)) > MAX_PERCENT:
        return f"{_number(round(fraction, 1))}x"
    return f"{percent:.0f}%" if percent.is_integer() or abs(percent) >= 10 else f"{percent:.1f}%"


def _change(log_ratio: float) -> str:
    """A log-ratio trend as a signed % change; rises beyond ``MAX_PERCENT``% read "more than 10x"
    (a log-ratio trend is at least -100%)."""
    percent = round(100.0 * math.expm1(log_ratio))
    if percent > MAX_PERCENT:
        return "more than 10x"
    if percent <= -100:
        return "-99%"
    return f"{percent:+d}%"


def format_feature_value(feature: str, value: Any, *, currency: str = "") -> str:
    """A feature value as a person reads it: "63 days", "3", "1,234.50", "45%", "-50%", "yes".

    ``currency`` is a prefix for money ("EUR ", "$"); missing values read "not recorded",
    strings are returned as they are. No percentage is shown beyond +-``MAX_PERCENT``%: a
    share above it reads as a multiple ("15x"), a trend above it as "more than 10x".
    """
    if is_missing(value):
        return "not recorded"
    if isinstance(value, str):
        return value
    unit = feature_unit(feature)
    number = float(value)
    if unit == "flag":
        return "yes" if number else "no"
    if not math.isfinite(number):
        return str(number)
    if unit == "days":
        days = round(number)
        return f"{days:,} {'day' if days == 1 else 'days'}"
    if unit == "weeks":
        weeks = round(number, 1)
        return f"{weeks:,g} {'week' if weeks == 1 else 'weeks'}"
    if unit == "months":
        return f"{_number(number)} {'month' if number == 1 else 'months'}"
    if unit in ("count", "rate"):
        return _number(number)
    if unit == "currency":
        sign = "-" if number < 0 else ""
        return f"{sign}{currency}{abs(number):,.2f}"
    if unit == "share":
        return _percent(number)
    if unit == "trend":
        return _change(number)
    if unit == "ratio":
        return f"{number:.1f}x"
    return _number(number)


def _readable(feature: str, readable_names: Mapping[str, str]) -> str:
    if feature in _FEATURE_NAMES:
        return _FEATURE_NAMES[feature]
    if feature in readable_names:
        return readable_names[feature]
    return readable_feature_name(feature)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float; None when missing, text or infinite."""
    if is_missing(value) or isinstance(value, str | bytes | bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _period(days: int | None) -> str:
    return f"in the last {days} days" if days is not None else "in total"


def _count_column(parts: FeatureName) -> str | None:
    """The count column a ``*_trend_<N>d`` column compares: ``ev_<T>_<N>d`` / ``<base>_<N>d``."""
    if parts.days is None:
        return None
    prefix = f"ev_{parts.subject}" if parts.is_event else parts.subject
    return f"{prefix}_{parts.days}d"


def _trend_sentence(parts: FeatureName, trend: float, row: Mapping[str, Any], currency: str) -> str:
    """A trend in words.

    "<what> in the last 90 days: 3, down from 11 in the 90 days before" when the row has the
    count the trend compares (the count before is ``expm1(log1p(count) - trend)``), else the
    change in % ("down 73%"; rises beyond ``MAX_PERCENT``% read "up more than 10x").
    """
    days = parts.days
    if parts.is_event:
        words = event_words(parts.subject)[1]
    else:
        words = _COUNT_WORDS.get(parts.subject, (base_words(parts.subject),) * 2)[1]
    count_column = _count_column(parts)
    now = _finite(row.get(count_column)) if count_column else None
    if now is not None and now >= 0:
        before = math.expm1(math.log1p(now) - trend)
        if before > -0.5:  # else the row's count and trend disagree: fall back to the change
            before = round(max(before, 0.0), 6)
            if abs(before - round(before)) < 1e-6:
                before = float(round(before))
            now_text = format_feature_value(count_column, now, currency=currency)
            before_text = format_feature_value(count_column, before, currency=currency)
            if now_text == before_text:
                change = f"the same as in the {days} days before"
            else:
                direction = "up" if now > before else "down"
                change = f"{direction} from {before_text} in the {days} days before"
            return f"{words} in the last {days} days: {now_text}, {change}"
    base = words if parts.is_event else parts.subject.replace("_", " ")
    period = f"in the last {days} days vs the {days} before" if days else "vs the previous period"
    change = math.expm1(trend)
    percent = round(100 * change)
    if percent == 0:
        return f"{base} flat {period}"
    if percent > MAX_PERCENT:
        return f"{base} up more than 10x {period}"
    if percent <= -100:
        return f"{base} down more than 99% {period}"
    direction = "down" if change < 0 else "up"
    return f"{base} {direction} {abs(percent)}% {period}"


def _parsed_sentence(
    feature: str,
    parts: FeatureName,
    value: Any,
    shown: str,
    row: Mapping[str, Any],
    currency: str,
) -> str | None:
    """The sentence of a generated column (``training.explain.parse_feature_name``); None when
    the generic "<readable name>: <value>" reads best."""
    missing = is_missing(value)
    number = _finite(value)
    family, days = parts.family, parts.days
    subject = parts.subject.replace("_", " ")
    if family in ("days_since_last", "event_days_since_last"):
        one = event_words(parts.subject)[0]
        return f"no {one} recorded" if missing else f"last {one} {shown} ago"
    if family in ("share", "event_share"):
        many = event_words(parts.subject)[1]
        if missing:
            return f"share of {many} in the last {days} days not recorded"
        return f"{many} are {shown} of interactions in the last {days} days"
    if family == "attribute":
        return f"customer attribute {subject}: {shown}"
    if family == "attribute_days":
        return f"{subject} not recorded" if missing else f"{subject} {shown} ago"
    if number is None:
        return None
    if family in ("trend", "event_trend"):
        return _trend_sentence(parts, number, row, currency)
    if family == "event_count":
        return f"{shown} {_plural(number, event_words(parts.subject))} {_period(days)}"
    if family == "event_rate":
        words = _plural(number, event_words(parts.subject))
        if parts.kind == "per_active_day":
            return f"{shown} {words} per active day {_period(days)}"
        if parts.kind == "per_seat":
            return f"{shown} {words} per seat {_period(days)}"
        if days is None:
            return f"{shown} {words} per day since the first activity"
        return f"{shown} {words} per day over the last {days} days"
    if family == "event_ratio":
        per = event_words(parts.per or "")[0]
        return f"{shown} {_plural(number, event_words(parts.subject))} per {per} {_period(days)}"
    if family in ("windowed", "total"):
        period = f" {_period(days)}"
        unit = feature_unit(feature)
        if unit == "count" and parts.subject in _COUNT_WORDS:
            return f"{shown} {_plural(number, _COUNT_WORDS[parts.subject])}{period}"
        if unit == "currency" and parts.subject == "spend":
            return f"spend of {shown}{period}"
    return None


def _sentence(
    feature: str,
    value: Any,
    readable_names: Mapping[str, str],
    currency: str,
    row: Mapping[str, Any],
) -> str:
    """One feature value as a sentence, without the "(raises risk)" of a reason.

    Features of the lifecycle feature set and the per-event-type columns get a sentence of
    their own ("3 complaints in the last 90 days", "spend down 50% vs the previous period",
    "last add contact event 12 days ago", "2.5 dislikes per like in the last 30 days"); any
    other feature reads "<readable name>: <value>", the readable name taken from
    ``readable_names`` (the model's feature metadata) or derived from the column name.
    ``row`` is the customer's row: a trend then reads with the counts it compares ("add
    contact events in the last 90 days: 3, down from 11 in the 90 days before").
    """
    shown = format_feature_value(feature, value, currency=currency)
    missing = is_missing(value)
    if feature == "recency_days":
        return "no activity recorded" if missing else f"no activity for {shown}"
    if feature == "recency_purchase_days":
        return "never purchased" if missing else f"no purchase for {shown}"
    if feature == "tenure_days" and not missing:
        return f"customer for {shown}"
    if feature == "days_to_renewal" and not missing:
        return f"subscription renews in {shown}"
    if feature == "recency_vs_rhythm" and not missing:
        return f"silent for {shown} the usual time between purchases"
    number = _finite(value)
    if feature == "renewal_in_horizon" and number is not None:
        if number:
            return "subscription renews within the prediction horizon"
        return "no subscription renewal within the prediction horizon"
    if feature == "bill_period_months" and number is not None:
        return "billed every month" if number == 1 else f"billed every {shown}"
    if feature == "seats" and number is not None:
        return f"{shown} {_plural(number, ('seat', 'seats'))} on the subscription"
    parts = parse_feature_name(feature)
    if parts is not None and (
        text := _parsed_sentence(feature, parts, value, shown, row, currency)
    ):
        return text
    if number is not None and feature_unit(feature) == "count" and feature in _COUNT_WORDS:
        return f"{shown} {_plural(number, _COUNT_WORDS[feature])}"
    return f"{_readable(feature, readable_names)}: {shown}"


# --------------------------------------------------------------------------------------------
# reasons: is a risk-raising contribution a plausible risk to a person?
# --------------------------------------------------------------------------------------------

Polarity = Literal["engagement", "risk", "neutral"]

#: Words in an event type slug that make its events trouble: more of them, or a recent one,
#: reads as a churn risk ("3 complaints", "payment failed").
RISK_EVENT_WORDS = frozenset(
    {
        "complaint", "complaints", "ticket", "tickets", "unsubscribe", "unsubscribed", "cancel",
        "cancelled", "canceled", "cancellation", "refund", "refunded", "chargeback", "churn",
        "churned", "downgrade", "downgraded", "failed", "failure", "error", "escalation",
        "dispute", "lost", "uninstall", "uninstalled",
    }
)  # fmt: skip
#: Words that read either way (a dislike is still activity; a resolved ticket is good news;
#: ``other`` pools unlike types): such types get no plausibility rule. Checked first.
AMBIGUOUS_EVENT_WORDS = frozenset(
    {
        "dislike", "unfriend", "unlike", "unfollow", "block", "blocked", "report", "hide",
        "mute", "skip", "return", "returned", "resolved", "change", "bounce", "bounced", "other",
        "type",
    }
)  # fmt: skip
#: Canonical ``<base>_<N>d`` / ``<base>_total`` / ``<base>_trend`` bases counting activity,
#: purchases or spend: more is engagement.
ENGAGEMENT_BASES = frozenset(
    {
        "events", "activity", "purchases", "purchase_count", "orders", "visits", "spend",
        "revenue", "quantity", "active_days", "active_weeks", "categories",
        "distinct_categories", "new_categories", "purchase_days", "campaign_opens",
        "campaign_clicks", "logins", "sessions",
    }
)  # fmt: skip
#: Canonical bases counting trouble: more is risk.
RISK_BASES = frozenset({"complaints", "support_tickets", "tickets", "unresolved_tickets"})
#: Count base of the canonical ``days_since_last_<type>`` types (for the usual gap).
_TYPE_BASES = {
    "visit": "visits",
    "purchase": "purchases",
    "complaint": "complaints",
    "support_ticket": "support_tickets",
    "campaign_open": "campaign_opens",
    "campaign_click": "campaign_clicks",
}
#: Activity on at least this share of the days (weeks) of a window is high engagement.
ACTIVE_SHARE_HIGH = 0.5
#: Without a usual gap in the row, a last event at most this many days ago is recent.
RECENT_DAYS = 7.0


def event_polarity(slug: str) -> Polarity:
    """What more events of a type mean: ambiguous words first, then risk words, else activity."""
    tokens = set(slug.split("_"))
    if tokens & AMBIGUOUS_EVENT_WORDS:
        return "neutral"
    if tokens & RISK_EVENT_WORDS:
        return "risk"
    return "engagement"


def _reading(feature: str) -> tuple[Polarity, str, FeatureName | None]:
    """(polarity, shape, parts): shape "level" (counts, rates, amounts), "trend", "recency"
    (days since the last event) or "rhythm" (``recency_vs_rhythm``)."""
    if feature in ("recency_days", "recency_purchase_days"):
        return "engagement", "recency", None
    if feature == "recency_vs_rhythm":
        return "engagement", "rhythm", None
    if feature == "unresolved_tickets":
        return "risk", "level", None
    parts = parse_feature_name(feature)
    if parts is None:
        return "neutral", "", None
    family = parts.family
    if family in ("event_count", "event_rate", "event_amount"):
        return event_polarity(parts.subject), "level", parts
    if family == "event_trend":
        return event_polarity(parts.subject), "trend", parts
    if family in ("event_days_since_last", "days_since_last"):
        return event_polarity(parts.subject), "recency", parts
    if family in ("windowed", "total", "trend"):
        shape = "trend" if family == "trend" else "level"
        if parts.subject in ENGAGEMENT_BASES:
            return "engagement", shape, parts
        if parts.subject in RISK_BASES:
            return "risk", shape, parts
    return "neutral", "", parts


def _exposure(days: int | None, row: Mapping[str, Any]) -> float | None:
    """Days a window covers for this customer: ``min(days, tenure)`` (lifetime: the tenure)."""
    tenure = _finite(row.get("tenure_days"))
    if days is None:
        return max(tenure, 1.0) if tenure is not None else None
    return max(min(float(days), tenure), 1.0) if tenure is not None else float(days)


def _pace(parts: FeatureName, value: float, row: Mapping[str, Any]) -> float | None:
    """Events (or money) per day of a level column; per-day rates are already one."""
    if parts.kind in ("per_day", "per_active_day"):
        return value
    exposure = _exposure(parts.days, row)
    if exposure is None:
        return None
    return value / exposure


def _same_measure(parts: FeatureName, row: Mapping[str, Any]) -> list[tuple[FeatureName, float]]:
    """The row's other windows of the same measure (same family, subject and kind)."""
    found = []
    for column, value in row.items():
        other = parse_feature_name(str(column))
        number = _finite(value)
        if (
            other is not None
            and number is not None
            and other != parts
            and (other.family, other.subject, other.kind, other.per)
            == (parts.family, parts.subject, parts.kind, parts.per)
        ):
            found.append((other, number))
    return found


def _trends_of(parts: FeatureName, row: Mapping[str, Any]) -> list[float]:
    """The row's trends of the measure of a level column (``ev_<T>_trend_<N>d``,
    ``<base>_trend[_<N>d]``; ``activity_trend`` for events and active days/weeks)."""
    if parts.is_event:
        family, subjects = "event_trend", {parts.subject}
    else:
        family, subjects = "trend", {parts.subject}
        if parts.subject in ("events", "active_days", "active_weeks"):
            subjects.add("activity")
    trends = []
    for column, value in row.items():
        other = parse_feature_name(str(column))
        if other is not None and other.family == family and other.subject in subjects:
            trend = _finite(value)
            if trend is not None:
                trends.append(trend)
    return trends


def _engaged(parts: FeatureName, value: float, row: Mapping[str, Any]) -> bool:
    """Does the row show this engagement level as high, i.e. not part of a decline?

    Zero is never high. Days (weeks) with activity on at least ``ACTIVE_SHARE_HIGH`` of the
    window always are. Otherwise the row's evidence decides: the pace (per day of the window,
    the window capped at the tenure) against every longer window of the same measure in the
    row (``_total`` over the tenure counts as the longest), and the measure's own trends. Any
    sign of decline (a lower pace than a longer window, a falling trend) keeps the value a
    plausible reason; evidence that all points the other way makes it high. Without evidence
    the row cannot tell, and the value is not called high.
    """
    if value <= 0:
        return False
    if parts.subject in ("active_days", "active_weeks") and parts.days is not None:
        exposure = _exposure(parts.days, row) or float(parts.days)
        span = exposure / 7.0 if parts.subject == "active_weeks" else exposure
        if value / max(span, 1.0) >= ACTIVE_SHARE_HIGH:
            return True
    declines: list[bool] = []
    pace = _pace(parts, value, row)
    if pace is not None and parts.days is not None:
        for other, number in _same_measure(parts, row):
            if other.days is None or other.days > parts.days:
                long_pace = _pace(other, number, row)
                if long_pace is not None:
                    declines.append(pace < long_pace)
    declines.extend(trend < 0 for trend in _trends_of(parts, row))
    return bool(declines) and not any(declines)


def _usual_gap(feature: str, parts: FeatureName | None, row: Mapping[str, Any]) -> float | None:
    """The customer's usual days between events of the kind a recency column measures, from
    the row: ``interpurchase_mean_days`` for purchases, else the longest window with at least
    two events (its days, capped at the tenure, per event or per active day)."""
    if feature == "recency_purchase_days" or (parts is not None and parts.subject == "purchase"):
        gap = _finite(row.get("interpurchase_mean_days"))
        if gap is not None and gap > 0:
            return gap
    if feature == "recency_days":
        bases = ("active_days", "events")
    elif feature == "recency_purchase_days":
        bases = ("purchase_days", "purchases")
    elif parts is not None and parts.family == "event_days_since_last":
        bases = (f"ev_{parts.subject}",)
    elif parts is not None and parts.subject in _TYPE_BASES:
        bases = (_TYPE_BASES[parts.subject],)
    else:
        return None
    for base in bases:
        windows = []
        for column, value in row.items():
            other = parse_feature_name(str(column))
            count = _finite(value)
            if other is None or count is None or count < 2 or other.days is None:
                continue
            prefix = f"ev_{other.subject}" if other.family == "event_count" else other.subject
            if other.family in ("windowed", "event_count") and prefix == base:
                windows.append((other.days, count))
        if windows:
            days, count = max(windows)
            return (_exposure(days, row) or float(days)) / count
    return None


def is_plausible_risk(
    feature: str, value: Any, feature_values: Mapping[str, Any] | None = None
) -> bool:
    """Does "<feature> = <value> (raises risk)" read as a plausible churn risk to a person?

    A model may push the risk up for a value that, read alone, says the opposite (trees split
    on interactions, and a customer can be unusually *active* for their segment): "90 days
    with activity in the last 90 days (raises risk)" is true to the model and useless to a
    retention manager. The rule, by name pattern (``training.explain.parse_feature_name``) and
    the customer's own row (``feature_values``; no population statistics):

    * **engagement-like** (more is engagement: windowed/total counts, rates and amounts of
      activity, visits, purchases, spend, logins..., ``active_days_<N>d``, per-event-type
      ``ev_<T>_*`` counts/rates/amounts for activity types): a high value is not a risk. High
      means the row shows it is not a decline (see :func:`_engaged`: activity on at least
      half the days; a pace at or above the customer's own longer window; else a rising or
      flat trend of the same measure). Zero, a decline or a value the row cannot judge stay
      reasons.
    * **trends** of engagement (``activity_trend``, ``spend_trend``, ``ev_<T>_trend_<N>d``):
      a rise is not a risk; flat or falling is. Trends of risk-like measures the other way.
    * **recency** (``recency_days``, ``recency_purchase_days``, ``days_since_last_<type>``,
      ``ev_<T>_days_since_last``): a recent last event is not a risk. Recent means at most the
      customer's usual gap between such events (``interpurchase_mean_days`` or a window count
      in the row), at least one day; without a gap, at most ``RECENT_DAYS``. Never having one
      ("no visit recorded") is a reason. ``recency_vs_rhythm`` below 1 (on rhythm) is not.
    * **risk-like** (complaints, support/unresolved tickets, event types with a word of
      ``RISK_EVENT_WORDS`` such as ``payment_failed``): a zero count or a falling trend is not
      a risk, nor is never having had one; any other value is.
    * **neutral**: everything else, including ambiguous types (``AMBIGUOUS_EVENT_WORDS``:
      dislikes, unfriends, resolved tickets, the pooled ``other``), shares, ratios, attributes,
      plan and money columns: always plausible, shown as they are.
    """
    row = feature_values or {}
    polarity, shape, parts = _reading(feature)
    if polarity == "neutral":
        return True
    if shape == "recency":
        if is_missing(value):
            return polarity == "engagement"
        days = _finite(value)
        if polarity == "risk" or days is None:
            return True
        gap = _usual_gap(feature, parts, row)
        recent = days <= max(gap, 1.0) if gap is not None else days <= RECENT_DAYS
        return not recent
    number = _finite(value)
    if number is None:
        return True
    if shape == "rhythm":
        return number >= 1.0
    if shape == "trend":
        return number <= 0 if polarity == "engagement" else number >= 0
    if polarity == "risk":
        return number > 0
    return parts is None or not _engaged(parts, number, row)


def reason_texts(
    contributions: Mapping[str, float],
    feature_values: Mapping[str, Any],
    readable_names: Mapping[str, str],
    top_k: int = 3,
    *,
    currency: str = "",
) -> list[dict[str, Any]]:
    """The ``top_k`` reasons for a customer's churn risk, strongest first.

    ``contributions`` are per-feature SHAP-like shares of the churn score (the bias term is not
    a feature: leave it out). Only positive contributions push the risk up, so only they become
    reasons; zero, negative and NaN ones never do. Ties go alphabetically by feature. A
    contribution whose value does not read as a plausible risk (:func:`is_plausible_risk`,
    judged on ``feature_values``: e.g. 90 active days in 90, a rising activity trend, a visit
    yesterday) is skipped and the next one taken. Each reason: ``{"feature", "text",
    "contribution"}``; a feature absent from ``feature_values`` reads as not recorded.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    raising = sorted(
        (-float(c), str(feature))
        for feature, c in contributions.items()
        if math.isfinite(float(c)) and float(c) > 0
    )
    reasons: list[dict[str, Any]] = []
    for negative, feature in raising:
        value = feature_values.get(feature)
        if not is_plausible_risk(feature, value, feature_values):
            continue
        text = _sentence(feature, value, readable_names, currency, feature_values)
        reasons.append(
            {"feature": feature, "text": text + RAISES_RISK_SUFFIX, "contribution": -negative}
        )
        if len(reasons) == top_k:
            break
    return reasons


def reason_candidate_count(reason_candidates: int, top_k: int) -> int:
    """How many of a customer's largest contributions (by size) to explain for ``top_k``
    reasons: ``reason_candidates``, and never fewer than ``top_k``, since candidates that
    lower the risk or do not read as a plausible risk are skipped."""
    return max(reason_candidates, top_k)


def reasons_from_contributions(
    explained: Iterable[Mapping[str, Any]],
    feature_values: Mapping[str, Any],
    readable_names: Mapping[str, str],
    *,
    top_k: int,
    currency: str = "",
) -> list[dict[str, Any]]:
    """A customer's reasons (:func:`reason_texts`) from the model's largest contributions.

    ``explained``: records as ``training.explain.top_reasons`` writes them, the
    :func:`reason_candidate_count` largest contributions by size: ``feature``,
    ``contribution``, ``value`` (the value the model saw, which wins over
    ``feature_values``) and optionally a readable ``label`` (which wins over
    ``readable_names``). ``feature_values``: the customer's row, read by
    :func:`is_plausible_risk` for related columns. The one path from contributions to reasons
    of batch scoring and the service's fast path.
    """
    explained = list(explained)
    contributions = {r["feature"]: float(r["contribution"]) for r in explained}
    values = {**feature_values, **{r["feature"]: r.get("value") for r in explained}}
    names = {**readable_names, **{r["feature"]: r["label"] for r in explained if r.get("label")}}
    return reason_texts(contributions, values, names, top_k=top_k, currency=currency)
