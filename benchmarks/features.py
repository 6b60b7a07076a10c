"""Feature-pipeline benchmark: our engine against DuckDB on the same generated data.

    python -m benchmarks.features --customers 1000000

Generates a CRM data set (in a subprocess, so the peak memory reported is that of loading and
feature building only), then, in this process and on the same in-memory events:

1. the full feature set end to end: read the three Parquet tables, validate them, phase 1-3
   features with customer attributes and subscriptions;
2. the core RFM/window aggregations (counts and spend over 4 windows, first/last timestamp)
   with our engine and with DuckDB SQL as the reference, checking both give the same numbers.

Prints the figures, the last line a JSON object with at least ``events``, ``customers``,
``seconds``, ``events_per_s``, ``peak_rss_mb`` and ``core_vs_duckdb`` (our time / DuckDB's; below
1.0 means faster than DuckDB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

WINDOWS_DAYS = (30, 90, 180, 365)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _generate(customers: int, seed: int, activity_scale: float, out_dir: Path) -> None:
    code = (
        "from pathlib import Path;"
        "from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data;"
        f"d = generate_crm_data(GeneratorParams(n_customers={customers}, seed={seed}, "
        f"activity_scale={activity_scale}));"
        f"write_crm_data(d, Path({str(out_dir)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def duckdb_core_aggregations(
    events: pd.DataFrame, cutoff: pd.Timestamp, threads: int
) -> pd.DataFrame:
    """The reference: the same aggregations as ``core_aggregations`` in one SQL GROUP BY."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    con.register("events", events[["customer_id", "timestamp", "amount"]])
    cutoff_literal = cutoff.strftime("%Y-%m-%d %H:%M:%S")
    window_columns = ",\n".join(
        f"count(*) FILTER (WHERE timestamp >= TIMESTAMP '{cutoff_literal}' - INTERVAL {w} DAY)"
        f" AS events_{w}d,\n"
        f"coalesce(sum(amount) FILTER (WHERE timestamp >= TIMESTAMP '{cutoff_literal}'"
        f" - INTERVAL {w} DAY), 0) AS amount_{w}d"
        for w in WINDOWS_DAYS
    )
    sql = f"""
        SELECT customer_id, {window_columns},
               min(timestamp) AS first_event, max(timestamp) AS last_event
        FROM events WHERE timestamp < TIMESTAMP '{cutoff_literal}'
        GROUP BY customer_id
    """
    result = con.execute(sql).df()
    con.close()
    return result


def _best_of(repeats: int, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--events-per-customer",
        type=float,
        default=20.0,
        help="target events per customer (the issue's default: ~20)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="reuse a generated data directory instead of generating",
    )
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats for the core race")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)

    from features.config import DataConfig, FeatureParams, SourceConfig
    from features.lifecycle import core_aggregations
    from features.loading import load_crm_data
    from features.snapshots import build_features
    from features.validation import validate_crm_data

    with tempfile.TemporaryDirectory(prefix="bench-features-") as scratch:
        data_dir = args.data
        if data_dir is None:
            data_dir = Path(scratch)
            # ~50 events per customer at activity_scale 1.0
            scale = args.events_per_customer / 50.0
            t0 = time.perf_counter()
            _generate(args.customers, args.seed, scale, data_dir)
            print(f"generated {args.customers:,} customers in {time.perf_counter() - t0:.1f} s")

        rss_before = _peak_rss_mb()
        data_config = DataConfig(
            events=SourceConfig(path=str(data_dir / "events.parquet")),
            customers=SourceConfig(path=str(data_dir / "customers.parquet")),
            subscriptions=SourceConfig(path=str(data_dir / "subscriptions.parquet")),
        )
        start = time.perf_counter()
        raw = load_crm_data(data_config)
        t_load = time.perf_counter() - start
        validated = validate_crm_data(raw, data_config)
        t_validate = time.perf_counter() - start - t_load
        events = validated.events.clean
        del raw
        cutoff = (events["timestamp"].max() - pd.Timedelta(days=180)).normalize()
        t_feat0 = time.perf_counter()
        features, _stats = build_features(
            events,
            cutoff,
            customers=validated.customers.clean,
            subscriptions=validated.subscriptions.clean,
            params=FeatureParams(),
        )
        t_features = time.perf_counter() - t_feat0
        seconds = time.perf_counter() - start
        peak_rss_mb = _peak_rss_mb()

        n_events = len(events)
        n_customers = int(events["customer_id"].nunique())
        print(f"events {n_events:,}  customers {n_customers:,}  cutoff {cutoff.date()}")
        print(
            f"end to end {seconds:.2f} s = load {t_load:.2f} + validate {t_validate:.2f}"
            f" + features {t_features:.2f} (phase 1-3, {features.shape[1]} columns,"
            f" {len(features):,} rows)"
        )
        print(
            f"throughput {n_events / seconds:,.0f} events/s end to end,"
            f" {n_events / t_features:,.0f} events/s features only"
        )
        print(f"peak RSS {peak_rss_mb:,.0f} MB (before loading: {rss_before:,.0f} MB)")

        ours_s, ours = _best_of(
            args.repeats, lambda: core_aggregations(events, cutoff, WINDOWS_DAYS)
        )
        duck_s, duck = _best_of(
            args.repeats, lambda: duckdb_core_aggregations(events, cutoff, args.threads)
        )
        _check_same(ours, duck)
        print(
            f"core aggregations: ours {ours_s:.2f} s, DuckDB ({args.threads} threads)"
            f" {duck_s:.2f} s, ratio {ours_s / duck_s:.2f} (same values checked)"
        )

    summary = {
        "events": n_events,
        "customers": n_customers,
        "seconds": round(seconds, 3),
        "features_seconds": round(t_features, 3),
        "events_per_s": round(n_events / seconds),
        "features_events_per_s": round(n_events / t_features),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "core_seconds": round(ours_s, 3),
        "duckdb_seconds": round(duck_s, 3),
        "core_vs_duckdb": round(ours_s / duck_s, 3),
    }
    print(json.dumps(summary))
    return summary


def _check_same(ours: pd.DataFrame, duck: pd.DataFrame) -> None:
    """Fail loudly if the two engines disagree: a race between different answers is no race."""
    ours = ours.reset_index() if "customer_id" not in ours.columns else ours
    ours = ours.assign(customer_id=ours["customer_id"].astype(str)).set_index("customer_id")
    duck = duck.assign(customer_id=duck["customer_id"].astype(str)).set_index("customer_id")
    duck = duck.loc[ours.index]
    if len(ours) != len(duck):
        raise AssertionError(f"customer counts differ: ours {len(ours)}, DuckDB {len(duck)}")
    for w in WINDOWS_DAYS:
        np.testing.assert_array_equal(
            ours[f"events_{w}d"].to_numpy(), duck[f"events_{w}d"].to_numpy()
        )
        np.testing.assert_allclose(
            ours[f"spend_{w}d"].to_numpy(), duck[f"amount_{w}d"].to_numpy(), rtol=1e-9, atol=1e-6
        )
    for col in ("first_event", "last_event"):
        if (pd.to_datetime(ours[col]).to_numpy() != pd.to_datetime(duck[col]).to_numpy()).any():
            raise AssertionError(f"{col} differs between engines")


if __name__ == "__main__":
    main()
