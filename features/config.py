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


class LabelParams(_Frozen):
    """What churn, up-sell and win-back mean for this business."""

    churn_definition: Literal["activity", "subscription"] = Field(
        "activity",
        description=(
            "activity: no qualifying event in the label window; "
            "subscription: the subscription ends in the label window."
        ),
    )
    horizon_days: int = Field(90, gt=0, description="Length of the label window.")
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
