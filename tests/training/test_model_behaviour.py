"""Behavioural tests of a churn model trained on the fixture's generated CRM history.

The churn task constrains ``recency_days`` and ``complaints_90d`` to be monotone increasing
(XGBoost monotone constraints, ``TaskConfig.monotone_constraints``); isotonic calibration is
non-decreasing, so the calibrated probability inherits the guarantee.

In the generated data complaints drive churn, but only a few percent of customers complain, and
the signal is spread over several columns (``complaints_365d``, ``days_since_last_complaint``,
``share_complaint_365d``, ...): the model need not split on ``complaints_90d`` itself. So the
"complaints matter" check compares the scores of customers who did and did not complain, while
the counterfactual guarantee (adding complaints or silence never lowers the score) is the
property test below.
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


def test_the_model_learned_the_churn_signal(churn_scorer, churn_task_data):
    from sklearn.metrics import roc_auc_score

    test = churn_task_data.test
    assert roc_auc_score(test["churn_label"], churn_scorer.predict_proba(test)) > 0.8


def test_customers_who_complained_are_scored_likelier_to_churn(churn_scorer, churn_task_data):
    rows = churn_task_data.test
    p = churn_scorer.predict_proba(rows)
    complained = rows["complaints_365d"].to_numpy() > 0
    assert 20 <= complained.sum() <= len(rows) - 20  # both groups are there
    assert p[complained].mean() > p[~complained].mean() + 0.03


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
