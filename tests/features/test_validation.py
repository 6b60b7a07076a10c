"""Validation: canonical clean tables, quarantined rows with reasons, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import DataConfig, SourceConfig
from features.contract import DataContractError
from features.loading import RawCRM, load_crm_data, load_table
from features.validation import (
    NoUsableRowsError,
    ValidationResult,
    validate_crm_data,
    validate_customers,
    validate_events,
    validate_subscriptions,
    write_quarantine,
)

NOW = pd.Timestamp("2024-06-01")


def events_frame(**columns: list) -> pd.DataFrame:
    """A small valid events table; keyword arguments replace or add columns."""
    frame = {
        "customer_id": ["a", "a", "b"],
        "timestamp": ["2024-01-01 10:00", "2024-01-02 11:00", "2024-01-03 12:00"],
        "event_type": ["purchase", "visit", "visit"],
        "amount": [10.0, None, None],
    }
    frame.update(columns)
    return pd.DataFrame(frame)


def validate(raw: pd.DataFrame, **kwargs) -> ValidationResult:
    return validate_events(raw, now=NOW, **kwargs)


def quarantined_reasons(result: ValidationResult) -> list[str]:
    return result.quarantine["reason"].tolist()


# --- contract ------------------------------------------------------------------------------


def test_clean_events_follow_the_contract_dtypes() -> None:
    clean = validate(events_frame()).clean

    assert list(clean.columns) == [
        "customer_id",
        "timestamp",
        "event_type",
        "amount",
        "quantity",
        "category",
        "channel",
    ]
    assert isinstance(clean["customer_id"].dtype, pd.CategoricalDtype)
    assert clean["timestamp"].dtype == "datetime64[ns]"
    assert isinstance(clean["event_type"].dtype, pd.CategoricalDtype)
    assert clean["amount"].dtype == "float64" and clean["quantity"].dtype == "float64"
    assert isinstance(clean["category"].dtype, pd.CategoricalDtype)


def test_numeric_customer_ids_become_their_integer_text() -> None:
    clean = validate(events_frame(customer_id=[123.0, 123.0, 7.0])).clean

    assert list(clean["customer_id"]) == ["123", "123", "7"]


def test_missing_required_column_raises_with_mapping_hint() -> None:
    raw = events_frame().rename(columns={"customer_id": "account_id"})
    source = SourceConfig(path="events.csv", columns={"acount_id": "customer_id"})

    with pytest.raises(DataContractError) as error:
        validate(raw, source=source)

    message = str(error.value)
    assert "customer_id" in message and "account_id" in message and "mapping" in message


def test_empty_table_is_a_contract_error() -> None:
    with pytest.raises(DataContractError, match="no rows"):
        validate(events_frame().iloc[:0])


def test_no_usable_row_raises_and_keeps_the_quarantine() -> None:
    raw = events_frame(timestamp=["junk", "more junk", None])

    with pytest.raises(NoUsableRowsError) as error:
        validate(raw)

    assert len(error.value.result.quarantine) == 3
    assert isinstance(error.value, DataContractError)


def test_input_frame_is_not_mutated() -> None:
    raw = events_frame(amount=["-1", "x", None])
    before = raw.copy()

    validate(raw)

    pd.testing.assert_frame_equal(raw, before)


# --- timestamps ----------------------------------------------------------------------------


def test_unparseable_timestamp_is_quarantined() -> None:
    result = validate(events_frame(timestamp=["2024-01-01", "yesterday", "2024-01-03"]))

    assert result.quarantine["timestamp"].tolist() == ["yesterday"]
    assert "could not be parsed" in quarantined_reasons(result)[0]


def test_timestamp_format_is_honoured_day_first() -> None:
    raw = events_frame(timestamp=["05/01/2024 10:30", "06/01/2024 11:00", "13/01/2024 09:15"])
    source = SourceConfig(path="e.csv", timestamp_format="%d/%m/%Y %H:%M")

    clean = validate(raw, source=source).clean

    assert clean["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05 10:30"),
        pd.Timestamp("2024-01-06 11:00"),
        pd.Timestamp("2024-01-13 09:15"),
    ]


def test_values_not_matching_the_format_are_quarantined() -> None:
    raw = events_frame(timestamp=["05/01/2024 10:30", "2024-01-06", "13/01/2024 09:15"])
    source = SourceConfig(path="e.csv", timestamp_format="%d/%m/%Y %H:%M")

    result = validate(raw, source=source)

    assert result.quarantine["timestamp"].tolist() == ["2024-01-06"]
    assert "%d/%m/%Y %H:%M" in quarantined_reasons(result)[0]


def test_non_iso_timestamps_without_format_are_parsed_and_flagged() -> None:
    raw = events_frame(timestamp=["01/31/2024 10:30", "02/01/2024 11:00", "02/02/2024 09:15"])

    result = validate(raw)

    assert result.clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-31 10:30")
    assert result.report.problem("guessed_format_timestamp").severity == "warning"


def test_mixed_offsets_are_converted_to_utc_and_reported() -> None:
    raw = events_frame(
        timestamp=["2024-01-01 10:00+01:00", "2024-01-01 10:00+02:00", "2024-01-01 10:00Z"]
    )

    result = validate(raw)

    assert result.clean["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 09:00"),
        pd.Timestamp("2024-01-01 08:00"),
        pd.Timestamp("2024-01-01 10:00"),
    ]
    problem = result.report.problem("mixed_timezones_timestamp")
    assert problem.severity == "warning" and problem.action == "converted"
    assert problem.details == {"+00:00": 1, "+01:00": 1, "+02:00": 1}
    assert len(result.quarantine) == 0


def test_naive_values_mixed_with_offsets_are_read_in_the_source_timezone() -> None:
    raw = events_frame(timestamp=["2024-05-01 10:00+00:00", "2024-05-01 10:00", "2024-01-03"])
    source = SourceConfig(path="e.csv", timezone="Europe/Paris")

    result = validate(raw, source=source)

    assert result.clean["timestamp"].tolist() == [
        pd.Timestamp("2024-05-01 10:00"),
        pd.Timestamp("2024-05-01 08:00"),  # CEST = UTC+2
        pd.Timestamp("2024-01-02 23:00"),  # CET = UTC+1
    ]
    details = result.report.problem("mixed_timezones_timestamp").details
    assert details == {"+00:00": 1, "no offset (read as Europe/Paris)": 2}


def test_a_date_alone_is_not_mistaken_for_an_offset() -> None:
    clean = validate(events_frame(timestamp=["2024-01-05", "2024-01-06", "2024-01-07"])).clean

    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-05")


def test_dst_gap_is_shifted_and_reported() -> None:
    raw = events_frame(timestamp=["2024-03-31 02:30", "2024-03-30 02:30", "2024-03-29"])
    source = SourceConfig(path="e.csv", timezone="Europe/Paris")

    result = validate(raw, source=source)

    assert result.clean["timestamp"].iloc[0] == pd.Timestamp("2024-03-31 01:00")
    assert result.report.problem("dst_adjusted_timestamp").count == 1


def test_datetime_columns_are_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = events_frame(
        timestamp=pd.to_datetime(
            ["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-03 00:00"]
        ).tz_localize("Europe/Paris")
    )

    def no_parsing(*args, **kwargs):
        raise AssertionError("pd.to_datetime called on a datetime column")

    monkeypatch.setattr(pd, "to_datetime", no_parsing)
    clean = validate(raw).clean

    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 09:00")


def test_epoch_numbers_are_a_contract_error() -> None:
    with pytest.raises(DataContractError, match="epoch"):
        validate(events_frame(timestamp=[1_700_000_000, 1_700_000_100, 1_700_000_200]))


def test_unknown_timezone_is_a_contract_error() -> None:
    with pytest.raises(DataContractError, match="timezone"):
        validate(events_frame(), source=SourceConfig(path="e.csv", timezone="Mars/Olympus"))


def test_events_after_extraction_time_are_quarantined() -> None:
    result = validate(events_frame(timestamp=["2024-01-01", "2024-06-02", "2024-05-31"]))

    assert result.quarantine["timestamp"].tolist() == ["2024-06-02"]
    assert "in the future of the extraction time" in quarantined_reasons(result)[0]


def test_tz_aware_now_is_compared_in_utc() -> None:
    raw = events_frame(timestamp=["2024-01-01 10:00", "2024-01-01 10:30", "2024-01-01 09:00"])

    result = validate_events(raw, now=pd.Timestamp("2024-01-01 11:00", tz="Europe/Paris"))

    assert result.quarantine["timestamp"].tolist() == ["2024-01-01 10:30"]  # 11:00 CET = 10:00Z


# --- row problems --------------------------------------------------------------------------


def test_exact_duplicates_keep_the_first() -> None:
    raw = events_frame(
        customer_id=["a", "a", "a"],
        timestamp=["2024-01-01 10:00", "2024-01-01 10:00", "2024-01-01 10:00"],
        event_type=["purchase", "purchase", "visit"],
        amount=[10.0, 10.0, None],
    )

    result = validate(raw)

    assert result.quarantine.index.tolist() == [1]
    assert len(result.clean) == 2
    assert result.report.problem("duplicate_event").count == 1


def test_same_instant_written_with_different_offsets_is_a_duplicate() -> None:
    raw = events_frame(
        customer_id=["a", "a", "b"],
        timestamp=["2024-01-01 10:00+01:00", "2024-01-01 09:00Z", "2024-01-01 09:00Z"],
        event_type=["visit", "visit", "visit"],
        amount=[None, None, None],
    )

    assert validate(raw).quarantine.index.tolist() == [1]


def test_negative_amount_is_quarantined_with_a_refund_reason() -> None:
    result = validate(events_frame(amount=[-10.0, None, None]))

    assert len(result.quarantine) == 1
    assert "refund" in quarantined_reasons(result)[0]


def test_non_numeric_amount_is_quarantined_and_blank_is_missing() -> None:
    result = validate(events_frame(amount=["12.5", "twelve", " "]))

    assert result.quarantine["amount"].tolist() == ["twelve"]
    assert result.clean["amount"].iloc[0] == 12.5 and np.isnan(result.clean["amount"].iloc[1])


def test_infinite_amount_is_quarantined() -> None:
    result = validate(events_frame(amount=[np.inf, 1.0, None]))

    assert result.report.problem("non_numeric_amount").count == 1


def test_missing_customer_id_is_quarantined() -> None:
    result = validate(events_frame(customer_id=["a", None, "  "]))

    assert result.report.problem("missing_customer_id").count == 2
    assert len(result.clean) == 1


def test_non_canonical_event_types_are_kept_and_counted() -> None:
    result = validate(events_frame(event_type=["purchase", "webinar", "webinar"]))

    problem = result.report.problem("unknown_event_types")
    assert len(result.clean) == 3
    assert problem.severity == "info" and problem.details["counts"] == {"webinar": 2}


def test_unknown_customers_are_quarantined_by_default() -> None:
    result = validate(events_frame(), known_customers=pd.Series(["a"]))

    assert result.quarantine["customer_id"].tolist() == ["b"]
    assert "not in the customers table" in quarantined_reasons(result)[0]


def test_unknown_customers_can_be_kept_and_are_still_reported() -> None:
    result = validate(events_frame(), known_customers=pd.Series(["a"]), unknown_customers="keep")

    problem = result.report.problem("unknown_customer")
    assert len(result.clean) == 3
    assert problem.severity == "warning" and problem.count == 1


def test_a_row_with_several_problems_is_quarantined_once_with_every_reason() -> None:
    raw = events_frame(customer_id=[None, "a", "b"], amount=["-3", None, None])

    result = validate(raw)

    assert len(result.quarantine) == 1
    reason = quarantined_reasons(result)[0]
    assert "customer_id is missing" in reason and "negative" in reason


def test_quarantine_holds_rows_exactly_as_received() -> None:
    raw = events_frame(amount=["oops", None, None], timestamp=["2024-01-01", "bad", "2024-01-03"])
    raw.index = [10, 20, 30]

    quarantine = validate(raw).quarantine

    pd.testing.assert_frame_equal(quarantine.drop(columns="reason"), raw.loc[[10, 20]])


def test_clean_categories_hold_only_customers_that_remain() -> None:
    clean = validate(events_frame(customer_id=["a", "a", "gone"], amount=[1.0, 2.0, -5.0])).clean

    assert clean["customer_id"].cat.categories.tolist() == ["a"]


def test_quarantine_reason_column_does_not_overwrite_a_source_column() -> None:
    raw = validate_customers(
        pd.DataFrame({"customer_id": ["a", None], "reason": ["x", "y"]}), now=NOW
    ).quarantine

    assert raw["reason"].tolist() == ["y"] and "quarantine_reason" in raw.columns


@st.composite
def messy_events(draw):
    n = draw(st.integers(1, 40))
    ids = st.one_of(st.none(), st.sampled_from(["a", "b", " ", "c"]))
    times = st.one_of(
        st.none(),
        st.sampled_from(
            [
                "2024-01-01 10:00",
                "2024-01-01 10:00+02:00",
                "2024-01-01T08:00Z",
                "not a date",
                "2031-01-01",
                "2024-02-30",
            ]
        ),
    )
    amounts = st.one_of(st.none(), st.sampled_from(["5", "-1", "abc", "inf", "", "0"]))
    types = st.one_of(st.none(), st.sampled_from(["visit", "purchase", "other"]))
    return pd.DataFrame(
        {
            "customer_id": draw(st.lists(ids, min_size=n, max_size=n)),
            "timestamp": draw(st.lists(times, min_size=n, max_size=n)),
            "event_type": draw(st.lists(types, min_size=n, max_size=n)),
            "amount": draw(st.lists(amounts, min_size=n, max_size=n)),
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_events())
def test_clean_plus_quarantine_is_every_input_row(raw: pd.DataFrame) -> None:
    try:
        result = validate(raw, known_customers=pd.Series(["a", "b"]))
    except NoUsableRowsError as error:
        result = error.result
    assert len(result.clean) + len(result.quarantine) == len(raw)
    assert result.report.clean_rows + result.report.quarantined_rows == len(raw)
    assert result.quarantine["reason"].str.len().gt(0).all()
    assert not result.quarantine.index.duplicated().any()


# --- customers and subscriptions -----------------------------------------------------------


def test_duplicate_customers_keep_the_first_row() -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b", "a"], "country": ["FR", "DE", "US"]})

    result = validate_customers(raw, now=NOW)

    assert result.clean["country"].tolist() == ["FR", "DE"]
    assert result.quarantine["country"].tolist() == ["US"]


def test_unparseable_signup_date_is_quarantined_and_missing_is_kept() -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b", "c"], "signup_date": ["2023-01-01", "?", None]})

    result = validate_customers(raw, now=NOW)

    assert result.quarantine["customer_id"].tolist() == ["b"]
    assert result.clean["signup_date"].isna().tolist() == [False, True]


def test_customer_attributes_are_kept() -> None:
    raw = pd.DataFrame({"customer_id": ["a"], "customer_type": ["B2B"], "score": [3]})

    clean = validate_customers(raw, now=NOW).clean

    assert clean["customer_type"].tolist() == ["B2B"] and clean["score"].tolist() == [3]
    assert clean["signup_date"].dtype == "datetime64[ns]"


def test_iso_date_text_attributes_become_dates_and_bad_values_are_reported() -> None:
    """Decided once on the whole table (phase 1 reads attributes by dtype only): text that is
    at least 90% ISO dates becomes datetime64 naive UTC; the rest is NaT and counted."""
    dates = [f"2023-{k % 12 + 1:02d}-{k % 28 + 1:02d}" for k in range(20)]
    dates[1] = "2023-03-05T23:30:00-02:00"  # an offset: converted to UTC
    dates[2] = "05/03/2023"  # not ISO: missing, reported
    dates[3] = None
    raw = pd.DataFrame({"customer_id": [f"c{k}" for k in range(20)], "contract_signed": dates})

    result = validate_customers(raw, now=NOW)

    signed = result.clean["contract_signed"]
    assert signed.dtype == "datetime64[ns]"
    assert signed.iloc[0] == pd.Timestamp("2023-01-01")
    assert signed.iloc[1] == pd.Timestamp("2023-03-06 01:30")
    assert signed.iloc[2:4].isna().all()
    problem = result.report.problem("unparseable_attribute_dates")
    assert (problem.severity, problem.action, problem.count) == ("warning", "converted", 1)
    assert problem.details["columns"] == {"contract_signed": 1}
    assert problem.examples[0]["contract_signed"] == "05/03/2023"
    assert result.report.problem("attribute_dates").details["columns"] == {"contract_signed": 18}
    as_json = json.loads(json.dumps(result.report.to_dict()))
    assert "unparseable_attribute_dates" in {p["code"] for p in as_json["problems"]}
    assert len(result.clean) == 20  # a bad attribute value never costs the row


def test_attribute_text_below_the_iso_share_and_date_objects() -> None:
    rows = 10
    raw = pd.DataFrame(
        {
            "customer_id": [f"c{k}" for k in range(rows)],
            "note": ["2024-01-01"] * 8 + ["soon", "later"],  # 80% dates: text
            "renewal_day": [pd.Timestamp("2024-01-01").date()] * (rows - 1) + [None],
            "region": ["north", "south"] * 5,
        }
    )

    result = validate_customers(raw, now=NOW)

    clean = result.clean
    assert clean["note"].tolist() == raw["note"].tolist()
    assert clean["renewal_day"].dtype == "datetime64[ns]"
    assert clean["renewal_day"].iloc[0] == pd.Timestamp("2024-01-01")
    assert pd.isna(clean["renewal_day"].iloc[-1])
    assert clean["region"].tolist() == raw["region"].tolist()
    assert result.report.problem("unparseable_attribute_dates") is None


def test_identifier_like_text_attributes_are_dropped_and_reported() -> None:
    """More distinct values than half the rows and more than 50: an identifier or free text
    (names, e-mails), dropped from the clean table, named in the report with the reason."""
    rows = 700
    k = np.arange(rows)
    raw = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in k],
            "email": [f"user{i}@example.com" for i in k],
            "full_name": [None if i % 2 else f"name {i}" for i in k],  # 350 of 350 present
            "region_code": [f"r{i % 300:03d}" for i in k],  # 300 of 700: not identifier-like
            "branch": [f"b{i % 50}" for i in k],  # 50 distinct: not more than 50
            "account_number": k,  # numbers are never identifier-like text
        }
    )

    result = validate_customers(raw, now=NOW)

    assert "email" not in result.clean.columns and "full_name" not in result.clean.columns
    assert {"region_code", "branch", "account_number"} <= set(result.clean.columns)
    problem = result.report.problem("identifier_like_columns")
    assert (problem.severity, problem.action, problem.count) == ("warning", "dropped", 2)
    assert "identifier-like text: not a feature, and it may be personal data" in problem.reason
    as_json = json.loads(json.dumps(result.report.to_dict()))
    (dropped,) = [p for p in as_json["problems"] if p["code"] == "identifier_like_columns"]
    assert dropped["details"]["columns"] == ["email", "full_name"]
    assert dropped["details"]["reasons"]["full_name"].startswith(
        "identifier-like text: not a feature, and it may be personal data"
    )
    assert "350 distinct values in 350 rows" in dropped["details"]["reasons"]["full_name"]
    assert "email" in result.report.render()


def subscriptions_frame(**columns: list) -> pd.DataFrame:
    frame = {
        "customer_id": ["a", "b", "c"],
        "plan": ["basic", "pro", "pro"],
        "start_date": ["2023-01-01", "2023-02-01", "2023-03-01"],
        "end_date": [None, "2023-12-31", None],
        "mrr": [10.0, 50.0, 50.0],
    }
    frame.update(columns)
    return pd.DataFrame(frame)


def test_subscription_ending_before_it_starts_is_quarantined() -> None:
    result = validate_subscriptions(
        subscriptions_frame(end_date=[None, "2023-01-15", None]), now=NOW
    )

    assert result.quarantine["customer_id"].tolist() == ["b"]
    assert "before start_date" in result.quarantine["reason"].iloc[0]


def test_negative_mrr_is_quarantined() -> None:
    result = validate_subscriptions(subscriptions_frame(mrr=[10.0, -5.0, 0.0]), now=NOW)

    assert result.quarantine["customer_id"].tolist() == ["b"]


def test_overlapping_subscriptions_are_kept_and_reported() -> None:
    raw = subscriptions_frame(
        customer_id=["a", "a", "a"],
        start_date=["2023-01-01", "2023-06-01", "2024-01-01"],
        end_date=["2023-07-01", "2023-12-31", None],
    )

    result = validate_subscriptions(raw, now=NOW)

    problem = result.report.problem("overlapping_subscriptions")
    assert len(result.clean) == 3
    assert problem.count == 1 and problem.examples[0]["start_date"] == "2023-06-01"


def test_back_to_back_subscriptions_do_not_overlap() -> None:
    raw = subscriptions_frame(
        customer_id=["a", "a", "b"],
        start_date=["2023-01-01", "2023-07-01", "2023-01-01"],
        end_date=["2023-07-01", None, None],
    )

    result = validate_subscriptions(raw, now=NOW)

    assert result.report.problem("overlapping_subscriptions") is None


def test_subscription_clean_dtypes() -> None:
    clean = validate_subscriptions(subscriptions_frame(), now=NOW).clean

    assert clean["end_date"].dtype == "datetime64[ns]" and clean["mrr"].dtype == "float64"
    assert isinstance(clean["plan"].dtype, pd.CategoricalDtype)


# --- all tables ----------------------------------------------------------------------------


def test_events_are_checked_against_validated_customers() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "b", "b"], "signup_date": ["2023-01-01"] * 3})
    raw = RawCRM(events=events_frame(customer_id=["a", "b", "z"]), customers=customers)

    validated = validate_crm_data(raw, DataConfig(), now=NOW)

    assert validated.events.quarantine["customer_id"].tolist() == ["z"]
    assert validated.subscriptions is None
    assert set(validated.results) == {"events", "customers"}


def test_report_is_json_and_readable_text() -> None:
    result = validate(events_frame(amount=["x", None, None], timestamp=["a", "b", "2024-01-01"]))

    text = result.report.render()
    as_json = json.loads(json.dumps(result.report.to_dict()))

    assert "3 rows received, 1 clean, 2 quarantined" in text
    assert as_json["quarantined_rows"] == 2
    assert {p["code"] for p in as_json["problems"]} >= {
        "unparseable_timestamp",
        "non_numeric_amount",
    }


def test_report_keeps_at_most_five_examples() -> None:
    raw = events_frame(
        customer_id=["a"] * 8,
        timestamp=["bad"] * 7 + ["2024-01-01"],
        event_type=["visit"] * 8,
        amount=[None] * 8,
    )

    problem = validate(raw).report.problem("unparseable_timestamp")

    assert problem.count == 7 and len(problem.examples) == 5


# --- writing -------------------------------------------------------------------------------


def test_write_quarantine_writes_stable_names_and_a_json_report(tmp_path: Path) -> None:
    result = validate(events_frame(amount=["x", None, None]))

    paths = write_quarantine({"events": result}, tmp_path)

    assert [p.name for p in paths] == ["events_quarantine.csv", "validation_report.json"]
    written = pd.read_csv(tmp_path / "events_quarantine.csv")
    assert written["reason"].tolist() == ["amount is not a number"]
    assert written["row"].tolist() == [0]
    assert json.loads(paths[1].read_text())["events"]["quarantined_rows"] == 1


def test_rerun_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_quarantine({"events": validate(events_frame(amount=["x", "y", None]))}, tmp_path)
    write_quarantine({"events": validate(events_frame(amount=["x", None, None]))}, tmp_path)

    assert len(pd.read_csv(tmp_path / "events_quarantine.csv")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events_quarantine.csv",
        "validation_report.json",
    ]


def test_stale_quarantine_of_a_now_clean_table_is_removed(tmp_path: Path) -> None:
    write_quarantine({"events": validate(events_frame(amount=["x", None, None]))}, tmp_path)

    paths = write_quarantine({"events": validate(events_frame())}, tmp_path)

    assert not (tmp_path / "events_quarantine.csv").exists()
    assert [p.name for p in paths] == ["validation_report.json"]


def test_crm_export_loads_and_validates_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "crm_events.csv"
    pd.DataFrame(
        {
            "account_id": ["00123", "00123", "A-7", "A-7"],
            "event_time": ["05/01/2024 10:30", "06/01/2024 11:00", "07/01/2024 09:15", "x"],
            "type": ["order", "login", "login", "login"],
            "amount": [19.9, None, None, None],
        }
    ).to_csv(path, index=False)
    source = SourceConfig(
        path=str(path),
        columns={"account_id": "customer_id", "event_time": "timestamp", "type": "event_type"},
        event_type_mapping={"order": "purchase", "login": "visit"},
        timestamp_format="%d/%m/%Y %H:%M",
    )

    data = DataConfig(events=source)

    validated = validate_crm_data(load_crm_data(data), data, now=NOW)

    clean = validated.events.clean
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-01-05 10:30")
    assert clean["event_type"].tolist() == ["purchase", "visit", "visit"]
    assert clean["customer_id"].tolist() == ["00123", "00123", "A-7"]
    assert validated.events.quarantine["timestamp"].tolist() == ["x"]


# --- subscription terms --------------------------------------------------------------------


def test_scheduled_term_columns_are_parsed_and_kept() -> None:
    raw = subscriptions_frame(
        bill_period_months=["12", 6, None],
        term_end=["2024-01-01", None, "2023-09-01"],
        seats=[10, 3.0, None],
        price=[1200.0, None, 290.0],
        discount=[0.2, 0.0, None],
    )

    clean = validate_subscriptions(raw, now=NOW).clean

    assert list(clean.columns) == [
        "customer_id", "plan", "start_date", "end_date", "mrr",
        "bill_period_months", "term_end", "seats", "price", "discount",
    ]  # fmt: skip
    assert clean["bill_period_months"].tolist()[:2] == [12.0, 6.0]
    assert clean["term_end"].dtype == "datetime64[ns]"
    assert clean["term_end"].iloc[0] == pd.Timestamp("2024-01-01")
    assert clean["seats"].dtype == "float64" and clean["discount"].iloc[0] == 0.2


def test_term_columns_are_absent_from_the_clean_table_when_the_source_lacks_them() -> None:
    clean = validate_subscriptions(subscriptions_frame(), now=NOW).clean

    assert list(clean.columns) == ["customer_id", "plan", "start_date", "end_date", "mrr"]


def test_bad_term_values_are_quarantined_with_a_reason() -> None:
    raw = subscriptions_frame(
        customer_id=["a", "b", "c", "d", "e", "f", "ok"],
        plan=["p"] * 7,
        start_date=["2023-01-01"] * 7,
        end_date=[None] * 7,
        mrr=[10.0] * 7,
        bill_period_months=["twelve", -1, 1.5, 0, 12, None, 12],
        term_end=[None, None, None, None, "2022-12-01", None, "2024-01-01"],
        seats=[1, 1, 1, 1, 1, -3, 1],
    )

    result = validate_subscriptions(raw, now=NOW)

    reasons = dict(zip(result.quarantine["customer_id"], result.quarantine["reason"], strict=True))
    assert reasons["a"] == "bill_period_months is not a number"
    assert reasons["b"] == "bill_period_months is negative"
    assert "whole number of months" in reasons["c"] and "whole number of months" in reasons["d"]
    assert reasons["e"] == "term_end is not after start_date"
    assert reasons["f"] == "seats is negative"
    assert result.clean["customer_id"].tolist() == ["ok"]
    assert result.report.problem("invalid_bill_period_months").count == 2


def test_canonical_aliases_are_accepted() -> None:
    raw = subscriptions_frame().rename(columns={"end_date": "cancelled_at"})
    raw["renewal_date"] = ["2024-01-01", None, None]
    raw["quantity"] = [5, 1, 2]

    clean = validate_subscriptions(raw, now=NOW).clean

    assert clean["end_date"].iloc[1] == pd.Timestamp("2023-12-31")
    assert clean["term_end"].iloc[0] == pd.Timestamp("2024-01-01")
    assert clean["seats"].tolist() == [5.0, 1.0, 2.0]


def test_aliases_load_from_a_file_next_to_the_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.csv"
    pd.DataFrame(
        {
            "account": ["a", "b"],
            "plan": ["team", "team"],
            "start_date": ["2024-01-01", "2024-02-01"],
            "cancelled_at": [None, "2024-05-01"],
            "mrr": [100, 100],
            "licences": [10, 12],
            "bill_period_months": [12, 1],
        }
    ).to_csv(path, index=False)
    source = SourceConfig(path=str(path), columns={"account": "customer_id", "licences": "seats"})

    raw = load_table(source, "subscriptions")
    clean = validate_subscriptions(raw, source=source, now=NOW).clean

    assert "end_date" in raw.columns and "seats" in raw.columns
    assert clean["end_date"].iloc[1] == pd.Timestamp("2024-05-01")
    assert clean["seats"].tolist() == [10.0, 12.0]
    assert clean["bill_period_months"].tolist() == [12.0, 1.0]


# --- identical events by the source's granularity ------------------------------------------


def day_granular_orders(**columns: list) -> pd.DataFrame:
    """Two identical orders on one day (as CDNOW has them) and a different one."""
    frame = {
        "customer_id": ["a", "a", "b"],
        "timestamp": ["1997-01-01", "1997-01-01", "1997-01-02"],
        "event_type": ["purchase", "purchase", "purchase"],
        "amount": [10.0, 10.0, 5.0],
    }
    return events_frame(**{**frame, **columns})


def test_identical_rows_of_a_day_granular_source_are_kept_and_counted() -> None:
    result = validate(day_granular_orders())

    assert len(result.clean) == 3 and result.quarantine.empty
    problem = result.report.problem("repeated_events")
    assert (problem.count, problem.action, problem.severity) == (1, "kept", "info")
    assert "day-granular" in problem.reason
    assert result.report.problem("duplicate_event") is None


def test_day_granularity_is_judged_in_the_source_timezone() -> None:
    source = SourceConfig(path="events.csv", timezone="Europe/Paris")

    result = validate(day_granular_orders(), source=source)

    assert result.clean["timestamp"].iloc[0] == pd.Timestamp("1996-12-31 23:00")
    assert result.report.problem("repeated_events").count == 1


def test_event_level_sources_still_quarantine_identical_rows_by_default() -> None:
    raw = day_granular_orders(timestamp=["1997-01-01 10:00", "1997-01-01 10:00", "1997-01-02"])

    result = validate(raw)

    assert result.quarantine.index.tolist() == [1]
    assert result.report.problem("duplicate_event").count == 1
    assert result.report.problem("repeated_events") is None


def test_duplicates_setting_overrides_the_granularity() -> None:
    timed = day_granular_orders(timestamp=["1997-01-01 10:00", "1997-01-01 10:00", "1997-01-02"])

    dropped = validate(day_granular_orders(), source=SourceConfig(path="e.csv", duplicates="drop"))
    kept = validate(timed, source=SourceConfig(path="e.csv", duplicates="keep"))

    assert dropped.report.problem("duplicate_event").count == 1 and len(dropped.clean) == 2
    assert kept.report.problem("repeated_events").count == 1 and len(kept.clean) == 3
    assert "duplicates: keep" in kept.report.problem("repeated_events").reason


def test_rows_with_the_same_event_id_are_always_one_event() -> None:
    raw = day_granular_orders(event_id=["o-1", "o-1", "o-2"])
    keep = SourceConfig(path="e.csv", duplicates="keep")

    result = validate(raw, source=keep)

    assert result.quarantine.index.tolist() == [1]
    assert result.report.problem("duplicate_event_id").count == 1
    assert result.clean["event_id"].tolist() == ["o-1", "o-2"]


def test_different_event_ids_make_identical_rows_different_events() -> None:
    raw = day_granular_orders(
        timestamp=["1997-01-01 10:00", "1997-01-01 10:00", "1997-01-02"],
        event_id=["o-1", "o-2", "o-3"],
    )

    result = validate(raw, source=SourceConfig(path="e.csv", duplicates="drop"))

    assert len(result.clean) == 3 and result.quarantine.empty


def test_identical_rows_without_an_id_in_an_id_column_follow_the_setting() -> None:
    raw = day_granular_orders(
        timestamp=["1997-01-01 10:00", "1997-01-01 10:00", "1997-01-02"],
        event_id=[None, None, "o-3"],
    )

    result = validate(raw)

    assert result.report.problem("duplicate_event").count == 1
    assert result.report.problem("duplicate_event_id") is None


def test_unknown_duplicates_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        SourceConfig(path="e.csv", duplicates="sometimes")
