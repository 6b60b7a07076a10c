"""Drift scores and their noise floors: what they measure, and that noise alone rarely passes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.scores import (
    categorical_noise_floor,
    numeric_noise_floor,
    psi_score,
    wasserstein_distance,
    wasserstein_score,
)


def test_wasserstein_distance_matches_scipy():
    from scipy.stats import wasserstein_distance as scipy_distance

    rng = np.random.default_rng(0)
    u, v = rng.lognormal(size=500), rng.normal(size=300)
    assert wasserstein_distance(u, v) == pytest.approx(scipy_distance(u, v), rel=1e-12)


def test_wasserstein_score_is_a_shift_in_standard_deviations_on_the_log_scale():
    rng = np.random.default_rng(1)
    amounts = rng.lognormal(4.0, 1.0, 20_000)  # log1p(amount) ~ log(amount) for large amounts
    score = wasserstein_score(amounts, amounts * np.exp(0.5))
    assert score == pytest.approx(0.5, abs=0.03)


def test_wasserstein_score_sees_a_shift_of_everyone_that_a_few_huge_accounts_hide():
    """On the raw scale the standard deviation of heavy-tailed money is set by a few big
    accounts, and a 30% rise of every amount looks small; on the log scale it does not."""
    rng = np.random.default_rng(2)
    spend = np.concatenate([rng.lognormal(4, 0.6, 5000), rng.lognormal(10, 0.5, 20)])
    raised = spend * 1.3
    raw = wasserstein_distance(spend, raised) / np.std(spend)
    assert raw < 0.05
    assert wasserstein_score(spend, raised) > 0.3


def test_psi_is_zero_for_equal_shares_and_large_for_a_new_level():
    reference = pd.Series(["web"] * 500 + ["app"] * 300 + ["store"] * 200)
    assert psi_score(reference, reference.sample(frac=1, random_state=0)) == pytest.approx(0.0)
    current = pd.Series(["web"] * 400 + ["app"] * 250 + ["store"] * 200 + ["marketplace"] * 150)
    assert psi_score(reference, current) > 0.5


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=60),
    st.lists(st.sampled_from(["a", "b", "d", None]), min_size=1, max_size=60),
)
def test_psi_is_never_negative(reference, current):
    assert psi_score(pd.Series(reference), pd.Series(current)) >= 0.0


def _false_alarm_rate(draw, score, floor, trials=300, seed=3):
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(trials):
        reference, current = draw(rng), draw(rng)
        alarms += score(reference, current) >= floor(reference, current)
    return alarms / trials


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormal(3, 1, 400),  # continuous, heavy tailed
        lambda rng: rng.choice([0, 1, 2], p=[0.85, 0.1, 0.05], size=400),  # a count, mostly 0
        lambda rng: rng.choice([0.0, 1.0], p=[0.9, 0.1], size=400),  # a flag
    ],
    ids=["continuous", "count", "flag"],
)
def test_numeric_noise_floor_keeps_false_alarms_rare_on_small_samples(draw):
    rate = _false_alarm_rate(
        draw,
        wasserstein_score,
        lambda reference, current: numeric_noise_floor(reference, len(current), alpha=0.001),
    )
    assert rate <= 0.01


def test_categorical_noise_floor_keeps_false_alarms_rare_on_small_samples():
    levels, shares = ["web", "app", "store", "phone"], [0.5, 0.3, 0.15, 0.05]
    rate = _false_alarm_rate(
        lambda rng: pd.Series(rng.choice(levels, p=shares, size=300)),
        psi_score,
        lambda reference, current: categorical_noise_floor(5, len(reference), len(current)),
    )
    assert rate <= 0.01
