"""Proof on data we did not write: the user's path on socialnet7 and CDNOW, against Featuretools.

    python -m benchmarks.external [--trials 20] [--time-budget 600] [--seed 0]
        [--only socialnet7|cdnow] [--socialnet7-as-of YYYY-MM-DD] [--sample-customers N]
        [--no-featuretools] [--set KEY=VALUE] [--work-dir DIR]

What runs. For each data set and "as of" date D, the adapters (``benchmarks/external_sources.py``)
write what the source would have exported at D under its own column names, and a project config
from ``benchmarks/configs/<name>.yaml`` (column mapping, event-type mapping, labels, cutoff grid,
training settings; paths, quarantine and a SQLite MLflow store under the work directory). Then
the same flow functions the ``churn`` commands call, in order: ``validate`` (load and validate),
``snapshots`` (features and labels on the cutoff grid, labels matured by D), ``train --task
churn`` (tuned, calibrated, registered: the first model of a fresh store is the champion) and
``score --as-of D`` (every customer, the risk list). Nothing in the pipeline knows these data
sets.

* socialnet7 (``/work/shared/datasets/socialnet7``): as of 2020-04-01 and 2020-05-01, 30-day
  subscription churn (``labels.churn_definition: subscription``). The export at D holds the
  events before D and the subscription rows started before D, whose end dates at or after D are
  blank (not yet known; the scheduled end of the paid month is exported as the term end).
* CDNOW (``CDNOW_master.txt`` of the ``lifetimes`` package): as of 1997-10-01, churn = no
  purchase in the 273-day holdout to 1998-06-30. No cutoff with history has a matured 273-day
  outcome at D, so the model is trained on a 92-day window at 1997-04-01 .. 07-01, all matured
  by D (the reasoning of ``benchmarks/cdnow.py``), set in the config.

Grading. The truth comes from the full data, not from the pipeline: socialnet7, subscribed at D
and not subscribed at D + 30 days; CDNOW, bought before D and not in [D, 1998-07-01). Every
method is graded on the same customers: the truly eligible ones that our risk list scored.
Eligible customers without a score are counted and reported (``unscored_eligible``), never
dropped silently; so are scored customers the truth does not count as eligible.

Methods, each timed (wall clock, this process; the machine may be shared):

* ours: the flows above, from the export files to the risk list (``churn_probability``);
* recency rule: "days since last activity", score = days since the last event (any type, or of
  one event type of the export); the best candidate is chosen by its mean ROC AUC over the
  training cutoffs (the snapshot labels matured by D), never on the outcome at D;
* BG/NBD (CDNOW): minus the expected holdout purchases, ``benchmarks/cdnow.py``'s code;
* Featuretools: deep feature synthesis on an EntitySet of the same export files (customers,
  events, subscriptions with the end date as a secondary time index so an end after a cutoff is
  unknown at it), default primitives plus time since last/first, average time between, a
  null check and counts per event type, and counts in the last 7 and 30 days
  (``training_window``), at the same training cutoffs and D (``cutoff_time``, data strictly
  before it); an ``xgboost.XGBClassifier`` on the same labels as ours, trained on every
  cutoff but the last, early stopping (PR AUC) on the last one, then scored at D.

Metrics: ROC AUC, PR AUC (average precision) and lift at 10% (churn rate in the top 10% by
score over the overall rate; tied scores at the boundary count with their group's rate, so a
tie is not broken by row order), churn as the positive class.

Output: a table, then as the LAST line one JSON object: ``socialnet7_roc_auc`` (ours, the lower
of the two dates), ``socialnet7_featuretools_roc_auc`` and ``socialnet7_recency_roc_auc`` (the
higher of the two), ``cdnow_roc_auc``, ``cdnow_featuretools_roc_auc``,
``cdnow_recency_roc_auc``, ``cdnow_bgnbd_roc_auc``, ``ours_seconds`` and
``featuretools_seconds`` (end to end, every date of both data sets), per-date figures
(``<dataset>_<D>``: each method's metrics and seconds, coverage) and ``goals``: socialnet7 >=
0.78 at each date, CDNOW >= 0.775, ahead of Featuretools and of the recency rule (ours at its
lower date against theirs at their higher one), faster than Featuretools; true/false each
(null for what did not run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.config import load_config
from pipelines.data import (
    load_validated_data,
    run_snapshots,
    run_train,
    run_validate,
)
from pipelines.scoring import run_score

from . import cdnow
from . import external_sources as sources

SOCIALNET7_DATES = (pd.Timestamp("2020-04-01"), pd.Timestamp("2020-05-01"))
SOCIALNET7_HORIZON_DAYS = 30
CDNOW_DATE = pd.Timestamp("1997-10-01")
CDNOW_HORIZON_DAYS = int((sources.CDNOW_DATA_END - CDNOW_DATE).days)  # 273
DATASETS = ("socialnet7", "cdnow")
TOP_FRACTION = 0.10

GOAL_SOCIALNET7_ROC_AUC = 0.78
GOAL_CDNOW_ROC_AUC = 0.775

#: Featuretools' primitives: its defaults plus recency-style aggregations and counts per type.
FT_AGG_PRIMITIVES = (
    "sum", "std", "max", "skew", "min", "mean", "count", "percent_true", "num_unique", "mode",
    "time_since_last", "time_since_first", "avg_time_between",
)  # fmt: skip
FT_TRANS_PRIMITIVES = ("day", "year", "month", "weekday", "is_null")
FT_WHERE_PRIMITIVES = ("count",)
FT_WINDOWS = ("7 days", "30 days")


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def lift_at(y: np.ndarray, score: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Churn rate among the top ``fraction`` by score over the overall rate; the group of tied
    scores at the boundary contributes its own rate (the expectation over tie orders)."""
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    base = y.mean()
    if len(y) == 0 or base == 0:
        return float("nan")
    k = max(1, math.ceil(fraction * len(y) - 1e-9))
    order = np.argsort(-score, kind="stable")
    threshold = score[order[k - 1]]
    above = score > threshold
    tied = score == threshold
    taken_from_tie = k - int(above.sum())
    positives = y[above].sum() + taken_from_tie * y[tied].mean()
    return float(positives / k / base)


def grade(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if not np.isfinite(score).all():
        raise ValueError(f"{int((~np.isfinite(score)).sum())} scores are not finite")
    if y.min() == y.max():
        nan = float("nan")
        return {"roc_auc": nan, "pr_auc": nan, "lift_at_10": nan}
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "lift_at_10": lift_at(y, score),
    }


# --------------------------------------------------------------------------------------------
# The cases: one data set as of one date
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One data set as of one date: how to export it, its config and its truth."""

    dataset: str
    as_of: pd.Timestamp
    template: str
    export: Callable[[Path], dict[str, Path]]
    truth: Callable[[], pd.Series]
    #: the export read back for the recency rule and Featuretools (source names)
    tables: Callable[[dict[str, Path]], dict[str, pd.DataFrame]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.as_of.date()}"


def socialnet7_tables(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """The socialnet7 export in the shape the peer and the rule use (string ids)."""
    events = pd.read_parquet(
        paths["events"], columns=["account_id", "event_time", "event_type_name"]
    ).rename(
        columns={"account_id": "customer_id", "event_time": "timestamp", "event_type_name": "type"}
    )
    events["customer_id"] = events["customer_id"].astype(str)
    accounts = pd.read_parquet(paths["accounts"], columns=["id", "channel", "country"])
    accounts = accounts.rename(columns={"id": "customer_id"})
    accounts["customer_id"] = accounts["customer_id"].astype(str)
    subscriptions = pd.read_parquet(
        paths["subscriptions"],
        columns=["account_id", "start_date", "end_date", "period_end", "mrr"],
    ).rename(columns={"account_id": "customer_id"})
    subscriptions["customer_id"] = subscriptions["customer_id"].astype(str)
    for column in ("start_date", "end_date", "period_end"):
        subscriptions[column] = pd.to_datetime(subscriptions[column])
    return {"events": events, "customers": accounts, "subscriptions": subscriptions}


def cdnow_tables(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    events = pd.read_csv(paths["events"], dtype={"customer_id": str, "date": str})
    events = pd.DataFrame(
        {
            "customer_id": events["customer_id"],
            "timestamp": pd.to_datetime(events["date"], format="%Y%m%d"),
            "type": events["record_type"],
            "amount": events["dollar_value"].astype(float),
            "quantity": events["number_of_cds"].astype(float),
        }
    )
    customers = pd.read_csv(paths["customers"], dtype=str)[["customer_id"]]
    return {"events": events, "customers": customers}


def build_cases(args: argparse.Namespace) -> list[Case]:
    cases: list[Case] = []
    if args.only in (None, "socialnet7"):
        raw = sources.read_socialnet7(args.socialnet7)
        raw = sources.sample_socialnet7(raw, args.sample_customers, args.seed)
        dates = SOCIALNET7_DATES
        if args.socialnet7_dates:
            dates = tuple(pd.Timestamp(d) for d in args.socialnet7_dates)
        for as_of in dates:
            cases.append(
                Case(
                    dataset="socialnet7",
                    as_of=as_of,
                    template="socialnet7",
                    export=lambda d, a=as_of: sources.export_socialnet7(raw, a, d),
                    truth=lambda a=as_of: sources.socialnet7_truth(raw, a, SOCIALNET7_HORIZON_DAYS),
                    tables=socialnet7_tables,
                    extra={"horizon_days": SOCIALNET7_HORIZON_DAYS},
                )
            )
    if args.only in (None, "cdnow"):
        log = sources.read_cdnow(args.cdnow)
        log = sources.sample_cdnow(log, args.sample_customers, args.seed, CDNOW_DATE)
        cases.append(
            Case(
                dataset="cdnow",
                as_of=CDNOW_DATE,
                template="cdnow",
                export=lambda d: sources.export_cdnow(log, CDNOW_DATE, d),
                truth=lambda: sources.cdnow_truth(log, CDNOW_DATE),
                tables=cdnow_tables,
                extra={"horizon_days": CDNOW_HORIZON_DAYS, "log": log},
            )
        )
    return cases


# --------------------------------------------------------------------------------------------
# Ours: the flows of the `churn` commands
# --------------------------------------------------------------------------------------------


def run_ours(config_path: Path, as_of: pd.Timestamp, run_dir: Path, say) -> dict[str, Any]:
    """validate -> snapshots -> train --task churn -> score --as-of, as the CLI runs them."""
    uri = f"sqlite:///{(run_dir / 'mlruns' / 'mlflow.db').resolve()}"
    environ = {k: v for k, v in os.environ.items() if k not in sources.MLFLOW_ENVIRONMENT}
    environ["CHURN_MLFLOW_TRACKING_URI"] = uri  # the same store the config names
    cfg = load_config(config_path, environ=environ)
    timings: dict[str, float] = {}

    step = time.perf_counter()
    data = load_validated_data(cfg)
    validation = run_validate(cfg, data=data)
    timings["validate"] = time.perf_counter() - step
    quarantined = {k: v["quarantined_rows"] for k, v in validation["validation"].items()}
    say(
        f"  validate: {validation['events']:,} events, {validation['customers'] or 0:,} "
        f"customers, {validation['subscriptions'] or 0:,} subscriptions; quarantined "
        f"{quarantined}; data end {data.data_end.date()}"
    )

    step = time.perf_counter()
    snapshots_path = run_dir / "snapshots.parquet"
    snapshots = run_snapshots(cfg, snapshots_path, data=data)
    timings["snapshots"] = time.perf_counter() - step
    churn_rates = {
        c: (v["churn_label_count"], v["churn_label_mean"]) for c, v in snapshots["labels"].items()
    }
    say(f"  snapshots: {snapshots['rows']:,} rows; churn labels (rows, rate) {churn_rates}")

    step = time.perf_counter()
    result = run_train(cfg, "churn", snapshots_path=snapshots_path, progress=False)
    timings["train"] = time.perf_counter() - step
    metrics = result.metrics
    say(
        f"  train: {result.model_name} v{result.model_version} -> {result.alias}; split "
        f"{result.split}; its test ROC AUC {metrics['roc_auc']:.3f}, PR AUC "
        f"{metrics['pr_auc']:.3f}, {int(metrics.get('n_trials', 0))} trials"
    )

    step = time.perf_counter()
    risk_path = run_dir / "risk_list.parquet"
    scored = run_score(cfg, as_of.date(), out=risk_path, data=data)
    timings["score"] = time.perf_counter() - step
    say(f"  score: {scored['customers']:,} customers, status {scored['status']}")

    risk = pd.read_parquet(risk_path, columns=["customer_id", "churn_probability"])
    probability = risk.set_index(risk["customer_id"].astype(str))["churn_probability"]
    table = pd.read_parquet(snapshots_path, columns=["customer_id", "cutoff", "churn_label"])
    labels = table.loc[table["churn_label"].notna()].copy()
    labels["customer_id"] = labels["customer_id"].astype(str)
    return {
        "scores": probability.astype(float),
        "labels": labels.reset_index(drop=True),
        "seconds": sum(timings.values()),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "pipeline_test": {
            "split": result.split,
            "roc_auc": round(float(metrics["roc_auc"]), 4),
            "pr_auc": round(float(metrics["pr_auc"]), 4),
            "trials": int(metrics.get("n_trials", 0)),
        },
        "quarantined_rows": quarantined,
        "config": cfg,
    }


# --------------------------------------------------------------------------------------------
# Recency rule
# --------------------------------------------------------------------------------------------

_NEVER_DAYS = 100_000.0  # "never did it": ranks after every real recency


def recency_table(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Days since the last event (``recency_days``) and since the last event of each type
    (``days_since_last_<type>``), per customer with an event before ``cutoff``."""
    before = events.loc[events["timestamp"] < cutoff]
    last_any = before.groupby("customer_id", sort=False)["timestamp"].max()
    per_type = (
        before.groupby(["customer_id", "type"], sort=False, observed=True)["timestamp"]
        .max()
        .unstack("type")
    )
    table = pd.DataFrame(index=last_any.index)
    table["recency_days"] = last_any
    for name in sorted(map(str, per_type.columns)):
        table[f"days_since_last_{name}"] = per_type[name]
    days = (cutoff - table).apply(lambda s: s.dt.total_seconds() / 86_400.0)
    return days


def recency_scores(table: pd.DataFrame, ids: pd.Index) -> pd.DataFrame:
    return table.reindex(ids).fillna(_NEVER_DAYS)


def run_recency(
    events: pd.DataFrame, labels: pd.DataFrame, as_of: pd.Timestamp, ids: pd.Index
) -> dict[str, Any]:
    """The best "days since last activity" rule on the training cutoffs, applied at D."""
    started = time.perf_counter()
    per_cutoff: dict[str, list[float]] = {}
    for cutoff, rows in labels.groupby("cutoff"):
        y = rows["churn_label"].to_numpy()
        if y.min() == y.max():
            continue
        table = recency_scores(
            recency_table(events, pd.Timestamp(cutoff)), pd.Index(rows["customer_id"])
        )
        for column in table.columns:
            per_cutoff.setdefault(column, []).append(grade(y, table[column].to_numpy())["roc_auc"])
    if not per_cutoff:
        raise ValueError("no training cutoff has both churners and non-churners")
    mean_auc = {k: float(np.mean(v)) for k, v in per_cutoff.items()}
    best = max(sorted(mean_auc), key=lambda k: mean_auc[k])
    at_d = recency_scores(recency_table(events, as_of), ids)
    return {
        "scores": at_d[best] if best in at_d.columns else pd.Series(_NEVER_DAYS, index=ids),
        "rule": best,
        "training_roc_auc": {k: round(v, 4) for k, v in sorted(mean_auc.items())},
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# BG/NBD (CDNOW)
# --------------------------------------------------------------------------------------------


def run_bgnbd(events: pd.DataFrame, ids: pd.Index) -> dict[str, Any]:
    """``benchmarks/cdnow.py``'s reference: minus the expected purchases in the 39-week holdout,
    fitted on the purchases before 1997-10-01 (in weeks, repeat purchase days)."""
    started = time.perf_counter()
    if cdnow.TEST_CUTOFF != CDNOW_DATE or cdnow.HOLDOUT_DAYS != CDNOW_HORIZON_DAYS:
        raise AssertionError("benchmarks/cdnow.py's split is not this one")
    canonical = events.assign(event_type="purchase")[["customer_id", "timestamp", "event_type"]]
    score, params = cdnow.bgnbd_churn_scores(canonical, pd.Series(ids))
    return {
        "scores": pd.Series(score, index=ids),
        "params": {k: round(float(v), 4) for k, v in params.items()},
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Featuretools + XGBoost
# --------------------------------------------------------------------------------------------


def _entityset(name: str, tables: dict[str, pd.DataFrame]):
    import featuretools as ft

    es = ft.EntitySet(id=name)
    customers = tables["customers"].drop_duplicates("customer_id")
    # ids stay text ("00019" is not the number 19); attributes are categories
    categorical = {c: "Categorical" for c in customers.columns if c != "customer_id"}
    categorical["customer_id"] = "Unknown"
    es = es.add_dataframe(
        dataframe_name="customers",
        dataframe=customers,
        index="customer_id",
        logical_types=categorical,
    )
    events = tables["events"].reset_index(drop=True)
    es = es.add_dataframe(
        dataframe_name="events",
        dataframe=events,
        index="event_id",
        make_index=True,
        time_index="timestamp",
        logical_types={"type": "Categorical", "customer_id": "Unknown"},
    )
    es = es.add_relationship("customers", "customer_id", "events", "customer_id")
    types = sorted(events["type"].astype(str).unique())
    if len(types) > 1:
        es.add_interesting_values(dataframe_name="events", values={"type": types})
    if "subscriptions" in tables:
        es = es.add_dataframe(
            dataframe_name="subscriptions",
            dataframe=tables["subscriptions"].reset_index(drop=True),
            index="subscription_id",
            make_index=True,
            time_index="start_date",
            # an end date is only known once it has passed (masked at later cutoffs)
            secondary_time_index={"end_date": ["end_date"]},
            logical_types={"customer_id": "Unknown"},
        )
        es = es.add_relationship("customers", "customer_id", "subscriptions", "customer_id")
    es.add_last_time_indexes()
    return es


def _clean_name(name: str) -> str:
    return re.sub(r"[\[\]<>,\s]+", "_", name)


def featuretools_matrix(
    name: str, tables: dict[str, pd.DataFrame], cutoff_time: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, int]:
    """DFS features per (customer_id, time) row of ``cutoff_time`` from data strictly before
    its time; returns the matrix (same row order) and the number of feature definitions."""
    import featuretools as ft

    es = _entityset(name, tables)
    definitions = ft.dfs(
        entityset=es,
        target_dataframe_name="customers",
        agg_primitives=list(FT_AGG_PRIMITIVES),
        trans_primitives=list(FT_TRANS_PRIMITIVES),
        where_primitives=list(FT_WHERE_PRIMITIVES),
        max_depth=2,
        features_only=True,
    )
    common = {
        "entityset": es,
        "cutoff_time": cutoff_time[["customer_id", "time"]],
        "cutoff_time_in_index": True,
        "include_cutoff_time": False,  # data strictly before the cutoff, like ours
        "verbose": False,
    }
    matrices = [ft.calculate_feature_matrix(definitions, **common)]
    # time-windowed counts: events (all and per type) in the last 7 and 30 days
    counts = ft.dfs(
        entityset=es,
        target_dataframe_name="customers",
        agg_primitives=["count"],
        trans_primitives=[],
        where_primitives=["count"],
        max_depth=1,
        features_only=True,
        ignore_dataframes=["subscriptions"] if "subscriptions" in tables else None,
    )
    for window in FT_WINDOWS:
        windowed = ft.calculate_feature_matrix(counts, training_window=window, **common)
        windowed = windowed[[c for c in windowed.columns if c.startswith("COUNT(")]]
        windowed.columns = [f"{c}_last_{window.replace(' ', '_')}" for c in windowed.columns]
        matrices.append(windowed)
    matrix = pd.concat(matrices, axis=1)
    key = pd.MultiIndex.from_arrays(
        [cutoff_time["customer_id"].astype(str), pd.to_datetime(cutoff_time["time"])]
    )
    matrix.index = pd.MultiIndex.from_arrays(
        [
            matrix.index.get_level_values(0).astype(str),
            pd.to_datetime(matrix.index.get_level_values(1)),
        ]
    )
    matrix = matrix.reindex(key)
    if len(matrix) and matrix.isna().all(axis=1).any():
        missing = int(matrix.isna().all(axis=1).sum())
        raise AssertionError(f"Featuretools returned no row for {missing} (customer, cutoff) pairs")
    n_definitions = len(definitions) + len(FT_WINDOWS) * len(counts)
    return matrix, n_definitions


def _xgboost_frame(matrix: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 (booleans 0/1), everything else as pandas categories."""
    columns: dict[str, pd.Series] = {}
    for column in matrix.columns:
        values = matrix[column].reset_index(drop=True)
        if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
            columns[_clean_name(column)] = values.astype("float64")
        else:
            present = values.notna().to_numpy()
            if not present.any():
                continue  # never known: nothing to learn (and no category for XGBoost)
            text = np.full(len(values), None, dtype=object)
            text[present] = [str(v) for v in values.to_numpy(dtype=object)[present]]
            columns[_clean_name(column)] = pd.Series(text, dtype="category")
    return pd.DataFrame(columns)


def run_featuretools(
    case: Case, paths: dict[str, Path], labels: pd.DataFrame, ids: pd.Index, seed: int
) -> dict[str, Any]:
    """Featuretools features at the training cutoffs and D, an XGBoost on our labels."""
    import xgboost as xgb

    started = time.perf_counter()
    tables = case.tables(paths)
    training = labels[["customer_id", "cutoff", "churn_label"]].rename(columns={"cutoff": "time"})
    scoring = pd.DataFrame({"customer_id": ids.astype(str), "time": case.as_of})
    cutoff_time = pd.concat([training, scoring], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix, n_definitions = featuretools_matrix(case.dataset, tables, cutoff_time, seed)
    features_done = time.perf_counter()
    X = _xgboost_frame(matrix)
    is_training = np.arange(len(cutoff_time)) < len(training)
    cutoffs = sorted(training["time"].unique())
    last = cutoffs[-1]
    fit_rows = is_training & (cutoff_time["time"] != last).to_numpy()
    stop_rows = is_training & (cutoff_time["time"] == last).to_numpy()
    y = cutoff_time["churn_label"].to_numpy()
    model = xgb.XGBClassifier(
        n_estimators=1000,  # our pipeline's max_boosting_rounds
        learning_rate=0.1,
        max_depth=4,
        subsample=0.8,
        colsample_bytree=0.8,
        eval_metric="aucpr",
        early_stopping_rounds=50,
        tree_method="hist",
        enable_categorical=True,
        random_state=seed,
        n_jobs=2,
    )
    model.fit(
        X.loc[fit_rows], y[fit_rows], eval_set=[(X.loc[stop_rows], y[stop_rows])], verbose=False
    )
    scores = model.predict_proba(X.loc[~is_training])[:, 1]
    return {
        "scores": pd.Series(scores, index=ids),
        "features": int(X.shape[1]),
        "definitions": n_definitions,
        "best_iteration": int(model.best_iteration),
        "early_stopping_cutoff": str(pd.Timestamp(last).date()),
        "seconds": time.perf_counter() - started,
        "feature_seconds": round(features_done - started, 1),
    }


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


def run_case(case: Case, args: argparse.Namespace, work_dir: Path, say) -> dict[str, Any]:
    root = work_dir / case.key
    say(f"\n== {case.dataset} as of {case.as_of.date()} ==")
    step = time.perf_counter()
    paths = case.export(root / "export")
    export_seconds = time.perf_counter() - step
    config_path = sources.write_config(
        case.template,
        root / "export",
        root / "run",
        overrides={
            "training.n_trials": args.trials,
            "training.time_budget_s": args.time_budget,
            "training.seed": args.seed,
            "features.seed": args.seed,
            **args.config_overrides,
        },
    )
    say(f"  export: {', '.join(str(p) for p in paths.values())} ({export_seconds:.1f} s)")
    say(f"  config: {config_path}")

    ours = run_ours(config_path, case.as_of, root / "run", say)
    truth = case.truth()
    scored = ours["scores"].dropna()
    eligible = truth.index
    evaluated = eligible[eligible.isin(scored.index)]
    unscored = eligible[~eligible.isin(scored.index)]
    extra_scored = scored.index[~scored.index.isin(eligible)]
    y = truth.reindex(evaluated).to_numpy()
    say(
        f"  truth: {len(eligible):,} eligible customers, churn rate {truth.mean():.4f}; scored "
        f"{len(evaluated):,} of them; {len(unscored):,} eligible without a score"
        + (" (FAILURE: listed in the JSON)" if len(unscored) else "")
        + f"; {len(extra_scored):,} scored customers not eligible by the truth"
    )

    methods: dict[str, dict[str, Any]] = {
        "ours": {**grade(y, scored.reindex(evaluated).to_numpy()), "seconds": ours["seconds"]}
    }
    events = case.tables(paths)["events"]
    recency = run_recency(events, ours["labels"], case.as_of, evaluated)
    methods["recency"] = {
        **grade(y, recency["scores"].to_numpy()),
        "seconds": recency["seconds"],
        "rule": recency["rule"],
    }
    if case.dataset == "cdnow":
        bgnbd = run_bgnbd(events, evaluated)
        methods["bgnbd"] = {
            **grade(y, bgnbd["scores"].to_numpy()),
            "seconds": bgnbd["seconds"],
            "params": bgnbd["params"],
        }
    if args.featuretools:
        peer = run_featuretools(case, paths, ours["labels"], evaluated, args.seed)
        methods["featuretools"] = {
            **grade(y, peer["scores"].to_numpy()),
            "seconds": peer["seconds"],
            "feature_seconds": peer["feature_seconds"],
            "features": peer["features"],
            "best_iteration": peer["best_iteration"],
        }
    for method in methods.values():
        for key in ("roc_auc", "pr_auc", "lift_at_10", "seconds"):
            method[key] = round(float(method[key]), 4 if key != "seconds" else 1)
    return {
        "dataset": case.dataset,
        "as_of": str(case.as_of.date()),
        "horizon_days": case.extra["horizon_days"],
        "eligible": int(len(eligible)),
        "evaluated": int(len(evaluated)),
        "churners": int(y.sum()),
        "churn_rate": round(float(y.mean()), 4) if len(y) else None,
        "unscored_eligible": int(len(unscored)),
        "unscored_eligible_examples": [str(c) for c in unscored[:10]],
        "scored_not_eligible": int(len(extra_scored)),
        "export_seconds": round(export_seconds, 1),
        "ours_steps_seconds": ours["timings"],
        "ours_pipeline_test": ours["pipeline_test"],
        "quarantined_rows": ours["quarantined_rows"],
        "recency_training_roc_auc": recency["training_roc_auc"],
        "methods": methods,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

METHOD_NAMES = {
    "ours": "ours (churn pipeline)",
    "featuretools": "Featuretools + XGBoost",
    "recency": "recency rule",
    "bgnbd": "BG/NBD expected purch.",
}


def render_table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'data set':12s}{'as of':12s}{'method':25s}{'n':>7s}{'churn':>7s}"
        f"{'ROC AUC':>9s}{'PR AUC':>9s}{'lift@10':>9s}{'seconds':>9s}"
    ]
    for r in results:
        for method, m in r["methods"].items():
            name = METHOD_NAMES[method]
            if method == "recency":
                name = f"{name}: {m['rule'].replace('days_since_last_', 'last ')}"
            lines.append(
                f"{r['dataset']:12s}{r['as_of']:12s}{name[:24]:25s}{r['evaluated']:7d}"
                f"{r['churners']:7d}{m['roc_auc']:9.3f}{m['pr_auc']:9.3f}{m['lift_at_10']:9.2f}"
                f"{m['seconds']:9.1f}"
            )
    return "\n".join(lines)


def _metric(results: list[dict[str, Any]], dataset: str, method: str, pick) -> float | None:
    values = [
        r["methods"][method]["roc_auc"]
        for r in results
        if r["dataset"] == dataset and method in r["methods"]
    ]
    values = [v for v in values if v is not None and np.isfinite(v)]
    return pick(values) if values else None


def summarise(results: list[dict[str, Any]], args: argparse.Namespace, total: float) -> dict:
    summary: dict[str, Any] = {
        "socialnet7_roc_auc": _metric(results, "socialnet7", "ours", min),
        "socialnet7_featuretools_roc_auc": _metric(results, "socialnet7", "featuretools", max),
        "socialnet7_recency_roc_auc": _metric(results, "socialnet7", "recency", max),
        "cdnow_roc_auc": _metric(results, "cdnow", "ours", min),
        "cdnow_featuretools_roc_auc": _metric(results, "cdnow", "featuretools", max),
        "cdnow_recency_roc_auc": _metric(results, "cdnow", "recency", max),
        "cdnow_bgnbd_roc_auc": _metric(results, "cdnow", "bgnbd", max),
    }

    def seconds(method: str) -> float | None:
        values = [r["methods"][method]["seconds"] for r in results if method in r["methods"]]
        return round(float(sum(values)), 1) if values else None

    summary["ours_seconds"] = seconds("ours")
    summary["featuretools_seconds"] = seconds("featuretools")
    for r in results:
        summary[r["dataset"] + "_" + r["as_of"]] = {
            k: v for k, v in r.items() if k not in ("dataset", "as_of")
        }

    def ahead(ours: float | None, other: float | None) -> bool | None:
        return None if ours is None or other is None else bool(ours > other)

    socialnet7_dates = [
        r["methods"]["ours"]["roc_auc"] for r in results if r["dataset"] == "socialnet7"
    ]
    goals = {
        "socialnet7_at_least_0.78_each_date": (
            None
            if not socialnet7_dates
            else bool(all(v >= GOAL_SOCIALNET7_ROC_AUC for v in socialnet7_dates))
        ),
        "cdnow_at_least_0.775": (
            None
            if summary["cdnow_roc_auc"] is None
            else bool(summary["cdnow_roc_auc"] >= GOAL_CDNOW_ROC_AUC)
        ),
        "socialnet7_ahead_of_featuretools": ahead(
            summary["socialnet7_roc_auc"], summary["socialnet7_featuretools_roc_auc"]
        ),
        "socialnet7_ahead_of_recency": ahead(
            summary["socialnet7_roc_auc"], summary["socialnet7_recency_roc_auc"]
        ),
        "cdnow_ahead_of_featuretools": ahead(
            summary["cdnow_roc_auc"], summary["cdnow_featuretools_roc_auc"]
        ),
        "cdnow_ahead_of_recency": ahead(summary["cdnow_roc_auc"], summary["cdnow_recency_roc_auc"]),
        "faster_than_featuretools": (
            None
            if summary["featuretools_seconds"] is None
            else bool(summary["ours_seconds"] < summary["featuretools_seconds"])
        ),
    }
    decided = [v for v in goals.values() if v is not None]
    goals["all_met"] = bool(decided) and all(decided) and len(decided) == len(goals)
    summary["goals"] = goals
    summary["unscored_eligible"] = int(sum(r["unscored_eligible"] for r in results))
    summary["run"] = {
        "trials": args.trials,
        "time_budget_s": args.time_budget,
        "seed": args.seed,
        "only": args.only,
        "socialnet7_dates": args.socialnet7_dates,
        "sample_customers": args.sample_customers,
        "featuretools": args.featuretools,
        "config_overrides": args.config_overrides,
        "total_seconds": round(total, 1),
    }
    return summary


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials (default 20)")
    parser.add_argument(
        "--time-budget", type=float, default=600.0, help="tuning seconds per model (default 600)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=DATASETS, default=None, help="one data set only")
    parser.add_argument(
        "--sample-customers",
        type=int,
        default=None,
        help="subsample customers/accounts, seeded (default: all)",
    )
    parser.add_argument(
        "--socialnet7-as-of",
        dest="socialnet7_dates",
        action="append",
        default=None,
        metavar="YYYY-MM-DD",
        help="socialnet7 as of this date only (repeatable; default "
        + " and ".join(str(d.date()) for d in SOCIALNET7_DATES)
        + ")",
    )
    parser.add_argument(
        "--featuretools",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the Featuretools peer (default: yes)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep exports, configs, MLflow stores here"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every run (dotted, YAML value), e.g. "
        "training.backtest_cutoffs=0; repeatable",
    )
    parser.add_argument("--socialnet7", type=Path, default=sources.SOCIALNET7_DIR)
    parser.add_argument("--cdnow", type=Path, default=None, help="CDNOW_master.txt to use")
    args = parser.parse_args(argv)
    args.config_overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        args.config_overrides[key.strip()] = yaml.safe_load(value)
    return args


def run(args: argparse.Namespace, work_dir: Path, say=print) -> dict[str, Any]:
    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    results = [run_case(case, args, work_dir, say) for case in build_cases(args)]
    total = time.perf_counter() - started
    say("")
    say(render_table(results))
    summary = summarise(results, args, total)
    for r in results:
        if r["unscored_eligible"]:
            say(
                f"FAILURE: {r['dataset']} as of {r['as_of']}: {r['unscored_eligible']} eligible "
                "customers got no churn score"
            )
    say(
        f"ours {summary['ours_seconds']} s, Featuretools {summary['featuretools_seconds']} s "
        f"(end to end, every date); total {summary['run']['total_seconds']} s; work dir "
        f"{work_dir}"
    )
    say("goals: " + ", ".join(f"{k}={v}" for k, v in summary["goals"].items()))
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the table, the JSON summary last, and returns it."""
    args = parse_args(argv)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        summary = run(args, args.work_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="external-") as tmp:
            summary = run(args, Path(tmp))
    print(json.dumps(summary, sort_keys=True, default=str))
    return summary


if __name__ == "__main__":
    main()
