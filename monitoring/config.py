"""The ``monitoring:`` settings: what counts as drift, as decay, and what happens on an alarm.

Kept apart from the checks so ``pipelines.config`` reads the settings without importing them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_INFORMATIONAL_FEATURES", "MonitoringConfig"]

#: Columns that move with the calendar by construction. Lifetime counts and tenures rise for
#: every surviving customer as time passes, so two dates always differ (the customer base ages);
#: behaviour changes show in the windowed features (30/90/180/365 days), which are comparable
#: across dates. The days to the next monthly renewal rotate with the cutoff's day of month.
DEFAULT_INFORMATIONAL_FEATURES: tuple[str, ...] = (
    "tenure_days",
    "subscription_tenure_days",
    "events_total",
    "purchases_total",
    "purchase_days_total",
    "spend_total",
    "categories_total",
    "clv_frequency",
    "clv_recency_weeks",
    "clv_T_weeks",
    "rfm_f",  # quintiles of lifetime purchases and spend, with the reference's cut points
    "rfm_m",
    "rfm_score",
    "days_to_renewal",  # position in the billing cycle: moves with the cutoff's day of month
)


class MonitoringConfig(BaseModel):
    """Thresholds of the drift and performance checks (the ``monitoring:`` config section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Literal["churn", "upsell", "winback"] = Field(
        "churn", description="Task whose champion `churn monitor` checks by default."
    )
    numeric_threshold: float = Field(
        0.1,
        gt=0,
        description=(
            "Drift of a numerical column worth acting on: Wasserstein distance on the signed-log "
            "scale in reference standard deviations."
        ),
    )
    categorical_threshold: float = Field(
        0.1, gt=0, description="Drift of a categorical column worth acting on: PSI."
    )
    prediction_threshold: float = Field(
        0.1,
        gt=0,
        description="Prediction drift: the numerical score of the predicted probabilities.",
    )
    noise_alpha: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description=(
            "A score must also exceed what sampling alone reaches with this probability at the "
            "sizes compared (the noise floor), so small columns do not raise false alarms."
        ),
    )
    missing_share_threshold: float = Field(
        0.1, gt=0, le=1, description="Change in a column's share of missing values that drifts."
    )
    min_drifted_features: int = Field(
        1, ge=1, description="Alarm when at least this many monitored features drift."
    )
    informational_features: tuple[str, ...] = Field(
        DEFAULT_INFORMATIONAL_FEATURES,
        description="Scored and reported, but never raise the alarm (ageing columns).",
    )
    event_window_days: int = Field(
        90, gt=0, description="Length of the event windows compared before each cutoff."
    )
    max_rows: int = Field(
        50_000, ge=100, description="Seeded sample of the current batch used for drift."
    )
    report_columns: int = Field(
        20,
        ge=0,
        description=(
            "Columns drawn in detail by Evidently in the HTML report (drifted first, then the "
            "closest to drifting); every column is scored and listed in the summary."
        ),
    )
    seed: int = 0

    # --- matured labels: target drift and realised performance ------------------------------
    label_rate_change: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Absolute change of the label rate (e.g. 0.05 = 5 points) that drifts.",
    )
    max_roc_auc_drop: float = Field(
        0.05, ge=0, description="Absolute ROC AUC drop below the promised one that decays."
    )
    max_pr_auc_drop: float = Field(
        0.2, ge=0, le=1, description="Relative PR AUC drop (0.2 = -20%) that decays."
    )
    max_lift_drop: float = Field(
        0.2, ge=0, le=1, description="Relative drop of the lift at 10% that decays."
    )
    max_calibration_gap: float = Field(
        0.05,
        ge=0,
        description="|mean predicted probability - observed rate| that decays.",
    )
    max_ece_increase: float = Field(
        0.05, ge=0, description="Increase of the expected calibration error that decays."
    )
    min_labelled_rows: int = Field(
        200, ge=1, description="Fewer matured rows than this: performance is not judged."
    )
    min_positives: int = Field(
        20, ge=1, description="Fewer positives than this: performance is not judged."
    )

    # --- what happens on an alarm -----------------------------------------------------------
    report_dir: str | None = Field(
        None, description="Where reports go; default <output_dir>/monitoring."
    )
    retrain_on_alarm: bool = Field(
        False, description="Retrain (churn retrain) when the monitor raises the alarm."
    )
    reload_url: str | None = Field(
        None,
        description=(
            "POSTed after a promotion so a running service reloads at once (e.g. "
            "http://127.0.0.1:3000/admin/reload); the service also polls the alias."
        ),
    )

    @field_validator("informational_features")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))
