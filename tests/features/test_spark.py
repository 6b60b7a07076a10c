"""The Spark engine gives the local engine's feature and snapshot tables, for any bucketing.

One SparkSession (``local[2]``, 4 shuffle partitions, no UI, quiet logs) serves the module; the
CRM data is generated once, written as Parquet the way the generator writes it (nanosecond
timestamps, dictionary-encoded strings) and read back by Spark, so the whole input path is the
real one. Skipped when PySpark or Java is missing.
"""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - depends on the machine
    pytest.skip("the Spark engine needs Java 17 on PATH", allow_module_level=True)

from pyspark.sql import types as T

from features.config import FeatureParams, LabelParams, VocabularyParams
from features.contract import DataContractError
from features.lifecycle import compute_customer_features
from features.snapshots import build_features, build_snapshots, stats_key
from features.spark import (
    EVENTS_PER_BUCKET,
    GLOBAL_STATS_COLUMNS,
    canonical_crm,
    check_crm,
    default_bucket_count,
    fit_global_stats_spark,
    spark_schema_of,
    spark_session,
)
from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data

FEATURE_PARAMS = FeatureParams(clv_fit_sample=400)  # below the purchasers: the sample matters
LABEL_PARAMS = LabelParams(horizon_days=60)
AS_OF = "2025-03-01"
# data end 2025-06-30: the first cutoff's window has matured, the last one's has not
SNAPSHOT_CUTOFFS = ("2024-11-01", "2025-06-01")


@pytest.fixture(scope="session")
def spark():
    session = spark_session("local[2]", shuffle_partitions=4, log_level="ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def crm_data():
    return generate_crm_data(GeneratorParams(n_customers=700, seed=11, activity_scale=0.5))


@pytest.fixture(scope="module")
def spark_crm(spark, crm_data, tmp_path_factory):
    paths = write_crm_data(crm_data, tmp_path_factory.mktemp("crm"))
    return canonical_crm(
        spark.read.parquet(str(paths["events"])),
        spark.read.parquet(str(paths["customers"])),
        spark.read.parquet(str(paths["subscriptions"])),
    )


def assert_same_table(local: pd.DataFrame, distributed: pd.DataFrame) -> None:
    """Same columns in the same order, same rows, every value equal (floats within 1e-9)."""
    assert list(distributed.columns) == list(local.columns)
    assert len(distributed) == len(local)
    for column in local.columns:
        expected, got = local[column], distributed[column]
        if pd.api.types.is_float_dtype(expected):
            np.testing.assert_allclose(
                got.to_numpy(dtype=np.float64),
                expected.to_numpy(dtype=np.float64),
                rtol=1e-9,
                atol=1e-12,
                equal_nan=True,
                err_msg=column,
            )
        else:
            as_object = expected.astype(object).where(expected.notna(), None)
            got_object = got.astype(object).where(got.notna(), None)
            assert got_object.tolist() == as_object.tolist(), column
            assert got.dtype == expected.dtype, column


# --------------------------------------------------------------------------------------------
# same results as the local engine
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_features(crm_data):
    return build_features(
        crm_data.events,
        AS_OF,
        customers=crm_data.customers,
        subscriptions=crm_data.subscriptions,
        params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
    )


@pytest.mark.parametrize("n_buckets", [3, 17])
def test_features_match_local_engine_for_any_bucket_count(spark_crm, local_features, n_buckets):
    from features.spark import build_features_spark

    table, stats = local_features
    with build_features_spark(
        spark_crm, AS_OF, params=FEATURE_PARAMS, label_params=LABEL_PARAMS, n_buckets=n_buckets
    ) as result:
        distributed = result.frame.toPandas()
        assert result.n_buckets == n_buckets
    assert distributed.columns[0] == "customer_id"
    distributed = distributed.set_index("customer_id").sort_index()
    assert_same_table(table, distributed)
    assert distributed.index.tolist() == table.index.tolist()
    assert result.stats[AS_OF].to_dict() == stats.to_dict()


def test_events_only_features_match_local_engine(spark_crm, crm_data):
    """Without customers and subscriptions tables phase 1 runs per bucket without a cogroup."""
    from features.spark import SparkCRM, build_features_spark

    table, _ = build_features(
        crm_data.events, AS_OF, params=FEATURE_PARAMS, label_params=LABEL_PARAMS
    )
    events_only = SparkCRM(events=spark_crm.events)
    with build_features_spark(
        events_only, AS_OF, params=FEATURE_PARAMS, label_params=LABEL_PARAMS, n_buckets=3
    ) as result:
        distributed = result.frame.toPandas().set_index("customer_id").sort_index()
    assert_same_table(table, distributed)


def test_buckets_reach_phase_one_as_categoricals_with_the_rows_of_strings(crm_data):
    """Arrow strings become Categoricals of the values present; phase 1 gives the same rows."""
    import pyarrow as pa

    from features.spark import _categorical_pandas, _Phase1Spec

    events = crm_data.events[["customer_id", "timestamp", "event_type", "amount", "category"]]
    events = events.astype({c: object for c in ("customer_id", "event_type", "category")})
    events["timestamp"] = events["timestamp"].to_numpy().view(np.int64)
    bucket = events[events["customer_id"].isin(events["customer_id"].unique()[::3])]
    table = pa.Table.from_pandas(bucket, preserve_index=False)
    table = pa.Table.from_batches(table.to_batches(max_chunksize=500))  # several chunks
    categorical = _categorical_pandas(table)
    for column in ("customer_id", "event_type", "category"):
        values = categorical[column]
        assert isinstance(values.dtype, pd.CategoricalDtype), column
        assert values.cat.categories.tolist() == bucket[column].dropna().unique().tolist()
        assert values.astype(object).where(values.notna(), None).tolist() == (
            bucket[column].where(bucket[column].notna(), None).tolist()
        )
    assert categorical["timestamp"].dtype == np.int64
    spec = _Phase1Spec(
        cutoffs=(pd.Timestamp(AS_OF),),
        params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        customer_columns=None,
        subscription_columns=None,
        data_end=pd.Timestamp("2025-07-01"),
    )
    from_strings = spec.compute(bucket, None)
    assert len(from_strings) > 0
    pd.testing.assert_frame_equal(spec.compute(categorical, None), from_strings)


def test_given_statistics_are_applied_instead_of_fitted(spark_crm, crm_data, local_features):
    from features.spark import build_features_spark

    _, training_stats = local_features
    later = "2025-05-01"
    table, used = build_features(
        crm_data.events,
        later,
        customers=crm_data.customers,
        subscriptions=crm_data.subscriptions,
        params=FEATURE_PARAMS,
        stats=training_stats,
        label_params=LABEL_PARAMS,
    )
    with build_features_spark(
        spark_crm, later, params=FEATURE_PARAMS, label_params=LABEL_PARAMS, stats=training_stats
    ) as result:
        distributed = result.frame.toPandas().set_index("customer_id").sort_index()
    assert result.stats == {stats_key(later): training_stats}
    assert_same_table(table, distributed)


def test_snapshots_with_labels_match_local_engine(spark_crm, crm_data):
    from features.spark import build_snapshots_spark

    data_end = pd.Timestamp("2025-07-01")
    table, stats = build_snapshots(
        crm_data.events,
        SNAPSHOT_CUTOFFS,
        customers=crm_data.customers,
        subscriptions=crm_data.subscriptions,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        data_end=data_end,
    )
    with build_snapshots_spark(
        spark_crm,
        SNAPSHOT_CUTOFFS,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        data_end=data_end,
        n_buckets=5,
    ) as result:
        distributed = result.frame.toPandas()
    order = ["cutoff", "customer_id"]
    expected = table.sort_values(order).reset_index(drop=True)
    distributed = distributed.sort_values(order).reset_index(drop=True)
    assert_same_table(expected, distributed)
    assert {k: v.to_dict() for k, v in result.stats.items()} == {
        k: v.to_dict() for k, v in stats.items()
    }
    assert distributed["churn_label"].notna().any()  # the matured cutoff has labels


def test_shared_stats_cutoff_matches_local_engine(spark_crm, crm_data):
    from features.spark import build_snapshots_spark

    # (a stats cutoff whose CLV fit scores fast: some fits send BG/NBD's p_alive to quadrature)
    cutoffs = ("2025-03-01", "2025-04-01")
    table, stats = build_snapshots(
        crm_data.events,
        cutoffs,
        customers=crm_data.customers,
        subscriptions=crm_data.subscriptions,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        stats_cutoff="2025-03-01",
    )
    with build_snapshots_spark(
        spark_crm,
        cutoffs,
        feature_params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        stats_cutoff="2025-03-01",
        n_buckets=4,
    ) as result:
        distributed = result.frame.toPandas()
    order = ["cutoff", "customer_id"]
    assert_same_table(
        table.sort_values(order).reset_index(drop=True),
        distributed.sort_values(order).reset_index(drop=True),
    )
    assert result.stats["2025-03-01"] == result.stats["2025-04-01"] == stats["2025-03-01"]


def test_stats_cutoff_after_a_snapshot_is_refused(spark_crm):
    from features.spark import build_snapshots_spark

    with pytest.raises(ValueError, match="leak"):
        build_snapshots_spark(
            spark_crm,
            ["2025-01-01"],
            feature_params=FEATURE_PARAMS,
            label_params=LABEL_PARAMS,
            data_end="2025-07-01",
            stats_cutoff="2025-02-01",
            n_buckets=2,
        )


def test_sampled_statistics_do_not_depend_on_partitioning(spark, crm_data):
    phase1 = compute_customer_features(
        crm_data.events,
        AS_OF,
        customers=crm_data.customers,
        subscriptions=crm_data.subscriptions,
        params=FEATURE_PARAMS,
    ).reset_index()
    frame = spark.createDataFrame(phase1[["cutoff", "customer_id", *GLOBAL_STATS_COLUMNS]])
    cutoff = [pd.Timestamp(AS_OF)]
    fitted = [
        fit_global_stats_spark(
            frame.repartition(n, "customer_id"), cutoff, FEATURE_PARAMS, max_stats_customers=250
        )[AS_OF]
        for n in (1, 7)
    ]
    assert fitted[0] == fitted[1]
    assert 150 < fitted[0].n_customers < 350  # about the requested sample, not everyone
    assert len(phase1) > 500


# --------------------------------------------------------------------------------------------
# optional columns carried to phase 1: subscription terms, customer attributes, vocabulary
# --------------------------------------------------------------------------------------------


def _both_engines(spark, directory, events, customers=None, subscriptions=None, renames=None):
    """Write the tables as Parquet (as pandas writes them); the local engine gets pandas'
    reading of the files, Spark its own (``renames``: per table, columns renamed in Spark
    before ``canonical_crm``, e.g. to the contract's aliases)."""
    directory.mkdir(parents=True, exist_ok=True)
    local, frames = {}, {}
    for name, table in (
        ("events", events),
        ("customers", customers),
        ("subscriptions", subscriptions),
    ):
        if table is None:
            local[name], frames[name] = None, None
            continue
        path = directory / f"{name}.parquet"
        table.to_parquet(path, index=False)
        local[name] = pd.read_parquet(path)
        frame = spark.read.parquet(str(path))
        if renames and name in renames:
            frame = frame.withColumnsRenamed(renames[name])
        frames[name] = frame
    crm = canonical_crm(frames["events"], frames["customers"], frames["subscriptions"])
    return local, crm


def _spark_features(crm, cutoff, params, label_params, n_buckets, stats=None):
    from features.spark import build_features_spark

    with build_features_spark(
        crm, cutoff, params=params, label_params=label_params, n_buckets=n_buckets, stats=stats
    ) as result:
        return result.frame.toPandas().set_index("customer_id").sort_index(), result.stats


@pytest.fixture(scope="module")
def term_subscriptions(crm_data):
    """The generated subscriptions with the scheduled term and seats of a B2B export: billing
    every 1, 6 or 12 months (unknown on some rows: inferred from term_end, else monthly),
    term_end on some rows (passed or not at the cutoff), seats, discount and price."""
    subscriptions = crm_data.subscriptions.copy()
    i = np.arange(len(subscriptions))
    period = np.array([1.0, 6.0, 12.0])[i % 3]
    period[i % 5 == 4] = np.nan
    subscriptions["bill_period_months"] = period
    term_months = np.nan_to_num(period, nan=12.0)
    term_end = subscriptions["start_date"] + pd.to_timedelta(term_months * 30.44, unit="D")
    subscriptions["term_end"] = term_end.where(i % 4 == 0)
    subscriptions["seats"] = np.where(i % 6 == 5, np.nan, (i % 7 + 1).astype(np.float64))
    subscriptions["price"] = np.where(i % 8 == 0, subscriptions["mrr"] * term_months * 0.9, np.nan)
    subscriptions["discount"] = np.where(i % 3 == 1, 0.2, 0.0)
    return subscriptions


def test_subscription_terms_and_seats_match_local_engine(
    spark, crm_data, term_subscriptions, tmp_path
):
    """bill_period_months, term_end, seats, price and discount reach phase 1 (under the
    contract's aliases ``renewal_date`` and ``units`` too), so renewals are not monthly."""
    labels = LabelParams(horizon_days=120, training_horizon_days=60)
    local, crm = _both_engines(
        spark,
        tmp_path,
        crm_data.events,
        crm_data.customers,
        term_subscriptions,
        renames={"subscriptions": {"term_end": "renewal_date", "seats": "units"}},
    )
    assert {"term_end", "seats", "bill_period_months"} <= set(crm.subscriptions.columns)
    table, stats = build_features(
        local["events"],
        AS_OF,
        customers=local["customers"],
        subscriptions=local["subscriptions"],
        params=FEATURE_PARAMS,
        label_params=labels,
    )
    distributed, fitted = _spark_features(crm, AS_OF, FEATURE_PARAMS, labels, n_buckets=3)
    assert_same_table(table, distributed)
    assert fitted[AS_OF].to_dict() == stats.to_dict()
    # the data exercises what was carried: yearly and half-yearly renewals, seats, discounts
    assert {1.0, 6.0, 12.0} <= set(table["bill_period_months"].dropna())
    assert table["days_to_renewal"].max() > 62  # not a monthly renewal
    assert table["renewal_in_horizon"].eq(0).any() and table["renewal_in_horizon"].eq(1).any()
    for column in ("seats", "mrr_per_seat", "discount", "plan_price"):
        assert table[column].notna().any(), column


@pytest.fixture(scope="module")
def attribute_customers(crm_data):
    """The generated customers with attribute columns of every type phase 1 reads (ISO-date
    text and identifier-like text are settled by validation: tests/features/test_validation)."""
    customers = crm_data.customers.copy()
    n = len(customers)
    i = np.arange(n)
    customers["employees"] = np.where(i % 9 == 0, np.nan, (i % 40) * 12.5)
    customers["headcount"] = (i % 13).astype(np.int64)
    customers["is_partner"] = i % 4 == 0
    customers["segment"] = pd.Series(["smb", "mid", "enterprise", None])[i % 4].to_numpy()
    # 300 values over 700 rows: in a bucket of ~230 customers most values are distinct, which
    # must not matter (phase 1 reads text as text, whatever rows it is given)
    customers["region_code"] = [f"r{k % 300:03d}" for k in i]
    signed = pd.Timestamp("2023-06-01") + pd.to_timedelta(i * 1.7, unit="D")  # past AS_OF too
    customers["contract_signed"] = pd.Series(signed).where(i % 5 != 0).to_numpy()
    customers["renewal_day"] = [  # datetime.date objects: Parquet date32, Spark DateType
        (dt.date(2024, 1, 1) + dt.timedelta(days=int(k) % 700)) if k % 6 else None for k in i
    ]
    customers["churned_at"] = signed  # written after the fact: excluded by the config
    return customers


def test_customer_attributes_match_local_engine(spark, crm_data, attribute_customers, tmp_path):
    """Numbers, flags, text, datetime64 and date columns: Spark reads the Parquet file, the
    local engine its validated customers table (the date column becomes datetime64 there)."""
    from features.config import AttributeParams
    from features.validation import validate_customers

    params = FEATURE_PARAMS.model_copy(
        update={"attributes": AttributeParams(exclude=("churned_at",))}
    )
    local, crm = _both_engines(spark, tmp_path, crm_data.events, attribute_customers)
    validated = validate_customers(local["customers"], now=pd.Timestamp("2026-01-01"))
    assert validated.report.problem("identifier_like_columns") is None
    table, stats = build_features(
        local["events"],
        AS_OF,
        customers=validated.clean,
        params=params,
        label_params=LABEL_PARAMS,
    )
    expected = {
        "attr_employees",
        "attr_headcount",
        "attr_is_partner",
        "attr_segment",
        "attr_region_code",
        "attr_contract_signed_days",
        "attr_renewal_day_days",
    }
    attributes = {c for c in table.columns if c.startswith("attr_")}
    assert attributes == expected  # no attr_churned_at (excluded)
    assert table["attr_contract_signed_days"].isna().any()  # signed after the cutoff: unknown
    assert table["attr_region_code"].notna().sum() > 500
    for n_buckets in (3, 11):
        distributed, fitted = _spark_features(crm, AS_OF, params, LABEL_PARAMS, n_buckets)
        assert_same_table(table, distributed)
        assert fitted[AS_OF].to_dict() == stats.to_dict()


def test_attributes_travel_by_type(spark, attribute_customers, tmp_path):
    """Which attributes ship is the config's choice; how, their type: no look at the data."""
    from features.spark import _attribute_columns, _canonical_customers

    path = tmp_path / "customers.parquet"
    attribute_customers.to_parquet(path, index=False)
    customers = _canonical_customers(spark.read.parquet(str(path)))
    types = {f.name: type(f.dataType) for f in customers.schema.fields}
    assert types["employees"] is types["headcount"] is types["is_partner"] is T.DoubleType
    assert types["segment"] is types["region_code"] is T.StringType
    assert types["contract_signed"] is types["renewal_day"] is T.LongType  # int64 ns
    declared = _attribute_columns(customers, FeatureParams())
    assert declared == (
        "employees",
        "headcount",
        "is_partner",
        "segment",
        "region_code",
        "contract_signed",
        "renewal_day",
        "churned_at",
    )
    only = FeatureParams.model_validate({"attributes": {"include": ["segment"]}})
    assert _attribute_columns(customers, only) == ("segment",)


def test_phase1_attributes_are_partition_safe(crm_data, attribute_customers):
    """Locally: phase 1 on two halves of the customers (with their events), concatenated, is
    phase 1 on all of them, with a 300-value text column over 700 customers (identifier-like
    within either half: 300 distinct values in 350 rows) and a datetime column."""
    customers = attribute_customers
    half = pd.Series(np.arange(len(customers)) < len(customers) // 2)  # 300 values in 350 rows
    whole = compute_customer_features(
        crm_data.events, AS_OF, customers=customers, params=FEATURE_PARAMS
    )
    parts = []
    for part in (half, ~half):
        chosen = customers[part.to_numpy()].reset_index(drop=True)
        mine = crm_data.events["customer_id"].astype(str).isin(chosen["customer_id"].astype(str))
        events = crm_data.events[mine.to_numpy()].reset_index(drop=True)
        parts.append(
            compute_customer_features(events, AS_OF, customers=chosen, params=FEATURE_PARAMS)
        )
    halves = pd.concat(parts)
    assert {"attr_region_code", "attr_contract_signed_days"} <= set(whole.columns)
    assert halves["attr_region_code"].notna().sum() == whole["attr_region_code"].notna().sum()
    combined = halves.loc[whole.index]
    assert_same_table(whole.reset_index(), combined.reset_index())


@pytest.fixture(scope="module")
def vocabulary_events(crm_data):
    """The generated events plus an export's own types: ``like`` (from visits) and
    ``add_contact`` (from purchases, with their amounts), both before and after AS_OF."""
    events = crm_data.events
    likes = events[events["event_type"] == "visit"].iloc[::3].copy()
    likes["event_type"] = "like"
    contacts = events[events["event_type"] == "purchase"].iloc[::2].copy()
    contacts["event_type"] = "add_contact"
    contacts["timestamp"] = contacts["timestamp"] + pd.Timedelta(hours=1)
    combined = pd.concat([events, likes, contacts], ignore_index=True)
    combined["event_type"] = combined["event_type"].astype(str).astype("category")
    return combined.sort_values(["timestamp", "customer_id"], kind="stable").reset_index(drop=True)


VOCABULARY = VocabularyParams(min_customers=1, min_events=1, ratios=(("like", "add_contact"),))


@pytest.mark.parametrize("count_weight", ["rows", "quantity"])
def test_event_vocabulary_columns_match_local_engine(
    spark, crm_data, vocabulary_events, term_subscriptions, tmp_path, count_weight
):
    """Non-canonical types get the same ev_* / ratio_* / per-seat columns on both engines
    (``quantity`` reaches phase 1 when the vocabulary counts it)."""
    vocabulary = VOCABULARY.model_copy(update={"count_weight": count_weight})
    params = FEATURE_PARAMS.model_copy(update={"vocabulary": vocabulary})
    local, crm = _both_engines(
        spark, tmp_path, vocabulary_events, crm_data.customers, term_subscriptions
    )
    table, stats = build_features(
        local["events"],
        AS_OF,
        customers=local["customers"],
        subscriptions=local["subscriptions"],
        params=params,
        label_params=LABEL_PARAMS,
    )
    for column in (
        "ev_like_30d",
        "ev_add_contact_per_day_90d",
        "ev_add_contact_amount_30d",
        "ev_like_per_seat_30d",
        "ratio_like_per_add_contact_30d",
    ):
        assert column in table.columns and table[column].notna().any(), column
    assert set(stats.event_vocabulary().slugs) >= {"like", "add_contact"}
    distributed, fitted = _spark_features(crm, AS_OF, params, LABEL_PARAMS, n_buckets=4)
    assert_same_table(table, distributed)
    assert fitted[AS_OF].to_dict() == stats.to_dict()
    if count_weight == "quantity":  # purchases of several items count as several events
        by_rows = FEATURE_PARAMS.model_copy(update={"vocabulary": VOCABULARY})
        rows, _ = build_features(local["events"], AS_OF, params=by_rows, label_params=LABEL_PARAMS)
        assert table["ev_add_contact_total"].sum() > rows["ev_add_contact_total"].sum()


def test_given_statistics_bring_their_vocabulary(spark, crm_data, vocabulary_events, tmp_path):
    """Scoring with a training run's statistics computes the trained ev_* columns: a type
    first seen after the training cutoff is counted as ``other``, not given columns."""
    params = FEATURE_PARAMS.model_copy(update={"vocabulary": VOCABULARY})
    events = vocabulary_events
    early = (events["event_type"] == "add_contact") & (events["timestamp"] < pd.Timestamp(AS_OF))
    events = events[~early].reset_index(drop=True)  # add_contact only from AS_OF on
    local, crm = _both_engines(spark, tmp_path, events, crm_data.customers)
    _, training_stats = build_features(
        local["events"],
        AS_OF,
        customers=local["customers"],
        params=params,
        label_params=LABEL_PARAMS,
    )
    assert "add_contact" not in training_stats.event_vocabulary().slugs
    later = "2025-05-01"
    table, _ = build_features(
        local["events"],
        later,
        customers=local["customers"],
        params=params,
        stats=training_stats,
        label_params=LABEL_PARAMS,
    )
    distributed, used = _spark_features(
        crm, later, params, LABEL_PARAMS, n_buckets=3, stats=training_stats
    )
    assert used == {stats_key(later): training_stats}
    assert not any(c.startswith("ev_add_contact") for c in distributed.columns)
    assert distributed["ev_other_30d"].gt(0).any()  # add_contact counted as other
    assert_same_table(table, distributed)
    refitted, _ = _spark_features(crm, later, params, LABEL_PARAMS, n_buckets=3)
    assert "ev_add_contact_30d" in refitted.columns  # what a fresh fit would have named


# --------------------------------------------------------------------------------------------
# canonical input and its checks
# --------------------------------------------------------------------------------------------


def test_every_time_type_becomes_exact_nanoseconds(spark):
    stamp = dt.datetime(2024, 3, 5, 7, 8, 9, 123456)
    schema = T.StructType(
        [
            T.StructField("customer_id", T.LongType()),
            T.StructField("timestamp", T.TimestampNTZType()),
            T.StructField("event_type", T.StringType()),
        ]
    )
    ntz = spark.createDataFrame([(7, stamp, "visit")], schema)
    expected = pd.Timestamp(stamp).value
    crm = canonical_crm(ntz)
    row = crm.events.first()
    assert row["customer_id"] == "7"  # ids are strings in the contract
    assert row["timestamp"] == expected
    aware = ntz.selectExpr("customer_id", "cast(timestamp as timestamp) as timestamp", "event_type")
    assert canonical_crm(aware).events.first()["timestamp"] == expected
    as_long = spark.createDataFrame(
        [("a", expected + 1, "visit")], "customer_id string, timestamp long, event_type string"
    )
    assert canonical_crm(as_long).events.first()["timestamp"] == expected + 1
    customers = spark.createDataFrame(
        [("a", dt.date(2024, 1, 2))], "customer_id string, signup_date date"
    )
    signup = canonical_crm(as_long, customers).customers.first()["signup_date"]
    assert signup == pd.Timestamp("2024-01-02").value


def test_string_timestamps_are_refused(spark):
    raw = spark.createDataFrame(
        [("a", "2024-01-01 10:00", "visit")],
        "customer_id string, timestamp string, event_type string",
    )
    with pytest.raises(DataContractError, match="events.timestamp is string"):
        canonical_crm(raw)


def test_missing_required_column_is_a_contract_error(spark):
    raw = spark.createDataFrame([("a", "visit")], "customer_id string, event_type string")
    with pytest.raises(DataContractError, match=r"lacks required column\(s\) \['timestamp'\]"):
        canonical_crm(raw)


def _events(spark, rows):
    return spark.createDataFrame(
        rows, "customer_id string, timestamp timestamp_ntz, event_type string"
    )


def test_rows_phase_one_cannot_read_are_refused_with_counts(spark):
    day = dt.datetime(2024, 1, 1)
    events = _events(
        spark,
        [(None, day, "visit"), (None, day, "visit"), ("a", None, "visit"), ("a", day, "visit")],
    )
    with pytest.raises(DataContractError) as error:
        check_crm(canonical_crm(events))
    assert "2 events without customer_id" in str(error.value)
    assert "1 events without timestamp" in str(error.value)


def test_events_of_unknown_customers_are_refused_when_quarantining(spark):
    day = dt.datetime(2024, 1, 1)
    events = _events(spark, [("a", day, "visit"), ("b", day, "visit"), ("c", day, "purchase")])
    customers = spark.createDataFrame([("a",)], "customer_id string")
    crm = canonical_crm(events, customers)
    with pytest.raises(DataContractError, match="2 customer ids absent"):
        check_crm(crm, unknown_customers="quarantine")
    assert check_crm(crm, unknown_customers="keep").n_events == 3


def test_check_reports_size_and_data_end(spark):
    events = _events(
        spark,
        [("a", dt.datetime(2024, 1, 1, 5), "visit"), ("b", dt.datetime(2024, 2, 3, 23), "visit")],
    )
    summary = check_crm(canonical_crm(events))
    assert summary.n_events == 2
    assert summary.last_event == pd.Timestamp("2024-02-03 23:00")
    assert summary.data_end == pd.Timestamp("2024-02-04")


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------


@given(
    n_events=st.integers(min_value=0, max_value=10**11),
    parallelism=st.integers(min_value=1, max_value=4096),
)
def test_bucket_count_bounds_bucket_size_and_keeps_cores_busy(n_events, parallelism):
    buckets = default_bucket_count(n_events, parallelism)
    assert buckets >= 2 * parallelism
    assert n_events / buckets <= EVENTS_PER_BUCKET


def test_schema_of_a_pandas_frame():
    frame = pd.DataFrame(
        {
            "customer_id": ["a"],
            "cutoff": [pd.Timestamp("2024-01-01")],
            "events_total": np.array([3], dtype=np.int64),
            "is_active": [True],
            "recency_days": [1.5],
            "plan": pd.Categorical(["pro"]),
        }
    )
    schema = spark_schema_of(frame)
    assert [f.dataType for f in schema.fields] == [
        T.StringType(),
        T.TimestampNTZType(),
        T.LongType(),
        T.BooleanType(),
        T.DoubleType(),
        T.StringType(),
    ]
    with pytest.raises(TypeError, match="no Spark equivalent"):
        spark_schema_of(pd.DataFrame({"span": pd.to_timedelta([1], unit="D")}))


def test_zero_rows_give_the_schema_of_a_real_bucket(crm_data):
    """The output schemas are derived from zero-row inputs: their dtypes must be a bucket's."""
    from features.spark import _apply_stats_batch, _Phase1Spec

    events = crm_data.events[["customer_id", "timestamp", "event_type", "amount", "category"]]
    events = events.astype({c: object for c in ("customer_id", "event_type", "category")})
    events["timestamp"] = events["timestamp"].to_numpy().view(np.int64)
    spec = _Phase1Spec(
        cutoffs=(pd.Timestamp("2024-11-01"), pd.Timestamp(AS_OF)),
        params=FEATURE_PARAMS,
        label_params=LABEL_PARAMS,
        customer_columns=None,
        subscription_columns=None,
        data_end=pd.Timestamp("2025-07-01"),
    )
    real, empty = spec.compute(events, None), spec.compute(events.iloc[:0], None)
    assert len(real) > 0 and len(empty) == 0
    assert real.dtypes.to_dict() == empty.dtypes.to_dict()
    stats = {
        stats_key(c): build_features(crm_data.events, c, params=FEATURE_PARAMS)[1]
        for c in spec.cutoffs
    }
    applied = _apply_stats_batch(real, stats, FEATURE_PARAMS)
    applied_empty = _apply_stats_batch(empty, stats, FEATURE_PARAMS)
    assert applied.dtypes.to_dict() == applied_empty.dtypes.to_dict()


# --------------------------------------------------------------------------------------------
# distributed batch scoring: the local risk list, row for row
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_config(tmp_path_factory):
    """Generated data as Parquet files and a project config on them (fast training settings)."""
    from pipelines.config import load_config

    root = tmp_path_factory.mktemp("flows")
    data = generate_crm_data(GeneratorParams(n_customers=500, seed=21, activity_scale=0.5))
    paths = write_crm_data(data, root / "data")
    overrides = {
        "data.events": {"path": str(paths["events"])},
        "data.customers": {"path": str(paths["customers"])},
        "data.subscriptions": {"path": str(paths["subscriptions"])},
        "data.quarantine_dir": str(root / "quarantine"),
        "output_dir": str(root / "out"),
        "features.clv_fit_sample": 300,
        "cutoffs.count": 4,
        "cutoffs.every_days": 45,
        "training.n_trials": 1,
        "training.time_budget_s": 30,
        "training.max_boosting_rounds": 40,
        "training.early_stopping_rounds": 10,
        "training.n_jobs": 1,
        "training.log_trial_runs": False,
        "training.mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "training.mlflow.artifact_location": str(root / "artifacts"),
        "training.mlflow.experiment_name": "spark-scoring",
        "serving.batch_reason_rows": 40,  # explain only the global top 40: a global choice
    }
    return load_config(None, overrides, environ={}), root


def test_features_flow_gives_the_local_summary_and_statistics(spark, flow_config):
    import json

    from pipelines.data import run_features
    from pipelines.spark_flows import run_features_spark

    cfg, root = flow_config
    as_of = dt.date(2025, 2, 1)
    local = run_features(cfg, as_of, root / "local_features.parquet")
    distributed = run_features_spark(cfg, as_of, root / "spark_features.parquet", spark=spark)
    assert distributed.pop("engine") == "spark" and distributed.pop("buckets") >= 4
    assert distributed.pop("quarantine_files") == []  # it quarantines nothing: it refuses
    for key in ("out", "stats", "quarantine_files"):
        local.pop(key)
        distributed.pop(key, None)
    assert distributed == local
    table = pd.read_parquet(root / "spark_features.parquet")
    assert table.columns[0] == "customer_id" and table.shape[1] == local["columns"]
    assert list(table.columns) == list(pd.read_parquet(root / "local_features.parquet").columns)
    assert table["customer_id"].is_unique and len(table) == local["customers"]
    stats = [
        json.loads((root / f"{name}_features.parquet.stats.json").read_text())
        for name in ("local", "spark")
    ]
    assert stats[0] == stats[1]


def test_snapshots_flow_gives_the_local_summary(spark, flow_config):
    from pipelines.data import run_snapshots
    from pipelines.spark_flows import run_snapshots_spark

    cfg, root = flow_config
    local = run_snapshots(cfg, root / "local_snapshots.parquet")
    distributed = run_snapshots_spark(cfg, root / "spark_snapshots.parquet", spark=spark)
    assert distributed.pop("engine") == "spark" and distributed.pop("buckets") >= 1
    del distributed["out"], local["out"]
    assert distributed == local
    stats = [
        (root / f"{name}_snapshots.parquet.stats.json").read_text() for name in ("local", "spark")
    ]
    assert stats[0] == stats[1]  # what `churn train --snapshots` logs with the model


def test_snapshots_flow_labels_on_the_training_window(spark, flow_config):
    """``labels.training_horizon_days``: the Spark flow builds the local training table (grid
    ending where the training window matures, labels on it) and stores both horizons."""
    from pipelines.data import label_horizons, run_snapshots
    from pipelines.spark_flows import ATTRS_PART_FILE, run_snapshots_spark

    base, root = flow_config
    labels = base.labels.model_copy(update={"horizon_days": 273, "training_horizon_days": 92})
    cfg = base.model_copy(update={"labels": labels})
    local_out, spark_out = root / "local_training.parquet", root / "spark_training.parquet"
    local = run_snapshots(cfg, local_out)
    distributed = run_snapshots_spark(cfg, spark_out, spark=spark)
    assert distributed.pop("engine") == "spark" and distributed.pop("buckets") >= 1
    del distributed["out"], local["out"]
    assert distributed == local
    expected, got = pd.read_parquet(local_out), pd.read_parquet(spark_out)
    assert got.attrs["labels"] == expected.attrs["labels"] == label_horizons(cfg)
    assert label_horizons(cfg)["training_horizon_days"] == 92
    order = ["cutoff", "customer_id"]
    assert_same_table(
        expected.sort_values(order).reset_index(drop=True),
        got.sort_values(order).reset_index(drop=True).astype({"cutoff": "datetime64[ns]"}),
    )
    assert got["label_matured"].all()  # 273 days would not have matured for these cutoffs
    assert (spark_out / ATTRS_PART_FILE).is_file()
    assert spark.read.parquet(str(spark_out)).count() == len(got)  # the attrs file has no rows


def test_cli_runs_features_on_spark(spark, flow_config, capsys):
    import json

    from pipelines.cli import main

    cfg, root = flow_config
    out = root / "cli_features.parquet"
    config_file = root / "churn.yaml"
    config_file.write_text(
        json.dumps(cfg.model_dump(mode="json", include={"data", "features", "labels"}))
    )
    argv = ["features", "-c", str(config_file), "--as-of", "2025-02-01", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:  # the console entry point always exits
        main([*argv, "--engine", "spark"])
    assert exit_info.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["engine"] == "spark" and summary["customers"] > 0
    assert pd.read_parquet(out).shape[0] == summary["customers"]


def test_cli_refuses_an_unknown_engine(capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["features", "--as-of", "2025-02-01", "--out", "x.parquet", "--engine", "dask"])
    assert exit_info.value.code == 2
    assert "not local or spark" in capsys.readouterr().err


def test_spark_engine_refuses_csv_and_sql_sources(spark):
    from features.config import SourceConfig
    from pipelines.spark_flows import read_spark_source

    with pytest.raises(ValueError, match="reads Parquet"):
        read_spark_source(spark, SourceConfig(path="exports/events.csv"), "events")
    with pytest.raises(ValueError, match="not 'postgresql\\+psycopg' sources"):
        read_spark_source(
            spark, SourceConfig(url="postgresql+psycopg://db/crm", table="events"), "events"
        )


def test_spark_table_source_with_mappings(spark):
    from features.config import SourceConfig
    from pipelines.spark_flows import read_spark_source

    raw = spark.createDataFrame(
        [("a", dt.datetime(2024, 1, 1), "order")],
        "account string, ts timestamp_ntz, kind string",
    )
    raw.createOrReplaceTempView("crm_export_events")
    source = SourceConfig(
        url="spark",
        table="crm_export_events",
        columns={"account": "customer_id", "ts": "timestamp", "kind": "event_type"},
        event_type_mapping={"order": "purchase"},
    )
    row = read_spark_source(spark, source, "events").first()
    assert (row["customer_id"], row["event_type"]) == ("a", "purchase")


@pytest.fixture(scope="module")
def scoring_setup(flow_config):
    """Churn and up-sell champions trained on the local snapshot table into a tmp MLflow."""
    from pipelines.data import build_training_table, stats_of_test_cutoff
    from training.config import configure_mlflow
    from training.train import train

    cfg, root = flow_config
    snapshots, stats = build_training_table(cfg)
    configure_mlflow(cfg.training.mlflow)
    for task in ("churn", "upsell"):
        train(
            cfg.training,
            snapshots,
            task=task,
            data_source="test",
            progress=False,
            global_stats=stats_of_test_cutoff(cfg, snapshots, stats, task),
        )
    return cfg, root


@pytest.mark.slow
@pytest.mark.parametrize("band_source", ["test_predictions", "scored_population"])
def test_spark_scoring_writes_the_local_risk_list(spark, scoring_setup, band_source):
    import dataclasses

    from pipelines.scoring import run_score
    from pipelines.spark_flows import run_score_spark
    from serving.scoring import load_champions

    cfg, root = scoring_setup
    models = load_champions(cfg)
    assert models.band_source == "test_predictions"
    if band_source == "scored_population":  # no stored reference: bands fitted on the batch
        models = dataclasses.replace(
            models, risk_bands=None, reference_scores=None, band_source="scored_population"
        )
    db_url = f"sqlite:///{root / f'risk_{band_source}.db'}"
    local_out, spark_out = root / f"local_{band_source}.parquet", root / "spark.parquet"
    local = run_score(cfg, None, local_out, db_url, "local_list", models=models)
    distributed = run_score_spark(
        cfg, None, spark_out, db_url, "spark_list", spark=spark, models=models, n_buckets=4
    )

    expected = pd.read_parquet(local_out)
    got = pd.read_parquet(spark_out).sort_values("rank").reset_index(drop=True)
    assert_same_table(expected.astype({"as_of": "datetime64[ns]"}), got.astype(expected.dtypes))
    assert 0 < expected["reasons"].ne("[]").sum() <= 40
    assert expected["cross_sell_candidates"].ne("[]").any()
    ignored = {"timings", "out", "engine", "buckets", "db_table", "service_risk_list"}
    assert {k: v for k, v in distributed.items() if k not in ignored | {"db_rows"}} == {
        k: v for k, v in local.items() if k not in ignored | {"db_rows"}
    }
    assert distributed["db_rows"] == local["db_rows"] == len(expected)
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        tables = [
            pd.read_sql(f"select * from {name} order by rank", connection).drop(columns="scored_at")
            for name in ("local_list", "spark_list")
        ]
    engine.dispose()
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=False, rtol=1e-9)


def _subscription_churn(cfg, root, subscriptions=None, name="subscriptions"):
    """The config with ``churn_definition: subscription`` (and other subscriptions)."""
    from features.config import SourceConfig

    update = {"labels": cfg.labels.model_copy(update={"churn_definition": "subscription"})}
    if subscriptions is not None:
        path = root / f"{name}.parquet"
        subscriptions.to_parquet(path, index=False)
        update["data"] = cfg.data.model_copy(update={"subscriptions": SourceConfig(path=str(path))})
    return cfg.model_copy(update=update)


@pytest.mark.slow
def test_spark_scoring_follows_subscription_churn(spark, scoring_setup):
    """Under ``churn_definition: subscription`` the risk list is the subscribers at as_of
    (``is_active``), on both engines."""
    from pipelines.scoring import run_score
    from pipelines.spark_flows import run_score_spark
    from serving.scoring import load_champions

    base, root = scoring_setup
    cfg = _subscription_churn(base, root)
    models = load_champions(cfg)
    as_of = dt.date(2025, 5, 1)
    local_out, spark_out = root / "local_subscribed.parquet", root / "spark_subscribed.parquet"
    local = run_score(cfg, as_of, local_out, models=models)
    distributed = run_score_spark(cfg, as_of, spark_out, spark=spark, models=models, n_buckets=3)

    subscriptions = pd.read_parquet(cfg.data.subscriptions.path)
    cutoff = pd.Timestamp(as_of)
    running = (subscriptions["start_date"] < cutoff) & ~(subscriptions["end_date"] < cutoff)
    subscribed = set(subscriptions.loc[running, "customer_id"].astype(str))
    expected = pd.read_parquet(local_out)
    got = pd.read_parquet(spark_out).sort_values("rank").reset_index(drop=True)
    assert set(got["customer_id"]) == subscribed == set(expected["customer_id"])
    assert_same_table(expected.astype({"as_of": "datetime64[ns]"}), got.astype(expected.dtypes))
    assert distributed["active"] == local["active"] == len(subscribed) > 0
    ignored = {"timings", "out", "engine", "buckets", "service_risk_list"}
    assert {k: v for k, v in distributed.items() if k not in ignored} == {
        k: v for k, v in local.items() if k not in ignored
    }


@pytest.mark.slow
def test_spark_scoring_with_nobody_to_score_fails_as_local(
    spark, scoring_setup, capsys, monkeypatch
):
    """Nobody subscribed at as_of (or no history at all): ``NobodyToScoreError`` with the
    local message, nothing written; ``churn score --engine spark`` exits 2 with one line."""
    import json

    from pipelines.cli import main
    from pipelines.scoring import NobodyToScoreError, run_score
    from pipelines.spark_flows import run_score_spark
    from serving.scoring import load_champions

    base, root = scoring_setup
    subscriptions = pd.read_parquet(base.data.subscriptions.path)
    subscriptions["end_date"] = subscriptions["start_date"] + pd.Timedelta(days=1)
    ended = subscriptions[subscriptions["end_date"] < pd.Timestamp("2025-05-01")]
    cfg = _subscription_churn(base, root, ended.reset_index(drop=True), name="ended")
    models = load_champions(cfg)
    messages = {}
    for as_of in (dt.date(2025, 5, 1), dt.date(2020, 1, 1)):  # nobody subscribed; no history
        out = root / f"nobody_{as_of}.parquet"
        with pytest.raises(NobodyToScoreError) as local:
            run_score(cfg, as_of, models=models)
        with pytest.raises(NobodyToScoreError) as distributed:
            run_score_spark(cfg, as_of, out, spark=spark, models=models, n_buckets=3)
        assert str(distributed.value) == str(local.value)
        assert "\n" not in str(local.value) and not out.exists()
        messages[as_of] = str(local.value)
    assert "has an active subscription" in messages[dt.date(2025, 5, 1)]
    assert "(0 with history before that date)" in messages[dt.date(2020, 1, 1)]

    monkeypatch.delenv("CHURN_SCORE_DB_URL", raising=False)
    config_file = root / "nobody.yaml"
    config_file.write_text(json.dumps(cfg.model_dump(mode="json")))
    argv = ["score", "-c", str(config_file), "--as-of", "2025-05-01", "--engine", "spark"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {messages[dt.date(2025, 5, 1)]}"]
