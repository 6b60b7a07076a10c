"""Probabilistic customer-lifetime-value models: BG/NBD for purchase counts, Gamma-Gamma for spend.

Why these models: a churn service for non-contractual businesses never *sees* a customer leave,
it only sees silence. The BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the
easy way", Marketing Science 24(2)) turns a customer's repeat-purchase count ``x``, the time of the
last repeat purchase ``t_x`` and the customer's age ``T`` into the probability the customer is
still "alive" and the number of purchases to expect next; the Gamma-Gamma model (Fader, Hardie &
Lee 2005, "RFM and CLV", Journal of Marketing Research 42(4)) turns the average value of the
repeat purchases into an expected spend per purchase. Their product is an expected revenue over a
horizon: the CLV features the churn and value-tier models consume.

Conventions shared by every function here:

* ``frequency`` = number of *repeat* purchases ``x`` (all purchases minus the first), a
  non-negative integer; ``recency`` = ``t_x``, time from the first to the last purchase (0 when
  ``x`` is 0); ``T`` = time from the first purchase to the end of observation (the cutoff).
* Time is unit-free: the models work in whatever unit they were fitted in (the service uses days,
  the published CDNOW results use weeks). ``alpha`` is in that unit, so fit and predict in the
  same unit, and a horizon ``t`` is in it too.
* ``monetary_value`` = mean value of the *repeat* purchases (the first purchase excluded, as in
  the paper); it is ignored where ``frequency`` is 0.

Fitting is maximum likelihood with ``scipy.optimize`` on log-parameters, with analytic gradients.
Identical ``(x, t_x, T)`` rows are compressed to one row with a count before optimising, so a
million customers whose times are on a daily grid cost a few hundred thousand likelihood terms;
terms that depend on ``x`` alone are evaluated once per distinct ``x``.

The fitted models serialise to plain JSON (``to_dict`` / ``from_dict``): MLflow can log the
parameters, a server can load them, and Spark can broadcast them without pickling.

A fit that does not converge raises :class:`ConvergenceError` (never a silent warning): the feature
engine can catch it and mark CLV features missing for that cutoff instead of shipping garbage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

__all__ = [
    "BetaGeoModel",
    "ConvergenceError",
    "GammaGammaModel",
    "expected_clv",
    "simulate_bgnbd_summary",
]

#: Version of the ``to_dict`` layout; ``from_dict`` refuses layouts it does not know.
SERIALIZATION_VERSION = 1

# Log-parameters are optimised inside these bounds; a parameter that ends on one means the data do
# not identify it (e.g. no dropout signal at all) and the fit is refused.
_LOG_PARAM_BOUND = 30.0
# Gradient norm (of the mean negative log-likelihood w.r.t. log-parameters) accepted as converged
# when the optimiser itself stops with a line-search complaint at machine precision.
_GRADIENT_TOLERANCE = 1e-5
# Slack allowed when recency exceeds T by float rounding only (e.g. both derived from timestamps).
_RECENCY_SLACK = 1e-9
# Quadrature fallback of the conditional expectation (see _beta_expectation_of_g): Gauss-Legendre
# panels per row, the tail cut-off scale (first-order tails then err by ~1e-12), the log-density
# drop below which the body is negligible, and rows per vectorised chunk (bounds the memory).
_QUADRATURE_PANELS = 32
_NODES_PER_PANEL = 8
_TAIL_CUTOFF = 1e-6
_NEGLIGIBLE_LOG_DENSITY = 40.0
_QUADRATURE_CHUNK_ROWS = 2048


def _composite_gauss_legendre(panels: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``panels`` equal Gauss-Legendre panels covering [0, panels]."""
    unit_nodes, unit_weights = np.polynomial.legendre.leggauss(nodes)
    offsets = np.arange(panels)[:, None] + (unit_nodes[None, :] + 1.0) / 2.0
    return offsets.ravel(), np.tile(unit_weights / 2.0, panels)


_PANEL_OFFSETS, _PANEL_WEIGHTS = _composite_gauss_legendre(_QUADRATURE_PANELS, _NODES_PER_PANEL)


class ConvergenceError(RuntimeError):
    """The maximum-likelihood optimiser did not converge, or a parameter ran off to a bound.

    Raised (not warned) so a caller cannot silently use parameters that are not estimates. The
    usual remedy is a small ``penalizer`` (e.g. 0.001) or more data.
    """


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _as_float_array(name: str, values: Any) -> np.ndarray:
    """``values`` as a float64 array of at most one dimension (a copy, never aliasing input)."""
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from error
    if array.ndim > 1:
        raise ValueError(f"{name} must be a scalar or one-dimensional, got shape {array.shape}")
    return array


def _describe_bad(mask: np.ndarray) -> str:
    """'3 of 100 values (first at position 7)' for an error message."""
    positions = np.flatnonzero(np.atleast_1d(mask))
    return (
        f"{positions.size} of {np.atleast_1d(mask).size} values (first at position {positions[0]})"
    )


def _check_finite(name: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} must be finite; NaN or infinite in {_describe_bad(bad)}")


def _broadcast(**arrays: np.ndarray) -> list[np.ndarray]:
    """Broadcast equal-length (or scalar) arrays, naming the inputs when lengths disagree."""
    lengths = {name: a.shape[0] for name, a in arrays.items() if a.ndim == 1}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inputs must have the same length, got {described}")
    return list(np.broadcast_arrays(*arrays.values()))


def _validate_frequency(frequency: np.ndarray) -> None:
    _check_finite("frequency", frequency)
    negative = frequency < 0
    if negative.any():
        raise ValueError(f"frequency must be >= 0; negative in {_describe_bad(negative)}")
    fractional = frequency != np.round(frequency)
    if fractional.any():
        raise ValueError(
            "frequency must be a whole number of repeat purchases; "
            f"non-integer in {_describe_bad(fractional)}"
        )


def _validate_rfm(frequency: Any, recency: Any, T: Any) -> tuple[np.ndarray, ...]:
    """Check (x, t_x, T) and return them as broadcast float arrays.

    ``recency`` larger than ``T`` by float rounding only is clipped to ``T``; anything more is an
    error, as is a positive recency for a customer without repeat purchases (``t_x`` is defined as
    0 then), because both mean the summary was built wrongly upstream.
    """
    x = _as_float_array("frequency", frequency)
    t_x = _as_float_array("recency", recency)
    age = _as_float_array("T", T)
    x, t_x, age = _broadcast(frequency=x, recency=t_x, T=age)
    _validate_frequency(x)
    _check_finite("recency", t_x)
    _check_finite("T", age)
    for name, array in (("recency", t_x), ("T", age)):
        negative = array < 0
        if negative.any():
            raise ValueError(f"{name} must be >= 0; negative in {_describe_bad(negative)}")
    too_recent = t_x > age + _RECENCY_SLACK * np.maximum(1.0, age)
    if too_recent.any():
        raise ValueError(
            f"recency must be <= T (the last purchase cannot be after the end of observation); "
            f"violated in {_describe_bad(too_recent)}"
        )
    inconsistent = (x == 0) & (t_x != 0)
    if inconsistent.any():
        raise ValueError(
            "recency must be 0 when frequency is 0 (no repeat purchase, so no last repeat "
            f"purchase time); violated in {_describe_bad(inconsistent)}"
        )
    return x + 0.0, np.minimum(t_x, age) + 0.0, age + 0.0


def _validate_weights(weights: Any, n_rows: int) -> np.ndarray:
    """Frequency weights: how many identical customers each row stands for (default 1 each)."""
    if weights is None:
        return np.ones(n_rows)
    w = _as_float_array("weights", weights)
    if w.ndim != 1 or w.shape[0] != n_rows:
        raise ValueError(f"weights must have one value per customer ({n_rows}), got {w.shape}")
    _check_finite("weights", w)
    negative = w < 0
    if negative.any():
        raise ValueError(f"weights must be >= 0; negative in {_describe_bad(negative)}")
    if not (w > 0).any():
        raise ValueError("weights are all zero: nothing to fit")
    return w


def _validate_horizon(name: str, t: Any) -> np.ndarray:
    horizon = _as_float_array(name, t)
    _check_finite(name, horizon)
    negative = horizon < 0
    if negative.any():
        raise ValueError(f"{name} must be >= 0; negative in {_describe_bad(negative)}")
    return horizon


def _validate_penalizer(penalizer: Any) -> float:
    if (
        isinstance(penalizer, bool)
        or not isinstance(penalizer, int | float)
        or not math.isfinite(penalizer)
        or penalizer < 0
    ):
        raise ValueError(f"penalizer must be a finite number >= 0, got {penalizer!r}")
    return float(penalizer)


def _validate_max_iter(max_iter: Any) -> int:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    return max_iter


# --------------------------------------------------------------------------------------------
# compression of identical rows
# --------------------------------------------------------------------------------------------


def _compress_rows(
    columns: tuple[np.ndarray, ...], weights: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Collapse identical rows into one row each, summing their weights.

    Rows with zero weight are dropped first. The output is sorted by the first column, then the
    second, ... (see :func:`_distinct_rows`).
    """
    keep = weights > 0
    distinct, inverse = _distinct_rows(tuple(c[keep] for c in columns))
    summed = np.bincount(inverse, weights=weights[keep], minlength=distinct[0].size)
    return distinct, summed


def _distinct_rows(columns: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Distinct rows of equal-length columns and, per input row, the index of its distinct row.

    Same result as ``np.unique(np.column_stack(columns), axis=0, return_inverse=True)``, but done
    with ``np.lexsort`` because ``np.unique(axis=0)`` sorts structured rows and is about six times
    slower on a million customers. The distinct rows are sorted by the first column, then the
    second, ...
    """
    order = np.lexsort(columns[::-1])
    sorted_columns = tuple(c[order] for c in columns)
    starts = np.ones(order.size, dtype=bool)
    if order.size > 1:
        differs = np.zeros(order.size - 1, dtype=bool)
        for c in sorted_columns:
            differs |= c[1:] != c[:-1]
        starts[1:] = differs
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return tuple(c[starts] for c in sorted_columns), inverse


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------


def _minimise(
    objective: Any, start: np.ndarray, names: tuple[str, ...], max_iter: int, model: str
) -> np.ndarray:
    """Minimise ``objective`` (value and gradient) over log-parameters; raise when it fails.

    L-BFGS-B first; when it stops without success (typically a line search at machine precision)
    the point is accepted if the gradient is negligible, otherwise BFGS gets one more try from
    there. Anything else, or a parameter on the bound, raises :class:`ConvergenceError`.
    """
    bounds = [(-_LOG_PARAM_BOUND, _LOG_PARAM_BOUND)] * len(start)
    with np.errstate(all="ignore"):
        result = optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iter, "ftol": 1e-14, "gtol": 1e-9},
        )
        gradient = np.asarray(result.jac, dtype=float)
        converged = bool(result.success) or (
            np.all(np.isfinite(gradient)) and np.max(np.abs(gradient)) < _GRADIENT_TOLERANCE
        )
        if not converged:
            retry = optimize.minimize(
                objective, result.x, jac=True, method="BFGS", options={"maxiter": max_iter}
            )
            gradient = np.asarray(retry.jac, dtype=float)
            if (
                np.all(np.isfinite(retry.x))
                and np.all(np.isfinite(gradient))
                and np.max(np.abs(gradient)) < _GRADIENT_TOLERANCE
            ):
                result, converged = retry, True
    solution = np.asarray(result.x, dtype=float)
    values = ", ".join(f"{n}={math.exp(v):.6g}" for n, v in zip(names, solution, strict=True))
    if not converged or not np.all(np.isfinite(solution)):
        raise ConvergenceError(
            f"{model} fit did not converge ({result.message!s}; max |gradient| "
            f"{np.max(np.abs(gradient)):.3g} after {result.nit} iterations; last point {values}). "
            "Try a small penalizer (e.g. 0.001), a larger max_iter, or check the input data."
        )
    at_bound = [n for n, v in zip(names, solution, strict=True) if abs(v) > _LOG_PARAM_BOUND - 0.1]
    if at_bound:
        raise ConvergenceError(
            f"{model} fit ran parameter(s) {at_bound} to the optimisation bound ({values}): "
            "the data do not identify the model. Use a small penalizer (e.g. 0.001) or more data."
        )
    return solution


def _check_fitted(model: Any) -> None:
    if getattr(model, "params_", None) is None:
        raise NotFittedError(
            f"This {type(model).__name__} is not fitted yet: call fit() or from_dict() before "
            "predicting."
        )


def _params_from_dict(
    payload: Mapping[str, Any], model: str, names: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate a ``to_dict`` payload and return (params, hyperparameters)."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"expected a mapping from {model}.to_dict(), got {type(payload).__name__}")
    if payload.get("model") != model:
        raise ValueError(f"payload is for model {payload.get('model')!r}, not {model!r}")
    if payload.get("version") != SERIALIZATION_VERSION:
        raise ValueError(
            f"unsupported {model} payload version {payload.get('version')!r} "
            f"(this code reads version {SERIALIZATION_VERSION})"
        )
    raw = payload.get("params")
    if not isinstance(raw, Mapping) or set(raw) != set(names):
        raise ValueError(f"{model} payload params must have exactly the keys {list(names)}")
    params: dict[str, float] = {}
    for name in names:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{model} parameter {name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{model} parameter {name} must be finite and > 0, got {value!r}")
        params[name] = float(value)
    hyper = payload.get("hyperparameters", {})
    if not isinstance(hyper, Mapping):
        raise ValueError(f"{model} payload hyperparameters must be a mapping")
    return params, dict(hyper)


# --------------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RFMRows:
    """Compressed (x, t_x, T) rows with their counts and the index of each row's distinct x."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    weight: np.ndarray
    unique_x: np.ndarray
    x_index: np.ndarray
    total_weight: float


def _bgnbd_log_likelihood_terms(
    log_params: np.ndarray, rows: _RFMRows
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log-likelihood and its gradient w.r.t. the natural parameters (4 x rows).

    Per customer (FHL 2005, eq. 6), with ``A = B(a, b+x) / B(a, b)`` and
    ``D = B(a+1, b+x-1) / B(a, b)`` (dead after the x-th repeat purchase)::

        log L = lnG(r+x) - lnG(r) + r ln(alpha)
                + log( A (alpha+T)^-(r+x) + [x>0] D (alpha+t_x)^-(r+x) )

    The last term is a two-term log-sum-exp, so it never overflows for large ``x`` or long
    histories. Terms that depend on ``x`` alone are computed once per distinct ``x``.
    """
    r, alpha, a, b = np.exp(log_params)
    ux = rows.unique_x
    x_safe_u = np.where(ux > 0, ux, 1.0)
    beta_ab = betaln(a, b)
    log_alive_u = betaln(a, b + ux) - beta_ab
    log_dead_u = betaln(a + 1.0, b + x_safe_u - 1.0) - beta_ab
    idx = rows.x_index
    k = r + rows.x
    log_age = np.log(alpha + rows.T)
    log_recency = np.log(alpha + rows.t_x)
    u_alive = log_alive_u[idx] - k * log_age
    u_dead = np.where(rows.x > 0, log_dead_u[idx] - k * log_recency, -np.inf)
    top = np.maximum(u_alive, u_dead)
    e_alive = np.exp(u_alive - top)
    e_dead = np.exp(u_dead - top)
    total = e_alive + e_dead
    w_alive = e_alive / total
    w_dead = e_dead / total
    ll = (gammaln(r + ux) - gammaln(r))[idx] + r * math.log(alpha) + top + np.log(total)

    psi_ab = digamma(a + b)
    psi_abx_u = digamma(a + b + ux)
    d_alive_da_u = psi_ab - psi_abx_u
    d_dead_da_u = 1.0 / a + d_alive_da_u
    d_alive_db_u = digamma(b + ux) - digamma(b) + psi_ab - psi_abx_u
    d_dead_db_u = digamma(b + x_safe_u - 1.0) - digamma(b) + psi_ab - psi_abx_u
    d_r = (digamma(r + ux) - digamma(r))[idx] + math.log(alpha)
    d_r = d_r - w_alive * log_age - w_dead * log_recency
    d_alpha = r / alpha - k * (w_alive / (alpha + rows.T) + w_dead / (alpha + rows.t_x))
    d_a = w_alive * d_alive_da_u[idx] + w_dead * d_dead_da_u[idx]
    d_b = w_alive * d_alive_db_u[idx] + w_dead * d_dead_db_u[idx]
    return ll, np.vstack([d_r, d_alpha, d_a, d_b])


def _bgnbd_negative_log_likelihood(
    log_params: np.ndarray, rows: _RFMRows, penalizer: float
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood (per unit weight) and its gradient w.r.t. log-parameters.

    The penalty is ``penalizer * sum(param**2)`` on the natural scale (the lifetimes
    convention), added to the *mean* log-likelihood so its strength does not depend on the number
    of customers.
    """
    ll, grad_rows = _bgnbd_log_likelihood_terms(log_params, rows)
    params = np.exp(log_params)
    scale = 1.0 / rows.total_weight
    value = -float(rows.weight @ ll) * scale + penalizer * float(params @ params)
    grad_natural = -(grad_rows @ rows.weight) * scale + 2.0 * penalizer * params
    return value, grad_natural * params


def _rfm_rows(x: np.ndarray, t_x: np.ndarray, age: np.ndarray, weight: np.ndarray) -> _RFMRows:
    unique_x, x_index = np.unique(x, return_inverse=True)
    return _RFMRows(x, t_x, age, weight, unique_x, x_index, float(weight.sum()))


def _bgnbd_alive_expectation(
    t: np.ndarray, x: np.ndarray, age: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """E[purchases in (T, T+t] | customer alive at T, x]: eq. 10 of FHL 2005 without P(alive).

    The paper's ``((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)`` is rewritten with
    Euler's transformation as ``(1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``, where
    ``z = t/(alpha+T+t)``: the first two hypergeometric arguments then no longer grow with ``x``
    and the series stays tame for heavy buyers. ``a`` within 1e-7 of 1 (a removable singularity of
    the closed form) is nudged by 1e-7. Values that are not finite or fall outside their exact
    bounds ``[0, t (r+x)/(alpha+T)]`` (the expected count with no dropout at all) are recomputed by
    direct numerical integration over the Beta posterior of ``p``; the result is clipped into the
    bounds.
    """
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    if abs(a - 1.0) < 1e-7:
        a = 1.0 + math.copysign(1e-7, a - 1.0)
    z = t / (alpha + age + t)
    c = a + b + x - 1.0
    upper = t * (r + x) / (alpha + age)
    with np.errstate(all="ignore"):
        f = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        log_shrink = (a - 1.0) * np.log1p(-z)
        positive = f > 0
        bracket = np.where(
            positive,
            -np.expm1(log_shrink + np.log(np.where(positive, f, 1.0))),
            1.0 - np.exp(log_shrink) * f,
        )
        value = c / (a - 1.0) * bracket
    tolerance = 1e-9 * (1.0 + upper)
    bad = ~np.isfinite(value) | (value < -tolerance) | (value > upper + tolerance)
    if bad.any():
        value = np.where(bad, 0.0, value)
        value[bad] = _bgnbd_alive_expectation_by_quadrature(t[bad], x[bad], age[bad], params)
    return np.clip(value, 0.0, upper)


def _bgnbd_alive_expectation_by_quadrature(
    t: np.ndarray, x: np.ndarray, age: np.ndarray, params: Mapping[str, float]
) -> np.ndarray:
    """The same expectation as an integral; the fallback where the closed form breaks down.

    Alive at ``T`` with ``x`` repeat purchases, the posterior is ``lambda ~ Gamma(r+x, alpha+T)``
    independent of ``p ~ Beta(a, b+x)``; a customer with those rates makes on average
    ``(1 - exp(-lambda p t)) / p`` purchases in the next ``t``. Integrating ``lambda`` out gives
    ``E_p[g(p)]`` with ``g(p) = (1 - (1 + p s)^-(r+x)) / p`` and ``s = t/(alpha+T)``. The closed
    form typically fails when ``a`` and ``b`` are huge (a fit on customers whose dropout
    probability hardly varies) and then fails for every customer, so this path is vectorised
    like the closed form (:func:`_beta_expectation_of_g`). Distinct ``(t, x, T)`` rows are
    integrated once, in chunks that bound the memory used.
    """
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    (ut, ux, uage), inverse = _distinct_rows((t, x, age))
    results = np.empty(ut.size)
    for start in range(0, ut.size, _QUADRATURE_CHUNK_ROWS):
        rows = slice(start, start + _QUADRATURE_CHUNK_ROWS)
        results[rows] = _beta_expectation_of_g(
            ut[rows] / (alpha + uage[rows]), r + ux[rows], a, b + ux[rows]
        )
    return results[inverse]


def _beta_expectation_of_g(s: np.ndarray, k: np.ndarray, a: float, beta: np.ndarray) -> np.ndarray:
    """``E[g(p)]`` for ``p ~ Beta(a, beta)``, ``g(p) = (1 - (1 + p s)^-k) / p``, row by row at once.

    The integral is taken over the log-odds ``y`` of ``p``, where the Beta density
    ``p^a (1-p)^beta`` (per unit ``y``) is smooth and log-concave with its mode at
    ``log(a/beta)`` and ``g`` is smooth too, however small ``a`` or ``beta`` (no endpoint
    singularity) or large (a peak of width ``sqrt(1/a + 1/beta)``). Per row:

    * the tails ``p < p_lo`` and ``1 - p < q_hi`` are integrated analytically from first-order
      expansions of the integrand, with cut-offs small enough that the neglected second order is
      below 1e-12 relative (they carry most of the mass when ``a`` or ``beta`` is small);
    * between them, only the span where the density is within ``exp(-40) / (1 + k s)`` of its
      mode (``g`` varies at most by ``k s``) is integrated, found by bisection because the
      log-density is concave, with ``_QUADRATURE_PANELS`` Gauss-Legendre panels of fixed size;
    * everything is scaled by the density at the mode and divided by the same quadrature of the
      density alone, so no Beta function of huge arguments (and its rounding) enters.

    The log-density relative to the mode is written with ``log1p``/``expm1`` of the offset
    ``d = y - mode`` so it stays exact for ``a`` and ``beta`` in the millions. Matches adaptive
    quadrature to about 1e-10 relative (see the tests).
    """
    s, k, beta = (np.asarray(v, dtype=np.float64)[:, None] for v in (s, k, beta))
    p_mode = a / (a + beta)
    q_mode = beta / (a + beta)
    mode = math.log(a) - np.log(beta)
    ks = k * s

    def log_density_ratio(d: np.ndarray) -> np.ndarray:
        return -a * np.log1p(np.expm1(-d) * q_mode) - beta * np.log1p(np.expm1(d) * p_mode)

    p_lo = _TAIL_CUTOFF / (np.abs(beta - 1.0) + 2.0 + (k + 2.0) * s)
    q_hi = _TAIL_CUTOFF / (abs(a - 1.0) + 3.0)
    d_lo = np.log(p_lo) - np.log1p(-p_lo) - mode
    d_hi = np.log1p(-q_hi) - np.log(q_hi) - mode
    floor = -(_NEGLIGIBLE_LOG_DENSITY + np.log1p(ks))
    centre = np.clip(0.0, d_lo, d_hi)
    with np.errstate(over="ignore"):
        left = _bisect_level(log_density_ratio, d_lo, centre, floor)
        right = _bisect_level(log_density_ratio, d_hi, centre, floor)
        width = (right - left) / _QUADRATURE_PANELS
        d = left + width * _PANEL_OFFSETS
        density = np.exp(log_density_ratio(d)) * (width * _PANEL_WEIGHTS)
        p = expit(mode + d)
        g = -np.expm1(-k * np.log1p(p * s)) / p
        body_g = np.sum(density * g, axis=1, keepdims=True)
        body_mass = np.sum(density, axis=1, keepdims=True)

        log_mode_density = a * np.log(p_mode) + beta * np.log(q_mode)
        low = np.exp(a * np.log(p_lo) - log_mode_density)
        low_mass = low * (1.0 / a - (beta - 1.0) * p_lo / (a + 1.0))
        low_slope = (beta - 1.0) + (k + 1.0) * s / 2.0
        low_g = low * ks * (1.0 / a - low_slope * p_lo / (a + 1.0))

        g_one = -np.expm1(-k * np.log1p(s))
        g_one_slope = ks * np.exp(-(k + 1.0) * np.log1p(s)) - g_one  # g'(1)
        high = np.exp(beta * np.log(q_hi) - log_mode_density)
        high_mass = high * (1.0 / beta - (a - 1.0) * q_hi / (beta + 1.0))
        high_g = high * (g_one / beta - ((a - 1.0) * g_one + g_one_slope) * q_hi / (beta + 1.0))
    value = (body_g + low_g + high_g) / (body_mass + low_mass + high_mass)
    return value[:, 0]


def _bisect_level(
    function: Any, outer: np.ndarray, inner: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Per row, the point between ``outer`` and ``inner`` where a monotone function hits ``level``.

    ``function`` rises from ``outer`` towards ``inner``; the result is ``outer`` when it is
    already above ``level`` there and ``inner`` when it never gets there. Errs towards
    ``outer`` (the wider span) by at most 2^-60 of the bracket.
    """
    above = function(outer) >= level
    low, high = outer.copy(), inner.copy()
    for _ in range(60):
        middle = 0.5 * (low + high)
        reached = function(middle) >= level
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle)
    return np.where(above, outer, low)


class _JsonParamsMixin:
    """Plain-JSON persistence shared by the fitted CLV models (``PARAM_NAMES`` + ``params_``)."""

    PARAM_NAMES: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description of the fitted model (numbers are Python floats)."""
        _check_fitted(self)
        return {
            "model": type(self).__name__,
            "version": SERIALIZATION_VERSION,
            "params": {k: float(self.params_[k]) for k in self.PARAM_NAMES},
            "hyperparameters": {"penalizer": float(self.penalizer)},
            "fit": {
                "log_likelihood": float(getattr(self, "log_likelihood_", math.nan)),
                "n_customers": float(getattr(self, "n_customers_", math.nan)),
            },
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]):
        """Rebuild a fitted model from :meth:`to_dict` output (e.g. after a JSON round trip)."""
        params, hyper = _params_from_dict(payload, cls.__name__, cls.PARAM_NAMES)
        model = cls(penalizer=float(hyper.get("penalizer", 0.0)))
        model.params_ = params
        fit_info = payload.get("fit") or {}
        if "log_likelihood" in fit_info:
            model.log_likelihood_ = float(fit_info["log_likelihood"])
        if "n_customers" in fit_info:
            model.n_customers_ = float(fit_info["n_customers"])
        return model


class BetaGeoModel(_JsonParamsMixin, BaseEstimator):
    """BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005), fitted by maximum likelihood.

    While alive a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``; after each repeat
    purchase they drop out for good with probability ``p ~ Beta(a, b)``.

    Parameters
    ----------
    penalizer
        L2 penalty ``penalizer * (r^2 + alpha^2 + a^2 + b^2)`` added to the mean negative
        log-likelihood (lifetimes' convention). 0 gives the plain maximum-likelihood estimate;
        a small value (0.001) keeps degenerate data from running a parameter to infinity.
    max_iter
        Iteration cap for the optimiser.

    Attributes
    ----------
    params_ : dict[str, float]
        ``r``, ``alpha``, ``a``, ``b``.
    log_likelihood_ : float
        Total (weighted) log-likelihood at the estimate, without the penalty.
    n_customers_ : float
        Total weight (number of customers) the fit saw.
    n_distinct_rows_ : int
        Distinct ``(x, t_x, T)`` rows after compression: the size of the optimisation problem.
    """

    PARAM_NAMES: tuple[str, ...] = ("r", "alpha", "a", "b")

    def __init__(self, penalizer: float = 0.0, max_iter: int = 1000) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, frequency: Any, recency: Any, T: Any, weights: Any = None) -> BetaGeoModel:
        """Estimate ``r, alpha, a, b`` from per-customer ``(x, t_x, T)``.

        ``weights`` are frequency weights (how many identical customers a row stands for; rows
        of weight 0 are ignored). Identical rows are compressed whether or not weights are
        given. Raises ``ValueError`` on invalid input or when nobody made a repeat purchase (the
        dropout process is then unidentified) and :class:`ConvergenceError` when the
        optimiser fails.
        """
        penalizer = _validate_penalizer(self.penalizer)
        max_iter = _validate_max_iter(self.max_iter)
        x, t_x, age = _validate_rfm(frequency, recency, T)
        if x.ndim == 0:
            x, t_x, age = (np.atleast_1d(v) for v in (x, t_x, age))
        if x.size == 0:
            raise ValueError("cannot fit BetaGeoModel on zero customers")
        w = _validate_weights(weights, x.size)
        (cx, ct_x, cage), cw = _compress_rows((x, t_x, age), w)
        if not (cx > 0).any():
            raise ValueError(
                "cannot fit BetaGeoModel: no customer has a repeat purchase (frequency > 0), so "
                "the purchase and dropout rates are not identified"
            )
        rows = _rfm_rows(cx, ct_x, cage, cw)
        mean_x = float(cw @ cx) / rows.total_weight
        mean_age = float(cw @ cage) / rows.total_weight
        start = np.log([1.0, max(mean_age / mean_x, 1e-3), 1.0, 1.0])

        def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
            return _bgnbd_negative_log_likelihood(log_params, rows, penalizer)

        solution = _minimise(objective, start, self.PARAM_NAMES, max_iter, "BetaGeoModel")
        self.params_ = {
            n: float(math.exp(v)) for n, v in zip(self.PARAM_NAMES, solution, strict=True)
        }
        mean_ll, _ = _bgnbd_negative_log_likelihood(solution, rows, 0.0)
        self.log_likelihood_ = float(-mean_ll * rows.total_weight)
        self.n_customers_ = rows.total_weight
        self.n_distinct_rows_ = int(cx.size)
        return self

    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood of ``(x, t_x, T)`` under the fitted parameters."""
        _check_fitted(self)
        x, t_x, age = _validate_rfm(frequency, recency, T)
        shape = x.shape
        x, t_x, age = (np.atleast_1d(v) for v in (x, t_x, age))
        log_params = np.log([self.params_[k] for k in self.PARAM_NAMES])
        ll, _ = _bgnbd_log_likelihood_terms(log_params, _rfm_rows(x, t_x, age, np.ones(x.size)))
        return ll.reshape(shape)

    def probability_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(alive at T | x, t_x, T) (Fader, Hardie & Lee 2008 note, "Computing P(alive)").

        ``1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, evaluated as a logistic of the
        log-odds so it is exact for very large ``x``. By the model's definition a customer
        without repeat purchases cannot have dropped out yet (dropout happens only right after a
        repeat purchase), so P = 1 when x = 0.
        """
        _check_fitted(self)
        x, t_x, age = _validate_rfm(frequency, recency, T)
        return self._probability_alive(x, t_x, age)

    def _probability_alive(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
        r, alpha, a, b = (self.params_[k] for k in self.PARAM_NAMES)
        has_repeat = x > 0
        x_safe = np.where(has_repeat, x, 1.0)
        log_odds_dead = (
            math.log(a)
            - np.log(b + x_safe - 1.0)
            + (r + x_safe) * (np.log(alpha + age) - np.log(alpha + t_x))
        )
        return np.where(has_repeat, expit(-log_odds_dead), 1.0)

    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """E[number of purchases in (T, T+t] | x, t_x, T] (FHL 2005, eq. 10).

        ``t`` is a scalar horizon or one horizon per customer, in the unit of the fit.
        """
        _check_fitted(self)
        horizon = _validate_horizon("t", t)
        x, t_x, age = _validate_rfm(frequency, recency, T)
        horizon, x, t_x, age = _broadcast(t=horizon, frequency=x, recency=t_x, T=age)
        shape = x.shape
        horizon, x, t_x, age = (np.atleast_1d(v).astype(float) for v in (horizon, x, t_x, age))
        alive = self._probability_alive(x, t_x, age)
        expected = alive * _bgnbd_alive_expectation(horizon, x, age, self.params_)
        return expected.reshape(shape)

    def expected_purchases_unconditional(self, t: Any) -> np.ndarray:
        """E[X(t)]: expected repeat purchases in the first ``t`` after a first purchase (eq. 9).

        This is the conditional expectation of a customer observed for no time at all
        (``x = t_x = T = 0``), so it shares the numerically guarded evaluation.
        """
        _check_fitted(self)
        horizon = _validate_horizon("t", t)
        shape = horizon.shape
        flat = np.atleast_1d(horizon)
        zeros = np.zeros_like(flat)
        return _bgnbd_alive_expectation(flat, zeros, zeros, self.params_).reshape(shape)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------


def _validate_spend(frequency: Any, monetary_value: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check (x, m) and return them broadcast; ``m`` is only required where ``x > 0``.

    Where ``x`` is 0 the value is ignored (it may be 0 or NaN) and returned as 0.
    """
    x = _as_float_array("frequency", frequency)
    m = _as_float_array("monetary_value", monetary_value)
    x, m = _broadcast(frequency=x, monetary_value=m)
    _validate_frequency(x)
    repeat = x > 0
    bad = repeat & ~(np.isfinite(m) & (m > 0))
    if bad.any():
        raise ValueError(
            "monetary_value must be finite and > 0 for customers with repeat purchases "
            f"(frequency > 0); invalid in {_describe_bad(bad)}"
        )
    return x + 0.0, np.where(repeat, m, 0.0)


def _gamma_gamma_negative_log_likelihood(
    log_params: np.ndarray,
    x: np.ndarray,
    m: np.ndarray,
    weight: np.ndarray,
    total_weight: float,
    penalizer: float,
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of the average spends and its gradient (log-parameters).

    Per customer (FHL 2005 "RFM and CLV", with nu integrated out)::

        log L = lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(v + x m)
    """
    p, q, v = np.exp(log_params)
    px = p * x
    log_m = np.log(m)
    log_x = np.log(x)
    log_vxm = np.log(v + x * m)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * log_m
        + px * log_x
        - (px + q) * log_vxm
    )
    psi_pxq = digamma(px + q)
    d_p = x * (psi_pxq - digamma(px) + log_m + log_x - log_vxm)
    d_q = psi_pxq - digamma(q) + math.log(v) - log_vxm
    d_v = q / v - (px + q) / (v + x * m)
    params = np.array([p, q, v])
    scale = 1.0 / total_weight
    value = -float(weight @ ll) * scale + penalizer * float(params @ params)
    grad_natural = np.array([-(weight @ d) * scale for d in (d_p, d_q, d_v)])
    grad_natural += 2.0 * penalizer * params
    return value, grad_natural * params


class GammaGammaModel(_JsonParamsMixin, BaseEstimator):
    """Gamma-Gamma model of the average value of repeat purchases (Fader, Hardie & Lee 2005).

    A customer's purchase values are Gamma(p, nu) with ``nu ~ Gamma(q, v)`` across customers, so
    the mean purchase value is ``p / nu``. Assumes spend is independent of purchase frequency;
    check that correlation on the data before relying on the model.

    Parameters
    ----------
    penalizer
        L2 penalty ``penalizer * (p^2 + q^2 + v^2)`` on the mean negative log-likelihood.
    max_iter
        Iteration cap for the optimiser.

    Attributes
    ----------
    params_ : dict[str, float]
        ``p``, ``q``, ``v``.
    log_likelihood_, n_customers_ : float
        Total weighted log-likelihood and number of repeat buyers used in the fit.
    """

    PARAM_NAMES: tuple[str, ...] = ("p", "q", "v")

    def __init__(self, penalizer: float = 0.0, max_iter: int = 1000) -> None:
        self.penalizer = penalizer
        self.max_iter = max_iter

    def fit(self, frequency: Any, monetary_value: Any, weights: Any = None) -> GammaGammaModel:
        """Estimate ``p, q, v`` from repeat buyers' ``(x, mean repeat purchase value)``.

        Only rows with ``frequency > 0`` enter the likelihood; the others carry no spend
        information and are ignored (their ``monetary_value`` may be 0 or NaN). Raises
        ``ValueError`` when there is no repeat buyer, and :class:`ConvergenceError` when the
        optimiser fails.
        """
        penalizer = _validate_penalizer(self.penalizer)
        max_iter = _validate_max_iter(self.max_iter)
        x, m = _validate_spend(frequency, monetary_value)
        x, m = np.atleast_1d(x), np.atleast_1d(m)
        w = _validate_weights(weights, x.size)
        repeat = (x > 0) & (w > 0)
        if not repeat.any():
            raise ValueError(
                "cannot fit GammaGammaModel: no customer with a repeat purchase "
                "(frequency > 0) and positive weight, so there is no spend to model"
            )
        (cx, cm), cw = _compress_rows((x[repeat], m[repeat]), w[repeat])
        total = float(cw.sum())
        mean_spend = float(cw @ cm) / total
        start = np.log([1.0, 2.0, mean_spend])

        def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
            return _gamma_gamma_negative_log_likelihood(log_params, cx, cm, cw, total, penalizer)

        solution = _minimise(objective, start, self.PARAM_NAMES, max_iter, "GammaGammaModel")
        self.params_ = {
            n: float(math.exp(v)) for n, v in zip(self.PARAM_NAMES, solution, strict=True)
        }
        mean_ll, _ = _gamma_gamma_negative_log_likelihood(solution, cx, cm, cw, total, 0.0)
        self.log_likelihood_ = float(-mean_ll * total)
        self.n_customers_ = total
        return self

    def population_mean_spend(self) -> float:
        """Mean purchase value of a random customer, ``p v / (q - 1)`` (infinite when q <= 1)."""
        _check_fitted(self)
        p, q, v = (self.params_[k] for k in self.PARAM_NAMES)
        return p * v / (q - 1.0) if q > 1.0 else math.inf

    def expected_average_spend(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[mean purchase value | x, observed mean m] = p (v + x m) / (p x + q - 1).

        A weighted average of the population mean and the customer's own mean, with more
        weight on the customer the more purchases back it. For ``frequency == 0`` it is the
        population mean spend (``monetary_value`` ignored). Raises ``ValueError`` for
        ``frequency == 0`` rows when ``q <= 1``, where the population mean is infinite.
        """
        _check_fitted(self)
        x, m = _validate_spend(frequency, monetary_value)
        p, q, v = (self.params_[k] for k in self.PARAM_NAMES)
        if q <= 1.0 and (x == 0).any():
            raise ValueError(
                f"the fitted q = {q:.4g} <= 1 makes the population mean spend infinite, so there "
                "is no expected spend for customers without repeat purchases"
            )
        return p * (v + x * m) / (p * x + q - 1.0)


# --------------------------------------------------------------------------------------------
# CLV and simulation
# --------------------------------------------------------------------------------------------


def expected_clv(
    bgnbd: BetaGeoModel,
    gamma_gamma: GammaGammaModel,
    horizon: float,
    frequency: Any,
    recency: Any,
    T: Any,
    monetary_value: Any,
    *,
    discount_rate: float = 0.0,
    discount_steps: int = 12,
) -> np.ndarray:
    """Expected revenue per customer over the next ``horizon`` (in the models' time unit).

    Undiscounted (the default) it is ``E[purchases in horizon] * E[average spend]``, the two
    models being independent by assumption. With ``discount_rate`` > 0 (per unit of time, e.g.
    0.002 per day) the horizon is cut into ``discount_steps`` equal steps and the purchases
    expected in each step are discounted by ``(1 + discount_rate) ** -step_end``, a deliberately
    simple, slightly conservative approximation of continuous discounting.
    """
    if not isinstance(horizon, int | float | np.integer | np.floating) or isinstance(horizon, bool):
        raise ValueError(f"horizon must be a number, got {horizon!r}")
    horizon = float(horizon)
    if not math.isfinite(horizon) or horizon < 0:
        raise ValueError(f"horizon must be finite and >= 0, got {horizon}")
    if not math.isfinite(discount_rate) or discount_rate < 0:
        raise ValueError(f"discount_rate must be finite and >= 0, got {discount_rate}")
    if (
        isinstance(discount_steps, bool)
        or not isinstance(discount_steps, int)
        or discount_steps < 1
    ):
        raise ValueError(f"discount_steps must be a positive integer, got {discount_steps!r}")
    x, t_x, age = _validate_rfm(frequency, recency, T)
    spend = gamma_gamma.expected_average_spend(x, monetary_value)
    if discount_rate == 0.0:
        purchases = bgnbd.expected_purchases(horizon, x, t_x, age)
        return purchases * spend
    step_ends = horizon * np.arange(1, discount_steps + 1) / discount_steps
    discounted = np.zeros(np.shape(x))
    previous = np.zeros(np.shape(x))
    for end in step_ends:
        cumulative = bgnbd.expected_purchases(end, x, t_x, age)
        discounted = discounted + (cumulative - previous) * (1.0 + discount_rate) ** -end
        previous = cumulative
    return discounted * spend


def simulate_bgnbd_summary(
    params: Mapping[str, float], T: Any, seed: int | np.random.Generator
) -> pd.DataFrame:
    """Draw ``(frequency, recency, T)`` for customers of ages ``T`` from the BG/NBD process.

    For each customer: ``lambda ~ Gamma(r, rate alpha)``, ``p ~ Beta(a, b)``; the number of repeat
    purchases before dropping out is ``J ~ Geometric(p)`` on {1, 2, ...} (dropout happens right
    after a repeat purchase, never after the first purchase); the purchases in ``(0, T]`` number
    ``N ~ Poisson(lambda T)``. Then ``x = min(J, N)`` and, given ``N = n``, the ``x``-th of ``n``
    uniform arrival times is ``T * Beta(x, n - x + 1)``. Used for parameter-recovery tests,
    benchmarks and synthetic data; times are continuous (round them to a grid yourself).
    """
    missing = set(BetaGeoModel.PARAM_NAMES) - set(params)
    if missing:
        raise ValueError(f"params is missing {sorted(missing)}")
    r, alpha, a, b = (float(params[k]) for k in BetaGeoModel.PARAM_NAMES)
    if not all(math.isfinite(v) and v > 0 for v in (r, alpha, a, b)):
        raise ValueError(f"params must be finite and > 0, got {dict(params)}")
    age = np.atleast_1d(_validate_horizon("T", T))
    rng = np.random.default_rng(seed)
    n = age.size
    rate = rng.gamma(shape=r, scale=1.0 / alpha, size=n)
    dropout = np.clip(rng.beta(a, b, size=n), 1e-12, 1.0)
    repeats_before_dropout = rng.geometric(dropout)
    arrivals = rng.poisson(rate * age)
    x = np.minimum(repeats_before_dropout, arrivals)
    has_repeat = x > 0
    position = rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1))
    recency = np.where(has_repeat, age * position, 0.0)
    return pd.DataFrame({"frequency": x.astype(np.int64), "recency": recency, "T": age})
