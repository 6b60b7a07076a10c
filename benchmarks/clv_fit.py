"""BG/NBD fit-speed benchmark: one maximum-likelihood fit on simulated customers.

    python -m benchmarks.clv_fit --customers 1000000

Simulates customers from the BG/NBD process with the CDNOW estimates (r=0.243, alpha=4.414,
a=0.793, b=2.426; time in weeks), ages T spread over a 78-week window, and records the times on
a daily grid (as a transaction log with dates would), so identical (x, t_x, T) rows occur and the
fit's row compression has something to do. Prints the simulation and fit times, the number of
distinct rows the optimiser saw and the recovered parameters; the last line is a JSON object.

It also times the conditional-expectation quadrature fallback: ``expected_purchases`` for (up to)
10,000 of the simulated customers under parameters where the closed form fails for every
customer, those a fit returns when all customers share one dropout probability (a, b in the
millions).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from features.clv import BetaGeoModel, simulate_bgnbd_summary

TRUE_PARAMS = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
WINDOW_DAYS = 78 * 7
# A BG/NBD fit on customers simulated with a = b = 200 (everyone's dropout probability ~0.5).
FALLBACK_PARAMS = {"r": 0.48, "alpha": 2.73, "a": 1463533.56, "b": 1476614.67}
FALLBACK_CUSTOMERS = 10_000
FALLBACK_HORIZON_WEEKS = 39.0


def simulate_daily_grid(n_customers: int, seed: int) -> tuple[np.ndarray, ...]:
    """(x, t_x, T) in weeks, with T and t_x on whole days (a first purchase on day 0)."""
    rng = np.random.default_rng(seed)
    age_days = rng.integers(1, WINDOW_DAYS + 1, size=n_customers)
    summary = simulate_bgnbd_summary(TRUE_PARAMS, age_days / 7.0, rng)
    recency_days = np.floor(summary["recency"].to_numpy() * 7.0)
    return summary["frequency"].to_numpy(), recency_days / 7.0, age_days / 7.0


def time_fallback_predictions(frequency: np.ndarray, recency: np.ndarray, age: np.ndarray) -> float:
    """Seconds for ``expected_purchases`` of these customers on the quadrature fallback path."""
    model = BetaGeoModel.from_dict(
        {"model": "BetaGeoModel", "version": 1, "params": FALLBACK_PARAMS}
    )
    started = time.perf_counter()
    model.expected_purchases(FALLBACK_HORIZON_WEEKS, frequency, recency, age)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    started = time.perf_counter()
    frequency, recency, age = simulate_daily_grid(args.customers, args.seed)
    simulated = time.perf_counter()
    model = BetaGeoModel().fit(frequency, recency, age)
    fitted = time.perf_counter()
    n_fallback = min(args.customers, FALLBACK_CUSTOMERS)
    fallback_s = time_fallback_predictions(
        frequency[:n_fallback], recency[:n_fallback], age[:n_fallback]
    )

    result = {
        "customers": args.customers,
        "distinct_rows": model.n_distinct_rows_,
        "simulate_s": round(simulated - started, 3),
        "fit_s": round(fitted - simulated, 3),
        "true_params": TRUE_PARAMS,
        "fitted_params": {k: round(v, 4) for k, v in model.params_.items()},
        "fallback_customers": n_fallback,
        "fallback_predict_s": round(fallback_s, 3),
    }
    print(f"simulated {args.customers:,} customers in {result['simulate_s']} s")
    print(
        f"fitted BG/NBD in {result['fit_s']} s on {model.n_distinct_rows_:,} distinct "
        f"(x, t_x, T) rows: {result['fitted_params']} (true {TRUE_PARAMS})"
    )
    print(
        f"expected purchases on the quadrature fallback path: {n_fallback:,} customers in "
        f"{result['fallback_predict_s']} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
