"""The shared data flows: load and validate the configured tables, and the tables built on them.

Every other flow starts here. :func:`load_validated_data` reads the configured sources once and
hands on a :class:`LoadedData` (validated tables, what validation found, where bad rows went),
which the flows below, scoring, monitoring, the report and the demo take as ``data=`` so one run
reads the data once. The cutoff and label-window rules (:func:`resolve_cutoffs`,
:func:`label_span_days`, :func:`training_label_span_days`, :func:`label_horizons`) live here so
every flow resolves them alike.

The flows of ``churn validate``, ``check``, ``features``, ``snapshots`` and ``train`` take the
typed ``ProjectConfig`` and return a small JSON-able summary (or a typed result); the CLI in
``pipelines.cli`` only parses arguments and prints. Tests call these functions directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from features.config import CutoffConfig
from pipelines.config import ProjectConfig
from pipelines.io import write_json, write_table


@dataclass(frozen=True)
class LoadedData:
    """Validated canonical tables plus what validation found and where bad rows went."""

    events: pd.DataFrame
    customers: pd.DataFrame | None
    subscriptions: pd.DataFrame | None
    validation: dict[str, Any]
    validation_text: str = ""
    quarantine_files: list[str] = field(default_factory=list)

    @property
    def data_end(self) -> pd.Timestamp:
        """The end of observed history: the day after the last event."""
        return (self.events["timestamp"].max() + pd.Timedelta(days=1)).normalize()


def load_validated_data(cfg: ProjectConfig, *, now: pd.Timestamp | None = None) -> LoadedData:
    """Load the configured tables, validate them, quarantine unusable rows to files."""
    from features.loading import load_crm_data
    from features.validation import validate_crm_data, write_quarantine

    if cfg.data.events is None:
        raise ValueError(
            "no events source configured: set data.events in the config or pass --events FILE"
        )
    raw = load_crm_data(cfg.data)
    validated = validate_crm_data(raw, cfg.data, now=now)
    files = write_quarantine(validated.results, Path(cfg.data.quarantine_dir))
    return LoadedData(
        events=validated.events.clean,
        customers=None if validated.customers is None else validated.customers.clean,
        subscriptions=None if validated.subscriptions is None else validated.subscriptions.clean,
        validation={name: r.report.to_dict() for name, r in validated.results.items()},
        validation_text=validated.render(),
        quarantine_files=[str(p) for p in files],
    )


def resolve_cutoffs(cutoffs: CutoffConfig, data_end: pd.Timestamp, label_span_days: int) -> list:
    """Snapshot cutoffs: as configured, or a grid ending at the latest matured cutoff.

    The latest matured cutoff is the last day whose label window (lead + horizon) has fully
    passed by ``data_end``; a later cutoff could not be labelled and would be useless for
    training.
    """
    if cutoffs.dates or cutoffs.last is not None:
        return [pd.Timestamp(d) for d in cutoffs.resolve()]
    last_matured = (data_end - pd.Timedelta(days=label_span_days)).normalize()
    grid = CutoffConfig(
        last=last_matured.date(), count=cutoffs.count, every_days=cutoffs.every_days
    )
    return [pd.Timestamp(d) for d in grid.resolve()]


def label_span_days(cfg: ProjectConfig) -> int:
    """Lead plus the scoring horizon (``labels.horizon_days``): how far a score looks ahead."""
    return cfg.labels.lead_days + cfg.labels.horizon_days


def training_label_span_days(cfg: ProjectConfig) -> int:
    """Lead plus the training window (``labels.training_horizon_days`` or the horizon)."""
    return cfg.labels.lead_days + cfg.labels.model_horizon_days


def label_horizons(cfg: ProjectConfig) -> dict[str, int]:
    """The label windows a training table was built with, as passed on to training.

    ``training_horizon_days`` is the window of the table's labels (what the model learns);
    ``horizon_days`` is the horizon churn is meant to be scored for. They differ when
    ``labels.training_horizon_days`` is set because the scoring horizon cannot mature for enough
    cutoffs. Stored in the training table's ``attrs["labels"]`` (see :func:`build_training_table`).
    """
    return {
        "horizon_days": cfg.labels.horizon_days,
        "training_horizon_days": cfg.labels.model_horizon_days,
        "lead_days": cfg.labels.lead_days,
    }


def run_validate(
    cfg: ProjectConfig, *, now: pd.Timestamp | None = None, data: LoadedData | None = None
) -> dict[str, Any]:
    """Validate the configured data; the report is written next to the quarantine files."""
    data = data or load_validated_data(cfg, now=now)
    report_path = Path(cfg.data.quarantine_dir) / "validation_report.json"
    return {
        "events": len(data.events),
        "customers": None if data.customers is None else len(data.customers),
        "subscriptions": None if data.subscriptions is None else len(data.subscriptions),
        "quarantine_files": data.quarantine_files,
        "report": str(report_path),
        "validation": data.validation,
        "validation_text": data.validation_text,
    }


def run_check(
    cfg: ProjectConfig, *, now: pd.Timestamp | None = None, data: LoadedData | None = None
):
    """Data usability verdict for the configured labels and cutoffs."""
    from features.usability import assess_usability

    data = data or load_validated_data(cfg, now=now)
    cutoffs = resolve_cutoffs(cfg.cutoffs, data.data_end, training_label_span_days(cfg))
    return assess_usability(
        data.events,
        cfg.labels,
        cutoffs,
        customers=data.customers,
        subscriptions=data.subscriptions,
        data_end=data.data_end,
        every_days=cfg.cutoffs.every_days,
    )


def features_as_of(
    cfg: ProjectConfig, data: LoadedData, cutoff: pd.Timestamp, *, stats: Any = None
) -> tuple[pd.DataFrame, Any]:
    """One feature row per customer at ``cutoff`` (``customer_id`` a column) and the
    ``GlobalStats`` used: fitted on this cutoff's history unless ``stats`` are given (a
    champion's, so that segments and CLV match what the model was trained with)."""
    from features.snapshots import build_features

    table, used_stats = build_features(
        data.events,
        cutoff,
        customers=data.customers,
        subscriptions=data.subscriptions,
        params=cfg.features,
        stats=stats,
        label_params=cfg.labels,
    )
    if "customer_id" not in table.columns:  # phase 3 returns customer_id as the index
        table = table.reset_index()
    return table, used_stats


def run_features(
    cfg: ProjectConfig,
    as_of: date,
    out: Path,
    *,
    now: pd.Timestamp | None = None,
    data: LoadedData | None = None,
) -> dict[str, Any]:
    """One feature row per customer as of ``as_of``, written to ``out`` (Parquet or CSV).

    The fitted global statistics (CLV parameters, segment cut points) are written beside the
    table as ``<out>.stats.json`` so the same segmentation can be reproduced and audited.
    """
    data = data or load_validated_data(cfg, now=now)
    cutoff = pd.Timestamp(as_of)
    table, stats = features_as_of(cfg, data, cutoff)
    out = Path(out)
    write_table(table, out)
    stats_path = write_json(stats.to_dict(), out.with_name(out.name + ".stats.json"))
    ignored_after = int((data.events["timestamp"] >= cutoff).sum())
    return {
        "as_of": str(cutoff.date()),
        "customers": len(table),
        "columns": table.shape[1],
        "events_used": int(len(data.events) - ignored_after),
        "events_at_or_after_cutoff_ignored": ignored_after,
        "out": str(out),
        "stats": str(stats_path),
        "quarantine_files": data.quarantine_files,
    }


def run_snapshots(
    cfg: ProjectConfig,
    out: Path,
    *,
    now: pd.Timestamp | None = None,
    data: LoadedData | None = None,
) -> dict[str, Any]:
    """The stacked training table: features and labels at several cutoffs."""
    data = data or load_validated_data(cfg, now=now)
    table, stats = build_training_table(cfg, data=data)
    cutoffs = sorted(table["cutoff"].unique())
    write_table(table, Path(out))
    write_json({k: v.to_dict() for k, v in stats.items()}, snapshot_stats_path(out))
    per_cutoff = (
        table.groupby("cutoff")[["churn_label", "upsell_label", "winback_label"]]
        .agg(["count", "mean"])
        .round(4)
    )
    per_cutoff.columns = [f"{a}_{b}" for a, b in per_cutoff.columns]
    return {
        "out": str(out),
        "rows": len(table),
        "cutoffs": [str(pd.Timestamp(c).date()) for c in cutoffs],
        "labels": {str(k.date()): v for k, v in per_cutoff.to_dict(orient="index").items()},
    }


def describe_source(cfg: ProjectConfig) -> str:
    source = cfg.data.events
    if source is None:
        return "unknown"
    if source.path is not None:
        return source.path
    return f"{source.url} ({source.table or 'query'})"


def build_training_table(
    cfg: ProjectConfig,
    *,
    now: pd.Timestamp | None = None,
    data: LoadedData | None = None,
    cutoffs: list[pd.Timestamp] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Snapshots (features + labels) and each cutoff's global statistics (by ``YYYY-MM-DD``).

    ``cutoffs`` default to the configured ones (see :func:`resolve_cutoffs`), the grid ending at
    the latest cutoff whose *training* window has matured. Labels use the training window
    (``LabelParams.for_training()``: ``labels.training_horizon_days`` when set, else
    ``horizon_days``); :func:`label_horizons` is stored in ``table.attrs["labels"]`` for the
    training run.
    """
    from features.snapshots import build_snapshots

    data = data or load_validated_data(cfg, now=now)
    if cutoffs is None:
        cutoffs = resolve_cutoffs(cfg.cutoffs, data.data_end, training_label_span_days(cfg))
    table, stats = build_snapshots(
        data.events,
        cutoffs,
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=cfg.features,
        label_params=cfg.labels.for_training(),
        data_end=data.data_end,
    )
    table.attrs["labels"] = label_horizons(cfg)
    return table, stats


def stats_of_test_cutoff(
    cfg: ProjectConfig, table: pd.DataFrame, stats: dict[str, Any], task: str
) -> dict[str, Any] | None:
    """The global statistics of the cutoff a task's model is tested on, as plain JSON.

    Logged with the model so that serving and monitoring segment new customers exactly as the
    model's test population was segmented (instead of refitting on whatever batch arrives).
    """
    from features.snapshots import stats_key
    from training.datasets import split_by_time

    split = split_by_time(table, cfg.training.task(task).label_column, cfg.training.purge_gap_days)
    found = stats.get(stats_key(split.test_cutoff))
    if found is None:
        return None
    return found if isinstance(found, dict) else found.to_dict()


def snapshot_stats_path(snapshots_path: Path) -> Path:
    """Where ``churn snapshots`` keeps the per-cutoff statistics beside its table."""
    snapshots_path = Path(snapshots_path)
    return snapshots_path.with_name(snapshots_path.name + ".stats.json")


def run_train(
    cfg: ProjectConfig,
    task: str,
    *,
    snapshots_path: Path | None = None,
    progress: bool = True,
    now: pd.Timestamp | None = None,
):
    """Train, evaluate and register one task's model; returns ``training.train.TrainResult``."""
    from training.config import configure_mlflow
    from training.train import train

    if snapshots_path is not None:
        table = pd.read_parquet(snapshots_path)
        stats_file = snapshot_stats_path(snapshots_path)
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        source = str(snapshots_path)
    else:
        table, stats = build_training_table(cfg, now=now)
        source = describe_source(cfg)
    # The label windows of the table (training window vs scoring horizon) for train(); a
    # snapshot file written by `churn snapshots` carries its own (pandas keeps attrs in Parquet).
    if "labels" not in table.attrs:
        table.attrs["labels"] = label_horizons(cfg)
    configure_mlflow(cfg.training.mlflow)
    return train(
        cfg.training,
        table,
        task=task,
        data_source=source,
        progress=progress,
        global_stats=stats_of_test_cutoff(cfg, table, stats, task),
    )
