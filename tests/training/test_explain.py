from __future__ import annotations

import numpy as np
import pytest

from training.explain import readable_feature_name, shap_contributions
from training.models import predict_xgboost


@pytest.mark.parametrize(
    ("column", "readable"),
    [
        ("recency_days", "days since last activity"),
        ("purchases_90d", "purchases in the last 90 days"),
        ("spend_365d", "spend in the last 365 days"),
        ("complaints_30d", "complaints in the last 30 days"),
        ("campaign_clicks_180d", "campaign e-mails clicked in the last 180 days"),
        ("spend_trend_90d", "change in spend: last 90 days vs the 90 days before"),
        ("days_since_last_purchase", "days since last purchase"),
        ("some_new_feature", "some new feature"),
    ],
)
def test_readable_feature_names(column, readable):
    assert readable_feature_name(column) == readable


def test_contributions_add_up_to_the_margin(churn_scorer, churn_task_data):
    X = churn_task_data.X("test").head(50)
    contributions = shap_contributions(churn_scorer.booster, X)
    assert contributions.shape == (50, len(churn_scorer.spec.features) + 1)
    p = predict_xgboost(churn_scorer.booster, X)
    np.testing.assert_allclose(contributions.sum(axis=1), np.log(p / (1 - p)), atol=1e-4)


def test_reasons_are_the_largest_contributions_with_readable_names(churn_scorer, churn_task_data):
    rows = churn_task_data.test.head(20)
    reasons = churn_scorer.explain(rows, top_k=3)
    contributions = shap_contributions(churn_scorer.booster, churn_task_data.X("test").head(20))
    features = list(churn_scorer.spec.features)
    assert len(reasons) == 20
    for row, row_reasons in enumerate(reasons):
        assert 1 <= len(row_reasons) <= 3
        sizes = [abs(r["contribution"]) for r in row_reasons]
        assert sizes == sorted(sizes, reverse=True)
        largest = np.max(np.abs(contributions[row, : len(features)]))
        assert sizes[0] == pytest.approx(largest)
        for reason in row_reasons:
            assert reason["label"] == churn_scorer.spec.readable_names[reason["feature"]]
            assert reason["direction"] == ("raises" if reason["contribution"] > 0 else "lowers")
            original = rows.iloc[row][reason["feature"]]
            if original is None or (not isinstance(original, str) and np.isnan(original)):
                assert reason["value"] is None
            elif isinstance(original, str):
                assert reason["value"] == original
            else:
                assert reason["value"] == pytest.approx(float(original))
