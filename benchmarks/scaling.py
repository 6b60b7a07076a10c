"""Scaling curve of the feature engine: time, memory and cost per event from 100k to 1M customers.

    python -m benchmarks.scaling                       # 100k, 300k, 1M customers (+ Spark)
    python -m benchmarks.scaling --sizes 100000,300000,1000000,3000000 --data-dir /tmp/crm
    python -m benchmarks.scaling --sizes 2000,4000 --spark-sizes 2000   # smoke run

For each size a CRM history is generated once (``features.synthetic``, ``activity_scale`` 0.36:
~20 events per customer, so events grow in proportion; cached under ``--data-dir`` when given),
then each engine runs in its own subprocess so that its peak memory is its own:

* **local**: read the three Parquet tables with pandas and build the features at the cutoff
  (``features.snapshots.build_features``: phases 1-3). Time = read + build (the Parquet write of
  the result is timed apart); peak RSS = the subprocess's ``ru_maxrss``.
* **spark** (``--spark-master``, default ``local[2]``): ``features.spark`` end to end -- read
  Parquet, check the input, phases 1-3, write Parquet. Session start-up is timed apart; peak RSS
  is sampled over the whole process tree (Python driver, JVM, Python workers).
* **compare**: the Spark table against the local one, every column (floats within 1e-9).

Cost per event = engine seconds / events in the data set. The figures of interest are ratios
(2 shared cores make absolute numbers noisy): ``cost_per_event_ratio`` (largest size vs the
smallest; the goal is <= 1.3 for 1M vs 100k) and the log-log slope of time against events
(1.0 = linear). The last line printed is a JSON object with at least ``cost_per_event_ratio`` and
``spark_matches_local``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The checkout: workers run as ``python -m benchmarks.scaling`` from here.
REPO = Path(__file__).resolve().parents[1]

DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
DEFAULT_CUTOFF = "2025-01-01"
ACTIVITY_SCALE = 0.36  # ~20 events per customer over the generator's 2.5 years


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _TreeRssSampler:
    """Peak resident memory of this process and all its descendants (the Spark JVM and its
    Python workers), sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        me = self._psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except self._psutil.Error:
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(self._interval_s)

    def __enter__(self) -> _TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())


# --------------------------------------------------------------------------------------------
# workers (each runs in its own subprocess)
# --------------------------------------------------------------------------------------------


def _worker_generate(args: argparse.Namespace) -> dict[str, Any]:
    from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data

    start = time.perf_counter()
    data = generate_crm_data(
        GeneratorParams(
            n_customers=args.customers, seed=args.seed, activity_scale=args.activity_scale
        )
    )
    write_crm_data(data, Path(args.data))
    return {"events": len(data.events), "seconds": time.perf_counter() - start}


def _worker_local(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from features.config import FeatureParams, LabelParams
    from features.snapshots import build_features

    data = Path(args.data)
    rss_start = _peak_rss_mb()
    start = time.perf_counter()
    events = pd.read_parquet(data / "events.parquet")
    customers = pd.read_parquet(data / "customers.parquet")
    subscriptions = pd.read_parquet(data / "subscriptions.parquet")
    read_s = time.perf_counter() - start
    table, _ = build_features(
        events,
        args.cutoff,
        customers=customers,
        subscriptions=subscriptions,
        params=FeatureParams(),
        label_params=LabelParams(),
    )
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    write_start = time.perf_counter()
    table.reset_index().to_parquet(args.out, index=False)
    return {
        "events": len(events),
        "customers": len(table),
        "columns": table.shape[1] + 1,
        "seconds": seconds,
        "read_s": read_s,
        "features_s": seconds - read_s,
        "write_s": time.perf_counter() - write_start,
        "peak_rss_mb": peak,
        "rss_at_start_mb": rss_start,
    }


def _worker_spark(args: argparse.Namespace) -> dict[str, Any]:
    with _TreeRssSampler() as sampler:
        start = time.perf_counter()
        from features.config import FeatureParams, LabelParams
        from features.spark import (
            build_features_spark,
            canonical_crm,
            check_crm,
            spark_session,
        )

        spark = spark_session(
            args.spark_master,
            log_level="ERROR",
            conf={"spark.driver.memory": args.spark_driver_memory},
        )
        startup_s = time.perf_counter() - start
        data = Path(args.data)
        start = time.perf_counter()
        crm = canonical_crm(
            *(
                spark.read.parquet(str(data / f"{name}.parquet"))
                for name in ("events", "customers", "subscriptions")
            )
        )
        summary = check_crm(crm)
        result = build_features_spark(
            crm,
            args.cutoff,
            params=FeatureParams(),
            label_params=LabelParams(),
            n_events=summary.n_events,
            n_buckets=args.buckets,
        )
        with result:
            result.frame.write.mode("overwrite").parquet(args.out)
        seconds = time.perf_counter() - start
        buckets = result.n_buckets
        spark.stop()
    return {
        "events": summary.n_events,
        "seconds": seconds,
        "startup_s": startup_s,
        "buckets": buckets,
        "peak_tree_rss_mb": sampler.peak_mb,
        "driver_peak_rss_mb": _peak_rss_mb(),
    }


def _worker_compare(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    local = pd.read_parquet(args.local).set_index("customer_id").sort_index()
    spark = pd.read_parquet(args.spark).set_index("customer_id").sort_index()
    problems: list[str] = []
    if list(spark.columns) != list(local.columns):
        problems.append("columns differ")
    if not spark.index.equals(local.index):
        problems.append(f"rows differ ({len(spark)} vs {len(local)})")
    max_rel = 0.0
    if not problems:
        for column in local.columns:
            a, b = local[column], spark[column]
            if pd.api.types.is_float_dtype(a):
                x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    problems.append(f"{column}: missing values differ")
                    continue
                finite = ~np.isnan(x)
                scale = np.maximum(np.abs(x[finite]), 1e-12)
                rel = float(np.max(np.abs(x[finite] - y[finite]) / scale, initial=0.0))
                max_rel = max(max_rel, rel)
                if rel > 1e-9:
                    problems.append(f"{column}: relative difference {rel:.2e}")
            else:
                if pd.api.types.is_datetime64_any_dtype(a):
                    same = (a.to_numpy("datetime64[ns]") == b.to_numpy("datetime64[ns]")).all()
                else:
                    same = (
                        a.astype(object).where(a.notna(), None).tolist()
                        == b.astype(object).where(b.notna(), None).tolist()
                    )
                if not same:
                    problems.append(f"{column}: values differ")
    return {
        "matches": not problems,
        "problems": problems[:10],
        "max_relative_difference": max_rel,
        "rows": len(local),
    }


_WORKERS = {
    "generate": _worker_generate,
    "local": _worker_local,
    "spark": _worker_spark,
    "compare": _worker_compare,
}


def _run_worker(mode: str, options: Sequence[str]) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its last stdout line is its JSON result."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", mode, *options]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{mode} worker failed ({completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# the curve
# --------------------------------------------------------------------------------------------


def loglog_slope(events: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) against log(events): 1.0 is linear scaling."""
    if len(events) < 2:
        return float("nan")
    x = [math.log(e) for e in events]
    y = [math.log(s) for s in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx


def _parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 100:
        raise argparse.ArgumentTypeError(f"sizes must be customer counts >= 100, got {text!r}")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=list(DEFAULT_SIZES),
        help="customer counts, comma-separated (default 100000,300000,1000000)",
    )
    parser.add_argument(
        "--spark-sizes",
        type=_parse_sizes,
        default=None,
        help="sizes also run on Spark (default: all of --sizes)",
    )
    parser.add_argument("--no-spark", action="store_true", help="local engine only")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-driver-memory", default="4g")
    parser.add_argument("--buckets", type=int, default=None, help="Spark buckets (default: auto)")
    parser.add_argument("--activity-scale", type=float, default=ACTIVITY_SCALE)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cutoff", default=DEFAULT_CUTOFF)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cache of generated data sets (one sub-directory per size and seed)",
    )
    # internal: one worker step in a subprocess
    parser.add_argument("--worker", choices=sorted(_WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--customers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--local", help=argparse.SUPPRESS)
    parser.add_argument("--spark", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, work_dir: Path, say=print) -> dict[str, Any]:
    spark_sizes = [] if args.no_spark else (args.spark_sizes or args.sizes)
    cache = (args.data_dir or work_dir / "data").resolve()  # the workers run in REPO
    rows: list[dict[str, Any]] = []
    matches: list[bool] = []
    for size in args.sizes:
        data = cache / f"crm_{size}_seed{args.seed}_scale{args.activity_scale}"
        if not (data / "events.parquet").is_file():
            generated = _run_worker(
                "generate",
                [
                    "--customers",
                    str(size),
                    "--seed",
                    str(args.seed),
                    "--activity-scale",
                    str(args.activity_scale),
                    "--data",
                    str(data),
                ],
            )
            say(f"{size:>9,} customers: generated {generated['events']:,} events")
        common = ["--data", str(data), "--cutoff", args.cutoff]
        local_out = work_dir / f"local_{size}.parquet"
        local = _run_worker("local", [*common, "--out", str(local_out)])
        row: dict[str, Any] = {
            "customers": size,
            "events": local["events"],
            "feature_rows": local["customers"],
            "local_s": round(local["seconds"], 3),
            "local_read_s": round(local["read_s"], 3),
            "local_features_s": round(local["features_s"], 3),
            "local_write_s": round(local["write_s"], 3),
            "local_ns_per_event": round(1e9 * local["seconds"] / local["events"], 1),
            "local_features_ns_per_event": round(1e9 * local["features_s"] / local["events"], 1),
            "local_peak_rss_mb": round(local["peak_rss_mb"], 1),
            "local_bytes_per_event": round(2**20 * local["peak_rss_mb"] / local["events"], 1),
        }
        say(
            f"{size:>9,} customers, {local['events']:>11,} events: local {local['seconds']:7.2f} s"
            f" (read {local['read_s']:.2f} + features {local['features_s']:.2f}),"
            f" {row['local_ns_per_event']:7.1f} ns/event, peak {local['peak_rss_mb']:,.0f} MB"
        )
        if size in spark_sizes:
            spark_out = work_dir / f"spark_{size}.parquet"
            options = [
                *common,
                "--out",
                str(spark_out),
                "--spark-master",
                args.spark_master,
                "--spark-driver-memory",
                args.spark_driver_memory,
            ]
            if args.buckets is not None:
                options += ["--buckets", str(args.buckets)]
            spark = _run_worker("spark", options)
            compared = _run_worker(
                "compare", ["--local", str(local_out), "--spark", str(spark_out)]
            )
            matches.append(bool(compared["matches"]))
            row.update(
                {
                    "spark_s": round(spark["seconds"], 3),
                    "spark_startup_s": round(spark["startup_s"], 3),
                    "spark_buckets": spark["buckets"],
                    "spark_ns_per_event": round(1e9 * spark["seconds"] / spark["events"], 1),
                    "spark_peak_tree_rss_mb": round(spark["peak_tree_rss_mb"], 1),
                    "spark_matches_local": bool(compared["matches"]),
                    "spark_max_relative_difference": compared["max_relative_difference"],
                }
            )
            say(
                f"{'':>9}  spark ({args.spark_master}, {spark['buckets']} buckets):"
                f" {spark['seconds']:7.2f} s (+{spark['startup_s']:.1f} s start-up),"
                f" {row['spark_ns_per_event']:7.1f} ns/event,"
                f" peak {spark['peak_tree_rss_mb']:,.0f} MB (driver+JVM+workers),"
                f" same as local: {compared['matches']}"
                + ("" if compared["matches"] else f" {compared['problems']}")
            )
        rows.append(row)

    first, last = rows[0], rows[-1]
    ratio = last["local_ns_per_event"] / first["local_ns_per_event"]
    slope = loglog_slope([r["events"] for r in rows], [r["local_s"] for r in rows])
    summary: dict[str, Any] = {
        "sizes": [r["customers"] for r in rows],
        "cutoff": args.cutoff,
        "activity_scale": args.activity_scale,
        "runs": rows,
        "cost_per_event_ratio": round(ratio, 3),
        "features_cost_per_event_ratio": round(
            last["local_features_ns_per_event"] / first["local_features_ns_per_event"], 3
        ),
        "cost_per_event_ratio_sizes": [first["customers"], last["customers"]],
        "local_loglog_slope": round(slope, 3),
        "spark_matches_local": bool(matches) and all(matches),
        "spark_sizes": spark_sizes,
        "cpu_count": os.cpu_count(),
    }
    spark_rows = [r for r in rows if "spark_s" in r]
    if len(spark_rows) >= 2:
        summary["spark_loglog_slope"] = round(
            loglog_slope([r["events"] for r in spark_rows], [r["spark_s"] for r in spark_rows]),
            3,
        )
        summary["spark_cost_per_event_ratio"] = round(
            spark_rows[-1]["spark_ns_per_event"] / spark_rows[0]["spark_ns_per_event"], 3
        )
    say(
        f"cost per event {last['customers']:,} vs {first['customers']:,} customers: {ratio:.2f}x"
        f" (goal <= 1.3); time ~ events^{slope:.2f}"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker is not None:
        result = _WORKERS[args.worker](args)
        print(json.dumps(result))
        return result
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        summary = run(args, Path(scratch))
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
