"""Settings of the scoring stage: which models, how scores become decisions, service limits.

``ServingConfig`` is the ``serving:`` section of the project config (``pipelines.config``).
Frozen pydantic with ``extra="forbid"``, like every section, so a typo is an error. Nothing here
reads the environment or the disk: paths and model URIs are resolved by the functions that use
them (:meth:`ServingConfig.model_uris`, :meth:`ServingConfig.risk_list_location`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.decisions import ActionPolicy

TaskName = Literal["churn", "upsell", "winback"]

#: Alias of the registered model version that serves, unless a task's URI says otherwise.
DEFAULT_MODEL_ALIAS = "champion"

#: File name of the risk list under ``output_dir`` when ``risk_list_path`` is not set.
DEFAULT_RISK_LIST_NAME = "risk_list.parquet"


class ServingConfig(BaseModel):
    """Models, decision thresholds and limits shared by the HTTP service and batch scoring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- models -----------------------------------------------------------------------------
    model_alias: str = Field(
        DEFAULT_MODEL_ALIAS,
        min_length=1,
        description="Registry alias served for every task without an explicit URI.",
    )
    model_uris: dict[TaskName, str] = Field(
        default_factory=dict,
        description=(
            "Explicit MLflow model URIs per task (e.g. models:/churn/7 to pin a version); "
            "tasks left out use models:/<registered name>@<model_alias>."
        ),
    )

    # --- decisions --------------------------------------------------------------------------
    high_risk_share: float = Field(
        0.10, gt=0, lt=1, description="Share of the test cutoff's scores in the high band."
    )
    medium_risk_share: float = Field(
        0.30, gt=0, lt=1, description="Share of the test cutoff's scores in the medium band."
    )
    action_policy: ActionPolicy = Field(default_factory=ActionPolicy)
    customer_value_column: str = Field(
        "value_365d",
        description=(
            "Feature column the expected value at risk is computed on. Default: the revenue "
            "of the last year incl. 12 x MRR, i.e. the run rate that leaves with the customer. "
            "clv_value is not the default: it already discounts by the probability of being "
            "alive, so multiplying it by the churn probability would count churn twice."
        ),
    )
    reasons_top_k: int = Field(3, ge=1, le=20, description="Reasons per customer.")
    reason_candidates: int = Field(
        10,
        ge=1,
        le=200,
        description=(
            "Largest contributions (by size) the model explains per customer; the reasons are "
            "the strongest risk-raising ones among them. A raising contribution smaller than "
            "this many others is too weak to be worth reading."
        ),
    )
    batch_reason_rows: int | None = Field(
        25_000,
        ge=0,
        description=(
            "Batch scoring explains only this many active customers in the high and medium "
            "bands, largest expected value at risk first (explanations cost ~0.3 ms a row, the "
            "scores ~0.01 ms). None explains every scored active customer."
        ),
    )
    cross_sell_top_k: int = Field(3, ge=1, le=20, description="Cross-sell candidates per customer.")
    currency: str = Field("", description="Prefix of money amounts in reason texts, e.g. 'EUR '.")

    # --- the service ------------------------------------------------------------------------
    api_key_env: str = Field(
        "CHURN_API_KEY",
        min_length=1,
        description="Environment variable holding the API key (never the key itself).",
    )
    max_batch_customers: int = Field(1000, ge=1, description="Customers per POST /score.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body the service accepts."
    )
    risk_list_path: str | None = Field(
        None,
        description=(
            f"Latest risk list, written by `churn score` and read by POST /risk_list; "
            f"default <output_dir>/{DEFAULT_RISK_LIST_NAME}."
        ),
    )
    reload_interval_s: float = Field(
        300.0,
        ge=0,
        description=(
            "How often the service checks whether a champion alias moved or the risk list "
            "changed (0: never; load once at start)."
        ),
    )
    host: str = Field("127.0.0.1", description="Interface the service binds to.")
    port: int = Field(3000, ge=1, le=65535)

    @model_validator(mode="after")
    def _shares_fit(self) -> ServingConfig:
        if self.high_risk_share + self.medium_risk_share > 1.0:
            raise ValueError(
                f"high_risk_share + medium_risk_share must not exceed 1, got "
                f"{self.high_risk_share} + {self.medium_risk_share}"
            )
        return self

    def model_uris_for(self, registered_names: dict[str, str]) -> dict[str, str]:
        """The URI of every task: explicit ones, else ``models:/<name>@<model_alias>``.

        ``registered_names`` maps task -> registered model name (the training config's
        ``tasks.<task>.registered_model_name``).
        """
        uris = {
            task: f"models:/{name}@{self.model_alias}" for task, name in registered_names.items()
        }
        uris.update(self.model_uris)
        return uris

    def risk_list_location(self, output_dir: str | Path) -> Path:
        """Where the latest risk list lives (``risk_list_path`` or under ``output_dir``)."""
        if self.risk_list_path:
            return Path(self.risk_list_path)
        return Path(output_dir) / DEFAULT_RISK_LIST_NAME

    def summary(self) -> dict[str, Any]:
        """JSON-able settings for /model_info and logs (no secrets live here)."""
        return self.model_dump(mode="json")
