from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import DataContractError
from training.datasets import (
    NON_FEATURE_COLUMNS,
    FeatureSpec,
    build_task_data,
    encode_features,
    feature_columns,
    select_features,
    split_by_time,
)


def _table(cutoffs: list[str], matured: list[bool], n: int = 4) -> pd.DataFrame:
    rows = []
    for cutoff, is_matured in zip(cutoffs, matured, strict=True):
        for i in range(n):
            rows.append(
                {
                    "customer_id": f"C{i}",
                    "cutoff": pd.Timestamp(cutoff),
                    "recency_days": float(i),
                    "churn_label": float(i % 2) if is_matured else np.nan,
                    "label_matured": is_matured,
                }
            )
    return pd.DataFrame(rows)


def test_feature_columns_exclude_ids_labels_and_bookkeeping_but_keep_is_active(snapshots):
    features = feature_columns(snapshots)
    assert "is_active" in features
    assert not set(NON_FEATURE_COLUMNS) & set(features)
    assert not [c for c in features if c.endswith("_label") or c.startswith("label_")]


def test_feature_columns_reject_unknown_exclusions(snapshots):
    with pytest.raises(DataContractError, match="not_a_column"):
        feature_columns(snapshots, exclude=("not_a_column",))


@settings(max_examples=50, deadline=None)
@given(
    offsets=st.sets(st.integers(0, 2000), min_size=3, max_size=9),
    n_unmatured=st.integers(0, 2),
)
def test_time_split_never_trains_or_validates_on_a_later_cutoff(offsets, n_unmatured):
    dates = sorted(pd.Timestamp("2020-01-01") + pd.Timedelta(days=d) for d in offsets)
    n_unmatured = min(n_unmatured, len(dates) - 3)
    matured = [True] * (len(dates) - n_unmatured) + [False] * n_unmatured
    split = split_by_time(_table([str(d.date()) for d in dates], matured), "churn_label")
    assert max(split.train_cutoffs) < split.validation_cutoff < split.test_cutoff
    assert split.test_cutoff == max(d for d, m in zip(dates, matured, strict=True) if m)
    assert set(split.unusable_cutoffs) == {d for d, m in zip(dates, matured, strict=True) if not m}


def test_time_split_skips_cutoffs_whose_labels_have_not_matured(snapshots, snapshot_cutoffs):
    split = split_by_time(snapshots, "churn_label")
    assert split.test_cutoff == snapshot_cutoffs.test
    assert split.validation_cutoff == snapshot_cutoffs.validation
    assert split.train_cutoffs == snapshot_cutoffs.train
    assert split.unusable_cutoffs == (snapshot_cutoffs.unmatured,)


def test_time_split_purge_gap_keeps_label_windows_apart():
    cutoffs = [f"2024-{m:02d}-01" for m in range(1, 9)]
    split = split_by_time(_table(cutoffs, [True] * 8), "churn_label", purge_gap_days=60)
    assert split.test_cutoff - split.validation_cutoff >= pd.Timedelta(days=60)
    assert all(split.validation_cutoff - c >= pd.Timedelta(days=60) for c in split.train_cutoffs)


def test_time_split_needs_three_matured_cutoffs():
    table = _table(["2024-01-01", "2024-02-01", "2024-03-01"], [True, True, False])
    with pytest.raises(DataContractError, match="at least 3 cutoffs"):
        split_by_time(table, "churn_label")


def test_duplicated_customer_cutoff_rows_are_refused():
    table = _table(["2024-01-01", "2024-02-01", "2024-03-01"], [True] * 3)
    with pytest.raises(DataContractError, match="duplicated"):
        split_by_time(pd.concat([table, table.head(1)]), "churn_label")


def test_labels_other_than_zero_one_nan_are_refused():
    table = _table(["2024-01-01", "2024-02-01", "2024-03-01"], [True] * 3)
    table.loc[0, "churn_label"] = 2.0
    with pytest.raises(DataContractError, match="other than"):
        split_by_time(table, "churn_label")


def test_task_data_uses_only_eligible_rows_and_disjoint_validation_halves(churn_task_data):
    data = churn_task_data
    for part in ("train", "validation", "tuning", "calibration", "test"):
        assert getattr(data, part)["churn_label"].notna().all()
        assert getattr(data, part)["is_active"].all()  # churn is defined for active customers
    assert set(data.train["cutoff"]) == set(data.split.train_cutoffs)
    assert (data.test["cutoff"] == data.split.test_cutoff).all()
    tuning_ids = set(data.tuning["customer_id"])
    calibration_ids = set(data.calibration["customer_id"])
    assert not tuning_ids & calibration_ids
    assert tuning_ids | calibration_ids == set(data.validation["customer_id"])


def test_task_data_does_not_mutate_the_input(snapshots):
    before = snapshots.copy()
    build_task_data(snapshots, "upsell_label")
    pd.testing.assert_frame_equal(snapshots, before)


def test_encoding_maps_unseen_levels_to_missing_and_keeps_level_order(churn_task_data):
    spec = churn_task_data.spec
    rows = churn_task_data.test.head(3).copy()
    rows["plan"] = ["enterprise", "basic", None]
    encoded = encode_features(rows, spec)
    assert list(encoded["plan"].cat.categories) == list(spec.categorical_levels["plan"])
    assert encoded["plan"].isna().tolist() == [True, False, True]
    # is_active is 1 on every churn-eligible row, so the selection leaves it out; without the
    # selection (no label given) a boolean feature still encodes as float64
    assert "is_active" not in spec.features
    unselected = FeatureSpec.fit(churn_task_data.train, ["plan", "is_active"])
    assert encode_features(rows, unselected)["is_active"].dtype == np.float64


def test_encoding_refuses_missing_feature_columns(churn_task_data):
    rows = churn_task_data.test.drop(columns=["recency_days"])
    with pytest.raises(DataContractError, match="recency_days"):
        encode_features(rows, churn_task_data.spec)


def test_feature_spec_json_round_trip(churn_task_data):
    spec = churn_task_data.spec
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.kinds["visits_30d"] == "integer"
    assert spec.kinds["plan"] == "categorical"
    assert spec.readable_names["recency_days"] == "days since last activity"


def test_datetime_feature_columns_get_a_clear_error(snapshots):
    table = snapshots.assign(signup_date=pd.Timestamp("2023-01-01"))
    with pytest.raises(DataContractError, match="signup_date"):
        build_task_data(table, "churn_label")


def test_a_categorical_without_any_training_level_is_left_out():
    train = pd.DataFrame(
        {"plan": [None] * 50, "recency_days": np.arange(50.0), "country": ["DE", "FR"] * 25}
    )
    spec = FeatureSpec.fit(train, ["plan", "recency_days", "country"])
    assert spec.features == ("recency_days", "country")
    assert encode_features(train, spec).columns.tolist() == ["recency_days", "country"]


def _selection_table(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    strong = y * 2.0 + rng.normal(size=n)
    return pd.DataFrame(
        {
            "strong": strong,
            "strong_copy": strong.copy(),
            "weak": y * 0.3 + rng.normal(size=n),
            "noise": rng.normal(size=n),
            "constant": np.zeros(n),
            "mostly_missing": np.where(np.arange(n) == 0, 1.0, np.nan),
            "segment": np.where(y == 1, "gold", "silver").astype(object),
            "churn_label": y,
        }
    )


def test_selection_drops_near_constant_and_duplicate_columns_keeping_the_first() -> None:
    table = _selection_table()
    features = [c for c in table.columns if c != "churn_label"]
    selection = select_features(table, features, "churn_label", max_features=100)
    assert selection.kept == ["strong", "weak", "noise", "segment"]
    assert selection.dropped["strong_copy"] == "duplicate of strong on the training rows"
    assert "near-constant" in selection.dropped["constant"]
    assert "near-constant" in selection.dropped["mostly_missing"]


def test_selection_caps_by_univariate_strength_on_training_rows_only() -> None:
    table = _selection_table()
    features = ["noise", "weak", "strong", "segment"]
    kept = select_features(table, features, "churn_label", max_features=2).kept
    assert kept == ["strong", "segment"]  # table order among the chosen
    # the spec applies it, and only training rows decide: build_task_data's validation and
    # test rows never reach it
    spec = FeatureSpec.fit(table, features, label_column="churn_label", max_features=2)
    assert spec.features == ("strong", "segment")
    flipped = table.assign(churn_label=1.0 - table["churn_label"])
    assert select_features(flipped, features, "churn_label", max_features=2).kept == kept


def test_task_data_selection_ignores_validation_and_test_rows(snapshots) -> None:
    baseline = build_task_data(snapshots, "churn_label", seed=0)
    later = snapshots["cutoff"] > max(baseline.split.train_cutoffs)
    scrambled = snapshots.copy()
    numeric = [c for c in baseline.spec.numeric if c != "is_active"]
    rng = np.random.default_rng(1)
    scrambled.loc[later, numeric] = rng.permutation(scrambled.loc[later, numeric].to_numpy())
    assert build_task_data(scrambled, "churn_label", seed=0).spec == baseline.spec
