"""Behavioural tests of a churn model trained on the fixture, where the effects exist.

The churn task constrains ``recency_days`` and ``complaints_90d`` to be monotone increasing
(XGBoost monotone constraints, ``TaskConfig.monotone_constraints``); isotonic calibration is
non-decreasing, so the calibrated probability inherits the guarantee.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st


def test_customer_id_does_not_change_the_score(churn_scorer, churn_task_data):
    rows = churn_task_data.test.head(200)
    renamed = rows.assign(customer_id=[f"X{i}" for i in range(len(rows))][::-1])
    np.testing.assert_array_equal(
        churn_scorer.predict_proba(rows), churn_scorer.predict_proba(renamed)
    )


def test_the_model_learned_the_fixture_signal(churn_scorer, churn_task_data):
    from sklearn.metrics import roc_auc_score

    test = churn_task_data.test
    assert roc_auc_score(test["churn_label"], churn_scorer.predict_proba(test)) > 0.65


def test_more_complaints_raise_churn_probability_on_average(churn_scorer, churn_task_data):
    rows = churn_task_data.test
    more = rows.assign(complaints_90d=rows["complaints_90d"] + 3)
    assert churn_scorer.predict_proba(more).mean() > churn_scorer.predict_proba(rows).mean() + 0.02


@settings(max_examples=25, deadline=None)
@given(
    start=st.integers(0, 1000),
    extra_complaints=st.integers(0, 5),
    extra_silence_days=st.floats(0, 200),
)
def test_more_complaints_or_longer_silence_never_lower_churn_probability(
    churn_scorer, churn_task_data, start, extra_complaints, extra_silence_days
):
    rows = churn_task_data.test.iloc[start : start + 50]
    worse = rows.assign(
        complaints_90d=rows["complaints_90d"] + extra_complaints,
        recency_days=rows["recency_days"] + extra_silence_days,
    )
    assert np.all(churn_scorer.predict_proba(worse) >= churn_scorer.predict_proba(rows))
