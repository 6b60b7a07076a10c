from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from serving.decisions import (
    ACTION_RULES,
    ACTIONS,
    RAISES_RISK_SUFFIX,
    ActionPolicy,
    RiskBands,
    RiskBandsUnknownError,
    _sentence,
    apply_action_rules,
    assign_risk_bands,
    event_polarity,
    expected_value_at_risk,
    feature_unit,
    fit_risk_bands,
    format_feature_value,
    is_missing,
    is_plausible_risk,
    percentile_among,
    percentile_rank,
    reason_texts,
    risk_bands_for_call,
    rule_table,
    suggest_cross_sell,
)

BAND_ORDER = {"low": 0, "medium": 1, "high": 2}
BANDS = RiskBands(high=0.6, medium=0.3)


# ------------------------------------------------------------------------------------------
# reference implementations: the rules one customer at a time, the way a person reads them,
# to check the package's vectorised and batch code against (only the tests use them)
# ------------------------------------------------------------------------------------------


def risk_band(prob: float, bands: RiskBands) -> str | None:
    """The band of one probability; None when it is missing (e.g. a lapsed customer)."""
    if prob is None or math.isnan(float(prob)):
        return None
    if prob >= bands.high:
        return "high"
    if prob >= bands.medium:
        return "medium"
    return "low"


def suggest_actions(frame: pd.DataFrame, policy: ActionPolicy | None = None) -> pd.Series:
    """The suggested action per row (first matching rule of ``ACTION_RULES``)."""
    return apply_action_rules(frame, policy)["suggested_action"]


def suggest_action_reason(frame: pd.DataFrame, policy: ActionPolicy | None = None) -> pd.Series:
    """The rationale of the rule that chose each row's action."""
    return apply_action_rules(frame, policy)["action_reason"]


#: Suffix of a feature the model weighs towards churn whose value reads as engagement to a
#: person (``is_plausible_risk`` is False): shown as context, never as a risk.
CONTEXT_SUFFIX = " (context, not a risk sign by itself)"


def reason_text(
    feature: str,
    value,
    readable_names: dict[str, str] | None = None,
    *,
    currency: str = "",
    feature_values: dict | None = None,
) -> str:
    """One feature value as a reason sentence: "no activity for 63 days (raises risk)", or
    ending in ``CONTEXT_SUFFIX`` when the value is not a plausible risk (``reason_texts``
    skips those)."""
    row = feature_values or {}
    sentence = _sentence(feature, value, readable_names or {}, currency, row)
    if not is_plausible_risk(feature, value, row):
        return sentence + CONTEXT_SUFFIX
    return sentence + RAISES_RISK_SUFFIX


def cross_sell_candidates(
    bought_categories, category_propensity, top_k: int = 3, *, min_propensity: float = 0.0
) -> list[dict]:
    """The ``top_k`` categories the customer has not bought yet, most likely first.

    Each candidate is ``{"category", "propensity"}``; ties go alphabetically, NaN propensities
    and those below ``min_propensity`` are never candidates.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    bought = set(bought_categories)
    candidates = []
    for category, propensity in category_propensity.items():
        value = float(propensity)
        if category in bought or math.isnan(value) or value < min_propensity:
            continue
        if math.isinf(value):
            raise ValueError(f"propensity of category {category!r} is infinite")
        candidates.append((-value, str(category)))
    candidates.sort()
    return [{"category": c, "propensity": -v} for v, c in candidates[:top_k]]


def cross_sell_candidates_frame(
    bought_categories: pd.Series,
    propensities: pd.DataFrame,
    top_k: int = 3,
    *,
    min_propensity: float = 0.0,
) -> pd.Series:
    """``cross_sell_candidates`` for many customers at once.

    ``propensities`` has one row per customer and one column per category; ``bought_categories``
    holds, on the same index, each customer's list of categories bought (None or NaN = none).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not bought_categories.index.equals(propensities.index):
        raise ValueError("bought_categories and propensities must share the same index")
    categories = [str(c) for c in propensities.columns]
    scores = propensities.to_numpy(dtype=np.float64, copy=True)
    if np.isinf(scores).any():
        raise ValueError("propensities contain infinite values")
    position = {c: j for j, c in enumerate(categories)}
    for row, bought in enumerate(bought_categories.to_numpy(dtype=object)):
        for category in () if is_missing(bought) else bought:
            j = position.get(str(category))
            if j is not None:
                scores[row, j] = np.nan
    scores[scores < min_propensity] = np.nan
    # Sort by descending score, ties alphabetically: columns in alphabetical order first.
    alphabetical = np.argsort(np.array(categories, dtype=object), kind="stable")
    ordered = scores[:, alphabetical]
    keys = np.where(np.isnan(ordered), np.inf, -ordered)
    order = alphabetical[np.argsort(keys, axis=1, kind="stable")[:, :top_k]]
    result = []
    for row in range(scores.shape[0]):
        picks = [j for j in order[row] if not np.isnan(scores[row, j])]
        result.append(
            [{"category": categories[j], "propensity": float(scores[row, j])} for j in picks]
        )
    return pd.Series(result, index=propensities.index, name="cross_sell_candidates", dtype=object)


def customer(**overrides) -> dict:
    """An active, low-risk, mid-tier customer with no up-sell signal; override what a test needs."""
    row = {
        "is_active": True,
        "churn_probability": 0.1,
        "risk_band": "low",
        "upsell_probability": 0.1,
        "winback_probability": np.nan,
        "value_tier": "C",
        "lifecycle_stage": "stability",
        "value_growth_segment": "worth_nurturing",
        "rfm_segment": "need_attention",
    }
    row.update(overrides)
    return row


def lapsed(**overrides) -> dict:
    """A lapsed customer unlikely to return; override what a test needs."""
    row = {
        "is_active": False,
        "churn_probability": np.nan,
        "risk_band": None,
        "upsell_probability": np.nan,
        "winback_probability": 0.1,
        "lifecycle_stage": "decline",
        "value_growth_segment": "sleeping",
        "rfm_segment": "hibernating",
    }
    return customer(**{**row, **overrides})


def frame_of(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# ------------------------------------------------------------------------------------------
# risk bands
# ------------------------------------------------------------------------------------------


def test_fit_risk_bands_puts_the_top_decile_in_high_and_the_next_30_percent_in_medium():
    scores = np.random.default_rng(0).permutation(np.linspace(0.01, 0.99, 1000))
    bands = fit_risk_bands(scores)
    assigned = assign_risk_bands(scores, bands)
    assert (assigned == "high").mean() == pytest.approx(0.10)
    assert (assigned == "medium").mean() == pytest.approx(0.30)
    assert (assigned == "low").mean() == pytest.approx(0.60)


def test_fit_risk_bands_follows_the_requested_shares():
    scores = np.linspace(0.0, 1.0, 200)
    assigned = assign_risk_bands(scores, fit_risk_bands(scores, high_share=0.05, medium_share=0.15))
    assert (assigned == "high").sum() == 10
    assert (assigned == "medium").sum() == 30


def test_fit_risk_bands_never_splits_tied_scores():
    # Isotonic calibration produces steps: 30 customers share the top score.
    scores = np.concatenate([np.full(30, 0.8), np.linspace(0.1, 0.5, 70)])
    bands = fit_risk_bands(scores)
    assigned = assign_risk_bands(scores, bands)
    assert set(assigned[scores == 0.8]) == {"high"}
    assert bands.medium < bands.high


def test_fit_risk_bands_moves_medium_to_the_next_step_when_both_cuts_fall_on_one_step():
    scores = np.concatenate([np.full(60, 0.7), np.full(40, 0.2)])
    bands = fit_risk_bands(scores)
    assert bands == RiskBands(high=0.7, medium=0.2)


def test_fit_risk_bands_rejects_scores_without_two_distinct_values():
    with pytest.raises(ValueError, match="two distinct scores"):
        fit_risk_bands(np.full(50, 0.3))


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.array([0.1, np.nan, 0.5]), "NaN or infinite"),
        (np.array([0.1, 1.5]), "outside \\[0, 1\\]"),
        (np.array([]), "empty"),
    ],
)
def test_fit_risk_bands_rejects_unusable_scores(scores, message):
    with pytest.raises(ValueError, match=message):
        fit_risk_bands(scores)


@pytest.mark.parametrize(("high_share", "medium_share"), [(0.0, 0.3), (0.5, 0.6), (0.1, 0.0)])
def test_fit_risk_bands_rejects_impossible_shares(high_share, medium_share):
    with pytest.raises(ValueError, match="share"):
        fit_risk_bands(np.linspace(0, 1, 10), high_share, medium_share)


@pytest.mark.parametrize(("high", "medium"), [(0.3, 0.3), (0.2, 0.5), (1.2, 0.5), (0.5, -0.1)])
def test_risk_bands_require_0_le_medium_lt_high_le_1(high, medium):
    with pytest.raises(ValidationError):
        RiskBands(high=high, medium=medium)


def test_risk_bands_are_frozen():
    with pytest.raises(ValidationError):
        BANDS.high = 0.9


def test_scalar_risk_band_matches_the_vectorised_one_and_leaves_missing_unbanded():
    probs = np.array([0.0, 0.29, 0.3, 0.59, 0.6, 1.0, np.nan])
    expected = ["low", "low", "medium", "medium", "high", "high", None]
    assert list(assign_risk_bands(probs, BANDS)) == expected
    assert [risk_band(float(p), BANDS) for p in probs] == expected


@settings(max_examples=200, deadline=None)
@given(
    probs=st.lists(st.floats(0, 1), min_size=1, max_size=50),
    cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)).filter(lambda c: c[0] != c[1]),
)
def test_risk_bands_are_monotonic_in_the_probability(probs, cuts):
    bands = RiskBands(high=max(cuts), medium=min(cuts))
    values = np.sort(np.array(probs))
    ranks = [BAND_ORDER[b] for b in assign_risk_bands(values, bands)]
    assert ranks == sorted(ranks)


# ------------------------------------------------------------------------------------------
# percentiles and value at risk
# ------------------------------------------------------------------------------------------


def test_percentile_rank_runs_from_0_to_100_with_ties_averaged_and_nan_kept():
    ranks = percentile_rank(np.array([0.9, 0.1, 0.5, 0.5, np.nan]))
    np.testing.assert_allclose(ranks, [100.0, 0.0, 50.0, 50.0, np.nan])


def test_percentile_rank_of_a_single_score_is_the_middle():
    assert percentile_rank(np.array([0.4]))[0] == 50.0


def test_percentile_rank_against_a_reference_counts_ties_half():
    reference = np.array([0.1, 0.2, 0.2, 0.9])
    ranks = percentile_rank(np.array([0.2, 0.05, 0.95, np.nan]), reference=reference)
    np.testing.assert_allclose(ranks, [50.0, 0.0, 100.0, np.nan])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40))
def test_percentile_rank_never_decreases_with_the_score(probs):
    values = np.array(probs)
    ranks = percentile_rank(values)
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(ranks[order]) >= -1e-9)
    assert ranks.min() >= 0.0 and ranks.max() <= 100.0


@settings(max_examples=100, deadline=None)
@given(
    probs=st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9, np.nan]), min_size=1, max_size=30),
    data=st.data(),
)
def test_percentiles_of_a_part_among_the_population_are_those_of_the_whole(probs, data):
    values = np.array(probs)
    part = data.draw(st.lists(st.integers(0, len(probs) - 1), max_size=len(probs)))
    population = np.sort(values[np.isfinite(values)])
    whole = percentile_rank(values)
    np.testing.assert_array_equal(percentile_among(values[part], population), whole[part])
    # the average-rank formula: 100 * (average rank - 1) / (n - 1), a single score 50
    from scipy.stats import rankdata

    scored = np.isfinite(values)
    n = int(scored.sum())
    expected = np.full(len(values), np.nan)
    if n:
        ranks = rankdata(values[scored], method="average")
        expected[scored] = 50.0 if n == 1 else 100.0 * (ranks - 1.0) / (n - 1)
    np.testing.assert_array_equal(whole, expected)


def test_risk_bands_for_call_use_stored_bands_else_fit_on_the_call_else_refuse():
    churn = np.array([0.1, 0.2, 0.3, 0.4, np.nan])
    reference = np.array([0.1, 0.5])
    warnings: list[str] = []
    shares = {"high_share": 0.1, "medium_share": 0.3}
    stored = risk_bands_for_call(churn, BANDS, reference, warnings=warnings, **shares)
    assert stored == (BANDS, reference) and warnings == []
    fitted, none = risk_bands_for_call(churn, None, None, warnings=warnings, **shares)
    assert fitted == fit_risk_bands(churn[:4], 0.1, 0.3) and none is None
    assert warnings == [
        "risk bands and percentiles fitted on this call's 4 scored active customers (no stored "
        "reference): they depend on who is scored together"
    ]
    assert risk_bands_for_call(np.full(3, np.nan), None, None, warnings=[], **shares) == (
        None,
        None,
    )
    with pytest.raises(RiskBandsUnknownError, match="this call has only 2 distinct score"):
        risk_bands_for_call(np.array([0.4, 0.4]), None, None, warnings=[], **shares)
    with pytest.raises(ValueError, match="the batch has only 1 distinct score.s. to fit them on$"):
        risk_bands_for_call(
            np.array([0.4]),
            None,
            None,
            warnings=[],
            scored_together="the batch",
            advice="",
            **shares,
        )


def test_expected_value_at_risk_is_probability_times_value_and_unknown_stays_unknown():
    result = expected_value_at_risk(np.array([0.5, 0.2, np.nan]), np.array([100.0, np.nan, 50.0]))
    np.testing.assert_allclose(result, [50.0, np.nan, np.nan])
    assert expected_value_at_risk(0.25, 80.0) == 20.0


@pytest.mark.parametrize(("p", "value"), [(1.2, 10.0), (0.5, -1.0), (0.5, math.inf)])
def test_expected_value_at_risk_rejects_impossible_inputs(p, value):
    with pytest.raises(ValueError):
        expected_value_at_risk(p, value)


# ------------------------------------------------------------------------------------------
# the rule table
# ------------------------------------------------------------------------------------------

#: One hand-made row per rule, reaching it past every earlier rule.
RULE_EXAMPLES: dict[str, dict] = {
    "lapsed_valuable_likely_back": lapsed(winback_probability=0.8, value_tier="A"),
    "lapsed_frequent_buyer_likely_back": lapsed(
        winback_probability=0.8, value_tier="C", rfm_segment="cannot_lose_them"
    ),
    "lapsed_likely_back": lapsed(winback_probability=0.8, value_tier="D"),
    "lapsed_unlikely_back": lapsed(winback_probability=0.05, value_tier="A"),
    "high_risk_valuable": customer(risk_band="high", value_tier="B"),
    "medium_risk_top_tier": customer(risk_band="medium", value_tier="A"),
    "frequent_buyer_at_risk": customer(risk_band="high", value_tier="D", rfm_segment="loyal"),
    "low_risk_upsell": customer(upsell_probability=0.7),
    "fast_growing_upsell": customer(
        risk_band="medium", value_growth_segment="fast_growing", upsell_probability=0.7
    ),
    "young_relationship_at_risk": customer(
        risk_band="medium", lifecycle_stage="exploration", rfm_segment="new_customers"
    ),
    "medium_risk_lower_tier": customer(risk_band="medium", value_tier="D"),
    "high_risk_bottom_tier": customer(risk_band="high", value_tier="D"),
    "no_signal": customer(),
}


def test_every_rule_has_a_hand_made_example():
    assert set(RULE_EXAMPLES) == {rule.name for rule in ACTION_RULES}


@pytest.mark.parametrize("rule_name", list(RULE_EXAMPLES))
def test_each_rule_is_reachable(rule_name):
    rule = next(r for r in ACTION_RULES if r.name == rule_name)
    decided = apply_action_rules(frame_of(RULE_EXAMPLES[rule_name]))
    assert decided["action_rule"].iloc[0] == rule_name
    assert decided["suggested_action"].iloc[0] == rule.action
    assert decided["action_reason"].iloc[0] == rule.rationale


def test_first_matching_rule_wins():
    # High risk, tier A and a champion: both high_risk_valuable and frequent_buyer_at_risk
    # hold; the earlier one decides.
    row = customer(risk_band="high", value_tier="A", rfm_segment="champions")
    assert apply_action_rules(frame_of(row))["action_rule"].iloc[0] == "high_risk_valuable"
    # Tier B lapsed frequent buyer: rule 1 before rule 2.
    row = lapsed(winback_probability=0.9, value_tier="B", rfm_segment="at_risk")
    assert apply_action_rules(frame_of(row))["action_rule"].iloc[0] == (
        "lapsed_valuable_likely_back"
    )


def test_lapsed_customer_without_a_winback_score_gets_no_action():
    row = lapsed(winback_probability=np.nan, value_tier="A")
    assert suggest_actions(frame_of(row)).iloc[0] == "no_action"


def test_policy_thresholds_move_the_decision():
    row = customer(upsell_probability=0.45)
    assert suggest_actions(frame_of(row)).iloc[0] == "no_action"
    eager = ActionPolicy(upsell_threshold=0.4)
    assert suggest_actions(frame_of(row), eager).iloc[0] == "upsell"


def test_suggest_action_reason_gives_the_matched_rules_rationale():
    rows = frame_of(RULE_EXAMPLES["high_risk_valuable"], RULE_EXAMPLES["lapsed_unlikely_back"])
    reasons = suggest_action_reason(rows)
    assert list(reasons) == [
        next(r.rationale for r in ACTION_RULES if r.name == "high_risk_valuable"),
        next(r.rationale for r in ACTION_RULES if r.name == "lapsed_unlikely_back"),
    ]


def test_suggest_actions_keeps_the_index_and_leaves_the_input_alone():
    rows = frame_of(*RULE_EXAMPLES.values())
    rows.index = pd.Index([f"C{i}" for i in range(len(rows))])
    before = rows.copy()
    actions = suggest_actions(rows)
    assert actions.index.equals(rows.index)
    pd.testing.assert_frame_equal(rows, before)


def test_rule_table_lists_the_rules_in_order_with_the_policy_thresholds():
    table = rule_table(ActionPolicy(winback_threshold=0.45))
    assert [row["order"] for row in table] == list(range(1, len(ACTION_RULES) + 1))
    assert [row["name"] for row in table] == [rule.name for rule in ACTION_RULES]
    assert "winback_probability >= 0.45" in table[0]["condition"]
    assert "value_tier in {A, B}" in table[0]["condition"]
    assert table[-1]["condition"].startswith("otherwise")
    assert all(row["action"] in ACTIONS and row["rationale"] for row in table)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"value_tier": "E"}, "value_tier"),
        ({"rfm_segment": "vip"}, "rfm_segment"),
        ({"risk_band": "severe"}, "risk_band"),
        ({"risk_band": None}, "no risk_band"),
        ({"is_active": "yes"}, "is_active"),
        ({"upsell_probability": 1.5}, "upsell_probability"),
    ],
)
def test_suggest_actions_rejects_bad_inputs_with_the_column_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        suggest_actions(frame_of(customer(**overrides)))


def test_suggest_actions_names_missing_columns():
    with pytest.raises(ValueError, match="rfm_segment"):
        suggest_actions(frame_of(customer()).drop(columns="rfm_segment"))


def test_action_policy_rejects_unknown_groups():
    with pytest.raises(ValidationError, match="unknown value tiers"):
        ActionPolicy(retain_value_tiers=("A", "Z"))


_tiers = st.sampled_from(VALUE_TIERS)
_probability = st.floats(0, 1)
_rows = st.fixed_dictionaries(
    {
        "is_active": st.booleans(),
        "churn_probability": _probability,
        "upsell_probability": _probability | st.just(np.nan),
        "winback_probability": _probability | st.just(np.nan),
        "value_tier": _tiers,
        "lifecycle_stage": st.sampled_from(LIFECYCLE_STAGES),
        "value_growth_segment": st.sampled_from(VALUE_GROWTH_SEGMENTS),
        "rfm_segment": st.sampled_from(RFM_SEGMENTS),
    }
)


def _banded(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    lapsed_rows = ~frame["is_active"]
    frame.loc[lapsed_rows, "churn_probability"] = np.nan
    frame.loc[~lapsed_rows, "winback_probability"] = np.nan
    frame["risk_band"] = assign_risk_bands(frame["churn_probability"].to_numpy(), BANDS)
    return frame


@settings(max_examples=150, deadline=None)
@given(st.lists(_rows, min_size=1, max_size=30))
def test_every_row_gets_exactly_one_allowed_action(rows):
    frame = _banded(rows)
    actions = suggest_actions(frame)
    assert len(actions) == len(frame)
    assert actions.isin(ACTIONS).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(_rows, min_size=1, max_size=30))
def test_the_chosen_rule_is_the_first_whose_conditions_all_hold(rows):
    frame = _banded(rows)
    policy = ActionPolicy()
    chosen = apply_action_rules(frame, policy)["action_rule"].to_numpy()
    for i in range(len(frame)):
        row = frame.iloc[[i]]
        holding = [
            rule.name
            for rule in ACTION_RULES
            if all(clause.mask(row, policy)[0] for clause in rule.clauses)
        ]
        assert chosen[i] == holding[0]


@settings(max_examples=200, deadline=None)
@given(
    row=_rows,
    tier=st.sampled_from(("A", "B", "C")),
    probs=st.tuples(_probability, _probability),
)
def test_more_churn_risk_never_turns_retain_into_no_action_for_valuable_active_customers(
    row, tier, probs
):
    lower, higher = sorted(probs)
    base = {**row, "is_active": True, "value_tier": tier}
    frame = _banded([{**base, "churn_probability": lower}, {**base, "churn_probability": higher}])
    before, after = suggest_actions(frame)
    if before == "retain":
        assert after != "no_action"


# ------------------------------------------------------------------------------------------
# cross-sell
# ------------------------------------------------------------------------------------------


def test_cross_sell_candidates_skip_bought_categories_and_rank_by_propensity():
    propensity = {"shoes": 0.9, "bags": 0.5, "belts": 0.5, "hats": 0.7, "socks": np.nan}
    candidates = cross_sell_candidates(["shoes"], propensity, top_k=3)
    assert candidates == [
        {"category": "hats", "propensity": 0.7},
        {"category": "bags", "propensity": 0.5},
        {"category": "belts", "propensity": 0.5},
    ]


def test_cross_sell_candidates_respect_the_minimum_propensity():
    candidates = cross_sell_candidates([], {"a": 0.2, "b": 0.05}, min_propensity=0.1)
    assert [c["category"] for c in candidates] == ["a"]


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    n_rows=st.integers(1, 6),
    top_k=st.integers(1, 4),
)
def test_cross_sell_frame_variant_matches_the_per_customer_function(data, n_rows, top_k):
    categories = ["a", "b", "c", "d", "e"]
    cell = st.sampled_from([0.1, 0.3, 0.5, 0.9]) | st.just(np.nan)
    table = pd.DataFrame(
        [[data.draw(cell) for _ in categories] for _ in range(n_rows)], columns=categories
    )
    bought = pd.Series(
        [data.draw(st.lists(st.sampled_from(categories), max_size=3)) for _ in range(n_rows)]
    )
    vectorised = cross_sell_candidates_frame(bought, table, top_k=top_k)
    for i in range(n_rows):
        expected = cross_sell_candidates(bought[i], table.iloc[i].to_dict(), top_k=top_k)
        assert vectorised[i] == expected


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sets(st.sampled_from("abcdef"), max_size=6),
            st.one_of(st.none(), st.floats(0, 1)),
        ),
        min_size=1,
        max_size=8,
    ),
    shares=st.dictionaries(st.sampled_from("abcdefg"), st.floats(0.01, 1), min_size=1),
    top_k=st.integers(1, 4),
)
def test_vectorised_cross_sell_matches_the_decisions_helper(data, shares, top_k):
    ids = np.array([f"C{i}" for i in range(len(data))], dtype=object)
    upsell = np.array([np.nan if p is None else p for _, p in data])
    bought = pd.Series([sorted(b) for b, _ in data], index=pd.Index(ids))
    pairs = bought.explode().dropna().rename("category").rename_axis("customer_id").reset_index()
    fast = suggest_cross_sell(ids, upsell, pairs, shares, top_k)
    scored = np.isfinite(upsell)
    propensities = pd.DataFrame(
        {c: upsell[scored] * s for c, s in shares.items()}, index=pd.Index(ids[scored])
    )
    expected = cross_sell_candidates_frame(bought[scored], propensities, top_k)
    for i in np.flatnonzero(scored):
        got = fast[i]
        want = expected[ids[i]]
        assert [c["category"] for c in got] == [c["category"] for c in want] or (
            # equal propensities (e.g. upsell 0) may order differently only among ties
            [c["propensity"] for c in got] == [c["propensity"] for c in want]
        )
        np.testing.assert_allclose([c["propensity"] for c in got], [c["propensity"] for c in want])
    assert all(fast[i] == [] for i in np.flatnonzero(~scored))


# ------------------------------------------------------------------------------------------
# reasons
# ------------------------------------------------------------------------------------------

VALUES = {
    "recency_days": 63.2,
    "complaints_90d": 3,
    "spend_trend": -0.7,
    "visits_30d": 0,
    "plan": "basic",
    "crm_score": 0.42,
}


def test_reasons_list_only_risk_raising_contributions_strongest_first():
    contributions = {
        "recency_days": 0.8,
        "complaints_90d": 1.1,
        "visits_30d": -0.4,
        "plan": 0.0,
        "spend_trend": 0.3,
    }
    reasons = reason_texts(contributions, VALUES, {}, top_k=5)
    assert [r["feature"] for r in reasons] == ["complaints_90d", "recency_days", "spend_trend"]
    assert [r["contribution"] for r in reasons] == [1.1, 0.8, 0.3]


def test_reasons_stop_at_top_k():
    contributions = {"recency_days": 0.8, "complaints_90d": 1.1, "spend_trend": 0.3}
    reasons = reason_texts(contributions, VALUES, {}, top_k=2)
    assert [r["feature"] for r in reasons] == ["complaints_90d", "recency_days"]


def test_reason_texts_read_like_sentences():
    contributions = {"recency_days": 0.8, "complaints_90d": 1.1, "spend_trend": 0.3}
    texts = [r["text"] for r in reason_texts(contributions, VALUES, {}, top_k=3)]
    assert texts == [
        "3 complaints in the last 90 days (raises risk)",
        "no activity for 63 days (raises risk)",
        "spend down 50% vs the previous period (raises risk)",
    ]


def test_reason_texts_use_the_readable_name_for_other_features():
    reasons = reason_texts({"crm_score": 0.2}, VALUES, {"crm_score": "lead score"})
    assert reasons[0]["text"] == "lead score: 0.42 (raises risk)"


def test_reason_for_a_missing_value_says_so():
    assert reason_text("recency_purchase_days", np.nan) == "never purchased (raises risk)"
    assert reason_text("crm_score", None, {"crm_score": "lead score"}) == (
        "lead score: not recorded (raises risk)"
    )


@settings(max_examples=150, deadline=None)
@given(
    contributions=st.dictionaries(
        st.sampled_from([f"f{i}" for i in range(12)]),
        st.floats(-3, 3) | st.just(math.nan),
        max_size=12,
    ),
    top_k=st.integers(1, 5),
)
def test_reasons_are_the_top_k_positive_contributions_sorted(contributions, top_k):
    reasons = reason_texts(contributions, {}, {}, top_k=top_k)
    positive = sorted(
        (c for c in contributions.values() if not math.isnan(c) and c > 0), reverse=True
    )
    assert [r["contribution"] for r in reasons] == positive[:top_k]
    assert all(r["contribution"] > 0 for r in reasons)


@pytest.mark.parametrize(
    ("feature", "value", "unit", "shown"),
    [
        ("recency_days", 63.4, "days", "63 days"),
        ("days_to_renewal", 1, "days", "1 day"),
        ("clv_T_weeks", 3.5, "weeks", "3.5 weeks"),
        ("purchases_90d", 12, "count", "12"),
        ("unresolved_tickets", 2, "count", "2"),
        ("spend_365d", 1234.5, "currency", "1,234.50"),
        ("avg_order_value", 59.9, "currency", "59.90"),
        ("mrr_change_90d", -20, "currency", "-20.00"),
        ("share_visit_365d", 0.45, "share", "45%"),
        ("campaign_click_rate_180d", 0.052, "share", "5.2%"),
        ("activity_trend", math.log(0.5), "trend", "-50%"),
        ("recency_vs_rhythm", 3.24, "ratio", "3.2x"),
        ("has_subscription", 1.0, "flag", "yes"),
        ("some_score", 0.123456, "number", "0.123"),
    ],
)
def test_feature_values_are_shown_with_their_unit(feature, value, unit, shown):
    assert feature_unit(feature) == unit
    assert format_feature_value(feature, value) == shown


def test_money_takes_the_currency_prefix():
    assert format_feature_value("spend_90d", -5.0, currency="EUR ") == "-EUR 5.00"


# ------------------------------------------------------------------------------------------
# reasons from generated features (ev_*, ratio_*, attr_*, subscription terms)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "value", "sentence"),
    [
        ("ev_add_contact_30d", 3, "3 add contact events in the last 30 days"),
        ("ev_add_contact_30d", 1, "1 add contact event in the last 30 days"),
        ("ev_add_contact_30d", 2.5, "2.5 add contact events in the last 30 days"),
        ("ev_add_contact_total", 40, "40 add contact events in total"),
        (
            "ev_add_contact_per_day_30d",
            0.4,
            "0.4 add contact events per day over the last 30 days",
        ),
        (
            "ev_add_contact_per_day_total",
            0.05,
            "0.05 add contact events per day since the first activity",
        ),
        (
            "ev_add_contact_per_active_day_30d",
            2.5,
            "2.5 add contact events per active day in the last 30 days",
        ),
        ("ev_like_per_seat_30d", 1.5, "1.5 likes per seat in the last 30 days"),
        ("ev_add_contact_days_since_last", 12, "last add contact event 12 days ago"),
        ("ev_add_contact_days_since_last", np.nan, "no add contact event recorded"),
        ("ev_other_days_since_last", 40, "last event of another type 40 days ago"),
        (
            "ev_email_opened_share_180d",
            0.25,
            "email opened events are 25% of interactions in the last 180 days",
        ),
        (
            "ev_deal_won_amount_30d",
            1234.5,
            "amount of deal won events in the last 30 days: 1,234.50",
        ),
        ("ratio_dislike_per_like_30d", 2.5, "2.5 dislikes per like in the last 30 days"),
        (
            "ratio_dislike_per_like_30d",
            np.nan,
            "dislikes per like in the last 30 days: not recorded",
        ),
        ("attr_channel", "web", "customer attribute channel: web"),
        ("attr_employees", 250, "customer attribute employees: 250"),
        ("attr_contract_signed_days", 400, "contract signed 400 days ago"),
        ("attr_contract_signed_days", None, "contract signed not recorded"),
        ("renewal_in_horizon", 1, "subscription renews within the prediction horizon"),
        ("renewal_in_horizon", 0, "no subscription renewal within the prediction horizon"),
        ("bill_period_months", 12, "billed every 12 months"),
        ("bill_period_months", 1, "billed every month"),
        ("seats", 3, "3 seats on the subscription"),
        ("plan_price", 49, "price due at the next renewal: 49.00"),
        ("mrr_per_seat", 12.5, "monthly recurring revenue per seat: 12.50"),
        ("discount", 0.2, "subscription discount: 0.2"),
    ],
)
def test_generated_features_read_as_sentences(feature, value, sentence):
    assert reason_text(feature, value) == sentence + " (raises risk)"


@pytest.mark.parametrize(
    ("feature", "unit"),
    [
        ("ev_add_contact_30d", "count"),
        ("ev_add_contact_total", "count"),
        ("ev_share_30d", "count"),  # counts "share" events: the slug never decides the unit
        ("ev_spend_points_30d", "count"),
        ("ev_like_share_180d", "share"),
        ("ev_add_contact_per_day_30d", "rate"),
        ("ev_add_contact_per_active_day_30d", "rate"),
        ("ev_add_contact_per_seat_30d", "rate"),
        ("ratio_like_per_share_30d", "rate"),
        ("ev_add_contact_days_since_last", "days"),
        ("ev_add_contact_trend_90d", "trend"),
        ("ev_deal_won_amount_total", "currency"),
        ("attr_date_of_birth_days", "days"),
        ("attr_channel", "number"),
        ("renewal_in_horizon", "flag"),
        ("bill_period_months", "months"),
        ("plan_price", "currency"),
        ("mrr_per_seat", "currency"),
        ("seats", "count"),
        ("active_days_30d", "count"),
    ],
)
def test_units_of_generated_features(feature, unit):
    assert feature_unit(feature) == unit


def test_trend_with_its_count_in_the_row_reads_as_counts():
    # 3 in the last 90 days, 11 in the 90 days before.
    row = {"ev_add_contact_90d": 3.0, "ev_add_contact_trend_90d": math.log(4 / 12)}
    text = reason_text(
        "ev_add_contact_trend_90d", row["ev_add_contact_trend_90d"], {}, feature_values=row
    )
    assert text == (
        "add contact events in the last 90 days: 3, down from 11 in the 90 days before "
        "(raises risk)"
    )
    same = {"ev_like_90d": 5.0, "ev_like_trend_90d": 0.0}
    assert reason_text("ev_like_trend_90d", 0.0, {}, feature_values=same) == (
        "likes in the last 90 days: 5, the same as in the 90 days before (raises risk)"
    )
    spend = {"spend_90d": 100.0, "spend_trend_90d": math.log(101 / 401)}
    assert reason_text(
        "spend_trend_90d", spend["spend_trend_90d"], {}, currency="$", feature_values=spend
    ) == (
        "spend in the last 90 days: $100.00, down from $400.00 in the 90 days before (raises risk)"
    )


def test_trend_without_its_count_reads_as_a_change():
    assert reason_text("ev_add_contact_trend_90d", math.log(0.25)) == (
        "add contact events down 75% in the last 90 days vs the 90 before (raises risk)"
    )
    assert reason_text("ev_add_contact_trend_90d", math.log(1 / 500)) == (
        "add contact events down more than 99% in the last 90 days vs the 90 before (raises risk)"
    )


def test_a_rise_from_zero_reads_as_counts_not_as_a_huge_percentage():
    row = {"ev_add_contact_90d": 294.0, "ev_add_contact_trend_90d": math.log(295)}
    text = reason_text("ev_add_contact_trend_90d", math.log(295), {}, feature_values=row)
    assert text.startswith(
        "add contact events in the last 90 days: 294, up from 0 in the 90 days before"
    )
    assert "%" not in text


@pytest.mark.parametrize(
    ("feature", "value", "shown"),
    [
        ("activity_trend", math.log(295), "more than 10x"),
        ("activity_trend", math.log(11.0), "more than 10x"),
        ("activity_trend", math.log(10.98), "+998%"),
        ("activity_trend", math.log(1e-6), "-99%"),
        ("campaign_click_rate_180d", 15.0, "15x"),
        ("campaign_click_rate_180d", 9.99, "999%"),
        ("ev_like_share_180d", 0.333, "33%"),
    ],
)
def test_no_percentage_beyond_999(feature, value, shown):
    assert format_feature_value(feature, value) == shown


def test_the_unusable_texts_of_the_issue_are_gone():
    # "activity up 29400% vs the previous period (raises risk)": capped, and a rise in activity
    # is not shown as a risk at all.
    assert reason_texts({"activity_trend": 1.0}, {"activity_trend": math.log(295)}, {}) == []
    assert reason_text("activity_trend", math.log(295)) == (
        "activity up more than 10x vs the previous period (context, not a risk sign by itself)"
    )
    # "90 days with activity in the last 90 days (raises risk)"
    assert reason_texts({"active_days_90d": 1.0}, {"active_days_90d": 90}, {}) == []


_PERCENT = re.compile(r"(\d[\d,]*)%")


@settings(max_examples=200, deadline=None)
@given(
    feature=st.sampled_from(
        [
            "activity_trend",
            "spend_trend",
            "ev_add_contact_trend_90d",
            "campaign_click_rate_180d",
            "ev_like_share_180d",
            "share_visit_365d",
        ]
    ),
    value=st.floats(-50, 50),
    count=st.none() | st.floats(0, 1e6),
)
def test_no_reason_text_shows_a_percentage_beyond_999(feature, value, count):
    row = {feature: value}
    if count is not None:
        row["ev_add_contact_90d"] = count
    for text in (
        reason_text(feature, value, feature_values=row),
        format_feature_value(feature, value),
    ):
        for percent in _PERCENT.findall(text):
            assert int(percent.replace(",", "")) <= 999, text


# ------------------------------------------------------------------------------------------
# plausibility: a reason shown as raising risk reads as a risk
# ------------------------------------------------------------------------------------------


def test_full_activity_with_the_largest_contribution_is_skipped_for_the_next_reason():
    values = {"active_days_90d": 90, "recency_days": 40.0, "complaints_90d": 2, "tenure_days": 500}
    contributions = {"active_days_90d": 2.0, "recency_days": 0.5, "complaints_90d": 0.3}
    reasons = reason_texts(contributions, values, {}, top_k=2)
    assert [r["feature"] for r in reasons] == ["recency_days", "complaints_90d"]
    assert all("days with activity" not in r["text"] for r in reasons)
    assert [r["contribution"] for r in reasons] == [0.5, 0.3]


def test_a_skipped_reason_is_worded_as_context_when_asked_for_alone():
    text = reason_text("active_days_90d", 90, {}, feature_values={"active_days_90d": 90})
    assert text == "90 days with activity in the last 90 days (context, not a risk sign by itself)"
    assert not text.endswith("(raises risk)")


@pytest.mark.parametrize(
    ("feature", "value", "row", "plausible"),
    [
        # days with activity: at least half of the window (capped at the tenure) is high
        ("active_days_90d", 90, {}, False),
        ("active_days_90d", 50, {}, False),
        ("active_days_90d", 20, {"tenure_days": 30}, False),
        ("active_days_90d", 3, {}, True),
        ("active_days_90d", 0, {}, True),
        # counts: a decline in the row's own numbers keeps them, steadiness does not
        ("ev_add_contact_30d", 0, {}, True),
        ("ev_add_contact_30d", 3, {}, True),  # the row cannot tell: kept
        ("ev_add_contact_30d", 3, {"ev_add_contact_180d": 60}, True),  # 0.1/day vs 0.33/day
        ("ev_add_contact_30d", 30, {"ev_add_contact_180d": 60}, False),  # 1/day vs 0.33/day
        ("ev_add_contact_30d", 30, {"ev_add_contact_total": 100, "tenure_days": 100}, False),
        ("ev_add_contact_30d", 3, {"ev_add_contact_trend_90d": -1.1}, True),
        ("ev_add_contact_30d", 3, {"ev_add_contact_trend_90d": 0.5}, False),
        (
            "ev_add_contact_30d",
            30,
            {"ev_add_contact_180d": 60, "ev_add_contact_trend_90d": -0.2},
            True,  # any sign of decline keeps it
        ),
        ("ev_add_contact_per_day_30d", 2.0, {"ev_add_contact_per_day_180d": 1.0}, False),
        ("ev_add_contact_per_day_30d", 0.5, {"ev_add_contact_per_day_180d": 1.0}, True),
        ("purchases_90d", 6, {"purchases_365d": 8}, False),
        ("purchases_90d", 1, {"purchases_365d": 12}, True),
        ("events_30d", 40, {"activity_trend": 0.3}, False),
        ("spend_90d", 500.0, {"spend_trend": 0.7}, False),
        # trends: a rise in engagement is no risk, a fall is; risk-like measures the other way
        ("activity_trend", math.log(295), {}, False),
        ("activity_trend", math.log(0.5), {}, True),
        ("activity_trend", 0.0, {}, True),
        ("ev_deal_won_trend_90d", 0.4, {}, False),
        ("ev_deal_won_trend_90d", -0.4, {}, True),
        ("ev_complaint_trend_90d", 0.4, {}, True),
        ("ev_complaint_trend_90d", -0.4, {}, False),
        # recency: a recent last event is no risk; recent = within the usual gap, else 7 days
        ("recency_days", 2.0, {}, False),
        ("recency_days", 63.0, {}, True),
        ("recency_days", np.nan, {}, True),
        ("recency_days", 20.0, {"active_days_90d": 3}, False),  # usual gap 30 days
        ("recency_days", 20.0, {"active_days_90d": 45}, True),  # usual gap 2 days
        ("recency_purchase_days", 50.0, {"interpurchase_mean_days": 90.0}, False),
        ("recency_purchase_days", 200.0, {"interpurchase_mean_days": 90.0}, True),
        ("days_since_last_visit", 1.0, {}, False),
        ("days_since_last_visit", 30.0, {}, True),
        ("days_since_last_visit", 30.0, {"visits_365d": 4}, False),  # usual gap 91 days
        ("ev_add_contact_days_since_last", 3.0, {}, False),
        ("ev_add_contact_days_since_last", 12.0, {"ev_add_contact_90d": 30}, True),
        ("ev_add_contact_days_since_last", np.nan, {}, True),
        ("recency_vs_rhythm", 0.4, {}, False),
        ("recency_vs_rhythm", 3.2, {}, True),
        # risk-like: none of them is no risk, some are
        ("complaints_90d", 0, {}, False),
        ("complaints_90d", 3, {}, True),
        ("unresolved_tickets", 0, {}, False),
        ("ev_payment_failed_30d", 0, {}, False),
        ("ev_payment_failed_30d", 2, {}, True),
        ("ev_support_ticket_days_since_last", 3.0, {}, True),
        ("ev_support_ticket_days_since_last", np.nan, {}, False),
        # ambiguous and neutral: shown as they are
        ("ev_dislike_30d", 40, {"ev_dislike_180d": 40}, True),
        ("ev_unfriend_30d", 0, {}, True),
        ("ev_other_30d", 50, {"ev_other_180d": 50}, True),
        ("ratio_dislike_per_like_30d", 0.1, {}, True),
        ("ev_like_share_180d", 0.9, {}, True),
        ("attr_channel", "web", {}, True),
        ("mrr", 500.0, {}, True),
        ("crm_score", 0.42, {}, True),
    ],
)
def test_plausibility_of_a_risk_reason(feature, value, row, plausible):
    assert is_plausible_risk(feature, value, {**row, feature: value}) is plausible
    text = reason_text(feature, value, {}, feature_values={**row, feature: value})
    assert text.endswith("(raises risk)") is plausible


@pytest.mark.parametrize(
    ("slug", "polarity"),
    [
        ("add_contact", "engagement"),
        ("email_opened", "engagement"),
        ("deal_won", "engagement"),
        ("like", "engagement"),
        ("complaint", "risk"),
        ("support_ticket", "risk"),
        ("payment_failed", "risk"),
        ("deal_lost", "risk"),
        ("email_unsubscribed", "risk"),
        ("dislike", "neutral"),
        ("unfriend", "neutral"),
        ("ticket_resolved", "neutral"),
        ("other", "neutral"),
    ],
)
def test_event_types_are_read_by_their_words(slug, polarity):
    assert event_polarity(slug) == polarity


def test_skipping_implausible_reasons_still_fills_top_k_from_the_rest():
    values = {
        "activity_trend": math.log(3),
        "active_days_90d": 80,
        "ev_login_days_since_last": 1.0,
        "ev_login_30d": 0,
        "complaints_90d": 2,
        "recency_days": 1.0,
        "ratio_dislike_per_like_30d": 2.5,
    }
    contributions = dict(zip(values, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], strict=True))
    reasons = reason_texts(contributions, values, {}, top_k=3)
    assert [r["text"] for r in reasons] == [
        "0 logins in the last 30 days (raises risk)",
        "2 complaints in the last 90 days (raises risk)",
        "2.5 dislikes per like in the last 30 days (raises risk)",
    ]
