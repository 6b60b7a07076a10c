"""Typed settings of the training stage: tasks, tuning, calibration, campaign economics, MLflow.

Frozen pydantic models with ``extra="forbid"`` so a typo in the YAML config is an error, not a
silently ignored key. ``pipelines.config.ProjectConfig`` composes ``TrainingConfig`` with the
feature settings; ``train(cfg, ...)`` only needs this module.

``configure_mlflow`` is the one place that points MLflow at a store. It is called by the
training pipeline (never at import), and always sets both the tracking and the registry URI
explicitly: MLflow 3 otherwise silently writes to ``sqlite:///mlflow.db`` in the working
directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskName = Literal["churn", "upsell", "winback"]
TASK_NAMES: tuple[str, ...] = ("churn", "upsell", "winback")

#: Metrics the promotion rule and the tuner may use, and whether larger is better.
METRIC_DIRECTIONS: dict[str, bool] = {
    "pr_auc": True,
    "roc_auc": True,
    "log_loss": False,
    "brier": False,
}
MetricName = Literal["pr_auc", "roc_auc", "log_loss", "brier"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaselineRule(_Frozen):
    """A one-column rule a retention team could apply without a model.

    The score of a customer is the column's value (negated when ``higher_means_positive`` is
    false). Thresholding it at X gives the rule "flag customers with value above X"; its ROC
    curve is the set of all such rules, so the best X is chosen on the validation cutoff and
    the rule's ranking quality (ROC AUC, PR AUC) is the bar every model must clear.
    """

    column: str
    higher_means_positive: bool = True


class TaskConfig(_Frozen):
    """One binary task: which label, which registered model, which naive rules to beat."""

    label_column: str
    registered_model_name: str
    baseline_rules: tuple[BaselineRule, ...] = Field(
        default=(),
        description=(
            "Candidate naive rules; the one with the best validation ROC AUC among the columns "
            "present in the table is reported as baseline_*."
        ),
    )
    monotone_constraints: dict[str, Literal[-1, 1]] = Field(
        default_factory=dict,
        description=(
            "XGBoost monotone constraints by feature (1 = never lowers the score when the "
            "feature grows, -1 = never raises it). Features absent from the table are skipped "
            "and named in the run's warnings."
        ),
    )
    exclude_features: tuple[str, ...] = Field(
        default=(),
        description="Feature columns the model must not use (e.g. a leaky or sensitive column).",
    )


def _default_tasks() -> dict[str, TaskConfig]:
    return {
        "churn": TaskConfig(
            label_column="churn_label",
            registered_model_name="churn",
            baseline_rules=(BaselineRule(column="recency_days", higher_means_positive=True),),
            monotone_constraints={"recency_days": 1, "complaints_90d": 1},
        ),
        "upsell": TaskConfig(
            label_column="upsell_label",
            registered_model_name="upsell",
            baseline_rules=(
                # "the customers buying most often lately will buy more"
                BaselineRule(column="purchases_90d", higher_means_positive=True),
                BaselineRule(column="visits_30d", higher_means_positive=True),
                BaselineRule(column="spend_trend", higher_means_positive=True),
                BaselineRule(column="categories_total", higher_means_positive=True),
            ),
        ),
        "winback": TaskConfig(
            label_column="winback_label",
            registered_model_name="winback",
            baseline_rules=(BaselineRule(column="recency_days", higher_means_positive=False),),
            monotone_constraints={"recency_days": -1},
        ),
    }


class CampaignEconomics(_Frozen):
    """What contacting a customer costs and what a success is worth, for the profit curve.

    Per contacted customer (after Verbeke et al. 2012, "New insights into churn prediction in
    the telecommunication sector: a profit driven data mining approach"):

    * a positive (would churn / would buy / would return) is won by the campaign with
      probability ``save_rate``, worth ``value - offer_cost``;
    * a negative costs the offer too when ``negatives_redeem_offer`` (loyal customers use a
      discount they are sent), otherwise nothing beyond the contact;
    * every contact costs ``contact_cost``.
    """

    contact_cost: float = Field(1.0, ge=0, description="Cost of one contact (call, mail).")
    offer_cost: float = Field(10.0, ge=0, description="Cost of the incentive when redeemed.")
    save_rate: float = Field(
        0.2, ge=0, le=1, description="Share of contacted positives the campaign wins."
    )
    customer_value_column: str | None = Field(
        None, description="Feature column holding each customer's value (e.g. a CLV column)."
    )
    default_customer_value: float = Field(
        200.0, ge=0, description="Value used when there is no value column or it is missing."
    )
    negatives_redeem_offer: bool = True


class MlflowConfig(_Frozen):
    """Where runs, artifacts and registered models live."""

    tracking_uri: str = Field(
        "sqlite:///mlruns/mlflow.db",
        description=(
            "Tracking store; relative sqlite paths resolve against the working directory. "
            "Any MLflow URI works, e.g. http://mlflow:5000 or postgresql+psycopg://..."
        ),
    )
    registry_uri: str | None = Field(None, description="Model registry; None = tracking_uri.")
    artifact_location: str = Field(
        "mlruns/artifacts",
        description="Artifact root of a newly created experiment (path or URI).",
    )
    experiment_name: str = "churn-crm"


class TrainingConfig(_Frozen):
    """Everything ``training.train`` needs besides the snapshot table."""

    tasks: dict[TaskName, TaskConfig] = Field(default_factory=_default_tasks)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    economics: CampaignEconomics = Field(default_factory=CampaignEconomics)

    # --- search and fitting -------------------------------------------------------------
    n_trials: int = Field(30, ge=1, description="Optuna trials (upper bound).")
    time_budget_s: float | None = Field(
        600.0, gt=0, description="Wall-clock budget of the tuning; None = only n_trials."
    )
    seed: int = 0
    n_jobs: int = Field(2, ge=1, description="Threads of XGBoost.")
    tuning_metric: Literal["pr_auc", "roc_auc", "log_loss"] = Field(
        "pr_auc",
        description="Validation metric for early stopping, pruning and the Optuna objective.",
    )
    max_boosting_rounds: int = Field(1000, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    log_trial_runs: bool = Field(True, description="One nested MLflow run per Optuna trial.")
    model_format: Literal["ubj", "json"] = Field("ubj", description="XGBoost native format.")

    # --- honest datasets ----------------------------------------------------------------
    purge_gap_days: int = Field(
        0,
        ge=0,
        description=(
            "Minimum days between a training cutoff and the validation cutoff, and between the "
            "validation and the test cutoff. Set it to labels.lead_days + labels.horizon_days "
            "to train only on labels that had matured when the later cutoff was reached "
            "(needs cutoffs spaced at least that far apart)."
        ),
    )
    calibration_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "Share of validation-cutoff customers (by a seeded hash of customer_id) held out "
            "from early stopping and tuning to fit the calibrator."
        ),
    )

    # --- probabilities and imbalance ----------------------------------------------------
    calibration_method: Literal["beta", "isotonic", "sigmoid"] = Field(
        "beta",
        description=(
            "beta: strictly increasing (keeps every distinct score and so ROC AUC, PR AUC and "
            "lift), prior-smoothed and bounded to [1/(n+2), (n+1)/(n+2)] for n calibration "
            "rows; sigmoid: plain Platt scaling; isotonic: step-wise, merges customers into "
            "ties (changes the ranking metrics). See training.calibration."
        ),
    )
    imbalance_strategy: Literal["class_weight", "none"] = Field(
        "class_weight",
        description=(
            "class_weight: positives weighted by negatives/positives in training (XGBoost "
            "scale_pos_weight, LR class_weight='balanced'), then probabilities are calibrated "
            "back to real rates; none: unweighted training."
        ),
    )

    refit_on_all_cutoffs: bool = Field(
        False,
        description=(
            "After the held-out evaluation, register a model refitted on every matured cutoff "
            "(training, validation and test) with the tuned parameters and rounds; the reported "
            "metrics stay the held-out model's. Off by default: on the real CDNOW log it lowered "
            "the holdout ROC AUC from 0.765 to 0.739 (later cutoffs of one cohort teach age, "
            "not behaviour); on socialnet7 the effect was within noise."
        ),
    )

    # --- evaluation and promotion -------------------------------------------------------
    backtest_cutoffs: int = Field(
        3,
        ge=0,
        description=(
            "Rolling-origin backtest over the last K usable cutoffs (0 disables): the model is "
            "refitted on the cutoffs before each origin with the tuned hyper-parameters and "
            "graded on the origin (see training.backtest)."
        ),
    )
    promotion_metric: MetricName = "pr_auc"
    promote_when_comparison_fails: bool = Field(
        True,
        description="Promote when the champion cannot be scored on the new test set.",
    )
    leakage_auc_threshold: float = Field(
        0.95, gt=0.5, le=1, description="Test ROC AUC above this tags the run as suspicious."
    )
    top_fractions: tuple[float, ...] = Field(
        (0.05, 0.1, 0.2), description="Contact depths reported as lift_at_N / capture_at_N."
    )
    ece_bins: int = Field(10, ge=2)
    explain_top_k: int = Field(3, ge=1, description="Reasons returned per customer by default.")

    @model_validator(mode="before")
    @classmethod
    def _merge_task_defaults(cls, data: Any) -> Any:
        """A task given in the config overrides only the keys it names; other tasks keep
        their defaults (``tasks: {churn: {registered_model_name: churn_prod}}`` works)."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            return data
        defaults = _default_tasks()
        merged: dict[str, Any] = {}
        for name, given in data["tasks"].items():
            if isinstance(given, dict) and name in defaults:
                merged[name] = {**defaults[name].model_dump(), **given}
            else:
                merged[name] = given
        for name, default in defaults.items():
            merged.setdefault(name, default)
        return {**data, "tasks": merged}

    @model_validator(mode="after")
    def _fractions_in_range(self) -> TrainingConfig:
        for fraction in self.top_fractions:
            if not 0 < fraction <= 1:
                raise ValueError(f"top_fractions must be in (0, 1], got {fraction}")
        return self

    def task(self, name: str) -> TaskConfig:
        """The settings of one task, with a clear error for an unknown name."""
        if name not in self.tasks:
            raise ValueError(f"unknown task {name!r}; configured tasks: {sorted(self.tasks)}")
        return self.tasks[name]  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# MLflow store
# --------------------------------------------------------------------------------------------


def _resolve_sqlite_uri(uri: str) -> str:
    """Make a relative sqlite path absolute (against cwd) and create its directory."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    db_path = uri[len(prefix) :]
    if db_path in ("", ":memory:"):
        return uri
    path = Path(db_path)
    if not path.is_absolute():
        path = Path.cwd() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path.resolve()}"


_SERVER_SCHEMES = ("http", "https", "databricks")


def _has_scheme(location: str) -> bool:
    scheme = urlparse(location).scheme
    return len(scheme) > 1  # a one-letter scheme is a Windows drive letter


def _resolve_artifact_location(location: str) -> str:
    """Plain (relative) paths become absolute file URIs; URIs with a scheme are kept."""
    if _has_scheme(location):
        parsed = urlparse(location)
        if parsed.scheme == "file":
            Path(parsed.path).mkdir(parents=True, exist_ok=True)
        return location
    path = Path(location)
    if not path.is_absolute():
        path = Path.cwd() / path
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve().as_uri()


def resolved_tracking_uri(cfg: MlflowConfig) -> str:
    """The tracking URI ``configure_mlflow`` sets (sqlite paths made absolute)."""
    return _resolve_sqlite_uri(cfg.tracking_uri)


def configure_mlflow(cfg: MlflowConfig) -> None:
    """Point MLflow at the configured tracking store and registry and select the experiment.

    Creates the experiment (with ``artifact_location``) when it does not exist yet. Relative
    sqlite paths and artifact paths are resolved against the working directory and their
    directories created, so ``sqlite:///mlruns/mlflow.db`` means ``./mlruns/mlflow.db``.
    """
    import mlflow

    tracking_uri = _resolve_sqlite_uri(cfg.tracking_uri)
    registry_uri = _resolve_sqlite_uri(cfg.registry_uri) if cfg.registry_uri else tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {cfg.experiment_name!r} is deleted; restore it or choose "
            "another experiment_name"
        )
    if experiment is None:
        remote_server = urlparse(tracking_uri).scheme in _SERVER_SCHEMES
        if remote_server and not _has_scheme(cfg.artifact_location):
            # A client-local path means nothing to a tracking server: let it choose.
            artifact_location = None
        else:
            artifact_location = _resolve_artifact_location(cfg.artifact_location)
        client.create_experiment(cfg.experiment_name, artifact_location=artifact_location)
    mlflow.set_experiment(cfg.experiment_name)
