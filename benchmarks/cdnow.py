"""Real-data benchmark: our churn model against the BG/NBD model on the CDNOW transaction log.

    python -m benchmarks.cdnow [--trials 20] [--time-budget 600] [--sample-customers N]

Data. ``CDNOW_master.txt`` as shipped in the ``lifetimes`` package (a dev dependency): every CD
purchase of the 23,570 customers who first bought at CDNOW in the first quarter of 1997, from
1997-01-01 to 1998-06-30 (customer id, date YYYYMMDD, number of CDs, dollar value). It enters
the service the way a CRM export does: written as a CSV under its own column names, read by
``features.loading`` with a column mapping (``date -> timestamp``, ``number_of_cds ->
quantity``, ``dollar_value -> amount``, an ``order`` record type mapped to ``purchase``) and
validated by ``features.validation``, with a customers table whose ``signup_date`` is the first
purchase date. Customers can be subsampled (``--sample-customers``, seeded) for a quick run.

Task. The classic CDNOW split: calibration period before 1997-10-01, holdout 1997-10-01 to
1998-06-30 (273 days = 39 weeks). A customer churned when they made no purchase in the holdout
(``LabelParams(horizon_days=273, qualifying_event_types=("purchase",))``). The population is
every customer who bought before the test cutoff, i.e. all CDNOW customers: the active window is
365 days (``active_window_days``), longer than any history here, so everyone is "active" and
eligible for the churn label, and nobody is left out as lapsed. Churn is the positive class.

Honest split. Features at a cutoff use only events strictly before it. The test cutoff is
1997-10-01 with the full 273-day window. A training cutoff with the same window would need to be
at most 1997-01-01 (c + 273 days <= 1997-10-01), before anyone had bought, so the documented
equivalent is one shorter window for every training and validation cutoff: churn means no
purchase in the 92 days after the cutoff, at 1997-04-01, 05-01, 06-01 (training) and 07-01
(validation: early stopping, tuning, calibration). 92 days is the longest window the validation
cutoff allows (07-01 + 92 days = 10-01), so the last training or validation label ends on the
test cutoff. Every training table, features and labels, is built from the events before
1997-10-01 only (``data_end`` = 1997-10-01), so nothing the model learns comes from the holdout.
The shorter window changes the churn rate the model learns (its probabilities are calibrated to
92 days, not to 273) but much less what ranks customers; the benchmark compares rankings
(ROC AUC, PR AUC).

Why one window for all cutoffs. An earlier version of this benchmark let each training label run
from its cutoff to 1997-10-01 (183, 153, 122 and 92 days). That asks a different question at
each cutoff, and in one acquisition cohort the cutoff is the customers' age: the churn rate rose
from 0.69 to 0.82 only because the windows shrank, so tenure, recency and counts carried the
window length, the tuner rewarded deep trees that learnt it, and the model ranked the test
customers worse (ROC AUC 0.752) than the BG/NBD reference. With one window, every cutoff asks
the question a production snapshot asks (``LabelParams.horizon_days`` is fixed there too).

Model. ``training.train.train`` as in production: XGBoost tuned with Optuna (``--trials``,
``--time-budget``) on the validation cutoff, probability calibration on held-out validation
customers, logistic-regression and naive-rule baselines, everything logged to an MLflow store in
a temporary directory (``--mlflow-dir`` keeps it). Calibration is ``sigmoid`` (Platt): it is
fitted on the 92-day validation window, so it cannot make the probabilities right for a 273-day
window anyway; like the default beta calibration, and unlike isotonic regression, whose plateaus
tie customers, it keeps the model's ranking intact, which is what is compared here.

Features: the standard feature set (``FeatureParams`` defaults, CLV horizon 273 days), including
the BG/NBD ``clv_p_alive`` / ``clv_expected_purchases`` columns, fitted at each cutoff on that
cutoff's own history.

Reference. ``features.clv.BetaGeoModel`` (our BG/NBD) fitted on the calibration period in weeks
(frequency = distinct purchase days - 1, recency = first to last purchase day, T = first purchase
day to 1997-10-01) and used to score the same customers: churn score = minus the expected number
of purchases in the 39-week holdout (fewer expected purchases = likelier to churn). The
published-style figure for this score on this split is a ROC AUC of about 0.76.

What to expect (full data, ``--trials 20``, seeds 0-4): the churn model ROC AUC 0.766-0.771 and
PR AUC 0.850-0.853 against BG/NBD's 0.763 / 0.837 (the README's benchmark section has the seed-0
run); the figures are printed by every run.

Output: both models' ROC AUC and PR AUC on the test customers; the last line is a JSON object
with ``model_roc_auc``, ``model_pr_auc``, ``bgnbd_roc_auc``, ``bgnbd_pr_auc``, ``n_customers``,
``churn_rate``, ``split`` and more.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.clv import BetaGeoModel
from features.config import DataConfig, FeatureParams, LabelParams, SourceConfig
from features.loading import load_crm_data
from features.snapshots import build_snapshots
from features.validation import validate_crm_data
from pipelines.io import write_table

TEST_CUTOFF = pd.Timestamp("1997-10-01")
DATA_END = pd.Timestamp("1998-07-01")  # the log ends on 1998-06-30
HOLDOUT_DAYS = int((DATA_END - TEST_CUTOFF).days)  # 273 = 39 weeks
TRAIN_CUTOFFS = tuple(pd.Timestamp(d) for d in ("1997-04-01", "1997-05-01", "1997-06-01"))
VALIDATION_CUTOFF = pd.Timestamp("1997-07-01")
#: One label window for every training and validation cutoff: the longest the validation
#: cutoff allows without its labels reaching past the test cutoff.
TRAIN_HORIZON_DAYS = int((TEST_CUTOFF - VALIDATION_CUTOFF).days)  # 92
#: Longer than any CDNOW history: every customer with a purchase before a cutoff is active.
ACTIVE_WINDOW_DAYS = 365
DAYS_PER_WEEK = 7.0
REFERENCE_BGNBD_ROC_AUC = 0.763

#: How the CDNOW export maps onto the data contract.
EVENTS_MAPPING = {
    "date": "timestamp",
    "number_of_cds": "quantity",
    "dollar_value": "amount",
    "record_type": "event_type",
}
CUSTOMERS_MAPPING = {"first_purchase_date": "signup_date"}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def cdnow_master_path() -> Path | None:
    """``CDNOW_master.txt`` inside the installed ``lifetimes`` package, or None without it."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"
    return path if path.exists() else None


def read_cdnow_master(path: Path) -> pd.DataFrame:
    """The log as shipped: whitespace-separated, ids kept as text ("00001")."""
    return pd.read_csv(
        path,
        sep=r"\s+",
        dtype={"customer_id": str, "date": str, "number_of_cds": str, "dollar_value": str},
    )


def sample_customers(log: pd.DataFrame, n_customers: int | None, seed: int) -> pd.DataFrame:
    """All purchases of ``n_customers`` customers drawn at random (all when None)."""
    if n_customers is None:
        return log
    ids = log["customer_id"].drop_duplicates()
    if n_customers >= len(ids):
        return log
    chosen = ids.sample(n=n_customers, random_state=seed)
    return log.loc[log["customer_id"].isin(set(chosen))].reset_index(drop=True)


def export_tables(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The log as a CRM export: an ``order`` record type per row, and a customers table.

    CDNOW has no signup date; the first purchase date stands in for it (every customer was
    acquired by their first purchase).
    """
    events = log.assign(record_type="order")
    customers = (
        log.groupby("customer_id", sort=True)["date"]
        .min()
        .rename("first_purchase_date")
        .reset_index()
    )
    return events, customers


def cdnow_data_config(directory: Path) -> DataConfig:
    """Where the export lives and how it maps onto the contract (as a user would configure it)."""
    return DataConfig(
        events=SourceConfig(
            path=str(directory / "cdnow_events.csv"),
            columns=EVENTS_MAPPING,
            timestamp_format="%Y%m%d",
            event_type_mapping={"order": "purchase"},
        ),
        customers=SourceConfig(
            path=str(directory / "cdnow_customers.csv"),
            columns=CUSTOMERS_MAPPING,
            timestamp_format="%Y%m%d",
        ),
        quarantine_dir=str(directory / "quarantine"),
    )


def load_cdnow(
    log: pd.DataFrame, directory: Path
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Write the export, load and validate it: clean events, clean customers, the reports."""
    events, customers = export_tables(log)
    write_table(events, directory / "cdnow_events.csv")
    write_table(customers, directory / "cdnow_customers.csv")
    config = cdnow_data_config(directory)
    validated = validate_crm_data(load_crm_data(config), config)
    reports = {name: r.report.to_dict() for name, r in validated.results.items()}
    assert validated.customers is not None
    return validated.events.clean, validated.customers.clean, reports


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def label_params(horizon_days: int) -> LabelParams:
    """Churn = no purchase in the next ``horizon_days``; everyone who ever bought is eligible."""
    return LabelParams(
        horizon_days=horizon_days,
        qualifying_event_types=("purchase",),
        active_window_days=ACTIVE_WINDOW_DAYS,
    )


def feature_params(seed: int) -> FeatureParams:
    return FeatureParams(clv_horizon_days=HOLDOUT_DAYS, seed=seed)


def label_window_end(cutoff: pd.Timestamp) -> pd.Timestamp:
    """First day after a training or validation cutoff's label window."""
    return cutoff + pd.Timedelta(days=TRAIN_HORIZON_DAYS)


def split_description() -> dict[str, Any]:
    """The cutoffs and label windows, as printed and returned."""
    return {
        "train_cutoffs": [str(c.date()) for c in TRAIN_CUTOFFS],
        "validation_cutoff": str(VALIDATION_CUTOFF.date()),
        "test_cutoff": str(TEST_CUTOFF.date()),
        "train_horizon_days": TRAIN_HORIZON_DAYS,
        "validation_horizon_days": TRAIN_HORIZON_DAYS,
        "test_horizon_days": HOLDOUT_DAYS,
        "train_and_validation_labels_end": str(label_window_end(VALIDATION_CUTOFF).date()),
        "population": f"every customer with a purchase before the cutoff (active window "
        f"{ACTIVE_WINDOW_DAYS} days)",
    }


def build_benchmark_snapshots(
    events: pd.DataFrame, customers: pd.DataFrame, *, seed: int
) -> pd.DataFrame:
    """Training and validation snapshots from the calibration period, then the test snapshot.

    Every earlier cutoff gets the same ``TRAIN_HORIZON_DAYS`` label window, none of which ends
    after the test cutoff; those tables are built from the events before the test cutoff only.
    The test snapshot has the full holdout window and is built from the whole log.
    """
    calibration_events = events.loc[events["timestamp"] < TEST_CUTOFF]
    earlier_cutoffs = [*TRAIN_CUTOFFS, VALIDATION_CUTOFF]
    if max(label_window_end(c) for c in earlier_cutoffs) > TEST_CUTOFF:
        raise ValueError("a training or validation label window reaches past the test cutoff")
    training_tables, _ = build_snapshots(
        calibration_events,
        earlier_cutoffs,
        customers=customers,
        feature_params=feature_params(seed),
        label_params=label_params(TRAIN_HORIZON_DAYS),
        data_end=TEST_CUTOFF,
    )
    test, _ = build_snapshots(
        events,
        [TEST_CUTOFF],
        customers=customers,
        feature_params=feature_params(seed),
        label_params=label_params(HOLDOUT_DAYS),
        data_end=DATA_END,
    )
    return pd.concat([training_tables, test], ignore_index=True)


def holdout_churn(events: pd.DataFrame, customer_ids: pd.Series) -> np.ndarray:
    """Independent check of the test labels: 1.0 when a customer has no holdout purchase."""
    holdout = events.loc[
        (events["timestamp"] >= TEST_CUTOFF)
        & (events["timestamp"] < DATA_END)
        & (events["event_type"] == "purchase")
    ]
    bought = set(holdout["customer_id"].astype(str))
    return np.array([0.0 if c in bought else 1.0 for c in customer_ids.astype(str)])


# --------------------------------------------------------------------------------------------
# BG/NBD reference
# --------------------------------------------------------------------------------------------


def rfm_summary(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per customer x (repeat purchase days), t_x and T in weeks, from purchases before cutoff."""
    purchases = events.loc[
        (events["timestamp"] < cutoff) & (events["event_type"] == "purchase"),
        ["customer_id", "timestamp"],
    ]
    days = pd.DataFrame(
        {
            "customer_id": purchases["customer_id"].astype(str).to_numpy(),
            "day": purchases["timestamp"].dt.normalize().to_numpy(),
        }
    ).drop_duplicates()
    per_customer = days.groupby("customer_id")["day"].agg(["min", "max", "count"])
    return pd.DataFrame(
        {
            "frequency": (per_customer["count"] - 1).astype(float),
            "recency": (per_customer["max"] - per_customer["min"]).dt.days / DAYS_PER_WEEK,
            "T": (cutoff - per_customer["min"]).dt.days / DAYS_PER_WEEK,
        }
    )


def bgnbd_churn_scores(
    events: pd.DataFrame, customer_ids: pd.Series
) -> tuple[np.ndarray, dict[str, float]]:
    """Minus the BG/NBD expected holdout purchases per customer, and the fitted parameters."""
    summary = rfm_summary(events, TEST_CUTOFF)
    model = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])
    expected = pd.Series(
        model.expected_purchases(
            HOLDOUT_DAYS / DAYS_PER_WEEK, summary["frequency"], summary["recency"], summary["T"]
        ),
        index=summary.index,
    )
    aligned = expected.reindex(customer_ids.astype(str).to_numpy())
    if aligned.isna().any():
        raise ValueError(f"{int(aligned.isna().sum())} test customers have no calibration purchase")
    return -aligned.to_numpy(), dict(model.params_)


def ranking(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """ROC AUC and PR AUC (average precision) with churn as the positive class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials (default 20)")
    parser.add_argument(
        "--time-budget", type=float, default=600.0, help="tuning budget in seconds (default 600)"
    )
    parser.add_argument(
        "--sample-customers", type=int, default=None, help="subsample customers (default: all)"
    )
    parser.add_argument(
        "--max-rounds", type=int, default=1000, help="boosting rounds cap per trial (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlflow-dir", type=Path, default=None, help="keep the MLflow store here")
    parser.add_argument("--cdnow", type=Path, default=None, help="CDNOW_master.txt to use")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, work_dir: Path, say=print) -> dict[str, Any]:
    """The benchmark in ``work_dir`` (export files and, unless given, the MLflow store)."""
    from training.config import MlflowConfig, TrainingConfig
    from training.train import train

    started = time.perf_counter()
    path = args.cdnow or cdnow_master_path()
    if path is None:
        raise FileNotFoundError(
            "CDNOW_master.txt not found: install the dev dependency lifetimes "
            "(pip install -e '.[dev]') or pass --cdnow PATH"
        )
    log = sample_customers(read_cdnow_master(path), args.sample_customers, args.seed)
    events, customers, reports = load_cdnow(log, work_dir)
    say(
        f"CDNOW: {len(events):,} purchases of {len(customers):,} customers loaded and "
        f"validated, {events['timestamp'].min().date()} .. {events['timestamp'].max().date()}"
    )
    for name, report in reports.items():
        for problem in report["problems"]:
            say(f"  {name}: {problem['count']:,} row(s) {problem['action']}: {problem['reason']}")

    split = split_description()
    say(
        f"split: train cutoffs {split['train_cutoffs']} (label windows "
        f"{split['train_horizon_days']} days), validation {split['validation_cutoff']} "
        f"({split['validation_horizon_days']} days): all labels end by {TEST_CUTOFF.date()}; "
        f"test {split['test_cutoff']} with the {HOLDOUT_DAYS}-day holdout"
    )
    snapshots = build_benchmark_snapshots(events, customers, seed=args.seed)
    test_rows = snapshots.loc[
        (snapshots["cutoff"] == TEST_CUTOFF) & snapshots["churn_label"].notna(),
        ["customer_id", "churn_label"],
    ]
    y_test = test_rows["churn_label"].to_numpy(dtype=np.int8)
    independent = holdout_churn(events, test_rows["customer_id"])
    if not np.array_equal(independent, y_test):
        raise AssertionError("test labels disagree with a direct count of holdout purchases")
    if len(test_rows) != len(customers):
        raise AssertionError(
            f"{len(test_rows)} of {len(customers)} customers are eligible at the test cutoff"
        )
    features_done = time.perf_counter()
    say(
        f"snapshots: {len(snapshots):,} rows in {features_done - started:.1f} s; test cutoff: "
        f"{len(test_rows):,} customers, churn rate {y_test.mean():.3f}"
    )

    mlflow_root = args.mlflow_dir or work_dir / "mlruns"
    cfg = TrainingConfig(
        mlflow=MlflowConfig(
            tracking_uri=f"sqlite:///{Path(mlflow_root).resolve() / 'mlflow.db'}",
            artifact_location=str(Path(mlflow_root).resolve() / "artifacts"),
            experiment_name="cdnow-benchmark",
        ),
        n_trials=args.trials,
        time_budget_s=args.time_budget,
        seed=args.seed,
        calibration_method="sigmoid",
        max_boosting_rounds=args.max_rounds,
    )
    result = train(
        cfg, snapshots, task="churn", data_source=f"lifetimes:{path.name}", progress=False
    )
    if result.split["test_cutoff"] != str(TEST_CUTOFF.date()):
        raise AssertionError(f"train() tested on {result.split['test_cutoff']}")
    trained = time.perf_counter()

    bgnbd_score, bgnbd_params = bgnbd_churn_scores(events, test_rows["customer_id"])
    bgnbd = ranking(y_test, bgnbd_score)
    metrics = result.metrics
    say(f"{'':24s}{'ROC AUC':>9s}{'PR AUC':>9s}")
    rows = (
        ("churn model (XGBoost)", metrics["roc_auc"], metrics["pr_auc"]),
        ("BG/NBD expected purch.", bgnbd["roc_auc"], bgnbd["pr_auc"]),
        ("logistic regression", metrics["lr_roc_auc"], metrics["lr_pr_auc"]),
        (
            "naive rule: recency_days",
            metrics.get("baseline_roc_auc", float("nan")),
            metrics.get("baseline_pr_auc", float("nan")),
        ),
    )
    for name, roc, pr in rows:
        say(f"{name:24s}{roc:9.3f}{pr:9.3f}")
    beats = metrics["roc_auc"] > bgnbd["roc_auc"] and metrics["pr_auc"] > bgnbd["pr_auc"]
    say(
        f"churn model {'beats' if beats else 'does NOT beat'} BG/NBD on both metrics "
        f"(reference BG/NBD ROC AUC on this split: about {REFERENCE_BGNBD_ROC_AUC})"
    )
    return {
        "model_roc_auc": round(metrics["roc_auc"], 4),
        "model_pr_auc": round(metrics["pr_auc"], 4),
        "bgnbd_roc_auc": round(bgnbd["roc_auc"], 4),
        "bgnbd_pr_auc": round(bgnbd["pr_auc"], 4),
        "lr_roc_auc": round(metrics["lr_roc_auc"], 4),
        "lr_pr_auc": round(metrics["lr_pr_auc"], 4),
        "rule_roc_auc": round(metrics.get("baseline_roc_auc", float("nan")), 4),
        "model_beats_bgnbd": bool(beats),
        "n_customers": int(len(test_rows)),
        "n_purchases": int(len(events)),
        "quarantined_rows": {name: r["quarantined_rows"] for name, r in reports.items()},
        "churn_rate": round(float(y_test.mean()), 4),
        "n_rows": result.n_rows,
        "split": split,
        "bgnbd_params": {k: round(v, 4) for k, v in bgnbd_params.items()},
        "trials": int(metrics["n_trials"]),
        "best_params": result.best_params,
        "sample_customers": args.sample_customers,
        "seed": args.seed,
        "seconds": {
            "features": round(features_done - started, 1),
            "train": round(trained - features_done, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the figures, the JSON summary last, and returns it."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cdnow-") as tmp:
        summary = run(args, Path(tmp))
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
