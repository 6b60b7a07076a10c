"""Request and response models of the HTTP API: ``POST /score``, ``POST /risk_list``,
``GET /model_info``, ``POST /admin/reload``.

Plain pydantic v2 models, no serving framework: BentoML turns them into the OpenAPI document
(field descriptions and examples included) and validates requests with them, so a bad request
is answered with 400 and a message that names the field, before any model runs. A request
model's own example is an OpenAPI 3.0 ``example`` (one request), not JSON Schema's
``examples`` list: BentoML 1.4's OpenAPI writer has no ``examples`` at the top of a schema and
fails on it. Every documented request example is one the service accepts.

Requests are strict: unknown fields are rejected (a typo such as ``customer`` for
``customers`` must not silently score nothing), numbers must be finite (NaN and infinity are
not values a CRM export can mean), batches must be non-empty and at most
:data:`MAX_CUSTOMERS_PER_REQUEST` customers or :data:`MAX_EVENTS_PER_REQUEST` events. The
limits are module constants read at validation time, so a deployment can change them before
the service starts. Feature names inside ``CustomerFeatures.features`` are not checked here:
the service checks them against the feature list of the loaded model.

Responses carry NaN-free numbers: a probability that does not apply (churn for a lapsed
customer, win-back for an active one) is ``null``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from serving.decisions import ACTIONS, RISK_BANDS, ActionPolicy, RiskBands

__all__ = [
    "MAX_CUSTOMERS_PER_REQUEST",
    "MAX_EVENTS_PER_REQUEST",
    "MAX_FEATURES_PER_CUSTOMER",
    "MAX_RISK_LIST_ROWS",
    "NON_FINITE_WORDS",
    "ActionRuleInfo",
    "CrossSellCandidate",
    "CustomerFeatures",
    "EventIn",
    "ModelInfo",
    "ModelVersions",
    "Reason",
    "ReloadResponse",
    "RiskListRequest",
    "RiskListResponse",
    "RiskListRow",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreResult",
    "Segments",
    "TaskModelInfo",
    "feature_value_problems",
]

#: Most customers one ``POST /score`` may carry (feature rows).
MAX_CUSTOMERS_PER_REQUEST = 1000
#: Most raw events one ``POST /score`` may carry.
MAX_EVENTS_PER_REQUEST = 100_000
#: Most feature values per customer row.
MAX_FEATURES_PER_CUSTOMER = 2000
#: Largest ``top_n`` of ``POST /risk_list``.
MAX_RISK_LIST_ROWS = 10_000

RiskBandName = Literal[RISK_BANDS]  # type: ignore[valid-type]
ActionName = Literal[ACTIONS]  # type: ignore[valid-type]
RfmSegment = Literal[RFM_SEGMENTS]  # type: ignore[valid-type]
LifecycleStage = Literal[LIFECYCLE_STAGES]  # type: ignore[valid-type]
ValueTier = Literal[VALUE_TIERS]  # type: ignore[valid-type]
ValueGrowthSegment = Literal[VALUE_GROWTH_SEGMENTS]  # type: ignore[valid-type]
Task = Literal["churn", "upsell", "winback"]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

#: Feature strings refused as spelled-out NaN or infinity (compared trimmed and lower-cased):
#: a CRM export that writes "NaN" for a missing number means null, and must send null.
NON_FINITE_WORDS = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


CustomerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(_not_blank),
    Field(description="The customer's identifier in the CRM.", examples=["C00042"]),
]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_not_blank)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _batch_size(values: Any, what: str, limit: int) -> Any:
    """Reject empty and oversized batches before validating their items one by one."""
    if isinstance(values, list | tuple):
        if len(values) == 0:
            raise ValueError(f"{what} is empty: send at least one")
        if len(values) > limit:
            raise ValueError(
                f"at most {limit:,} {what} per request, got {len(values):,}: split the batch"
            )
    return values


# --------------------------------------------------------------------------------------------
# POST /score
# --------------------------------------------------------------------------------------------


class EventIn(_Request):
    """One raw interaction, in the canonical event layout of ``features.contract``."""

    customer_id: CustomerId
    timestamp: datetime = Field(
        ...,
        description=(
            "When the event happened: ISO 8601; a time zone offset is converted to UTC, a "
            "timestamp without one is read as UTC."
        ),
        examples=["2024-08-14T09:30:00Z"],
    )
    event_type: Label = Field(
        ...,
        description=(
            "visit, purchase, support_ticket, ticket_resolved, complaint, campaign_open, "
            "campaign_click or subscription_change; other names are kept as they are."
        ),
        examples=["purchase"],
    )
    amount: float | None = Field(
        None, ge=0.0, description="Revenue in currency units (purchases).", examples=[59.9]
    )
    quantity: float | None = Field(None, ge=0.0, description="Items bought.", examples=[2])
    category: Label | None = Field(None, description="Product line.", examples=["accessories"])
    channel: Label | None = Field(None, description="Sales or contact channel.", examples=["web"])

    @field_validator("timestamp")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value


#: Value types a feature row may hold as JSON delivers them (``bool`` becomes 1.0/0.0).
_PLAIN_VALUE_TYPES = frozenset({float, int, bool, str, type(None)})

#: The feature row of the documented examples: ``is_active`` (it chooses between the churn and
#: the win-back model) and a few model features; the others are scored as missing.
_FEATURES_EXAMPLE: dict[str, Any] = {
    "is_active": True,
    "recency_days": 63.0,
    "complaints_90d": 3,
    "value_365d": 420.5,
    "rfm_segment": "at_risk",
}
_EVENT_EXAMPLE: dict[str, Any] = {
    "customer_id": "C00042",
    "timestamp": "2024-08-14T09:30:00Z",
    "event_type": "purchase",
    "amount": 59.9,
    "category": "accessories",
}


def _feature_problem(name: Any, value: Any) -> str | None:
    """What is wrong with one feature value, in words (None: nothing)."""
    if not isinstance(name, str) or not name.strip():
        return f"feature name {name!r} must be a non-empty string"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond the largest float; its digits are not repeated
            return (
                f"feature {name!r} is an integer too large for a number: only finite numbers "
                "are accepted (null if missing)"
            )
        if not finite:
            return (
                f"feature {name!r} is {value}: only finite numbers are accepted (null if missing)"
            )
        return None
    if isinstance(value, str):
        if value.strip().lower() in NON_FINITE_WORDS:
            return (
                f"feature {name!r} is {value!r}: only finite numbers are accepted (null if missing)"
            )
        return None
    return f"feature {name!r} has a {type(value).__name__}: expected a number, a string or null"


def feature_value_problems(features: Mapping[Any, Any]) -> list[str]:
    """Every rule a feature row breaks, one sentence per feature, in row order (empty: valid).

    The rules of ``CustomerFeatures.features``: names are non-blank strings; values are null,
    booleans, finite numbers (no NaN, no infinity, no integer beyond the float range) or strings
    that do not spell NaN or infinity (:data:`NON_FINITE_WORDS`). The reference the fast check
    of :class:`CustomerFeatures` falls back on for its messages."""
    return [p for n, v in features.items() if (p := _feature_problem(n, v)) is not None]


def _looks_plain(features: dict[Any, Any]) -> bool:
    """True when only the numbers of ``features`` may break a rule: names are non-blank strings,
    values have JSON's own types and no string spells NaN or infinity. Bulk operations, no
    Python loop over every value: this decides for nearly every row of a request."""
    try:
        if not all(map(str.strip, features)):
            return False
    except TypeError:  # a name that is not a string
        return False
    values = features.values()
    kinds = set(map(type, values))
    if not kinds <= _PLAIN_VALUE_TYPES:
        return False
    if str in kinds:
        texts = [v for v in values if v.__class__ is str]
        return NON_FINITE_WORDS.isdisjoint(map(str.lower, map(str.strip, texts)))
    return True


def _refusal(problems: list[str]) -> ValueError:
    shown = "; ".join(problems[:10])
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return ValueError(shown + more)


def _checked_features(values: Any, validate: ValidatorFunctionWrapHandler) -> Any:
    """``values`` validated as ``dict[str, float | str | None]`` under the rules of
    :func:`feature_value_problems`, with its messages.

    Fast: a plain row (:func:`_looks_plain`) goes straight to pydantic's compiled validation,
    which refuses NaN, infinity and integers beyond the float range itself (``allow_inf_nan``
    is off) and turns booleans and integers into floats; only when it refuses, or the row is not
    plain, are the values looked at one by one, to say which feature is wrong and why."""
    if not isinstance(values, dict):
        return validate(values)  # pydantic's own "should be a valid dictionary"
    if len(values) > MAX_FEATURES_PER_CUSTOMER:
        raise ValueError(
            f"at most {MAX_FEATURES_PER_CUSTOMER:,} features per customer, got {len(values):,}"
        )
    if _looks_plain(values):
        try:
            return validate(values)
        except ValidationError:
            problems = feature_value_problems(values)
            if not problems:
                raise
    else:
        problems = feature_value_problems(values)
        if not problems:
            return validate(values)
    raise _refusal(problems)


class CustomerFeatures(_Request):
    """One customer's feature row, as produced by the feature pipeline at a cutoff."""

    customer_id: CustomerId
    features: dict[str, float | str | None] = Field(
        default_factory=dict,
        description=(
            "Feature values by column name (numbers, category strings, null when missing; "
            "booleans become 1/0). Names are checked by the service against the model's "
            "feature list; `is_active` is required (1: active, scored for churn; 0: lapsed, "
            "scored for win-back)."
        ),
        examples=[_FEATURES_EXAMPLE],
    )

    @field_validator("features", mode="wrap")
    @classmethod
    def _valid_features(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _checked_features(value, handler)


class ScoreRequest(_Request):
    """Customers to score: feature rows, or raw recent events to compute them from (not both)."""

    # ``title``: BentoML validates a subclass of its own; errors and the document keep this name.
    model_config = ConfigDict(
        title="ScoreRequest",
        json_schema_extra={
            "example": {"customers": [{"customer_id": "C00042", "features": _FEATURES_EXAMPLE}]}
        },
    )

    customers: list[CustomerFeatures] | None = Field(
        None,
        description=(
            f"Feature rows, 1 to {MAX_CUSTOMERS_PER_REQUEST:,} customers with distinct ids. "
            "Give this or `events`."
        ),
    )
    events: list[EventIn] | None = Field(
        None,
        description=(
            f"Raw events, 1 to {MAX_EVENTS_PER_REQUEST:,}; every customer appearing in them is "
            "scored. Give this or `customers`."
        ),
        examples=[[_EVENT_EXAMPLE]],
    )
    as_of: date | None = Field(
        None,
        description=(
            "Cutoff date of the scores (YYYY-MM-DD). With `events`, only events strictly "
            "before it are used. When omitted the service chooses it and reports it in the "
            "response."
        ),
        examples=["2024-09-01"],
    )

    @field_validator("customers", mode="before")
    @classmethod
    def _customers_batch(cls, value: Any) -> Any:
        return _batch_size(value, "customers", MAX_CUSTOMERS_PER_REQUEST)

    @field_validator("events", mode="before")
    @classmethod
    def _events_batch(cls, value: Any) -> Any:
        return _batch_size(value, "events", MAX_EVENTS_PER_REQUEST)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ScoreRequest:
        if self.customers is None and self.events is None:
            raise ValueError(
                "give exactly one of 'customers' (feature rows) or 'events' (raw events); "
                "neither was given"
            )
        if self.customers is not None and self.events is not None:
            raise ValueError(
                "give exactly one of 'customers' (feature rows) or 'events' (raw events), not both"
            )
        if self.customers is not None:
            counts = Counter(c.customer_id for c in self.customers)
            duplicates = sorted(customer_id for customer_id, n in counts.items() if n > 1)
            if duplicates:
                raise ValueError(
                    f"customer ids must be distinct; repeated: {duplicates[:10]}"
                    + (f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else "")
                )
        return self


class Reason(_Response):
    """One reason for the churn risk: a feature that pushes the score up."""

    feature: str = Field(..., description="Feature column.", examples=["recency_days"])
    text: str = Field(
        ..., description="What it means.", examples=["no activity for 63 days (raises risk)"]
    )
    contribution: float = Field(
        ..., gt=0.0, description="Its share of the churn score (log-odds, SHAP).", examples=[0.81]
    )


class CrossSellCandidate(_Response):
    """A product category the customer has not bought yet."""

    category: str = Field(..., examples=["accessories"])
    propensity: float = Field(..., description="How likely a purchase is.", examples=[0.34])


class Segments(_Response):
    """The CRM segments of the customer at the cutoff (see ``features.segments``)."""

    rfm_segment: RfmSegment | None = Field(None, description="RFM segment.", examples=["at_risk"])
    lifecycle_stage: LifecycleStage | None = Field(
        None, description="Lifecycle stage.", examples=["decline"]
    )
    value_tier: ValueTier | None = Field(
        None, description="Value tier, A = top 20% by yearly revenue.", examples=["B"]
    )
    value_growth_segment: ValueGrowthSegment | None = Field(
        None, description="IBM's value-growth group.", examples=["sleeping"]
    )


class ModelVersions(_Response):
    """Registered model versions that produced the scores (null: no model for that task)."""

    churn: str | None = Field(None, examples=["7"])
    upsell: str | None = Field(None, examples=["3"])
    winback: str | None = Field(None, examples=["2"])


class ScoreResult(_Response):
    """Scores, segments, reasons and the suggested action for one customer."""

    customer_id: str = Field(..., examples=["C00042"])
    status: Literal["scored", "unknown_customer", "no_history"] = Field(
        ...,
        description=(
            "scored; unknown_customer: the service has no data on this customer; no_history: "
            "the customer has no activity before the cutoff. Only scored results carry scores."
        ),
    )
    churn_probability: Probability | None = Field(
        None,
        description="Calibrated probability of churning in the horizon (active customers only).",
        examples=[0.42],
    )
    churn_percentile: float | None = Field(
        None, ge=0.0, le=100.0, description="Percentile of the churn score.", examples=[93.5]
    )
    risk_band: RiskBandName | None = Field(None, description="Churn risk band.", examples=["high"])
    at_risk: bool | None = Field(
        None, description="True when the customer is in the high churn risk band."
    )
    upsell_probability: Probability | None = Field(
        None, description="Calibrated probability of buying more (active customers only)."
    )
    cross_sell_candidates: list[CrossSellCandidate] = Field(
        default_factory=list, description="Categories not bought yet, most likely first."
    )
    reasons: list[Reason] = Field(
        default_factory=list, description="Top reasons raising the churn risk, strongest first."
    )
    winback_probability: Probability | None = Field(
        None, description="Calibrated probability of returning (lapsed customers only)."
    )
    segments: Segments | None = None
    suggested_action: ActionName | None = Field(
        None, description="What the CRM team should do (see /model_info action_rules)."
    )
    action_reason: str | None = Field(None, description="Why: the rationale of the rule.")
    model_versions: ModelVersions = Field(default_factory=ModelVersions)


class ScoreResponse(_Response):
    """One result per requested customer, in request order."""

    results: list[ScoreResult]
    as_of: date = Field(..., description="Cutoff date the scores refer to.")
    model_versions: ModelVersions
    warnings: list[str] = Field(
        default_factory=list,
        description="Input problems that did not stop scoring, with counts (e.g. ignored rows).",
    )


# --------------------------------------------------------------------------------------------
# POST /risk_list
# --------------------------------------------------------------------------------------------


def _distinct(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else list(dict.fromkeys(values))


class RiskListRequest(_Request):
    """Which at-risk customers to list; filters combine with AND, values within one with OR."""

    # as ScoreRequest's: the name BentoML's subclass keeps, an example OpenAPI 3.0 renders
    model_config = ConfigDict(
        title="RiskListRequest", json_schema_extra={"example": {"risk_band": ["high"], "top_n": 20}}
    )

    risk_band: list[RiskBandName] = Field(
        default_factory=lambda: ["high"],
        min_length=1,
        description="Churn risk bands to include.",
        examples=[["high", "medium"]],
    )
    rfm_segment: list[RfmSegment] | None = Field(
        None, min_length=1, description="Only these RFM segments (omit for all)."
    )
    lifecycle_stage: list[LifecycleStage] | None = Field(
        None, min_length=1, description="Only these lifecycle stages (omit for all)."
    )
    value_tier: list[ValueTier] | None = Field(
        None, min_length=1, description="Only these value tiers (omit for all).", examples=[["A"]]
    )
    value_growth_segment: list[ValueGrowthSegment] | None = Field(
        None, min_length=1, description="Only these value-growth groups (omit for all)."
    )
    suggested_action: list[ActionName] | None = Field(
        None, min_length=1, description="Only these suggested actions (omit for all)."
    )
    min_value: float | None = Field(
        None, ge=0.0, description="Only customers worth at least this much.", examples=[100.0]
    )
    top_n: int = Field(
        100,
        ge=1,
        le=MAX_RISK_LIST_ROWS,
        description="How many customers to return, largest expected value at risk first.",
    )
    as_of: date | None = Field(
        None,
        description="Use the scores of this cutoff (default: the latest).",
        examples=["2024-09-01"],
    )

    _dedupe = field_validator(
        "risk_band",
        "rfm_segment",
        "lifecycle_stage",
        "value_tier",
        "value_growth_segment",
        "suggested_action",
    )(_distinct)


class RiskListRow(_Response):
    """One customer of the risk list."""

    rank: int = Field(..., ge=1, description="1 = largest expected value at risk.")
    customer_id: str
    churn_probability: Probability
    churn_percentile: float | None = Field(None, ge=0.0, le=100.0)
    risk_band: RiskBandName
    customer_value: float | None = Field(
        None, ge=0.0, description="Value the expected loss is computed on (null: unknown)."
    )
    expected_value_at_risk: float | None = Field(
        None, ge=0.0, description="churn_probability x customer_value."
    )
    segments: Segments | None = None
    suggested_action: ActionName | None = None
    action_reason: str | None = None
    reasons: list[Reason] = Field(default_factory=list)


class RiskListResponse(_Response):
    """Customers matching the filters, ranked by expected value at risk (unknown value last)."""

    as_of: date
    total_matching: int = Field(..., ge=0, description="Customers matching before top_n.")
    rows: list[RiskListRow]
    model_versions: ModelVersions


# --------------------------------------------------------------------------------------------
# GET /model_info
# --------------------------------------------------------------------------------------------


class TaskModelInfo(_Response):
    """The registered model serving one task."""

    task: Task
    name: str = Field(..., description="Registered model name.", examples=["churn"])
    version: str = Field(..., examples=["7"])
    alias: str | None = Field(None, examples=["champion"])
    run_id: str | None = Field(None, description="MLflow run that trained it.")
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Test-cutoff metrics (null where undefined).",
        examples=[{"pr_auc": 0.61, "roc_auc": 0.84, "brier": 0.12}],
    )
    features: list[str] = Field(default_factory=list, description="Feature columns, in order.")
    trained_at: datetime | None = None


class ActionRuleInfo(_Response):
    """One row of the suggested-action rule table (first match wins)."""

    order: int = Field(..., ge=1)
    name: str
    condition: str
    action: ActionName
    rationale: str


class ModelInfo(_Response):
    """What the service runs: models per task, risk band thresholds and the action rules."""

    models: dict[Task, TaskModelInfo] = Field(
        default_factory=dict, description="Loaded models by task."
    )
    risk_bands: RiskBands | None = Field(None, description="Churn probability band thresholds.")
    action_policy: ActionPolicy = Field(default_factory=ActionPolicy)
    action_rules: list[ActionRuleInfo] = Field(
        default_factory=list, description="The rule table, as `serving.decisions.rule_table`."
    )


# --------------------------------------------------------------------------------------------
# POST /admin/reload
# --------------------------------------------------------------------------------------------


class ReloadResponse(_Response):
    """The outcome of a registry check (``POST /admin/reload``)."""

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
