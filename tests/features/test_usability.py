"""The data-usability check run before any modelling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.config import LabelParams
from features.usability import assess_usability, count_churn_at_cutoffs

C1 = pd.Timestamp("2024-01-01")
C2 = pd.Timestamp("2024-04-01")
LABELS = LabelParams(horizon_days=30, lead_days=0, active_window_days=30)
LOW = {"min_customers": 1, "min_positives": 1, "min_negatives": 1}


def make_events(rows: list[tuple[str, pd.Timestamp, str]]) -> pd.DataFrame:
    """Clean-table shaped events from (customer, time, type) triples; purchases cost 10."""
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"])
    frame["amount"] = np.where(frame["event_type"] == "purchase", 10.0, np.nan)
    frame["customer_id"] = frame["customer_id"].astype("category")
    frame["event_type"] = frame["event_type"].astype("category")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    return frame


def days(n: float) -> pd.Timedelta:
    return pd.Timedelta(days=n)


def population(prefix: str, cutoff: pd.Timestamp, stayers: int, churners: int) -> list[tuple]:
    """Customers active just before ``cutoff``; stayers come back within the label window."""
    rows = []
    for i in range(stayers):
        rows += [
            (f"{prefix}s{i}", cutoff - days(5), "visit"),
            (f"{prefix}s{i}", cutoff + days(5), "visit"),
        ]
    for i in range(churners):
        rows += [(f"{prefix}c{i}", cutoff - days(5), "purchase")]
    return rows


def two_cutoff_history(churners_at_c2: int) -> pd.DataFrame:
    """Five churners at C1, ``churners_at_c2`` at C2, long history, label windows matured."""
    rows = population("one", C1, stayers=5, churners=5)
    rows += population("two", C2, stayers=5, churners=churners_at_c2)
    rows += [("old", C1 - days(200), "visit"), ("marker", C2 + days(60), "visit")]
    return make_events(rows)


def test_counts_active_churners_and_stayers_at_a_matured_cutoff() -> None:
    events = make_events(
        [
            ("stays", C1 - days(10), "visit"),
            ("stays", C1 + days(5), "purchase"),
            ("churns", C1 - days(10), "visit"),
            ("churns", C1 + days(5), "complaint"),  # not a qualifying event
            ("lapsed", C1 - days(60), "visit"),
            ("marker", C1 + days(100), "visit"),
        ]
    )

    counts = count_churn_at_cutoffs(events, LABELS, [C1]).iloc[0]

    assert counts["customers_with_history"] == 3
    assert counts["active_customers"] == 2
    assert (counts["churners"], counts["non_churners"]) == (1, 1)
    assert counts["matured"]


def test_an_event_at_the_cutoff_belongs_to_the_label_window_not_the_past() -> None:
    events = make_events(
        [
            ("a", C1 - days(1), "visit"),
            ("a", C1, "visit"),  # at the cutoff: counts as staying, not as history
            ("b", C1, "visit"),
            ("marker", C1 + days(100), "visit"),
        ]
    )

    counts = count_churn_at_cutoffs(events, LABELS, [C1]).iloc[0]

    assert counts["customers_with_history"] == 1 and counts["active_customers"] == 1
    assert counts["non_churners"] == 1


def test_lead_days_move_the_label_window() -> None:
    events = make_events(
        [
            ("a", C1 - days(1), "visit"),
            ("a", C1 + days(5), "visit"),  # inside the lead: does not save the customer
            ("marker", C1 + days(100), "visit"),
        ]
    )
    with_lead = LABELS.model_copy(update={"lead_days": 10})

    counts = count_churn_at_cutoffs(events, with_lead, [C1]).iloc[0]

    assert counts["churners"] == 1 and counts["non_churners"] == 0


def test_unmatured_cutoff_has_no_outcome_counts() -> None:
    events = make_events([("a", C1 - days(1), "visit"), ("a", C1 + days(10), "visit")])

    counts = count_churn_at_cutoffs(events, LABELS, [C1]).iloc[0]

    assert not counts["matured"] and counts["churners"] is None


def test_a_window_ending_at_the_end_of_observed_history_is_matured() -> None:
    # the extract covers whole days: the last event late on the window's last day
    window_end = C1 + days(LABELS.horizon_days)
    events = make_events(
        [("a", C1 - days(1), "visit"), ("a", window_end - pd.Timedelta(minutes=5), "visit")]
    )
    without = assess_usability(events, LABELS, [C1], min_customers=1)
    with_end = assess_usability(events, LABELS, [C1], min_customers=1, data_end=window_end)

    assert not without.cutoffs[0].matured
    assert with_end.cutoffs[0].matured


def test_good_data_is_usable() -> None:
    report = assess_usability(two_cutoff_history(churners_at_c2=5), LABELS, [C1, C2], **LOW)

    assert report.verdict == "usable", report.render()


def test_few_churners_at_one_cutoff_is_a_warning_with_a_recommendation() -> None:
    report = assess_usability(
        two_cutoff_history(churners_at_c2=2),
        LABELS,
        [C1, C2],
        min_customers=1,
        min_positives=3,
        min_negatives=1,
    )

    finding = report.finding("few_churners")
    assert report.verdict == "usable with warnings"
    assert finding.severity == "warning"
    assert "only 2 churners at cutoff 2024-04-01" in finding.message
    assert "add earlier cutoffs" in finding.recommendation


def test_too_few_churners_over_all_cutoffs_is_not_usable() -> None:
    report = assess_usability(
        two_cutoff_history(churners_at_c2=2),
        LABELS,
        [C1, C2],
        min_customers=1,
        min_positives=50,
        min_negatives=1,
    )

    assert report.verdict == "not usable"
    assert report.finding("few_churners").severity == "error"


def test_too_few_non_churners_is_reported() -> None:
    report = assess_usability(
        two_cutoff_history(churners_at_c2=5),
        LABELS,
        [C1, C2],
        min_customers=1,
        min_positives=1,
        min_negatives=11,
    )

    assert report.finding("few_non_churners").severity == "error"


def test_no_matured_cutoff_is_not_usable() -> None:
    events = two_cutoff_history(churners_at_c2=5)
    late = events["timestamp"].max() - days(1)

    report = assess_usability(events, LABELS, [late.normalize()], **LOW)

    assert report.verdict == "not usable"
    assert report.finding("labels_not_matured").severity == "error"


def test_an_unmatured_cutoff_next_to_matured_ones_is_only_info() -> None:
    events = two_cutoff_history(churners_at_c2=5)
    late = (events["timestamp"].max() - days(1)).normalize()

    report = assess_usability(events, LABELS, [C1, C2, late], **LOW)

    assert report.finding("labels_not_matured").severity == "info"
    assert report.cutoffs[-1].churners is None


def test_short_history_before_first_cutoff_is_a_warning() -> None:
    events = two_cutoff_history(churners_at_c2=5)
    events = events[events["customer_id"] != "old"]

    finding = assess_usability(events, LABELS, [C1, C2], **LOW).finding("history_span")

    assert finding.severity == "warning"
    assert finding.details["required_days"] == 60


def test_no_history_before_first_cutoff_is_not_usable() -> None:
    events = two_cutoff_history(churners_at_c2=5)

    report = assess_usability(events, LABELS, [C1 - days(365), C2], **LOW)

    assert report.finding("history_span").severity == "error"


def test_few_customers_at_every_cutoff_is_not_usable() -> None:
    report = assess_usability(
        two_cutoff_history(churners_at_c2=5), LABELS, [C1, C2], min_customers=500
    )

    finding = report.finding("few_customers")
    assert finding.severity == "error" and report.verdict == "not usable"


def test_qualifying_event_types_absent_from_the_data_is_not_usable() -> None:
    labels = LABELS.model_copy(update={"qualifying_event_types": ("login",)})

    report = assess_usability(two_cutoff_history(5), labels, [C1, C2], **LOW)

    assert report.finding("qualifying_events_missing").severity == "error"


def test_mostly_missing_amount_on_purchases_is_a_warning() -> None:
    events = two_cutoff_history(churners_at_c2=5).assign(amount=np.nan)

    report = assess_usability(events, LABELS, [C1, C2], **LOW)

    assert report.missing_shares["events"]["amount"] == 1.0
    assert report.finding("missing_values").details["shares"] == {"events.amount": 1.0}
    assert report.verdict == "usable with warnings"


def test_amount_missing_on_non_purchases_is_expected() -> None:
    events = two_cutoff_history(churners_at_c2=5)  # amount only on purchases

    report = assess_usability(events, LABELS, [C1, C2], **LOW)

    assert report.missing_shares["events"]["amount"] == 0.0
    assert report.finding("missing_values") is None


def test_missing_values_over_half_of_a_customers_column_warn() -> None:
    events = two_cutoff_history(churners_at_c2=5)
    customers = pd.DataFrame({"customer_id": ["one s0", "x", "y"], "country": [None, None, "FR"]})

    report = assess_usability(events, LABELS, [C1, C2], customers=customers, **LOW)

    assert "customers.country" in report.finding("missing_values").details["shares"]
    assert report.finding("customers_without_events").severity == "info"


def test_event_type_coverage_lists_absent_canonical_types() -> None:
    report = assess_usability(two_cutoff_history(5), LABELS, [C1, C2], **LOW)

    finding = report.finding("event_types_absent")
    assert "complaint" in finding.message and report.event_type_counts["visit"] > 0


def test_subscription_churn_without_subscriptions_is_not_usable() -> None:
    labels = LABELS.model_copy(update={"churn_definition": "subscription"})

    report = assess_usability(two_cutoff_history(5), labels, [C1, C2], **LOW)

    assert report.finding("subscriptions_missing").severity == "error"


def test_subscription_churn_counts_ends_within_the_window() -> None:
    labels = LABELS.model_copy(update={"churn_definition": "subscription"})
    subscriptions = pd.DataFrame(
        {
            "customer_id": pd.Categorical(["keeps", "ends", "later"]),
            "start_date": pd.to_datetime(["2023-01-01", "2023-01-01", "2024-06-01"]),
            "end_date": pd.to_datetime([None, "2024-01-15", None]),
        }
    )

    counts = count_churn_at_cutoffs(
        two_cutoff_history(5), labels, [C1], subscriptions=subscriptions
    ).iloc[0]

    assert counts["active_customers"] == 2
    assert (counts["churners"], counts["non_churners"]) == (1, 1)


def test_empty_events_are_not_usable() -> None:
    report = assess_usability(make_events([]), LABELS, [C1], **LOW)

    assert report.verdict == "not usable" and report.codes == ("no_events",)


def test_render_and_to_dict() -> None:
    report = assess_usability(two_cutoff_history(2), LABELS, [C1, C2], min_positives=3)

    text = report.render()
    as_json = json.loads(json.dumps(report.to_dict()))

    assert "NOT USABLE" in text and "2024-04-01" in text and "->" in text
    assert as_json["verdict"] == "not usable"
    assert as_json["cutoffs"][1]["churners"] == 2


def test_raw_events_with_missing_ids_are_rejected() -> None:
    events = make_events([("a", C1, "visit")])
    events["customer_id"] = pd.Categorical([None], categories=["a"])

    with pytest.raises(ValueError, match="clean"):
        assess_usability(events, LABELS, [C1], **LOW)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list("abcdef")),
            st.integers(-120, 120),
            st.sampled_from(["visit", "purchase", "complaint"]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 20),
)
def test_churners_plus_stayers_are_the_active_customers(rows, lead_days) -> None:
    events = make_events(
        [(c, C1 + days(d), t) for c, d, t in rows] + [("z", C1 + days(200), "visit")]
    )
    labels = LABELS.model_copy(update={"lead_days": lead_days})

    counts = count_churn_at_cutoffs(events, labels, [C1]).iloc[0]

    assert counts["churners"] + counts["non_churners"] == counts["active_customers"]
    assert counts["active_customers"] <= counts["customers_with_history"]


# --------------------------------------------------------------------------------------------
# one implementation: the check counts what the training table holds
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crm():
    from features.synthetic import GeneratorParams, generate_crm_data

    data = generate_crm_data(GeneratorParams(n_customers=400, seed=5))
    data_end = (data.events["timestamp"].max() + pd.Timedelta(days=1)).normalize()
    return data, data_end


SNAPSHOT_CUTOFFS = [pd.Timestamp(d) for d in ("2024-03-01", "2024-06-01", "2024-09-01")]


@pytest.mark.parametrize("definition", ["activity", "subscription"])
def test_check_counts_equal_the_labels_of_the_training_table(crm, definition) -> None:
    from features.config import FeatureParams
    from features.snapshots import build_snapshots

    data, data_end = crm
    labels = LabelParams(churn_definition=definition, horizon_days=90)
    cutoffs = [*SNAPSHOT_CUTOFFS, data_end - days(30)]  # the last one has not matured

    counts = count_churn_at_cutoffs(
        data.events,
        labels,
        cutoffs,
        data.subscriptions,
        customers=data.customers,
        data_end=data_end,
    ).set_index("cutoff")
    table, _ = build_snapshots(
        data.events,
        cutoffs,
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=FeatureParams(),
        label_params=labels,
        data_end=data_end,
    )

    for cutoff, rows in table.groupby("cutoff"):
        row = counts.loc[pd.Timestamp(cutoff)]
        assert row["customers_with_history"] == len(rows)
        assert row["active_customers"] == int(rows["is_active"].sum())
        if rows["label_matured"].all():
            assert row["churners"] == int((rows["churn_label"] == 1).sum())
            assert row["non_churners"] == int((rows["churn_label"] == 0).sum())
            assert row["churners"] > 0 and row["non_churners"] > 0
        else:
            assert pd.isna(row["churners"]) and not row["matured"]


def test_subscription_churn_counts_subscribers_without_events(crm) -> None:
    data, data_end = crm
    labels = LabelParams(churn_definition="subscription", horizon_days=90)
    no_qualifying = data.events[~data.events["event_type"].isin(["purchase", "visit"])]

    counts = count_churn_at_cutoffs(
        no_qualifying, labels, SNAPSHOT_CUTOFFS, data.subscriptions, data_end=data_end
    )

    assert (counts["active_customers"] > 0).all()
    assert (counts["churners"] + counts["non_churners"] == counts["active_customers"]).all()


# --------------------------------------------------------------------------------------------
# recommendations leave enough matured cutoffs to train on
# --------------------------------------------------------------------------------------------


def _apply(setting: dict, labels: LabelParams) -> tuple[list[pd.Timestamp], LabelParams]:
    from features.config import CutoffConfig

    grid = setting["cutoffs"]
    cutoffs = CutoffConfig(
        last=pd.Timestamp(grid["last"]).date(), count=grid["count"], every_days=grid["every_days"]
    ).resolve()
    return [pd.Timestamp(c) for c in cutoffs], labels.model_copy(update=setting.get("labels", {}))


@pytest.mark.parametrize(
    "horizon_days, cutoffs",
    [
        (90, ["2023-02-01", "2023-03-03", "2023-04-02"]),  # too little history before them
        (90, ["2025-05-01", "2025-06-01"]),  # label windows not matured
        (273, ["2024-10-01"]),  # CDNOW-like: a long horizon and one matured cutoff
        (365, ["2024-01-01", "2024-04-01"]),  # the horizon cannot mature with enough history
        (700, ["2025-01-01"]),  # matures only with less history before the cutoffs
        (850, ["2025-01-01"]),  # only a shorter training window can mature
    ],
)
def test_every_recommended_setting_leaves_three_matured_cutoffs(crm, horizon_days, cutoffs):
    from features.usability import MIN_MATURED_CUTOFFS

    data, data_end = crm
    labels = LabelParams(horizon_days=horizon_days)
    cutoffs = [pd.Timestamp(c) for c in cutoffs]

    report = assess_usability(
        data.events, labels, cutoffs, customers=data.customers, data_end=data_end, **LOW
    )

    recommended = [f for f in report.findings if "setting" in f.details]
    assert recommended, report.render()
    for finding in recommended:
        applied_cutoffs, applied_labels = _apply(finding.details["setting"], labels)
        counts = count_churn_at_cutoffs(
            data.events, applied_labels, applied_cutoffs, customers=data.customers,
            data_end=data_end,
        )  # fmt: skip
        assert counts["matured"].sum() >= MIN_MATURED_CUTOFFS, (finding.code, finding.details)
        assert f"count: {finding.details['setting']['cutoffs']['count']}" in (
            finding.recommendation
        )
        again = assess_usability(
            data.events,
            applied_labels,
            applied_cutoffs,
            customers=data.customers,
            data_end=data_end,
            **LOW,
        )
        assert again.finding("labels_not_matured") is None
        if finding.code == "history_span":
            assert again.finding("history_span") is None, again.render()


def test_a_horizon_that_cannot_mature_gets_a_shorter_training_window(crm) -> None:
    data, data_end = crm

    report = assess_usability(
        data.events, LabelParams(horizon_days=850), [pd.Timestamp("2025-01-01")],
        data_end=data_end, **LOW,
    )  # fmt: skip

    finding = report.finding("labels_not_matured")
    assert finding.severity == "error"
    assert "labels.training_horizon_days" in finding.recommendation
    assert finding.details["setting"]["labels"]["training_horizon_days"] < 850


def test_counts_use_the_training_window(crm) -> None:
    data, data_end = crm
    labels = LabelParams(horizon_days=400, training_horizon_days=90)

    report = assess_usability(data.events, labels, SNAPSHOT_CUTOFFS, data_end=data_end, **LOW)
    direct = count_churn_at_cutoffs(
        data.events, LabelParams(horizon_days=90), SNAPSHOT_CUTOFFS, data_end=data_end
    )

    assert [c.churners for c in report.cutoffs] == direct["churners"].tolist()
    assert all(c.matured for c in report.cutoffs)
    assert report.finding("training_horizon").details == {
        "training_horizon_days": 90,
        "horizon_days": 400,
    }
