from __future__ import annotations

import numpy as np
import pytest

from training.explain import (
    FeatureName,
    parse_feature_name,
    readable_feature_name,
    shap_contributions,
)
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


@pytest.mark.parametrize(
    ("column", "readable"),
    [
        ("ev_add_contact_30d", "add contact events in the last 30 days"),
        ("ev_add_contact_total", "add contact events in total"),
        ("ev_add_contact_per_day_30d", "add contact events per day over the last 30 days"),
        ("ev_add_contact_per_day_total", "add contact events per day since the first activity"),
        (
            "ev_add_contact_per_active_day_7d",
            "add contact events per active day in the last 7 days",
        ),
        ("ev_add_contact_days_since_last", "days since the last add contact event"),
        (
            "ev_email_opened_trend_90d",
            "change in email opened events: last 90 days vs the 90 days before",
        ),
        (
            "ev_like_share_180d",
            "share of likes among all interactions in the last 180 days",
        ),
        ("ev_deal_won_amount_30d", "amount of deal won events in the last 30 days"),
        ("ev_deal_won_amount_total", "amount of deal won events in total"),
        ("ev_like_per_seat_90d", "likes per seat in the last 90 days"),
        ("ev_other_30d", "events of other types in the last 30 days"),
        ("ev_share_30d", "share events in the last 30 days"),  # a social "share" event type
        ("ratio_dislike_per_like_30d", "dislikes per like in the last 30 days"),
        (
            "ratio_support_ticket_per_visit_90d",
            "support tickets per visit in the last 90 days",
        ),
        ("active_days_30d", "days with activity in the last 30 days"),
        ("attr_channel", "customer attribute: channel"),
        ("attr_date_of_birth_days", "days since date of birth"),
        ("renewal_in_horizon", "subscription renews within the prediction horizon"),
        ("bill_period_months", "billing period of the subscription (months)"),
        ("plan_price", "price due at the next renewal"),
        ("seats", "seats on the subscription"),
        ("mrr_per_seat", "monthly recurring revenue per seat"),
        ("discount", "subscription discount"),
        ("share_visit_365d", "share of visits in the last 365 days"),
        ("events_total", "interactions in total"),
        ("activity_trend", "trend in activity"),
    ],
)
def test_readable_names_of_generated_features(column, readable):
    assert readable_feature_name(column) == readable


@pytest.mark.parametrize(
    ("column", "parsed"),
    [
        ("ev_add_contact_30d", FeatureName("event_count", "add_contact", 30)),
        ("ev_add_contact_total", FeatureName("event_count", "add_contact")),
        ("ev_a_per_day_30d", FeatureName("event_rate", "a", 30, kind="per_day")),
        ("ev_a_per_day_total", FeatureName("event_rate", "a", None, kind="per_day")),
        ("ev_a_per_active_day_7d", FeatureName("event_rate", "a", 7, kind="per_active_day")),
        ("ev_a_per_seat_7d", FeatureName("event_rate", "a", 7, kind="per_seat")),
        ("ev_a_days_since_last", FeatureName("event_days_since_last", "a")),
        ("ev_a_trend_90d", FeatureName("event_trend", "a", 90)),
        ("ev_a_share_180d", FeatureName("event_share", "a", 180)),
        ("ev_a_amount_30d", FeatureName("event_amount", "a", 30)),
        ("ev_a_amount_total", FeatureName("event_amount", "a")),
        ("ev_t_3d_view_30d", FeatureName("event_count", "t_3d_view", 30)),
        ("ratio_dislike_per_like_30d", FeatureName("event_ratio", "dislike", 30, per="like")),
        ("attr_channel", FeatureName("attribute", "channel")),
        ("attr_date_of_birth_days", FeatureName("attribute_days", "date_of_birth")),
        ("active_days_90d", FeatureName("windowed", "active_days", 90)),
        ("days_since_last_visit", FeatureName("days_since_last", "visit")),
        ("share_visit_365d", FeatureName("share", "visit", 365)),
        ("spend_trend", FeatureName("trend", "spend")),
        ("spend_total", FeatureName("total", "spend")),
        ("recency_days", None),
        ("plan", None),
    ],
)
def test_one_parser_takes_feature_names_apart(column, parsed):
    assert parse_feature_name(column) == parsed
