"""Flows of `churn monitor` and `churn retrain`: drift checks of the champion, and retraining.

``run_monitor(cfg)`` compares today's scoring batch with the reference data logged with the
champion's training run (``reference/`` artifacts, see ``training.artifacts``):

1. the champion (registry alias ``champion``) and its reference: the test cutoff's feature rows
   and out-of-sample predictions, the promised test metrics, the global statistics;
2. the current batch: features of the task's population (active customers for churn) at the
   latest date on the reference cutoff's weekday, with the champion's global statistics (the
   segment definitions it was trained with), scored by the champion;
3. drift of every feature, of the predictions, and of the raw events of equal windows before
   the two cutoffs (``monitoring.checks``);
4. once labels have matured for a cutoff after the test cutoff: target drift (label rate) and
   realised performance against the promise (``monitoring.performance``);
5. one HTML page (verdict, tables, Evidently charts) and a JSON summary, written to
   ``monitoring.report_dir`` and logged to an MLflow run ``monitor-<task>-<date>``.

The summary's ``alarm`` says whether drift or decay passed the configured thresholds; the CLI
exits with :data:`ALARM_EXIT_CODE` then, and with ``--retrain-on-drift`` retrains at once. The
checks are pure functions of ``monitoring/``; this module only loads, scores, writes and logs,
one named step per function.

``run_retrain(cfg)`` refreshes the snapshot table up to the latest matured cutoff, trains a
challenger (``training.train``, which compares it with the champion on the same test cutoff
and promotes or keeps it through ``training.registry``), and records the decision with both
scores in a parent MLflow run. A failure at any step restores the registry aliases as they were,
so the champion, and the model a running service polls for, stay untouched.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.files import write_atomically
from monitoring.batches import same_weekday_cutoff, task_population
from monitoring.checks import (
    CustomerDrift,
    alarm_reasons,
    customer_drift,
    event_drift,
    retrain_wanted,
)
from monitoring.drift import ColumnDrift, DriftReport
from monitoring.evidently_report import performance_report
from monitoring.page import render_monitor_html
from monitoring.performance import PerformanceCheck, assess_performance
from pipelines.config import ProjectConfig
from pipelines.io import write_json

logger = logging.getLogger(__name__)

#: Exit code of `churn monitor` when drift or performance decay passed the thresholds.
ALARM_EXIT_CODE = 4
#: Exit code of `churn retrain` when retraining failed (aliases restored).
RETRAIN_FAILED_EXIT_CODE = 5

#: Metrics of the champion's run that make its promise, by ``monitoring.performance``'s names.
PROMISED_METRICS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "pr_auc": "pr_auc",
    "lift_at_10": "lift_at_10",
    "ece": "ece",
    "mean_probability": "mean_probability",
    "test_positive_rate": "positive_rate",
}


# --------------------------------------------------------------------------------------------
# The champion and its reference data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChampionReference:
    """The champion version and the reference data logged with its training run."""

    task: str
    model_name: str
    version: str
    run_id: str
    label_column: str
    test_cutoff: pd.Timestamp
    feature_columns: tuple[str, ...]
    features: pd.DataFrame  # test-cutoff rows: features, label, probability
    predictions: pd.DataFrame  # every test row: customer_id, cutoff, probability, label
    promised: dict[str, float]
    global_stats: dict[str, Any] | None

    @property
    def model_uri(self) -> str:
        """The pinned version (not the alias, which may move while the monitor runs)."""
        return f"models:/{self.model_name}/{self.version}"

    @property
    def description(self) -> str:
        return f"{self.model_name} v{self.version} ({self.task})"


def load_champion_reference(cfg: ProjectConfig, task: str) -> ChampionReference:
    """Find the champion of ``task`` and download its reference artifacts."""
    import mlflow

    from training.artifacts import REFERENCE_DIR, read_reference
    from training.config import configure_mlflow
    from training.registry import find_champion

    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    name = cfg.training.task(task).registered_model_name
    version = find_champion(client, name)
    if version is None:
        raise ValueError(
            f"no champion of model {name!r} in the registry: train one first (churn train "
            f"--task {task})"
        )
    run = client.get_run(version.run_id)
    reference = read_reference(version.run_id, client=client)
    if not reference.complete:
        raise ValueError(
            f"champion {name} v{version.version} (run {version.run_id}) has no reference "
            f"data ({REFERENCE_DIR}/): it was trained before monitoring existed; retrain "
            f"it (churn retrain --task {task})"
        )
    info = reference.info
    promised = {
        ours: float(run.data.metrics[theirs])
        for theirs, ours in PROMISED_METRICS.items()
        if theirs in run.data.metrics
    }
    return ChampionReference(
        task=task,
        model_name=name,
        version=str(version.version),
        run_id=version.run_id,
        label_column=info.label_column,
        test_cutoff=pd.Timestamp(info.test_cutoff),
        feature_columns=tuple(info.features),
        features=reference.reference_features,
        predictions=reference.test_predictions,
        promised=promised,
        global_stats=reference.global_stats,
    )


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def batch_features(
    cfg: ProjectConfig, data: Any, cutoff: pd.Timestamp, reference: ChampionReference
) -> tuple[pd.DataFrame, str]:
    """Features of every customer at ``cutoff`` with the champion's global statistics.

    Returns the table (a ``customer_id`` column, one row per customer) and a note on which
    statistics were used.
    """
    from features.segments import GlobalStats
    from pipelines.data import features_as_of

    stats = (
        None if reference.global_stats is None else GlobalStats.from_dict(reference.global_stats)
    )
    table, _ = features_as_of(cfg, data, cutoff, stats=stats)
    note = (
        f"segments and CLV with the champion's statistics of {reference.global_stats.get('cutoff')}"
        if stats is not None
        else "the champion logged no global statistics: segments re-fitted on the current batch"
    )
    return table, note


def matured_labels(
    cfg: ProjectConfig, data: Any, cutoff: pd.Timestamp, features: pd.DataFrame
) -> pd.DataFrame:
    """The labels of ``features``' customers at ``cutoff`` (matured by ``data.data_end``)."""
    from features.labels import build_labels

    labels = build_labels(
        data.events,
        cutoff,
        population=features[["customer_id", "is_active"]],
        subscriptions=data.subscriptions,
        params=cfg.labels,
        data_end=data.data_end,
    )
    return labels.reset_index(drop=True)


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= max_rows else frame.sample(n=max_rows, random_state=seed)


# --------------------------------------------------------------------------------------------
# run_monitor
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentBatch:
    """Today's batch: the task's population at ``cutoff``, sampled and scored by the champion."""

    cutoff: pd.Timestamp
    rows: pd.DataFrame  # features and the champion's ``probability``
    statistics: str  # which global statistics the segments were computed with


@dataclass(frozen=True)
class MaturedCheck:
    """Target drift and realised performance on the latest batch whose labels have matured."""

    performance: PerformanceCheck | None = None
    target_drift: ColumnDrift | None = None
    snapshot: Any = None  # Evidently's target drift and classification quality
    note: str | None = None  # why performance could not be checked yet


def current_cutoff(
    as_of: object | None, data_end: pd.Timestamp, reference: ChampionReference
) -> pd.Timestamp:
    """``as_of``, else the latest day at or before ``data_end`` on the reference's weekday.

    It must come after the champion's test cutoff: before it there is nothing new to monitor.
    """
    if as_of is None:
        cutoff = same_weekday_cutoff(data_end, reference.test_cutoff)
    else:
        cutoff = pd.Timestamp(as_of).normalize()
    if cutoff <= reference.test_cutoff:
        raise ValueError(
            f"the current cutoff {cutoff.date()} is not after the champion's test cutoff "
            f"{reference.test_cutoff.date()}: there is nothing new to monitor"
        )
    return cutoff


def current_batch(
    cfg: ProjectConfig,
    data: Any,
    reference: ChampionReference,
    task: str,
    cutoff: pd.Timestamp,
    score: Callable[[pd.DataFrame], Any],
) -> CurrentBatch:
    """Features of the task's population at ``cutoff`` (a seeded sample), scored by ``score``."""
    features, statistics = batch_features(cfg, data, cutoff, reference)
    population = task_population(features, task, cfg.labels)
    if population.empty:
        raise ValueError(f"no customer of the {task} population at {cutoff.date()}")
    rows = _sample(population, cfg.monitoring.max_rows, cfg.monitoring.seed).copy()
    rows["probability"] = score(rows)
    return CurrentBatch(cutoff=cutoff, rows=rows, statistics=statistics)


def matured_check(
    cfg: ProjectConfig,
    data: Any,
    reference: ChampionReference,
    task: str,
    score: Callable[[pd.DataFrame], Any],
) -> MaturedCheck:
    """Realised performance and target drift on the latest cutoff after the test cutoff whose
    labels have matured by the end of the data (on the reference's weekday); a note if none."""
    from pipelines.data import label_span_days

    span = label_span_days(cfg)
    latest_matured = (data.data_end - pd.Timedelta(days=span)).normalize()
    cutoff = same_weekday_cutoff(latest_matured, reference.test_cutoff)
    if cutoff <= reference.test_cutoff:
        first = reference.test_cutoff + pd.Timedelta(days=7)
        return MaturedCheck(
            note=(
                f"no cutoff after the test cutoff {reference.test_cutoff.date()} has matured "
                f"labels yet (labels of {first.date()} mature on "
                f"{(first + pd.Timedelta(days=span)).date()})"
            )
        )
    features, _ = batch_features(cfg, data, cutoff, reference)
    labels = matured_labels(cfg, data, cutoff, features)
    labelled = features.assign(label=labels[reference.label_column].to_numpy())
    labelled = task_population(labelled, task, cfg.labels)
    labelled = labelled.loc[labelled["label"].notna()]
    if len(labelled):
        labelled = labelled.assign(probability=score(labelled))
    performance = assess_performance(
        labelled["label"].to_numpy(),
        labelled["probability"].to_numpy() if len(labelled) else np.array([]),
        reference.promised,
        cfg.monitoring,
        cutoff=cutoff,
        ece_bins=cfg.training.ece_bins,
    )
    if not performance.sufficient:
        return MaturedCheck(performance=performance)
    target_drift, snapshot = performance_report(reference.predictions, labelled, cfg.monitoring)
    return MaturedCheck(performance=performance, target_drift=target_drift, snapshot=snapshot)


def monitor_summary(
    task: str,
    reference: ChampionReference,
    batch: CurrentBatch,
    data_end: pd.Timestamp,
    customers: CustomerDrift,
    events: DriftReport | None,
    matured: MaturedCheck,
    reasons: list[str],
) -> dict[str, Any]:
    """The monitor's JSON summary: the verdict, then every check's details."""
    alarm = bool(reasons)
    return {
        "task": task,
        "model": reference.description,
        "model_name": reference.model_name,
        "model_version": reference.version,
        "champion_run_id": reference.run_id,
        "reference_cutoff": str(reference.test_cutoff.date()),
        "current_cutoff": str(batch.cutoff.date()),
        "data_end": str(data_end.date()),
        "n_reference": len(reference.features),
        "n_current": len(batch.rows),
        "statistics": batch.statistics,
        "alarm": alarm,
        "alarm_reasons": reasons,
        "drift_detected": bool(
            customers.features.alarms or customers.predictions.alarms or (events and events.alarms)
        ),
        "performance_decay": bool(matured.performance is not None and matured.performance.decayed),
        "feature_drift": customers.features.to_dict(),
        "prediction_drift": customers.predictions.to_dict(),
        "event_drift": None if events is None else events.to_dict(),
        "target_drift": None if matured.target_drift is None else matured.target_drift.to_dict(),
        "performance": None if matured.performance is None else matured.performance.to_dict(),
        "performance_note": matured.note,
        "exit_code": ALARM_EXIT_CODE if alarm else 0,
    }


def monitor_paths(
    cfg: ProjectConfig, task: str, cutoff: pd.Timestamp, out_dir: Path | None
) -> tuple[Path, Path]:
    """The HTML page and the JSON summary of one check (``monitoring.report_dir`` by default)."""
    out_dir = Path(out_dir or cfg.monitoring.report_dir or Path(cfg.output_dir) / "monitoring")
    stem = f"monitor_{task}_{cutoff.date()}"
    return out_dir / f"{stem}.html", out_dir / f"{stem}.json"


def write_monitor_page(
    summary: dict[str, Any],
    customers: CustomerDrift,
    events: DriftReport | None,
    matured: MaturedCheck,
    path: Path,
) -> None:
    """The HTML page: the summary, then each check's Evidently charts."""
    page = render_monitor_html(
        summary,
        [
            ("Customer features and predictions", customers.both.snapshot),
            ("Raw events", None if events is None else events.snapshot),
            ("Target drift and classification quality", matured.snapshot),
        ],
    )
    write_atomically(path, lambda p: p.write_text(page, encoding="utf-8"))


def run_monitor(
    cfg: ProjectConfig,
    *,
    task: str | None = None,
    as_of: object | None = None,
    out_dir: Path | None = None,
    retrain_on_drift: bool | None = None,
    now: pd.Timestamp | None = None,
    data: Any = None,
    log_to_mlflow: bool = True,
    say: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Check the champion of ``task`` against the current data; return the JSON summary.

    ``as_of``: the current batch's cutoff (default: the latest day at or before the end of the
    data on the reference cutoff's weekday). ``retrain_on_drift`` (default from
    ``monitoring.retrain_on_alarm``) runs :func:`run_retrain` when the alarm is raised.
    """
    from pipelines.data import load_validated_data
    from training.registry import load_probability_function

    monitoring = cfg.monitoring
    task = task or monitoring.task
    reference = load_champion_reference(cfg, task)
    say(f"champion {reference.description}, reference: test cutoff {reference.test_cutoff.date()}")
    data = data or load_validated_data(cfg, now=now)
    score = load_probability_function(reference.model_uri)

    cutoff = current_cutoff(as_of, data.data_end, reference)
    batch = current_batch(cfg, data, reference, task, cutoff, score)
    say(f"current batch: {len(batch.rows):,} customers at {cutoff.date()} ({batch.statistics})")
    customers = customer_drift(
        reference.features, batch.rows, reference.feature_columns, monitoring
    )
    events = event_drift(data.events, reference.test_cutoff, cutoff, monitoring)
    matured = matured_check(cfg, data, reference, task, score)
    if matured.performance is not None:
        performance = matured.performance
        say(
            f"matured batch {performance.cutoff}: {performance.n_rows:,} customers, "
            + ("decay" if performance.decayed else (performance.note or "performance kept"))
        )

    reasons = alarm_reasons(
        monitoring,
        customers.features,
        customers.predictions,
        events,
        matured.target_drift,
        matured.performance,
    )
    summary = monitor_summary(
        task, reference, batch, data.data_end, customers, events, matured, reasons
    )
    html_path, json_path = monitor_paths(cfg, task, cutoff, out_dir)
    summary["html"], summary["json"] = str(html_path), str(json_path)
    write_monitor_page(summary, customers, events, matured, html_path)
    if log_to_mlflow:
        summary["mlflow_run_id"] = _log_monitor_run(
            cfg, summary, customers.features, customers.predictions, html_path, json_path
        )
    write_json(summary, json_path)
    say(("ALARM: " + "; ".join(reasons)) if summary["alarm"] else "no alarm")

    if retrain_wanted(summary["alarm"], monitoring, retrain_on_drift):
        say("retraining on the monitor's alarm")
        summary["retrain"] = run_retrain(cfg, task=task, trigger="monitor", data=data, say=say)
        write_json(summary, json_path)
    return summary


def _log_monitor_run(
    cfg: ProjectConfig,
    summary: dict[str, Any],
    feature_drift: Any,
    prediction_drift: Any,
    html_path: Path,
    json_path: Path,
) -> str:
    """One MLflow run per monitor check: verdict tags, drift scores, the two files."""
    import mlflow

    from training.config import configure_mlflow

    configure_mlflow(cfg.training.mlflow)
    metrics: dict[str, float] = {
        "n_current": float(summary["n_current"]),
        "n_drifted_features": float(len(feature_drift.alarms)),
        "drifted_feature_share": len(feature_drift.alarms) / max(1, len(feature_drift.columns)),
        "prediction_drift": prediction_drift.columns[0].score,
        "alarm": float(summary["alarm"]),
    }
    metrics.update(
        {f"drift.{c.column}": c.score for c in feature_drift.columns if np.isfinite(c.score)}
    )
    performance = summary.get("performance") or {}
    for name, value in (performance.get("realised") or {}).items():
        if value is not None:
            metrics[f"realised_{name}"] = float(value)
    if summary.get("target_drift"):
        metrics["label_rate_change"] = float(summary["target_drift"]["score"])
    metrics = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    nested = mlflow.active_run() is not None
    with mlflow.start_run(
        run_name=f"monitor-{summary['task']}-{summary['current_cutoff']}", nested=nested
    ) as run:
        mlflow.set_tags(
            {
                "run_type": "monitor",
                "task": summary["task"],
                "champion_version": summary["model_version"],
                "champion_run_id": summary["champion_run_id"],
                "reference_cutoff": summary["reference_cutoff"],
                "current_cutoff": summary["current_cutoff"],
                "alarm": str(summary["alarm"]).lower(),
                "alarm_reasons": json.dumps(summary["alarm_reasons"])[:5000],
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(html_path), "monitoring")
        mlflow.log_dict(
            {**summary, "mlflow_run_id": run.info.run_id}, f"monitoring/{json_path.name}"
        )
    return run.info.run_id


# --------------------------------------------------------------------------------------------
# run_retrain
# --------------------------------------------------------------------------------------------


def registry_aliases(client: Any, name: str) -> dict[str, str]:
    """Alias -> version of a registered model ({} when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in model.aliases.items()}


def restore_aliases(client: Any, name: str, before: dict[str, str]) -> list[str]:
    """Put ``champion`` and ``challenger`` back where they were; return what was changed."""
    from training.registry import CHALLENGER, CHAMPION

    now = registry_aliases(client, name)
    changed = []
    for alias in (CHAMPION, CHALLENGER):
        if now.get(alias) == before.get(alias):
            continue
        if before.get(alias) is None:
            client.delete_registered_model_alias(name, alias)
            changed.append(f"{alias}: removed from v{now[alias]}")
        else:
            client.set_registered_model_alias(name, alias, before[alias])
            changed.append(f"{alias}: back to v{before[alias]}")
    return changed


def notify_reload(url: str, *, api_key_env: str = "CHURN_API_KEY", timeout_s: float = 10.0) -> str:
    """POST to a running service's reload endpoint; a failure is reported, never raised.

    The service also polls the champion alias, so a missed notification only delays the switch.
    """
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env)
    if key:
        headers.update({"Authorization": f"Bearer {key}", "X-API-Key": key})
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return f"reloaded: HTTP {response.status}"
    except Exception as exc:  # the service may be down; it will poll the alias
        return f"reload request failed ({type(exc).__name__}: {exc}); the service polls the alias"


def refreshed_cutoffs(cfg: ProjectConfig, data_end: pd.Timestamp) -> list[pd.Timestamp]:
    """The snapshot grid of a retrain: ``cutoffs.count`` cutoffs ``every_days`` apart ending at
    the latest cutoff whose labels have matured (explicit dates in the config are ignored: a
    retrain always moves forward to the newest labels)."""
    from features.config import CutoffConfig
    from pipelines.data import label_span_days, resolve_cutoffs

    grid = CutoffConfig(count=cfg.cutoffs.count, every_days=cfg.cutoffs.every_days)
    return resolve_cutoffs(grid, data_end, label_span_days(cfg))


def run_retrain(
    cfg: ProjectConfig,
    *,
    task: str | None = None,
    trigger: str = "manual",
    now: pd.Timestamp | None = None,
    data: Any = None,
    progress: bool = False,
    say: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Refresh features, train a challenger, promote it or keep the champion; never half-way.

    Returns a JSON-able summary; ``status`` is ``"promoted"``, ``"kept_champion"`` or
    ``"failed"`` (then ``error`` says why and the aliases are as before the call).
    """
    import mlflow

    from pipelines.data import (
        build_training_table,
        describe_source,
        load_validated_data,
        stats_of_test_cutoff,
    )
    from training.config import configure_mlflow
    from training.datasets import split_by_time
    from training.registry import CHAMPION
    from training.train import train

    task = task or cfg.monitoring.task
    task_cfg = cfg.training.task(task)
    metric = cfg.training.promotion_metric
    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    name = task_cfg.registered_model_name
    before = registry_aliases(client, name)
    summary: dict[str, Any] = {
        "task": task,
        "trigger": trigger,
        "model_name": name,
        "champion_before": before.get(CHAMPION),
        "promotion_metric": metric,
    }
    parent = mlflow.start_run(
        run_name=f"retrain-{task}-{pd.Timestamp.now().date()}",
        nested=mlflow.active_run() is not None,
    )
    summary["mlflow_run_id"] = parent.info.run_id
    mlflow.set_tags(
        {
            "run_type": "retrain",
            "task": task,
            "trigger": trigger,
            "champion_version_before": before.get(CHAMPION) or "none",
        }
    )
    try:
        say("[retrain 1/3] loading and validating the data")
        data = data or load_validated_data(cfg, now=now)
        cutoffs = refreshed_cutoffs(cfg, data.data_end)
        say(f"[retrain 2/3] snapshots over {', '.join(str(c.date()) for c in cutoffs)}")
        table, stats = build_training_table(cfg, data=data, cutoffs=cutoffs)
        split = split_by_time(table, task_cfg.label_column, cfg.training.purge_gap_days)
        global_stats = stats_of_test_cutoff(cfg, table, stats, task)
        say(f"[retrain 3/3] training a challenger, test cutoff {split.test_cutoff.date()}")
        result = train(
            cfg.training,
            table,
            task=task,
            data_source=describe_source(cfg),
            progress=progress,
            global_stats=global_stats,
        )
        champion_score = client.get_run(result.run_id).data.metrics.get(f"champion_{metric}")
    except Exception as exc:
        restored = restore_aliases(client, name, before)
        logger.exception("retraining %s failed; aliases restored: %s", task, restored)
        summary.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            aliases_restored=restored,
            champion_after=registry_aliases(client, name).get(CHAMPION),
        )
        mlflow.set_tags({"retrain_status": "failed", "error": summary["error"][:5000]})
        mlflow.end_run(status="FAILED")
        say(f"retraining failed, champion unchanged: {summary['error']}")
        return summary
    except BaseException:  # interrupted: put the aliases back, then stop
        restore_aliases(client, name, before)
        mlflow.end_run(status="KILLED")
        raise

    after = registry_aliases(client, name)
    challenger_score = result.metrics.get(metric)
    summary.update(
        status="promoted" if result.promoted else "kept_champion",
        challenger_version=result.model_version,
        challenger_run_id=result.run_id,
        challenger_score=challenger_score,
        champion_score=champion_score,
        reason=result.promotion_reason,
        champion_after=after.get(CHAMPION),
        test_cutoff=result.split["test_cutoff"],
        cutoffs=[str(c.date()) for c in cutoffs],
    )
    try:
        scores = {f"challenger_{metric}": challenger_score, f"champion_{metric}": champion_score}
        mlflow.log_metrics({k: float(v) for k, v in scores.items() if v is not None})
        mlflow.set_tags(
            {
                "retrain_status": summary["status"],
                "promotion_reason": result.promotion_reason[:5000],
                "challenger_version": result.model_version,
                "champion_version_after": after.get(CHAMPION) or "none",
            }
        )
        if result.promoted and cfg.monitoring.reload_url:
            summary["reload"] = notify_reload(
                cfg.monitoring.reload_url, api_key_env=cfg.serving.api_key_env
            )
    finally:
        mlflow.end_run(status="FINISHED")
    verdict = (
        "promoted to champion"
        if result.promoted
        else f"champion v{after.get(CHAMPION)} kept ({result.promotion_reason})"
    )
    say(f"challenger v{result.model_version}: {verdict}")
    return summary
