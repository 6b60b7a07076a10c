"""The flow of `churn report`: the retention report's data, model and risk list in, a page out.

The analyses, charts and page are pure functions in ``reporting``; this module is their I/O
edge. :func:`build_report_data` takes the validated data (``pipelines.data.LoadedData``),
computes today's features and the snapshot table, reads the latest risk list of `churn score`
(:func:`read_latest_risk_list`), loads the churn champion from the MLflow registry
(:func:`champion_scorer`) and hands them to ``reporting.analyses``; :func:`run_report` renders
the page and writes it. A missing risk list or champion is not an error: the page says what is
missing and what to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import ProjectConfig
from pipelines.data import (
    LoadedData,
    build_training_table,
    features_as_of,
    label_span_days,
    load_validated_data,
    resolve_cutoffs,
)
from reporting.analyses import (
    active_rows,
    backtest_champion,
    behaviour_deciles,
    churn_rate_over_time,
    co_purchase_shares,
    cohort_retention,
    latest_matured_rows,
    matured_rows,
    model_value_at_risk,
    risk_list_value_at_risk,
    segment_summaries,
)
from reporting.page import RetentionReportData, render_retention_report

__all__ = ["build_report_data", "champion_scorer", "read_latest_risk_list", "run_report"]

#: The churn champion as a scoring function, and its run's split (``champion_scorer``).
Champion = tuple[Callable[[pd.DataFrame], np.ndarray], dict[str, Any]]


def champion_scorer(cfg: ProjectConfig) -> Champion | None:
    """The churn champion as a scoring function, with its run's split; None without one."""
    import mlflow

    from training.config import configure_mlflow
    from training.registry import find_champion, load_probability_function

    configure_mlflow(cfg.training.mlflow)
    client = mlflow.MlflowClient()
    name = cfg.training.task("churn").registered_model_name
    version = find_champion(client, name)
    if version is None:
        return None
    score = load_probability_function(f"models:/{name}/{version.version}")
    params = client.get_run(version.run_id).data.params
    info = {
        "description": f"{name} v{version.version}",
        "train_cutoffs": [c for c in params.get("train_cutoffs", "").split(",") if c],
        "validation_cutoff": params.get("validation_cutoff"),
        "test_cutoff": params.get("test_cutoff"),
    }
    return score, info


def load_champion_for_report(cfg: ProjectConfig) -> tuple[Champion | None, str]:
    """:func:`champion_scorer`, or None and the sentence the page shows instead of a backtest.

    Any failure to load is reported, not raised: the report is still useful without a model.
    """
    try:
        champion = champion_scorer(cfg)
    except Exception as exc:
        return None, f"the churn champion could not be loaded ({type(exc).__name__}: {exc})"
    if champion is None:
        return None, "no churn champion in the registry: train one (`churn train`)"
    return champion, ""


def read_latest_risk_list(
    cfg: ProjectConfig, path: Path | None = None
) -> tuple[pd.DataFrame | None, str]:
    """The risk list `churn score` wrote (default: ``serving.risk_list_path``) and a sentence
    saying which it is; without one, None and a sentence saying what to run."""
    from serving.scoring import read_risk_list

    path = Path(path) if path is not None else cfg.serving.risk_list_location(cfg.output_dir)
    if not path.is_file():
        return None, (
            f"No risk list at {path}: run `churn score` to produce one; until then "
            "this report cannot name the customers to call."
        )
    read = read_risk_list(path)
    risk_list = read.frame
    return risk_list, (
        f"Risk list {path} as of {read.as_of or 'unknown'} ({len(risk_list):,} customers)."
    )


def report_snapshots(
    cfg: ProjectConfig, data: LoadedData, say: Callable[[str], None]
) -> pd.DataFrame:
    """The snapshot table over the configured cutoffs, labelled on the scoring horizon."""
    cutoffs = resolve_cutoffs(cfg.cutoffs, data.data_end, label_span_days(cfg))
    say(f"snapshots over {', '.join(str(c.date()) for c in cutoffs)}")
    snapshots, _ = build_training_table(cfg, data=data, cutoffs=cutoffs)
    return snapshots


def build_report_data(
    cfg: ProjectConfig,
    data: LoadedData,
    *,
    snapshots: pd.DataFrame | None = None,
    risk_list_path: Path | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> RetentionReportData:
    """Compute every part of the report from validated data (``pipelines.data.LoadedData``).

    ``snapshots`` default to :func:`report_snapshots`; the risk list to the one `churn score`
    wrote last. Each part that cannot be computed leaves a note the page shows instead.
    """
    notes: dict[str, str] = {}
    as_of = data.data_end
    say(f"today's features as of {as_of.date()}")
    today, _ = features_as_of(cfg, data, as_of)
    if snapshots is None:
        snapshots = report_snapshots(cfg, data, say)
    matured = matured_rows(snapshots)
    latest = latest_matured_rows(matured)
    overall = float(latest["churn_label"].mean()) if len(latest) else None

    say("churn over time and cohorts")
    rates = churn_rate_over_time(
        data.events, cfg.labels, data_end=as_of, subscriptions=data.subscriptions
    )
    cohorts = cohort_retention(data.events, cfg.labels, data_end=as_of, customers=data.customers)

    risk_list, risk_list_text = read_latest_risk_list(cfg, risk_list_path)
    if risk_list is None:
        notes["risk_list"] = notes["cross_sell"] = risk_list_text

    champion, champion_note = load_champion_for_report(cfg)
    model = ""
    value_at_risk = None
    backtest = None
    active_today = active_rows(today)
    if champion is not None:
        score, info = champion
        model = info["description"]
        say(f"backtest of {model} on {matured['cutoff'].nunique()} matured cutoffs")
        backtest = backtest_champion(matured, score, info, fraction=0.1)
        if risk_list is None and len(active_today):
            value_at_risk = model_value_at_risk(active_today, score)
    else:
        notes["backtest"] = champion_note
    if risk_list is not None and "expected_value_at_risk" in risk_list.columns:
        value_at_risk = risk_list_value_at_risk(risk_list, today)

    deciles = behaviour_deciles(latest) if len(latest) else pd.DataFrame()
    if deciles.empty:
        notes["deciles"] = "no matured, labelled cutoff yet for the behaviour deciles"
    values = pd.to_numeric(today.get("value_365d", pd.Series(dtype=float)), errors="coerce")
    return RetentionReportData(
        as_of=as_of,
        data_start=pd.Timestamp(data.events["timestamp"].min()).normalize(),
        n_customers=len(today),
        n_active=len(active_today),
        churn_over_time=rates,
        cohorts=cohorts,
        values=values.fillna(0.0),
        segments=segment_summaries(today, latest, value_at_risk=value_at_risk),
        deciles=deciles,
        overall_churn_rate=overall,
        backtest=backtest,
        co_purchase=co_purchase_shares(data.events, as_of=as_of),
        risk_list=risk_list,
        risk_list_source=risk_list_text if risk_list is not None else "",
        model=model,
        notes=notes,
        currency=cfg.serving.currency,
    )


def run_report(
    cfg: ProjectConfig,
    out: Path | None = None,
    *,
    risk_list_path: Path | None = None,
    data: LoadedData | None = None,
    snapshots: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> Path:
    """Build the retention report from the configured data; write it atomically; return the path.

    ``out`` defaults to ``<output_dir>/retention_report.html``. Uses the churn champion (for the
    backtest and, without a risk list, the value at risk) when the registry has one, and the
    latest risk list of ``churn score`` when present; the page says what is missing.
    """
    from features.files import write_atomically

    data = data or load_validated_data(cfg, now=now)
    report = build_report_data(
        cfg, data, snapshots=snapshots, risk_list_path=risk_list_path, say=say
    )
    page = render_retention_report(report)
    out = Path(out) if out is not None else Path(cfg.output_dir) / "retention_report.html"
    write_atomically(out, lambda p: p.write_text(page, encoding="utf-8"))
    say(f"retention report: {out}")
    return out
