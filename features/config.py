"""Typed parameters of the feature stage: data sources, column mapping, features and labels.

These are frozen pydantic models with ``extra="forbid"`` so a typo in the YAML config is an
error, not a silently ignored key. ``pipelines.config.ProjectConfig`` composes them with the
training and serving settings and loads them from YAML.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceConfig(_Frozen):
    """Where one table comes from: a CSV/Parquet file, or a SQL table/query by SQLAlchemy URL."""

    path: str | None = Field(None, description="CSV or Parquet file (by extension).")
    url: str | None = Field(None, description="SQLAlchemy URL, e.g. postgresql+psycopg://...")
    table: str | None = Field(None, description="SQL table name (with url).")
    query: str | None = Field(None, description="SQL query (with url), instead of table.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping source name -> canonical name, e.g. {account_id: customer_id}.",
    )
    timestamp_format: str | None = Field(
        None, description="strftime format of the timestamps, e.g. '%d/%m/%Y %H:%M'; None = infer."
    )
    timezone: str = Field(
        "UTC", description="Zone of timestamps that carry no offset; all are converted to UTC."
    )
    event_type_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Export event names -> canonical ones, e.g. {order: purchase, login: visit}.",
    )
    csv_separator: str = ","
    duplicates: Literal["auto", "drop", "keep"] = Field(
        "auto",
        description=(
            "Events that are identical in every column: drop = one event exported twice, "
            "quarantined (the first kept); keep = real repeats (two orders of the same item on "
            "the same day), kept and counted in the validation report; auto = keep when the "
            "source is day-granular (every timestamp at midnight in its time zone), else drop. "
            "Rows with the same event_id are always one event: the repeats are quarantined. "
            "Only the events table uses it."
        ),
    )

    @model_validator(mode="after")
    def _one_location(self) -> SourceConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("a source needs exactly one of 'path' or 'url'")
        if self.url is not None and (self.table is None) == (self.query is None):
            raise ValueError("a SQL source needs exactly one of 'table' or 'query'")
        return self


class DataConfig(_Frozen):
    """The three tables of the contract; only events are required."""

    events: SourceConfig | None = None
    customers: SourceConfig | None = None
    subscriptions: SourceConfig | None = None
    unknown_customers: Literal["quarantine", "keep"] = Field(
        "quarantine",
        description="Events of customers absent from the customers table: quarantine or keep.",
    )
    quarantine_dir: str = Field("data/quarantine", description="Where unusable rows are written.")


class VocabularyParams(_Frozen):
    """Features from the export's own event types (see ``features.vocabulary``).

    A CRM export names its events in its own words (``email_opened``, ``add_contact``,
    ``like``); every type with enough support gets counts, rates, recency, trend, share and
    amounts. Which types is decided once on the training data and shipped with the model.
    """

    enabled: bool = Field(True, description="Compute per-event-type features.")
    max_types: int = Field(
        30, ge=1, description="Keep at most this many types (most events first); pool the rest."
    )
    min_customers: int = Field(
        20, ge=1, description="A type needs events of at least this many customers to be kept."
    )
    min_events: int = Field(100, ge=1, description="... and at least this many events.")
    windows_days: tuple[int, ...] = Field(
        (7, 30, 90, 180), description="Look-back windows of the per-type counts and rates."
    )
    count_weight: Literal["rows", "quantity"] = Field(
        "rows",
        description=(
            "rows: every row is one event; quantity: every row counts `quantity` events (an "
            "export of daily counts per customer and type), so both give the same features."
        ),
    )
    ratios: tuple[tuple[str, str], ...] = Field(
        (),
        description=(
            "Pairs (A, B) of event types read as 'A per B' in every window, e.g. "
            "[[dislike, like], [support_ticket, visit]]."
        ),
    )

    @model_validator(mode="after")
    def _positive_windows(self) -> VocabularyParams:
        if not self.windows_days or min(self.windows_days) <= 0:
            raise ValueError("vocabulary.windows_days must be positive numbers of days")
        return self


class AttributeParams(_Frozen):
    """Which columns of the customers table become features (besides the known three)."""

    include: tuple[str, ...] | None = Field(
        None, description="Only these attribute columns (None: every column of the table)."
    )
    exclude: tuple[str, ...] = Field(
        (),
        description=(
            "Attribute columns never used, e.g. ones written after the fact (a churn date, a "
            "status that says 'cancelled'): those leak the label."
        ),
    )


class FeatureParams(_Frozen):
    """How lifecycle features are computed at a cutoff."""

    windows_days: tuple[int, ...] = Field(
        (30, 90, 180, 365), description="Look-back windows for counts, spend and activity."
    )
    trend_window_days: int = Field(
        90, description="Latest window compared with the one before it for activity/spend trends."
    )
    clv_horizon_days: int = Field(365, description="Horizon of expected purchases and CLV.")
    clv_fit_sample: int = Field(
        200_000,
        description="Customers sampled (seeded) to fit BG/NBD and Gamma-Gamma; all are scored.",
    )
    seed: int = 0
    vocabulary: VocabularyParams = Field(default_factory=VocabularyParams)
    attributes: AttributeParams = Field(default_factory=AttributeParams)


class LabelParams(_Frozen):
    """What churn, up-sell and win-back mean for this business.

    The population of the churn and up-sell labels (the ``is_active`` feature, also who gets a
    churn score) follows ``churn_definition``: under ``activity`` it is the customers with a
    qualifying event in the last ``active_window_days``; under ``subscription`` the customers
    with a subscription active at the cutoff (started before it, no end known before it),
    whatever their events. Everyone else with history is lapsed (win-back).
    """

    churn_definition: Literal["activity", "subscription"] = Field(
        "activity",
        description=(
            "activity: no qualifying event in the label window (population: customers with a "
            "qualifying event in active_window_days); subscription: the subscription ends in "
            "the label window (population: customers with an active subscription at the cutoff)."
        ),
    )
    horizon_days: int = Field(
        90, gt=0, description="Length of the label window: the horizon churn is scored for."
    )
    training_horizon_days: int | None = Field(
        None,
        gt=0,
        description=(
            "Shorter label window for the training snapshots when horizon_days cannot mature "
            "for enough cutoffs (None: horizon_days). The model then learns churn within this "
            "window, and the horizon-dependent features (renewal_in_horizon) use it too."
        ),
    )
    lead_days: int = Field(
        0, ge=0, description="Gap between cutoff and label window, time for the team to act."
    )
    qualifying_event_types: tuple[str, ...] = Field(
        ("purchase", "visit"), description="Events that count as the customer being active."
    )
    active_window_days: int = Field(
        90,
        gt=0,
        description=(
            "A customer with a qualifying event in this many days before the cutoff is active "
            "(eligible for churn and up-sell labels); others with history are lapsed "
            "(eligible for win-back)."
        ),
    )
    upsell_spend_growth: float = Field(
        0.5,
        ge=0,
        description=(
            "Up-sell if spend in the label window exceeds the same-length window before the "
            "cutoff by this fraction (0.5 = +50%), or MRR grows, or a new category is bought."
        ),
    )

    @model_validator(mode="after")
    def _training_horizon_not_longer(self) -> LabelParams:
        if (
            self.training_horizon_days is not None
            and self.training_horizon_days > self.horizon_days
        ):
            raise ValueError(
                f"labels.training_horizon_days ({self.training_horizon_days}) is longer than "
                f"labels.horizon_days ({self.horizon_days}); it exists to train on a shorter window"
            )
        return self

    @property
    def model_horizon_days(self) -> int:
        """The label window the model is trained on: ``training_horizon_days`` or the horizon."""
        return (
            self.horizon_days if self.training_horizon_days is None else self.training_horizon_days
        )

    def for_training(self) -> LabelParams:
        """These parameters with the training window as the label window (for snapshots).

        ``training_horizon_days`` is kept, so ``model_horizon_days`` (and the features that
        depend on it) are the same at training and scoring time.
        """
        if self.training_horizon_days is None:
            return self
        return self.model_copy(update={"horizon_days": self.training_horizon_days})


class CutoffConfig(_Frozen):
    """Cutoffs for snapshots: explicit dates, or a regular grid ending at ``last``."""

    dates: tuple[date, ...] = ()
    last: date | None = None
    count: int = Field(4, ge=1)
    every_days: int = Field(30, gt=0)

    def resolve(self) -> tuple[date, ...]:
        """The cutoff dates, oldest first."""
        if self.dates:
            return tuple(sorted(self.dates))
        if self.last is None:
            return ()
        from datetime import timedelta

        return tuple(
            self.last - timedelta(days=self.every_days * k) for k in reversed(range(self.count))
        )
