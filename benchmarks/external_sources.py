"""Adapters of ``benchmarks/external.py``: two data sets we did not write, as CRM exports.

Each adapter does what a CRM team does before its first ``churn`` command, and nothing the
pipeline could not be told through its config:

1. read the source's own files (``read_*``);
2. write what the source system would have exported *as of* a date D, under the source's own
   column names (``export_*``): events before D; rows of other tables that existed before D,
   with the fields that were not yet known at D left empty;
3. write a project config (``write_config``) from a template in ``benchmarks/configs/``: the
   column mapping onto the contract, the event-type mapping, labels, cutoff grid and training
   settings, with the paths, the quarantine folder and the MLflow store of this run.

The truth the pipeline is graded on is computed here from the *full* data (``*_truth``),
independently of ``features.labels``.

socialnet7 (``/work/shared/datasets/socialnet7``, see its README.md): accounts, events named by
``event_type.parquet``, monthly subscriptions renewing back to back. In the source,
``end_date`` is the end of each paid month: the scheduled end of the billing period, which is
known when the month starts, whether or not the account renews. The export as of D therefore
carries it twice: as ``period_end`` (the scheduled term, mapped onto the contract's
``term_end``) and as ``end_date`` only when it lies before D (the subscription row has actually
ended by D; mapped onto the contract's ``end_date``, "actual end, only known once it
happens"). A row running at D has no ``end_date`` in the export. Churn at D over H days: the
account has a subscription at D (a row started before D that ends at or after D) and none at
D + H (no row started before D + H that ends at or after D + H), the same instants as the
contract's subscription churn.

CDNOW (``CDNOW_master.txt`` in the ``lifetimes`` package, read directly: ``lifetimes.datasets``
is broken): CD purchases of the customers acquired in 1997-Q1, to 1998-06-30. Exported as of D
as ``cdnow.py`` does (CSV, ``date`` as YYYYMMDD, an ``order`` record type, a customers table
with the first purchase date), with the purchases before D only. Churn at D: no purchase in
``[D, 1998-07-01)`` among the customers who bought before D.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# cdnow.py's reader, sampler and export tables are reused, not copied
from . import cdnow

_HERE = Path(__file__).resolve().parent
CONFIG_DIR = _HERE / "configs"


def _socialnet7_dir() -> Path:
    """``shared/datasets/socialnet7`` beside the checkout (where CI puts ``shared/``), else the
    workplace's copy; ``CHURN_SOCIALNET7_DIR`` overrides both."""
    override = os.environ.get("CHURN_SOCIALNET7_DIR")
    if override:
        return Path(override)
    beside = _HERE.parent.parent / "shared" / "datasets" / "socialnet7"
    return beside if beside.is_dir() else Path("/work/shared/datasets/socialnet7")


SOCIALNET7_DIR = _socialnet7_dir()

#: Environment variables that would send the benchmark's MLflow runs elsewhere.
MLFLOW_ENVIRONMENT = ("CHURN_MLFLOW_TRACKING_URI", "CHURN_MLFLOW_REGISTRY_URI")


# --------------------------------------------------------------------------------------------
# socialnet7
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Socialnet7:
    """The source tables as read: events with their type names joined, accounts, subscriptions."""

    events: pd.DataFrame  # account_id, event_time, event_type_id, event_type_name, user_id, ...
    accounts: pd.DataFrame  # id, channel, date_of_birth, country
    subscriptions: pd.DataFrame  # account_id, product, start_date, end_date, mrr, ...

    @property
    def n_accounts(self) -> int:
        return int(self.accounts["id"].nunique())


def read_socialnet7(root: Path = SOCIALNET7_DIR) -> Socialnet7:
    """All six monthly event files (with ``event_type_name`` joined as the source's own
    lookup table names them), the accounts and the subscriptions; dates as datetime64."""
    root = Path(root)
    files = sorted((root / "event").glob("event_*.parquet"))
    if not files:
        raise FileNotFoundError(f"no event/event_*.parquet under {root}")
    events = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    types = pd.read_parquet(root / "event_type.parquet")
    names = dict(zip(types["event_type_id"], types["event_type_name"], strict=True))
    unknown = set(events["event_type_id"].unique()) - set(names)
    if unknown:
        raise ValueError(f"event type ids without a name in event_type.parquet: {sorted(unknown)}")
    events["event_type_name"] = events["event_type_id"].map(names)
    subscriptions = pd.read_parquet(root / "subscription.parquet")
    for column in ("start_date", "end_date"):
        subscriptions[column] = pd.to_datetime(subscriptions[column])
    accounts = pd.read_parquet(root / "account.parquet")
    return Socialnet7(events=events, accounts=accounts, subscriptions=subscriptions)


def sample_socialnet7(data: Socialnet7, n_accounts: int | None, seed: int) -> Socialnet7:
    """Every row of ``n_accounts`` accounts drawn at random (all when None)."""
    ids = data.accounts["id"].drop_duplicates()
    if n_accounts is None or n_accounts >= len(ids):
        return data
    chosen = set(ids.sample(n=n_accounts, random_state=seed))
    return Socialnet7(
        events=data.events.loc[data.events["account_id"].isin(chosen)].reset_index(drop=True),
        accounts=data.accounts.loc[data.accounts["id"].isin(chosen)].reset_index(drop=True),
        subscriptions=data.subscriptions.loc[
            data.subscriptions["account_id"].isin(chosen)
        ].reset_index(drop=True),
    )


def socialnet7_as_of(data: Socialnet7, as_of: pd.Timestamp) -> Socialnet7:
    """What the app's systems held at ``as_of`` (see the module docstring)."""
    events = data.events.loc[data.events["event_time"] < as_of]
    subscriptions = data.subscriptions.loc[data.subscriptions["start_date"] < as_of].copy()
    subscriptions["period_end"] = subscriptions["end_date"]  # scheduled: known at the start
    subscriptions["end_date"] = subscriptions["end_date"].where(
        subscriptions["end_date"] < as_of
    )  # the actual end: only known once it has happened
    known = set(events["account_id"].unique()) | set(subscriptions["account_id"].unique())
    accounts = data.accounts.loc[data.accounts["id"].isin(known)]
    return Socialnet7(
        events=events.reset_index(drop=True),
        accounts=accounts.reset_index(drop=True),
        subscriptions=subscriptions.reset_index(drop=True),
    )


def export_socialnet7(data: Socialnet7, as_of: pd.Timestamp, directory: Path) -> dict[str, Path]:
    """The as-of export as Parquet files under the source's own column names."""
    directory.mkdir(parents=True, exist_ok=True)
    known = socialnet7_as_of(data, as_of)
    paths = {
        "events": directory / "events.parquet",
        "accounts": directory / "accounts.parquet",
        "subscriptions": directory / "subscriptions.parquet",
    }
    known.events.to_parquet(paths["events"], index=False)
    known.accounts.to_parquet(paths["accounts"], index=False)
    subscriptions = known.subscriptions.copy()
    for column in ("start_date", "end_date", "period_end"):  # dates, as the source has them
        subscriptions[column] = subscriptions[column].dt.date
    subscriptions.to_parquet(paths["subscriptions"], index=False)
    return paths


def subscribed_at(subscriptions: pd.DataFrame, instant: pd.Timestamp) -> set[str]:
    """Accounts with a row started before ``instant`` that ends at or after it (or never)."""
    rows = (subscriptions["start_date"] < instant) & (
        subscriptions["end_date"].isna() | (subscriptions["end_date"] >= instant)
    )
    return set(subscriptions.loc[rows, "account_id"].astype(str))


def socialnet7_truth(data: Socialnet7, as_of: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1.0 / 0.0 churn in ``[as_of, as_of + horizon)`` per account subscribed at ``as_of``,
    from the full subscription table (index: account id as text)."""
    end = as_of + pd.Timedelta(days=horizon_days)
    last_end = data.subscriptions["end_date"].max()
    if end > last_end:
        raise ValueError(
            f"the outcome window ends {end.date()}, after the data ({last_end.date()})"
        )
    at_start = subscribed_at(data.subscriptions, as_of)
    at_end = subscribed_at(data.subscriptions, end)
    ids = sorted(at_start, key=lambda s: (len(s), s))
    return pd.Series(
        [0.0 if c in at_end else 1.0 for c in ids], index=pd.Index(ids, name="customer_id")
    )


# --------------------------------------------------------------------------------------------
# CDNOW
# --------------------------------------------------------------------------------------------

CDNOW_DATA_END = pd.Timestamp("1998-07-01")  # the log ends on 1998-06-30


def read_cdnow(path: Path | None = None) -> pd.DataFrame:
    """The CDNOW log as shipped (ids as text) with ``day`` parsed, via ``cdnow.py``'s reader."""
    path = path or cdnow.cdnow_master_path()
    if path is None:
        raise FileNotFoundError(
            "CDNOW_master.txt not found: install the dev dependency lifetimes "
            "(pip install -e '.[dev]')"
        )
    log = cdnow.read_cdnow_master(Path(path))
    log["day"] = pd.to_datetime(log["date"], format="%Y%m%d")
    return log


def sample_cdnow(
    log: pd.DataFrame, n_customers: int | None, seed: int, as_of: pd.Timestamp
) -> pd.DataFrame:
    """``cdnow.py``'s seeded sample of customers, plus (when that sample has none) one customer
    who bought on the day before ``as_of``: a real export at ``as_of`` runs up to that day, and
    the pipeline reads the end of the data from the last event."""
    if n_customers is None:
        return log
    sample = cdnow.sample_customers(log, n_customers, seed)
    last_day = as_of - pd.Timedelta(days=1)
    if not (sample["day"] == last_day).any():
        buyers = np.sort(log.loc[log["day"] == last_day, "customer_id"].unique())
        if buyers.size:
            extra = np.random.default_rng(seed).choice(buyers)
            sample = pd.concat([sample, log.loc[log["customer_id"] == extra]], ignore_index=True)
    return sample


def export_cdnow(log: pd.DataFrame, as_of: pd.Timestamp, directory: Path) -> dict[str, Path]:
    """The as-of export as CSV: purchases before ``as_of`` (an ``order`` record type per row)
    and a customers table with the first purchase date (CDNOW has no signup date)."""
    directory.mkdir(parents=True, exist_ok=True)
    known = log.loc[log["day"] < as_of]
    events, customers = cdnow.export_tables(known.drop(columns="day"))
    paths = {
        "events": directory / "cdnow_events.csv",
        "customers": directory / "cdnow_customers.csv",
    }
    events.to_csv(paths["events"], index=False)
    customers.to_csv(paths["customers"], index=False)
    return paths


def cdnow_truth(
    log: pd.DataFrame, as_of: pd.Timestamp, end: pd.Timestamp = CDNOW_DATA_END
) -> pd.Series:
    """1.0 / 0.0 no purchase in ``[as_of, end)``, per customer who bought before ``as_of``."""
    before = set(log.loc[log["day"] < as_of, "customer_id"])
    during = set(log.loc[(log["day"] >= as_of) & (log["day"] < end), "customer_id"])
    ids = sorted(before)
    return pd.Series(
        [0.0 if c in during else 1.0 for c in ids], index=pd.Index(ids, name="customer_id")
    )


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def read_template(name: str) -> dict[str, Any]:
    """``benchmarks/configs/<name>.yaml`` as a mapping."""
    path = CONFIG_DIR / f"{name}.yaml"
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(tree, dict):
        raise ValueError(f"{path} must hold a mapping")
    return tree


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def write_config(
    template: str,
    export_dir: Path,
    run_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """The template with its data paths resolved against ``export_dir``, the quarantine and
    output folders and a SQLite MLflow store under ``run_dir``, and ``overrides`` (dotted keys,
    as the ``churn`` commands' flags); written to ``run_dir/churn.yaml`` and returned."""
    tree = copy.deepcopy(read_template(template))
    data = tree.setdefault("data", {})
    for table in ("events", "customers", "subscriptions"):
        source = data.get(table)
        if isinstance(source, dict) and source.get("path"):
            source["path"] = str((export_dir / source["path"]).resolve())
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    data["quarantine_dir"] = str(run_dir / "quarantine")
    tree["output_dir"] = str(run_dir / "output")
    _set(tree, "training.mlflow.tracking_uri", f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}")
    _set(tree, "training.mlflow.artifact_location", str(run_dir / "mlruns" / "artifacts"))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(tree, key, value)
    (run_dir / "mlruns").mkdir(exist_ok=True)
    path = run_dir / "churn.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path
