"""Global statistics (phase 2) and the CLV and CRM segment columns they define (phase 3).

Some features need every customer at once: the BG/NBD and Gamma-Gamma CLV models are fitted on
the customer base, RFM scores are quintiles of it and value tiers are shares of it. Phase 2,
:func:`fit_global_stats`, computes exactly that from the phase-1 feature table into a small
:class:`GlobalStats` record of plain numbers (JSON via ``to_dict``/``from_dict``, so it can be
logged, audited and broadcast to Spark workers). Phase 3, :func:`apply_global_stats`, is then
row-wise given those numbers, so it is partition-safe like phase 1. At a cutoff the statistics
are fitted on that cutoff's own features only: no later information crosses into them.

Segments (the CRM practice in ``../shared/seeds``: value tiers, IBM's value-growth segments,
lifecycle stages, RFM):

**RFM scores** ``rfm_r``, ``rfm_f``, ``rfm_m`` in 1..5 are quintiles among customers who have
purchased: R on ``recency_purchase_days`` (more recent = higher), F on ``purchases_total``, M on
``spend_total`` (lifetime, so a former heavy buyer keeps a high F and M after going silent). A
value on a cut point goes to the lower score (so ties, e.g. the many one-time buyers, share a
score). Customers who never purchased get F = M = 1 and an R from their ``tenure_days``, i.e.
how long they have gone without a purchase, so a fresh signup scores R = 5 and an old
never-buyer R = 1. ``rfm_score`` = R + F + M (3..15).

**RFM segment** ``rfm_segment`` from R and F (the common R-F grid, with R = F = 1 split off as
``lost``)::

    R \\ F  1               2                   3                   4          5
    5      new_customers   potential_loyalist  potential_loyalist  champions  champions
    4      promising       potential_loyalist  potential_loyalist  loyal      loyal
    3      about_to_sleep  about_to_sleep      need_attention      loyal      loyal
    2      hibernating     hibernating         at_risk             at_risk    cannot_lose_them
    1      lost            hibernating         at_risk             at_risk    cannot_lose_them

**Value tier** ``value_tier`` on ``value_365d`` (a year of revenue incl. 12 x MRR), with the
20/30/30/20 split of the A/B/C/D practice: A above the 80th percentile, B above the 50th, C
above the 20th, D the rest. Values equal to a cut point go to the lower tier, so customers
without revenue are all D even when they are more than 20% of the base.

**Lifecycle stage** ``lifecycle_stage`` (exploration / formation / stability / decline), first
matching rule wins:

1. *decline*: tenure at least ``EXPLORATION_MAX_TENURE_DAYS`` and either silent (no event for
   ``LONG_SILENCE_DAYS``, or no purchase for more than ``SILENCE_RHYTHM_MULTIPLE`` of the own
   inter-purchase mean and at least ``SILENCE_MIN_DAYS``) or falling (``activity_trend`` below
   ``-log 2``: activity in the latest trend window less than half the one before, +1 smoothed);
2. *exploration*: young (tenure below ``EXPLORATION_MAX_TENURE_DAYS``) or at most one purchase
   day: the relationship is still being tried out;
3. *formation*: growing: ``activity_trend`` or ``spend_trend`` above ``log 1.5`` (+50%), or a
   category bought for the first time in the last 90 days (breadth being built);
4. *stability*: everything else: an established, steady customer.

**Value-growth segment** ``value_growth_segment`` (IBM's four groups), first match wins:
``sleeping`` = in decline (dormant or fading, whatever the tier: the tier column tells a
sleeping A from a sleeping D); ``loyal`` = tier A or B; ``fast_growing`` = tier C or D with
strong growth (``activity_trend`` or ``spend_trend`` above ``log 1.5``); ``worth_nurturing`` =
the remaining lower-value customers, engaged but not (yet) growing.

**CLV** (BG/NBD + Gamma-Gamma, fitted in weeks on a seeded sample of at most
``FeatureParams.clv_fit_sample`` customers who purchased): ``clv_p_alive``,
``clv_expected_purchases`` over ``clv_horizon_days``, ``clv_expected_avg_spend`` and
``clv_value`` = their product (the undiscounted ``features.clv.expected_clv``). NaN for
customers who never purchased, and for everyone when the models could not be fitted (too few
repeat buyers, or no convergence even with a small penalty; ``GlobalStats.clv_note`` says why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.clv import BetaGeoModel, ConvergenceError, GammaGammaModel
from features.config import FeatureParams
from features.vocabulary import EventVocabulary

__all__ = [
    "LIFECYCLE_STAGES",
    "RFM_SEGMENTS",
    "VALUE_GROWTH_SEGMENTS",
    "VALUE_TIERS",
    "GlobalStats",
    "apply_global_stats",
    "fit_global_stats",
    "lifecycle_stage",
    "rfm_segment",
    "score_clv",
    "value_growth_segment",
]

RFM_SEGMENTS: tuple[str, ...] = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose_them",
    "hibernating",
    "lost",
)
VALUE_TIERS: tuple[str, ...] = ("A", "B", "C", "D")
LIFECYCLE_STAGES: tuple[str, ...] = ("exploration", "formation", "stability", "decline")
VALUE_GROWTH_SEGMENTS: tuple[str, ...] = ("loyal", "fast_growing", "sleeping", "worth_nurturing")

#: RFM segment by (R, F) score, rows R = 5..1, columns F = 1..5 (see the module docstring).
_RFM_GRID: tuple[tuple[str, ...], ...] = (
    ("new_customers", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose_them"),
    ("lost", "hibernating", "at_risk", "at_risk", "cannot_lose_them"),
)
_RFM_QUANTILES = (0.2, 0.4, 0.6, 0.8)
#: Value-tier cut points: D up to the 20th percentile, C to the 50th, B to the 80th, A above.
_TIER_QUANTILES = (0.2, 0.5, 0.8)

EXPLORATION_MAX_TENURE_DAYS = 90.0
LONG_SILENCE_DAYS = 180.0
SILENCE_RHYTHM_MULTIPLE = 3.0
SILENCE_MIN_DAYS = 30.0
FALLING_TREND = -math.log(2.0)
GROWING_TREND = math.log(1.5)

#: Penalties tried in turn when a CLV fit does not converge (clv.py's suggested remedy).
_CLV_PENALIZERS = (0.0, 0.001, 0.01)
_DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class GlobalStats:
    """Everything phase 3 needs that depends on the whole customer base, as plain data.

    ``bgnbd`` / ``gamma_gamma`` are the ``to_dict()`` payloads of the fitted models (None when
    not fitted, ``clv_note`` says why). Cut points are ascending lists of floats.
    """

    n_customers: int
    rfm_recency_cuts: list[float]
    rfm_frequency_cuts: list[float]
    rfm_monetary_cuts: list[float]
    value_tier_cuts: list[float]
    bgnbd: dict[str, Any] | None = None
    gamma_gamma: dict[str, Any] | None = None
    clv_fit_customers: int = 0
    clv_note: str = ""
    cutoff: str | None = None
    #: ``features.vocabulary.EventVocabulary.to_dict()`` of the per-type features (None: none)
    vocabulary: dict[str, Any] | None = None

    def event_vocabulary(self) -> EventVocabulary | None:
        """The event vocabulary these statistics were computed with (None: no ``ev_*`` columns)."""
        return None if self.vocabulary is None else EventVocabulary.from_dict(self.vocabulary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats, lists, strings, None)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> GlobalStats:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a different layout)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown GlobalStats keys {sorted(unknown)}")
        values = dict(payload)
        for key in ("rfm_recency_cuts", "rfm_frequency_cuts", "rfm_monetary_cuts"):
            values[key] = [float(v) for v in values[key]]
        values["value_tier_cuts"] = [float(v) for v in values["value_tier_cuts"]]
        return cls(**values)


# --------------------------------------------------------------------------------------------
# phase 2
# --------------------------------------------------------------------------------------------


def _quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    return [float(v) for v in np.quantile(values, quantiles)]


def _rfm_recency_value(features: pd.DataFrame) -> np.ndarray:
    """Recency for the R score: since the last purchase, or since becoming a customer."""
    recency = features["recency_purchase_days"].to_numpy(dtype=np.float64)
    tenure = features["tenure_days"].to_numpy(dtype=np.float64)
    return np.where(np.isnan(recency), tenure, recency)


def fit_global_stats(customer_features: pd.DataFrame, params: FeatureParams) -> GlobalStats:
    """Phase 2: CLV model fits and segment cut points from a phase-1 feature table.

    Deterministic for a given table and ``params.seed`` (the CLV sample is drawn with it from
    the customers in ``customer_id`` order).
    """
    purchased = customer_features["purchases_total"].to_numpy() > 0
    rfm_r = _quantiles(_rfm_recency_value(customer_features)[purchased], _RFM_QUANTILES)
    rfm_f = _quantiles(
        customer_features["purchases_total"].to_numpy(dtype=np.float64)[purchased], _RFM_QUANTILES
    )
    rfm_m = _quantiles(
        customer_features["spend_total"].to_numpy(dtype=np.float64)[purchased], _RFM_QUANTILES
    )
    tiers = _quantiles(customer_features["value_365d"].to_numpy(dtype=np.float64), _TIER_QUANTILES)
    bgnbd, gamma_gamma, n_fit, note = _fit_clv(customer_features, params)
    cutoffs = customer_features["cutoff"].unique() if "cutoff" in customer_features else []
    return GlobalStats(
        n_customers=len(customer_features),
        rfm_recency_cuts=rfm_r,
        rfm_frequency_cuts=rfm_f,
        rfm_monetary_cuts=rfm_m,
        value_tier_cuts=tiers,
        bgnbd=bgnbd,
        gamma_gamma=gamma_gamma,
        clv_fit_customers=n_fit,
        clv_note=note,
        cutoff=str(pd.Timestamp(cutoffs[0]).date()) if len(cutoffs) == 1 else None,
    )


def _fit_clv(
    features: pd.DataFrame, params: FeatureParams
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int, str]:
    """Fit BG/NBD and Gamma-Gamma (in weeks) on a seeded sample of purchasing customers."""
    frequency = features["clv_frequency"].to_numpy(dtype=np.float64)
    candidates = np.flatnonzero(~np.isnan(frequency))
    if candidates.size > params.clv_fit_sample:
        rng = np.random.default_rng(params.seed)
        candidates = np.sort(rng.choice(candidates, size=params.clv_fit_sample, replace=False))
    x = frequency[candidates]
    if not (x > 0).any():
        return (
            None,
            None,
            int(candidates.size),
            "no customer with a repeat purchase: CLV not fitted",
        )
    t_x = features["clv_recency_weeks"].to_numpy(dtype=np.float64)[candidates]
    age = features["clv_T_weeks"].to_numpy(dtype=np.float64)[candidates]
    monetary = features["clv_monetary"].to_numpy(dtype=np.float64)[candidates]
    notes: list[str] = []
    bgnbd = _fit_with_penalties(
        lambda penalizer: BetaGeoModel(penalizer=penalizer).fit(x, t_x, age), notes, "BG/NBD"
    )
    priced = (x > 0) & (monetary > 0)
    gamma_gamma = None
    if bgnbd is not None and priced.any():
        gamma_gamma = _fit_with_penalties(
            lambda penalizer: GammaGammaModel(penalizer=penalizer).fit(x[priced], monetary[priced]),
            notes,
            "Gamma-Gamma",
        )
    elif bgnbd is not None:
        notes.append("no repeat purchase with a positive amount: Gamma-Gamma not fitted")
    if bgnbd is None or gamma_gamma is None:
        return None, None, int(candidates.size), "; ".join(notes)
    return bgnbd.to_dict(), gamma_gamma.to_dict(), int(candidates.size), "; ".join(notes)


def _fit_with_penalties(fit: Any, notes: list[str], name: str) -> Any:
    for penalizer in _CLV_PENALIZERS:
        try:
            model = fit(penalizer)
        except ConvergenceError as error:
            notes.append(f"{name} with penalizer {penalizer}: {error}")
            continue
        if penalizer > 0:
            notes.append(f"{name} fitted with penalizer {penalizer}")
        return model
    return None


# --------------------------------------------------------------------------------------------
# phase 3
# --------------------------------------------------------------------------------------------


def _score_higher_better(values: np.ndarray, cuts: list[float]) -> np.ndarray:
    """1 + number of cut points strictly below the value (a value on a cut scores lower)."""
    return 1 + np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left")


def _score_lower_better(values: np.ndarray, cuts: list[float]) -> np.ndarray:
    return 5 - np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left")


def rfm_segment(r: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Named RFM segment per (R, F) score pair (see the grid in the module docstring)."""
    grid = np.array(_RFM_GRID, dtype=object)
    return grid[5 - np.asarray(r), np.asarray(f) - 1]


def lifecycle_stage(features: pd.DataFrame) -> np.ndarray:
    """Lifecycle stage per customer from its own features (rules in the module docstring)."""
    tenure = features["tenure_days"].to_numpy(dtype=np.float64)
    recency = features["recency_days"].to_numpy(dtype=np.float64)
    recency_purchase = features["recency_purchase_days"].to_numpy(dtype=np.float64)
    rhythm = features["recency_vs_rhythm"].to_numpy(dtype=np.float64)
    activity = features["activity_trend"].to_numpy(dtype=np.float64)
    purchase_days = features["purchase_days_total"].to_numpy()
    young = tenure < EXPLORATION_MAX_TENURE_DAYS
    with np.errstate(invalid="ignore"):
        silent = (
            np.isnan(recency)
            | (recency > LONG_SILENCE_DAYS)
            | ((rhythm > SILENCE_RHYTHM_MULTIPLE) & (recency_purchase > SILENCE_MIN_DAYS))
        )
    decline = ~young & (silent | (activity < FALLING_TREND))
    exploration = ~decline & (young | (purchase_days <= 1))
    formation = ~decline & ~exploration & _growing(features, include_breadth=True)
    stage = np.full(len(features), "stability", dtype=object)
    stage[formation] = "formation"
    stage[exploration] = "exploration"
    stage[decline] = "decline"
    return stage


def _growing(features: pd.DataFrame, *, include_breadth: bool) -> np.ndarray:
    growing = (features["activity_trend"].to_numpy(dtype=np.float64) > GROWING_TREND) | (
        features["spend_trend"].to_numpy(dtype=np.float64) > GROWING_TREND
    )
    if include_breadth:
        growing |= features["new_categories_90d"].to_numpy() > 0
    return growing


def value_growth_segment(
    value_tier: np.ndarray, stage: np.ndarray, features: pd.DataFrame
) -> np.ndarray:
    """IBM's loyal / fast-growing / sleeping / worth-nurturing groups (rules in the docstring)."""
    high = np.isin(value_tier, ("A", "B"))
    sleeping = stage == "decline"
    segment = np.full(len(features), "worth_nurturing", dtype=object)
    segment[~high & _growing(features, include_breadth=False)] = "fast_growing"
    segment[high] = "loyal"
    segment[sleeping] = "sleeping"
    return segment


def score_clv(features: pd.DataFrame, stats: GlobalStats, params: FeatureParams) -> pd.DataFrame:
    """CLV columns from the fitted models in ``stats`` (NaN where undefined, see docstring)."""
    n = len(features)
    out = {
        name: np.full(n, np.nan)
        for name in ("clv_p_alive", "clv_expected_purchases", "clv_expected_avg_spend", "clv_value")
    }
    if stats.bgnbd is None or stats.gamma_gamma is None:
        return pd.DataFrame(out, index=features.index)
    bgnbd = BetaGeoModel.from_dict(stats.bgnbd)
    gamma_gamma = GammaGammaModel.from_dict(stats.gamma_gamma)
    frequency = features["clv_frequency"].to_numpy(dtype=np.float64)
    rows = np.flatnonzero(~np.isnan(frequency))
    x = frequency[rows]
    t_x = features["clv_recency_weeks"].to_numpy(dtype=np.float64)[rows]
    age = features["clv_T_weeks"].to_numpy(dtype=np.float64)[rows]
    monetary = features["clv_monetary"].to_numpy(dtype=np.float64)[rows]
    horizon_weeks = params.clv_horizon_days / _DAYS_PER_WEEK
    purchases = bgnbd.expected_purchases(horizon_weeks, x, t_x, age)
    # Repeat purchases without a positive amount carry no spend information: such customers
    # get the population mean spend, like customers without repeat purchases.
    priced = (x > 0) & (monetary > 0)
    spend = np.full(rows.size, np.nan)
    if priced.any():
        spend[priced] = gamma_gamma.expected_average_spend(x[priced], monetary[priced])
    population_mean = gamma_gamma.population_mean_spend()
    spend[~priced] = population_mean if math.isfinite(population_mean) else np.nan
    out["clv_p_alive"][rows] = bgnbd.probability_alive(x, t_x, age)
    out["clv_expected_purchases"][rows] = purchases
    out["clv_expected_avg_spend"][rows] = spend
    # = features.clv.expected_clv(...) undiscounted, without computing the purchases twice.
    out["clv_value"][rows] = purchases * spend
    return pd.DataFrame(out, index=features.index)


def apply_global_stats(
    customer_features: pd.DataFrame, stats: GlobalStats, params: FeatureParams
) -> pd.DataFrame:
    """Phase 3: add the CLV and segment columns; row-wise given ``stats`` (partition-safe)."""
    purchased = customer_features["purchases_total"].to_numpy() > 0
    r = _score_lower_better(_rfm_recency_value(customer_features), stats.rfm_recency_cuts)
    f = _score_higher_better(
        customer_features["purchases_total"].to_numpy(dtype=np.float64), stats.rfm_frequency_cuts
    )
    m = _score_higher_better(
        customer_features["spend_total"].to_numpy(dtype=np.float64), stats.rfm_monetary_cuts
    )
    f = np.where(purchased, f, 1)
    m = np.where(purchased, m, 1)
    value = customer_features["value_365d"].to_numpy(dtype=np.float64)
    tier_index = np.searchsorted(np.asarray(stats.value_tier_cuts), value, side="left")
    value_tier = np.array(("D", "C", "B", "A"), dtype=object)[tier_index]
    stage = lifecycle_stage(customer_features)
    segments = {
        "rfm_r": r.astype(np.int64),
        "rfm_f": f.astype(np.int64),
        "rfm_m": m.astype(np.int64),
        "rfm_score": (r + f + m).astype(np.int64),
        "rfm_segment": rfm_segment(r, f),
        "value_tier": value_tier,
        "lifecycle_stage": stage,
        "value_growth_segment": value_growth_segment(value_tier, stage, customer_features),
    }
    clv = score_clv(customer_features, stats, params)
    # Column by column (a fresh copy of each input column, so the input is never shared): far
    # cheaper than pd.concat, which consolidates all same-dtype columns into one block.
    columns = {name: customer_features[name].to_numpy(copy=True) for name in customer_features}
    columns.update({name: clv[name].to_numpy() for name in clv})
    columns.update(segments)
    return pd.DataFrame(columns, index=customer_features.index.copy(), copy=False)
