"""Realistic synthetic CRM data for the demo, the tests and the benchmarks.

Real interaction histories cannot ship with an open-source project, and uniform noise teaches a
model nothing, so this module simulates a customer base whose behaviour has the structure churn,
up-sell and win-back models are meant to find:

* Customers are heterogeneous: B2C and fewer, higher-spending, more support-hungry B2B accounts,
  acquired through several channels (which shift their engagement), in a handful of countries,
  with acquisition growing over the simulated period. Customer ids follow signup order.
* Each customer carries a latent engagement that evolves week by week through lifecycle phases
  (onboarding, growth, stability, decline). Every event rate scales with it.
* Churn is a weekly hazard driven by behaviour a model can see in the events (activity falling
  below the customer's own norm, the decline phase, recent complaints, unresolved tickets, a low
  baseline activity, price rises for price-sensitive customers) plus an unexplained random part.
  Churned customers go silent; a few come back later (win-back), more often those who clicked
  campaigns and bought a lot before leaving.
* Up-sell and cross-sell: engaged, broad customers move into new product lines, step up their
  spend and upgrade their plan; declining ones spend less and downgrade.
* A subscriptions table (more often B2B) with basic/plus/pro plans: every plan change closes one
  row and opens the next with a ``subscription_change`` event; churn ends the subscription.
* Optional drift (:class:`DriftSpec`) for monitoring demos: a price rise from a date (amounts
  scale up, price-sensitive customers buy less, decline and churn more) and/or a new purchase and
  acquisition channel. Without drift the process is stationary apart from acquisition growth.

The simulation is vectorised over customers and events with numpy (the only Python loop is over
weeks) and fully determined by the seed. The period covers the days ``start`` to ``end``
inclusive: every timestamp lies in ``[start, end + 1 day)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.contract import EVENT_TYPES, EVENTS_COLUMNS, SUBSCRIPTIONS_COLUMNS, EventType
from features.files import write_atomically

__all__ = [
    "ACQUISITION_CHANNELS",
    "COUNTRIES",
    "DriftSpec",
    "EVENT_CHANNELS",
    "GeneratorParams",
    "PLANS",
    "PRODUCT_CATEGORIES",
    "SyntheticCRM",
    "generate_crm_data",
    "write_crm_data",
]

# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "NL")
_COUNTRY_SHARES = np.array([0.36, 0.18, 0.15, 0.13, 0.10, 0.08])
_COUNTRY_PRICE_INDEX = np.array([1.08, 1.00, 1.00, 0.97, 0.88, 1.02])

ACQUISITION_CHANNELS: tuple[str, ...] = ("organic", "paid_search", "referral", "partner", "social")
_ACQUISITION_SHARES = {  # B2C, B2B
    False: np.array([0.36, 0.27, 0.12, 0.04, 0.21]),
    True: np.array([0.25, 0.20, 0.20, 0.30, 0.05]),
}
# Referred customers stay longer, social-media ones are fickle: a learnable static signal.
_ACQUISITION_ENGAGEMENT_SHIFT = np.array([0.10, -0.10, 0.25, 0.15, -0.30])
_NEW_ACQUISITION_SHARE = 0.20
_NEW_ACQUISITION_ENGAGEMENT_SHIFT = -0.15

PRODUCT_CATEGORIES: tuple[str, ...] = (
    "apparel",
    "home",
    "electronics",
    "beauty",
    "sports",
    "books",
)
_CATEGORY_POPULARITY = np.array([0.26, 0.18, 0.12, 0.18, 0.12, 0.14])
_CATEGORY_BASE_PRICE = np.array([42.0, 65.0, 160.0, 24.0, 55.0, 17.0])
_N_CATEGORIES = len(PRODUCT_CATEGORIES)

#: Every channel an event can carry (a drift's new channel is appended after these).
EVENT_CHANNELS: tuple[str, ...] = ("web", "app", "store", "phone", "email", "chat")
_WEB, _APP, _STORE, _PHONE, _EMAIL, _CHAT, _NEW_CHANNEL = range(7)
# Preferred purchase channel shares (web, app, store, phone), B2C / B2B.
_PURCHASE_CHANNEL_SHARES = np.array([[0.45, 0.30, 0.22, 0.03], [0.55, 0.10, 0.00, 0.35]])
# Visit channel shares (web, app, store, phone), B2C / B2B: phone is not a visit.
_VISIT_CHANNEL_SHARES = np.array([[0.50, 0.38, 0.12, 0.00], [0.80, 0.20, 0.00, 0.00]])
_NEW_CHANNEL_SHARE = 0.15

PLANS: tuple[str, ...] = ("basic", "plus", "pro")
_PLAN_MRR_B2C = np.array([0.0, 9.99, 19.99, 39.99])  # index 0 = no plan
_PLAN_MRR_B2B_PER_SEAT = np.array([0.0, 15.0, 29.0, 49.0])

PHASES: tuple[str, ...] = ("onboarding", "growth", "stable", "decline")
_ONBOARDING, _GROWTH, _STABLE, _DECLINE = range(4)
_NOT_YET, _ACTIVE, _LAPSED, _GONE = range(4)
_CAUSES: tuple[str, ...] = ("behavioural", "random")

_EV = {name: code for code, name in enumerate(EVENT_TYPES)}
_VISIT = _EV[EventType.VISIT]
_PURCHASE = _EV[EventType.PURCHASE]
_TICKET = _EV[EventType.SUPPORT_TICKET]
_RESOLVED = _EV[EventType.TICKET_RESOLVED]
_COMPLAINT = _EV[EventType.COMPLAINT]
_OPEN = _EV[EventType.CAMPAIGN_OPEN]
_CLICK = _EV[EventType.CAMPAIGN_CLICK]
_SUB_CHANGE = _EV[EventType.SUBSCRIPTION_CHANGE]

_DAY_S = 86_400
_NEVER = np.int32(2**31 - 1)  # day sentinel: "does not happen"

# Hour-of-day weights (platform time): B2C online, B2C store, B2B business, support desk.
_HOUR_PROFILES = np.array(
    [
        [2, 1, .6, .4, .4, .6, 1.5, 3, 4, 4.5, 5, 5.5,
         6.5, 6, 5.5, 5.5, 6, 6.5, 7.5, 8.5, 9, 8.5, 6.5, 4],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 6,
         7, 7, 6.5, 6, 6.5, 7.5, 7, 5, 3, 0, 0, 0],
        [.2, .1, .1, .1, .1, .2, .6, 2, 6, 9, 9.5, 9,
         7, 8, 9, 8.5, 7.5, 5, 3, 1.8, 1.2, .8, .5, .3],
        [.3, .2, .1, .1, .1, .2, .5, 2, 5, 7, 7.5, 7,
         6, 6.5, 7, 6.5, 6, 5, 4, 3.5, 3, 2.2, 1.5, .8],
    ]
)  # fmt: skip
_HOUR_B2C, _HOUR_STORE, _HOUR_B2B, _HOUR_SUPPORT = range(4)
# Day-of-week weights, Monday first: B2C, B2B.
_DOW_WEIGHTS = np.array(
    [[0.95, 0.95, 0.97, 1.0, 1.05, 1.12, 1.0], [1.15, 1.2, 1.2, 1.15, 1.0, 0.15, 0.1]]
)
_CAMPAIGN_SEND_WEEKDAY = 1  # Tuesday
_CAMPAIGN_SEND_HOUR = 10


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriftSpec(_Frozen):
    """A change in the world from ``start`` on, to exercise drift monitoring."""

    start: date = Field(description="First day on which the drift is in effect.")
    price_increase: float = Field(
        0.0,
        gt=-0.9,
        le=5.0,
        description="Relative price change from start, e.g. 0.3 = +30% on every purchase and "
        "on plans opened from then on.",
    )
    new_channel: str | None = Field(
        None,
        description="A new purchase/visit channel (and acquisition channel) appearing at start.",
    )

    @field_validator("new_channel")
    @classmethod
    def _new_channel_is_new(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("new_channel must be a non-empty name")
        if value in EVENT_CHANNELS or value in ACQUISITION_CHANNELS:
            raise ValueError(f"new_channel {value!r} already exists; pick a new name")
        return value


class GeneratorParams(_Frozen):
    """Size, seed, period and optional drift of a synthetic CRM history."""

    n_customers: int = Field(5000, gt=0, le=50_000_000)
    seed: int = Field(42, ge=0)
    start: date = date(2023, 1, 1)
    end: date = Field(date(2025, 6, 30), description="Last simulated day (inclusive).")
    activity_scale: float = Field(
        1.0,
        gt=0.0,
        le=20.0,
        description="Multiplies every event rate; 1.0 gives ~50 events per customer over the "
        "default period.",
    )
    drift: DriftSpec | None = None

    @model_validator(mode="after")
    def _period_is_valid(self) -> GeneratorParams:
        if (self.end - self.start).days < 13:
            raise ValueError("the period must cover at least two weeks (end - start >= 13 days)")
        if self.drift is not None and not (self.start < self.drift.start <= self.end):
            raise ValueError(
                f"drift.start {self.drift.start} must lie after start {self.start} and at or "
                f"before end {self.end}"
            )
        return self


@dataclass(frozen=True)
class SyntheticCRM:
    """The generated tables; ``truth`` holds the latent process and is for tests only."""

    events: pd.DataFrame
    customers: pd.DataFrame
    subscriptions: pd.DataFrame
    truth: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------


def _cdf_table(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative distribution of a (groups, k) weight table, last column exactly 1."""
    weights = np.asarray(weights, dtype=float)
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    # From the last positive weight on, exactly 1: trailing zero-weight outcomes never occur.
    last_positive = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    cdf[np.arange(weights.shape[1]) >= last_positive[:, None]] = 1.0
    return cdf


def _sample_grouped(rng: np.random.Generator, cdf: np.ndarray, group: np.ndarray) -> np.ndarray:
    """One draw per element from the categorical distribution of its group (row of ``cdf``).

    Offsetting each row by its group index makes the flattened table monotone, so a single
    ``searchsorted`` serves every group at once.
    """
    n_groups, k = cdf.shape
    flat = (cdf + np.arange(n_groups)[:, None]).ravel()
    group = group.astype(np.int64, copy=False)
    idx = np.searchsorted(flat, rng.random(group.size) + group, side="right") - group * k
    return np.clip(idx, 0, k - 1)


def _sample_signup_days(rng: np.random.Generator, n: int, n_days: int) -> np.ndarray:
    """Sorted signup days with acquisition growing exponentially (x3 over the period)."""
    growth = math.log(3.0)
    u = rng.random(n)
    t = np.log1p(u * (math.exp(growth) - 1.0)) / growth
    return np.sort(np.minimum((t * n_days).astype(np.int32), n_days - 1))


def _customer_ids(n: int) -> np.ndarray:
    width = max(7, len(str(n)))
    return np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def _popcount(mask: np.ndarray) -> np.ndarray:
    return np.unpackbits(mask.astype(np.uint8)[:, None], axis=1).sum(axis=1)


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


class _Simulation:
    """Week-by-week simulation; state lives in per-customer numpy arrays."""

    def __init__(self, params: GeneratorParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.scale = params.activity_scale
        self.n = params.n_customers
        self.n_days = (params.end - params.start).days + 1
        self.n_weeks = -(-self.n_days // 7)
        drift = params.drift
        self.drift_day = (drift.start - params.start).days if drift else int(_NEVER)
        self.price_after = 1.0 + (drift.price_increase if drift else 0.0)
        self.new_channel = drift.new_channel if drift else None
        self.channels = EVENT_CHANNELS + ((self.new_channel,) if self.new_channel else ())
        start_dow = params.start.weekday()
        dow = (start_dow + np.arange(7)) % 7  # weekday of each day offset within a week
        self.dow_cdf = _cdf_table(_DOW_WEIGHTS[:, dow])
        self.campaign_offset = int((_CAMPAIGN_SEND_WEEKDAY - start_dow) % 7)
        self.hour_cdf = _cdf_table(_HOUR_PROFILES)
        self.purchase_channel_cdf = _cdf_table(_PURCHASE_CHANNEL_SHARES)
        self.visit_channel_cdf = _cdf_table(_VISIT_CHANNEL_SHARES)
        self.chunks: list[dict[str, np.ndarray]] = []
        self.sub_rows: list[tuple[np.ndarray, ...]] = []
        self.ref_price = 1.0  # customers' reference price level; adapts slowly to changes
        self._init_customers()

    # ---------------------------------------------------------------- customers and state

    def _init_customers(self) -> None:
        rng, n = self.rng, self.n
        self.signup_day = _sample_signup_days(rng, n, self.n_days)
        self.b2b = rng.random(n) < 0.15
        self.country = _sample_grouped(
            rng, _cdf_table(_COUNTRY_SHARES[None, :]), np.zeros(n, np.int64)
        ).astype(np.int8)
        acq_cdf = _cdf_table(np.vstack([_ACQUISITION_SHARES[False], _ACQUISITION_SHARES[True]]))
        self.acquisition = _sample_grouped(rng, acq_cdf, self.b2b).astype(np.int8)
        shift = _ACQUISITION_ENGAGEMENT_SHIFT[self.acquisition]
        if self.new_channel is not None:
            via_new = (self.signup_day >= self.drift_day) & (rng.random(n) < _NEW_ACQUISITION_SHARE)
            self.acquisition[via_new] = len(ACQUISITION_CHANNELS)
            shift = np.where(via_new, _NEW_ACQUISITION_ENGAGEMENT_SHIFT, shift)
        # Latent traits.
        self.base = rng.normal(0.0, 0.55, n) + shift + np.where(self.b2b, 0.15, 0.0)
        self.sensitivity = rng.beta(2.0, 3.0, n) * np.where(self.b2b, 0.7, 1.0)
        self.spend_base = rng.normal(0.0, 0.45, n) + np.where(self.b2b, math.log(2.5), 0.0)
        self.spend_log = self.spend_base.copy()
        self.primary = _sample_grouped(
            rng, _cdf_table(_CATEGORY_POPULARITY[None, :]), np.zeros(n, np.int64)
        ).astype(np.int8)
        self.owned = (np.uint8(1) << self.primary.astype(np.uint8)).astype(np.uint8)
        self.pref_channel = _sample_grouped(rng, self.purchase_channel_cdf, self.b2b).astype(
            np.int8
        )
        self.seats = np.where(self.b2b, 1 + rng.poisson(6.0, n), 1).astype(np.int32)
        self.onboarding_weeks = (3 + rng.poisson(4.0, n)).astype(np.int16)
        # Dynamic state.
        self.engagement = self.base - 0.8  # log activity multiplier, ramps up in onboarding
        self.phase = np.full(n, _ONBOARDING, np.int8)
        self.weeks_in_phase = np.zeros(n, np.int16)
        self.status = np.full(n, _NOT_YET, np.int8)
        self.active_since = self.signup_day.copy()
        self.churn_day = np.full(n, _NEVER, np.int32)
        self.return_day = np.full(n, _NEVER, np.int32)
        self.second_churn_day = np.full(n, _NEVER, np.int32)
        self.churn_cause = np.full(n, -1, np.int8)
        self.second_churn_cause = np.full(n, -1, np.int8)
        self.complaints_recent = np.zeros(n)
        self.unresolved_recent = np.zeros(n)
        self.clicks_total = np.zeros(n, np.int32)
        self.purchases_total = np.zeros(n, np.int32)
        self.clicked_last_week = np.zeros(n, bool)
        self.upsold_last_week = np.zeros(n, bool)
        self.plan = np.zeros(n, np.int8)
        self.plan_start = np.full(n, _NEVER, np.int32)
        self.plan_mrr = np.zeros(n)
        self.had_plan = np.zeros(n, bool)
        self.week_bounds = np.searchsorted(self.signup_day, 7 * np.arange(self.n_weeks + 1))

    # ---------------------------------------------------------------- helpers

    def _price_level(self, day: np.ndarray) -> np.ndarray:
        return np.where(day >= self.drift_day, self.price_after, 1.0)

    def _days_in_week(self, week_start: int, b2b: np.ndarray) -> np.ndarray:
        return week_start + _sample_grouped(self.rng, self.dow_cdf, b2b).astype(np.int64)

    def _seconds(self, day: np.ndarray, profile: np.ndarray) -> np.ndarray:
        """Timestamps (seconds since start) at a profile-distributed time of day."""
        hour = _sample_grouped(self.rng, self.hour_cdf, profile)
        within = self.rng.integers(0, 3600, day.size)
        return day.astype(np.int64) * _DAY_S + hour * 3600 + within

    def _add(
        self,
        cust: np.ndarray,
        sec: np.ndarray,
        event: int,
        channel: np.ndarray,
        amount: np.ndarray | None = None,
        quantity: np.ndarray | None = None,
        category: np.ndarray | None = None,
    ) -> None:
        if cust.size == 0:
            return
        nan = np.full(cust.size, np.nan)
        self.chunks.append(
            {
                "cust": cust.astype(np.int32, copy=False),
                "sec": sec.astype(np.int64, copy=False),
                "event": np.full(cust.size, event, np.int8),
                "channel": channel.astype(np.int8, copy=False),
                "amount": nan if amount is None else amount,
                "quantity": nan if quantity is None else quantity,
                "category": np.full(cust.size, -1, np.int8) if category is None else category,
            }
        )

    def _with_new_channel(self, day: np.ndarray, channel: np.ndarray) -> np.ndarray:
        if self.new_channel is None:
            return channel
        switch = (day >= self.drift_day) & (self.rng.random(day.size) < _NEW_CHANNEL_SHARE)
        return np.where(switch, _NEW_CHANNEL, channel).astype(np.int8)

    # ---------------------------------------------------------------- event emitters

    def _emit_visits(self, cust: np.ndarray, day: np.ndarray) -> None:
        b2b = self.b2b[cust]
        pref = self.pref_channel[cust]
        sampled = _sample_grouped(self.rng, self.visit_channel_cdf, b2b)
        keep_pref = (self.rng.random(cust.size) < 0.6) & (pref != _PHONE)
        channel = self._with_new_channel(day, np.where(keep_pref, pref, sampled))
        profile = np.where(b2b, _HOUR_B2B, np.where(channel == _STORE, _HOUR_STORE, _HOUR_B2C))
        self._add(cust, self._seconds(day, profile), _VISIT, channel)

    def _emit_purchases(self, cust: np.ndarray, day: np.ndarray, phase: np.ndarray) -> None:
        """Purchases with category (cross-sell into new lines), quantity, amount and channel."""
        rng, size = self.rng, cust.size
        if size == 0:
            return
        b2b = self.b2b[cust]
        owned = self.owned[cust]
        breadth = _popcount(owned)
        engagement = np.exp(self.engagement[cust])
        phase_factor = np.array([0.5, 1.8, 1.0, 0.3])[phase]
        p_new = np.clip(
            0.045 * np.sqrt(engagement) * (1 + 0.2 * (breadth - 1)) * phase_factor, 0, 0.4
        )
        is_new = (rng.random(size) < p_new) & (breadth < _N_CATEGORIES)
        bits = (owned[:, None] >> np.arange(_N_CATEGORIES, dtype=np.uint8)) & 1
        allowed = np.where(is_new[:, None], bits == 0, bits == 1)
        keys = np.log(_CATEGORY_POPULARITY) + rng.gumbel(size=(size, _N_CATEGORIES))
        keys += np.where(
            np.arange(_N_CATEGORIES) == self.primary[cust][:, None], math.log(3.0), 0.0
        )
        category = np.argmax(np.where(allowed, keys, -np.inf), axis=1).astype(np.int8)
        if is_new.any():
            new_cust = cust[is_new]
            np.bitwise_or.at(
                self.owned, new_cust, (np.uint8(1) << category[is_new].astype(np.uint8))
            )
            np.add.at(self.spend_log, new_cust, math.log(1.05))
        quantity = 1.0 + rng.poisson(np.where(b2b, 2.0, 0.25))
        unit = (
            _CATEGORY_BASE_PRICE[category]
            * np.exp(self.spend_log[cust])
            * _COUNTRY_PRICE_INDEX[self.country[cust]]
            * rng.lognormal(0.0, 0.35, size)
            * self._price_level(day)
        )
        amount = np.maximum(np.round(unit * quantity, 2), 0.5)
        pref = self.pref_channel[cust]
        sampled = _sample_grouped(rng, self.purchase_channel_cdf, b2b)
        channel = np.where(rng.random(size) < 0.7, pref, sampled).astype(np.int8)
        channel = self._with_new_channel(day, channel)
        profile = np.where(b2b, _HOUR_B2B, np.where(channel == _STORE, _HOUR_STORE, _HOUR_B2C))
        self._add(cust, self._seconds(day, profile), _PURCHASE, channel, amount, quantity, category)
        self.purchases_total += np.bincount(cust, minlength=self.n).astype(np.int32)

    def _emit_support(self, cust: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tickets and their resolutions (most after a delay, some never).

        Returns the customers of never-resolved tickets and of tickets resolved only after a
        week, which feed the customers' frustration (complaints, decline, churn).
        """
        rng, size = self.rng, cust.size
        b2b = self.b2b[cust]
        channel = np.array([_EMAIL, _PHONE, _CHAT])[
            _sample_grouped(rng, _cdf_table([[0.45, 0.25, 0.30], [0.35, 0.50, 0.15]]), b2b)
        ]
        sec = self._seconds(day, np.full(size, _HOUR_SUPPORT))
        self._add(cust, sec, _TICKET, channel)
        resolved = rng.random(size) < np.where(b2b, 0.93, 0.86)
        delay_h = rng.lognormal(np.log(np.where(b2b, 8.0, 20.0)), 1.0)
        res_sec = sec + (delay_h * 3600).astype(np.int64) + 60
        self._add(cust[resolved], res_sec[resolved], _RESOLVED, channel[resolved])
        slow = resolved & (delay_h > 7 * 24)
        return cust[~resolved], cust[slow]

    def _emit_subscription_change(self, cust: np.ndarray, day: np.ndarray) -> None:
        b2b = self.b2b[cust]
        channel = np.where(b2b & (self.rng.random(cust.size) < 0.6), _PHONE, _WEB)
        sec = self._seconds(day, np.where(b2b, _HOUR_B2B, _HOUR_B2C))
        self._add(cust, sec, _SUB_CHANGE, channel)

    # ---------------------------------------------------------------- subscriptions

    def _mrr(self, cust: np.ndarray, plan: np.ndarray, day: np.ndarray) -> np.ndarray:
        b2b = self.b2b[cust]
        price = np.where(b2b, _PLAN_MRR_B2B_PER_SEAT[plan] * self.seats[cust], _PLAN_MRR_B2C[plan])
        return np.round(price * self._price_level(day), 2)

    def _close_plans(self, cust: np.ndarray, day: np.ndarray) -> None:
        holds = self.plan[cust] > 0
        cust, day = cust[holds], day[holds]
        if cust.size == 0:
            return
        closed = (cust, self.plan[cust], self.plan_start[cust], day.astype(np.int32))
        self.sub_rows.append((*closed, self.plan_mrr[cust]))
        self.plan[cust] = 0
        self.plan_start[cust] = _NEVER
        self.plan_mrr[cust] = 0.0

    def _open_plans(self, cust: np.ndarray, plan: np.ndarray, day: np.ndarray) -> None:
        if cust.size == 0:
            return
        self.plan[cust] = plan
        self.plan_start[cust] = day
        self.plan_mrr[cust] = self._mrr(cust, plan, day)
        self.had_plan[cust] = True

    def _initial_plan(self, cust: np.ndarray) -> np.ndarray:
        b2b = self.b2b[cust]
        cdf = _cdf_table([[0.60, 0.28, 0.12], [0.35, 0.40, 0.25]])
        return (1 + _sample_grouped(self.rng, cdf, b2b)).astype(np.int8)

    def _change_plans(self, cust: np.ndarray, week_start: int, shock: float) -> None:
        """Weekly upgrades, downgrades, cancellations and new subscriptions of settled customers."""
        rng = self.rng
        if cust.size == 0:
            return
        plan = self.plan[cust]
        phase = self.phase[cust]
        engagement = np.sqrt(np.exp(self.engagement[cust]))
        breadth = _popcount(self.owned[cust])
        growth = np.where(phase == _GROWTH, 2.0, 1.0)
        decline = phase == _DECLINE
        p_up = np.where(
            plan < 3,
            0.004 * engagement * growth * (1 + 0.2 * (breadth - 1))
            + 0.3 * self.upsold_last_week[cust],
            0.0,
        )
        p_down = 0.0015 + 0.012 * decline + 0.15 * self.sensitivity[cust] * shock
        p_start = np.where(self.b2b[cust], 0.005, 0.0015) * engagement * growth * ~decline
        u = rng.random(cust.size)
        holder = plan > 0
        upgrade = holder & (u < p_up)
        downgrade = holder & ~upgrade & (u < p_up + p_down)
        start = ~holder & (u < p_start)
        changed = upgrade | downgrade | start
        if not changed.any():
            return
        who = cust[changed]
        day = week_start + rng.integers(0, 7, who.size)
        inside = day < self.n_days
        who, day = who[inside], day[inside]
        new_plan = np.where(upgrade, plan + 1, plan - 1)[changed][inside].astype(np.int8)
        starting = start[changed][inside]
        new_plan[starting] = self._initial_plan(who[starting])
        self._close_plans(who, day)
        reopen = new_plan > 0  # downgrading from basic cancels the subscription
        self._open_plans(who[reopen], new_plan[reopen], day[reopen])
        self._emit_subscription_change(who, day)

    # ---------------------------------------------------------------- weekly steps

    def _acquire(self, week: int) -> None:
        lo, hi = self.week_bounds[week], self.week_bounds[week + 1]
        if lo == hi:
            return
        cust = np.arange(lo, hi)
        self.status[cust] = _ACTIVE
        day = self.signup_day[cust].astype(np.int64)
        self._emit_visits(cust, day)
        buys = self.rng.random(cust.size) < np.where(self.b2b[cust], 0.25, 0.35)
        self._emit_purchases(cust[buys], day[buys], self.phase[cust[buys]])
        subscribes = self.rng.random(cust.size) < np.where(self.b2b[cust], 0.40, 0.10)
        who = cust[subscribes]
        self._open_plans(who, self._initial_plan(who), day[subscribes])
        self._emit_subscription_change(who, day[subscribes])

    def _win_back(self, week_start: int) -> None:
        """Lapsed customers come back, more likely after campaign clicks and past purchases."""
        lapsed = np.flatnonzero(self.status == _LAPSED)
        lapsed = lapsed[self.churn_day[lapsed] <= week_start - 42]
        if lapsed.size == 0:
            return
        pull = 0.75 * np.log1p(self.clicks_total[lapsed]) + 0.3 * np.log1p(
            self.purchases_total[lapsed]
        )
        p_return = np.minimum(0.0009 * np.exp(pull), 0.05)
        back = lapsed[self.rng.random(lapsed.size) < p_return]
        day = week_start + self.rng.integers(0, 7, back.size)
        inside = day < self.n_days
        back, day = back[inside], day[inside]
        if back.size == 0:
            return
        self.status[back] = _ACTIVE
        self.return_day[back] = day
        self.active_since[back] = day
        self.engagement[back] = self.base[back] - 0.3
        self.phase[back] = _GROWTH
        self.weeks_in_phase[back] = 0
        self.complaints_recent[back] = 0.0
        self.unresolved_recent[back] = 0.0
        self.spend_log[back] = self.spend_base[back]
        self._emit_visits(back, day)
        buys = self.rng.random(back.size) < 0.5
        self._emit_purchases(back[buys], day[buys], self.phase[back[buys]])
        resub = self.had_plan[back] & (self.rng.random(back.size) < 0.35)
        who = back[resub]
        self._open_plans(who, np.ones(who.size, np.int8), day[resub])
        self._emit_subscription_change(who, day[resub])

    def _churn(self, cust: np.ndarray, week_start: int, shock: float) -> np.ndarray:
        """Weekly churn hazard of settled customers; returns the mask of those who churn."""
        phase = self.phase[cust]
        engagement = self.engagement[cust]
        base = self.base[cust]
        deficit = np.maximum(base + 0.2 - engagement, 0.0)
        logit = (
            -6.0
            + 1.6 * (phase == _DECLINE)
            + 1.2 * deficit
            + 1.5 * (phase == _ONBOARDING)
            - 0.6 * base
            + 1.5 * np.minimum(self.complaints_recent[cust], 2.0)
            + 0.6 * self.unresolved_recent[cust]
            + 4.0 * self.sensitivity[cust] * shock
            - 0.5 * self.b2b[cust]
            - 0.5 * (self.plan[cust] > 0)
        )
        h_behaviour = 1.0 / (1.0 + np.exp(-logit))
        h_random = 0.0015
        u = self.rng.random(cust.size)
        behavioural = u < h_behaviour
        random_ = ~behavioural & (u < h_behaviour + h_random * (1.0 - h_behaviour))
        churns = behavioural | random_
        day = week_start + self.rng.integers(0, 7, cust.size)
        churns &= day < self.n_days
        who, day, cause = cust[churns], day[churns], np.where(random_[churns], 1, 0)
        first = self.return_day[who] == _NEVER
        self.churn_day[who[first]] = day[first]
        self.churn_cause[who[first]] = cause[first]
        self.status[who[first]] = _LAPSED
        self.second_churn_day[who[~first]] = day[~first]
        self.second_churn_cause[who[~first]] = cause[~first]
        self.status[who[~first]] = _GONE
        self._close_plans(who, day)
        return churns

    def _emit_week(self, cust: np.ndarray, week_start: int, price: float, shock: float) -> None:
        """All customer-initiated events of the week for the customers in ``cust``.

        Events are only kept on days the customer is live: from signup (or return) to the
        churn day, so no phantom purchase or ticket shapes the state of a silent customer.
        """
        rng, scale, size = self.rng, self.scale, cust.size
        b2b = self.b2b[cust]
        phase = self.phase[cust]
        engagement = np.exp(self.engagement[cust])
        decline = phase == _DECLINE
        sensitivity = self.sensitivity[cust]
        status = self.status[cust]
        live_from = self.active_since[cust]
        live_until = np.where(
            status == _LAPSED,
            self.churn_day[cust],
            np.where(status == _GONE, self.second_churn_day[cust], _NEVER),
        )

        def draw(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Positions (into ``cust``) and days of ``counts`` events, on live days only."""
            pos = np.repeat(np.arange(size), counts)
            day = self._days_in_week(week_start, b2b[pos])
            live = (day >= live_from[pos]) & (day < live_until[pos])
            return pos[live], day[live]

        # Visits and purchases.
        plan_boost = np.where(self.plan[cust] > 0, 1.3, 1.0)
        visit_rate = scale * engagement * np.where(b2b, 0.62, 0.46) * plan_boost
        pos, day = draw(rng.poisson(visit_rate))
        self._emit_visits(cust[pos], day)
        purchase_rate = (
            scale * engagement * np.where(b2b, 0.13, 0.10) * price ** (-1.5 * sensitivity)
        )
        pos, day = draw(rng.poisson(purchase_rate))
        self._emit_purchases(cust[pos], day, phase[pos])
        # Campaign e-mail: one send a week to live customers; opens (possibly repeated) and
        # clicks through.
        send_day = week_start + self.campaign_offset
        receives = (send_day >= live_from) & (send_day < live_until)
        opens = rng.poisson(scale * 0.22 * engagement**0.7) * receives
        pos = np.repeat(np.arange(size), opens)
        send_sec = send_day * _DAY_S + _CAMPAIGN_SEND_HOUR * 3600
        open_sec = send_sec + (rng.exponential(9.0 * 3600, pos.size)).astype(np.int64)
        self._add(cust[pos], open_sec, _OPEN, np.full(pos.size, _EMAIL))
        clicked = rng.random(pos.size) < np.clip(0.2 * engagement[pos] ** 0.3, 0, 0.8)
        click_sec = open_sec[clicked] + 20 + rng.exponential(180.0, clicked.sum()).astype(np.int64)
        clickers = cust[pos[clicked]]
        self._add(clickers, click_sec, _CLICK, np.full(clickers.size, _EMAIL))
        self.clicks_total += np.bincount(clickers, minlength=self.n).astype(np.int32)
        self.clicked_last_week[cust] = False
        self.clicked_last_week[clickers] = True
        # Support tickets, then complaints (more after tickets, unresolved ones, price shocks).
        ticket_rate = scale * np.where(b2b, 0.06, 0.015) * (0.5 + 0.5 * engagement)
        ticket_rate *= np.where(decline, 1.6, 1.0)
        pos, day = draw(rng.poisson(ticket_rate))
        tickets = np.bincount(pos, minlength=size)
        unresolved, slow = self._emit_support(cust[pos], day)
        np.add.at(self.unresolved_recent, unresolved, 1.0)
        np.add.at(self.unresolved_recent, slow, 0.5)
        complaint_rate = (
            scale
            * (
                0.0015
                + 0.025 * self.unresolved_recent[cust]
                + 0.015 * decline
                + 0.04 * sensitivity * shock
            )
            + 0.03 * tickets
        )
        pos, day = draw(rng.poisson(complaint_rate))
        channel = np.where(rng.random(pos.size) < 0.6, _PHONE, _EMAIL)
        sec = self._seconds(day, np.full(pos.size, _HOUR_SUPPORT))
        self._add(cust[pos], sec, _COMPLAINT, channel)
        complaints = np.bincount(pos, minlength=size)
        self.complaints_recent[cust] = self.complaints_recent[cust] * 0.92 + complaints

    def _evolve(self, cust: np.ndarray, shock: float) -> None:
        """Engagement dynamics and lifecycle phase transitions, one week forward."""
        rng, size = self.rng, cust.size
        phase = self.phase[cust]
        engagement = self.engagement[cust]
        base = self.base[cust]
        weeks = self.weeks_in_phase[cust] + 1
        target = base + np.array([0.0, 0.35, 0.2, 0.0])[phase]
        step = 0.2 * (target - engagement) + rng.normal(0.0, 0.1, size)
        step = np.where(phase == _DECLINE, -0.09 + rng.normal(0.0, 0.05, size), step)
        engagement = np.clip(engagement + step, -4.0, 2.5)
        p_decline = np.clip(
            0.004
            + 0.12 * self.complaints_recent[cust]
            + 0.03 * self.unresolved_recent[cust]
            + 0.3 * self.sensitivity[cust] * shock,
            0.0,
            0.6,
        )
        p_recover = 0.05 + 0.1 * self.clicked_last_week[cust]
        u = rng.random(size)
        new_phase = phase.copy()
        new_phase[(phase == _ONBOARDING) & (weeks >= self.onboarding_weeks[cust])] = _GROWTH
        growth = phase == _GROWTH
        new_phase[growth & (u < 0.07)] = _STABLE
        new_phase[growth & (u >= 0.07) & (u < 0.07 + 0.5 * p_decline)] = _DECLINE
        new_phase[(phase == _STABLE) & (u < p_decline)] = _DECLINE
        new_phase[(phase == _DECLINE) & (u < p_recover)] = _STABLE
        self.weeks_in_phase[cust] = np.where(new_phase != phase, 0, weeks)
        self.phase[cust] = new_phase
        self.engagement[cust] = engagement
        # Up-sell: a step up in spend, more likely when engaged, growing and broad.
        breadth = _popcount(self.owned[cust])
        p_upsell = (
            0.006
            * np.sqrt(np.exp(engagement))
            * np.array([0.5, 1.8, 1.0, 0.2])[phase]
            * (1 + 0.25 * (breadth - 1))
        )
        upsold = rng.random(size) < p_upsell
        spend = self.spend_log[cust]
        spend += 0.035 * (self.spend_base[cust] - spend) - 0.01 * (phase == _DECLINE)
        spend += np.where(upsold, np.log(rng.uniform(1.25, 1.6, size)), 0.0)
        self.spend_log[cust] = spend
        self.upsold_last_week[cust] = upsold
        self.unresolved_recent[cust] *= 0.92

    # ---------------------------------------------------------------- run

    def run(self) -> SyntheticCRM:
        for week in range(self.n_weeks):
            week_start = 7 * week
            price = float(self._price_level(np.array([week_start + 3]))[0])
            shock = max(math.log(price / self.ref_price), 0.0)
            self._acquire(week)
            self._win_back(week_start)
            active = np.flatnonzero(self.status == _ACTIVE)
            settled = active[self.active_since[active] < week_start]
            churned = self._churn(settled, week_start, shock)
            staying = settled[~churned]
            self._change_plans(staying, week_start, shock)
            self._emit_week(active, week_start, price, shock)
            self._evolve(staying, shock)
            self.ref_price += 0.03 * (price - self.ref_price)
        return self._assemble()

    def _assemble(self) -> SyntheticCRM:
        ids = _customer_ids(self.n)
        id_dtype = pd.CategoricalDtype(ids)
        start = pd.Timestamp(self.params.start)
        events = self._assemble_events(id_dtype, start)
        customers = pd.DataFrame(
            {
                "customer_id": pd.Categorical.from_codes(np.arange(self.n), dtype=id_dtype),
                "signup_date": start + pd.to_timedelta(self.signup_day, unit="D"),
                "country": pd.Categorical.from_codes(self.country, categories=list(COUNTRIES)),
                "acquisition_channel": pd.Categorical.from_codes(
                    self.acquisition,
                    categories=list(ACQUISITION_CHANNELS)
                    + ([self.new_channel] if self.new_channel else []),
                ),
                "customer_type": pd.Categorical.from_codes(
                    self.b2b.astype(np.int8), categories=["B2C", "B2B"]
                ),
            }
        )
        return SyntheticCRM(
            events=events,
            customers=customers,
            subscriptions=self._assemble_subscriptions(id_dtype, start),
            truth=self._assemble_truth(id_dtype, start),
        )

    def _assemble_events(self, id_dtype: pd.CategoricalDtype, start: pd.Timestamp) -> pd.DataFrame:
        cols = {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}
        self.chunks = []
        cust, sec = cols["cust"], cols["sec"]
        # Silence outside the customer's lifetime: before signup, while lapsed, after the end.
        day_s = np.int64(_DAY_S)
        churn = self.churn_day.astype(np.int64)[cust] * day_s
        back = self.return_day.astype(np.int64)[cust] * day_s
        gone = self.second_churn_day.astype(np.int64)[cust] * day_s
        keep = (
            (sec >= self.signup_day.astype(np.int64)[cust] * day_s)
            & (sec < self.n_days * day_s)
            & ~((sec >= churn) & (sec < back))
            & (sec < gone)
        )
        order = np.flatnonzero(keep)
        order = order[np.argsort(sec[order], kind="stable")]
        timestamp = start.to_datetime64().astype("datetime64[ns]") + (sec[order] * 10**9).astype(
            "timedelta64[ns]"
        )
        events = pd.DataFrame(
            {
                "customer_id": pd.Categorical.from_codes(cust[order], dtype=id_dtype),
                "timestamp": timestamp,
                "event_type": pd.Categorical.from_codes(
                    cols["event"][order], categories=list(EVENT_TYPES)
                ),
                "amount": cols["amount"][order],
                "quantity": cols["quantity"][order],
                "category": pd.Categorical.from_codes(
                    cols["category"][order], categories=list(PRODUCT_CATEGORIES)
                ),
                "channel": pd.Categorical.from_codes(
                    cols["channel"][order], categories=list(self.channels)
                ),
            }
        )
        return events[list(EVENTS_COLUMNS)]

    def _assemble_subscriptions(
        self, id_dtype: pd.CategoricalDtype, start: pd.Timestamp
    ) -> pd.DataFrame:
        open_ = np.flatnonzero(self.plan > 0)
        rows = [*self.sub_rows]
        rows.append(
            (open_, self.plan[open_], self.plan_start[open_],
             np.full(open_.size, _NEVER, np.int32), self.plan_mrr[open_])
        )  # fmt: skip
        cust, plan, begin, end, mrr = (np.concatenate([r[i] for r in rows]) for i in range(5))
        order = np.lexsort((begin, cust))
        cust, plan, begin, end, mrr = cust[order], plan[order], begin[order], end[order], mrr[order]
        frame = pd.DataFrame(
            {
                "customer_id": pd.Categorical.from_codes(cust, dtype=id_dtype),
                "plan": pd.Categorical.from_codes(plan - 1, categories=list(PLANS)),
                "start_date": start + pd.to_timedelta(begin, unit="D"),
                "end_date": _days_to_timestamps(start, end),
                "mrr": mrr.astype(np.float64),
            }
        )
        return frame[list(SUBSCRIPTIONS_COLUMNS)].reset_index(drop=True)

    def _assemble_truth(self, id_dtype: pd.CategoricalDtype, start: pd.Timestamp) -> pd.DataFrame:
        final_phase = np.where(self.status == _ACTIVE, self.phase, len(PHASES)).astype(np.int8)
        return pd.DataFrame(
            {
                "customer_id": pd.Categorical.from_codes(np.arange(self.n), dtype=id_dtype),
                "churn_date": _days_to_timestamps(start, self.churn_day),
                "churn_cause": pd.Categorical.from_codes(self.churn_cause, categories=_CAUSES),
                "returned_date": _days_to_timestamps(start, self.return_day),
                "second_churn_date": _days_to_timestamps(start, self.second_churn_day),
                "second_churn_cause": pd.Categorical.from_codes(
                    self.second_churn_cause, categories=_CAUSES
                ),
                "churned_at_end": self.status != _ACTIVE,
                "price_sensitivity": self.sensitivity,
                "base_engagement": np.exp(self.base),
                "final_engagement": np.exp(self.engagement),
                "final_phase": pd.Categorical.from_codes(
                    final_phase, categories=[*PHASES, "churned"]
                ),
                "n_categories": _popcount(self.owned).astype(np.int64),
                "spend_level": np.exp(self.spend_log),
            }
        )


def _days_to_timestamps(start: pd.Timestamp, days: np.ndarray) -> pd.Series:
    """Day offsets to timestamps, with the ``_NEVER`` sentinel becoming NaT."""
    values = start + pd.to_timedelta(np.where(days == _NEVER, 0, days), unit="D")
    return pd.Series(values).where(days != _NEVER).astype("datetime64[ns]")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_crm_data(params: GeneratorParams) -> SyntheticCRM:
    """Simulate a CRM history: events, customers, subscriptions and the hidden truth.

    Same params (seed included) give identical frames. See the module docstring for the
    behaviour being simulated. Tables follow ``features.contract``; events are sorted by
    timestamp like a real export, customer ids (``C0000001``...) follow signup order and every
    ``customer_id`` column shares the same categories (all customers).

    ``truth`` exposes the latent process so tests can check behaviour; it must never be used as
    features. One row per customer: ``churn_date`` (first churn, midnight; silent from then
    on), ``churn_cause`` (behavioural/random), ``returned_date`` (win-back, active again from
    then on), ``second_churn_date``/``second_churn_cause`` (a returned customer leaving again,
    for good), ``churned_at_end``, ``price_sensitivity`` (0-1), ``base_engagement`` and
    ``final_engagement`` (activity multipliers; final = at the end or at the last churn),
    ``final_phase`` (onboarding/growth/stable/decline/churned), ``n_categories`` (product lines
    ever bought or come for) and ``spend_level`` (spend multiplier at the end).
    """
    return _Simulation(params).run()


def write_crm_data(
    data: SyntheticCRM, out_dir: Path, *, include_truth: bool = False
) -> dict[str, Path]:
    """Write the tables as Parquet files in ``out_dir``; returns table name -> path.

    Each file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a reader never sees a half-written table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "events": data.events,
        "customers": data.customers,
        "subscriptions": data.subscriptions,
    }
    if include_truth:
        tables["truth"] = data.truth
    written: dict[str, Path] = {}
    for name, frame in tables.items():
        target = out_dir / f"{name}.parquet"
        write_atomically(target, lambda path, frame=frame: frame.to_parquet(path, index=False))
        written[name] = target
    return written
