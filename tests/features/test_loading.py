"""Loading CSV, Parquet and SQL sources onto the canonical column names."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from features import loading
from features.config import DataConfig, SourceConfig
from features.contract import DataContractError
from features.loading import columns_to_read, load_crm_data, load_table, map_event_types

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

CRM_MAPPING = {"account_id": "customer_id", "event_time": "timestamp", "type": "event_type"}
CRM_EVENT_TYPES = {"order": "purchase", "login": "visit"}


@pytest.fixture
def crm_export() -> pd.DataFrame:
    """A CRM-style export: its own column names, day-first timestamps, its own event names."""
    return pd.DataFrame(
        {
            "account_id": ["00123", "00123", "A-7", "A-7"],
            "event_time": ["05/01/2024 10:30", "06/01/2024 11:00", "07/01/2024 09:15", "x"],
            "type": ["order", "login", "login", "newsletter_signup"],
            "amount": [19.9, None, None, None],
            "notes": ["a very wide free-text column nobody needs"] * 4,
        }
    )


def crm_source(path: Path, **overrides: object) -> SourceConfig:
    settings = {
        "path": str(path),
        "columns": CRM_MAPPING,
        "event_type_mapping": CRM_EVENT_TYPES,
        "timestamp_format": "%d/%m/%Y %H:%M",
    }
    settings.update(overrides)
    return SourceConfig(**settings)


# --- files ---------------------------------------------------------------------------------


def test_csv_columns_are_renamed_to_canonical(tmp_path: Path, crm_export: pd.DataFrame) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)

    events = load_table(crm_source(path), "events")

    assert list(events.columns) == ["customer_id", "timestamp", "event_type", "amount"]


def test_event_type_mapping_renames_export_names_and_keeps_others(
    tmp_path: Path, crm_export: pd.DataFrame
) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)

    events = load_table(crm_source(path), "events")

    assert list(events["event_type"]) == ["purchase", "visit", "visit", "newsletter_signup"]


def test_csv_keeps_raw_timestamp_strings_and_string_ids(
    tmp_path: Path, crm_export: pd.DataFrame
) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)

    events = load_table(crm_source(path), "events")

    assert list(events["timestamp"]) == list(crm_export["event_time"])  # unparseable 'x' kept
    assert list(events["customer_id"]) == ["00123", "00123", "A-7", "A-7"]  # not int 123


def test_csv_does_not_read_unused_columns(
    tmp_path: Path, crm_export: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)
    seen_usecols = []
    read_csv = pd.read_csv

    def spy(*args, **kwargs):
        seen_usecols.append(kwargs.get("usecols"))
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(loading.pd, "read_csv", spy)
    events = load_table(crm_source(path), "events")

    full_read = seen_usecols[-1]
    assert callable(full_read) and not full_read("notes") and full_read("account_id")
    assert "notes" not in events.columns


def test_gzipped_csv_round_trip(tmp_path: Path, crm_export: pd.DataFrame) -> None:
    path = tmp_path / "events.csv.gz"
    crm_export.to_csv(path, index=False)

    events = load_table(crm_source(path), "events")

    assert len(events) == len(crm_export)
    assert events["customer_id"].iloc[0] == "00123"


def test_csv_separator_is_honoured(tmp_path: Path, crm_export: pd.DataFrame) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False, sep=";")

    events = load_table(crm_source(path, csv_separator=";"), "events")

    assert list(events["customer_id"]) == ["00123", "00123", "A-7", "A-7"]


def test_parquet_round_trip_passes_only_needed_columns(
    tmp_path: Path, crm_export: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.parquet"
    crm_export.to_parquet(path, index=False)
    requested = []
    read_parquet = pd.read_parquet

    def spy(*args, **kwargs):
        requested.append(kwargs.get("columns"))
        return read_parquet(*args, **kwargs)

    monkeypatch.setattr(loading.pd, "read_parquet", spy)
    events = load_table(crm_source(path), "events")

    assert requested == [["account_id", "event_time", "type", "amount"]]
    assert list(events.columns) == ["customer_id", "timestamp", "event_type", "amount"]
    assert list(events["event_type"]) == ["purchase", "visit", "visit", "newsletter_signup"]


def test_parquet_keeps_native_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "events.pq"
    frame = pd.DataFrame(
        {
            "customer_id": ["a"],
            "timestamp": pd.to_datetime(["2024-01-05 10:00"]).tz_localize("Europe/Paris"),
            "event_type": ["visit"],
        }
    )
    frame.to_parquet(path, index=False)

    events = load_table(SourceConfig(path=str(path)), "events")

    assert isinstance(events["timestamp"].dtype, pd.DatetimeTZDtype)


def test_customers_keep_attribute_columns(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    pd.DataFrame(
        {"account_id": ["1", "2"], "country": ["FR", "DE"], "segment_score": [0.3, 0.9]}
    ).to_csv(path, index=False)

    customers = load_table(
        SourceConfig(path=str(path), columns={"account_id": "customer_id"}), "customers"
    )

    assert list(customers.columns) == ["customer_id", "country", "segment_score"]


def test_subscriptions_read_contract_columns_only(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.csv"
    pd.DataFrame(
        {
            "customer_id": ["1"],
            "plan": ["pro"],
            "start_date": ["2024-01-01"],
            "end_date": [None],
            "mrr": [49.0],
            "billing_address": ["somewhere"],
        }
    ).to_csv(path, index=False)

    subscriptions = load_table(SourceConfig(path=str(path)), "subscriptions")

    assert list(subscriptions.columns) == ["customer_id", "plan", "start_date", "end_date", "mrr"]


def test_mapped_column_wins_over_same_named_source_column() -> None:
    columns = columns_to_read(
        ["customer_id", "account_id", "timestamp", "event_type"],
        {"account_id": "customer_id"},
        "events",
    )

    assert columns == ["account_id", "timestamp", "event_type"]


def test_map_event_types_keeps_missing_values() -> None:
    mapped = map_event_types(pd.Series(["order", None, "login"]), CRM_EVENT_TYPES)

    assert mapped.tolist() == ["purchase", None, "visit"]


# --- errors --------------------------------------------------------------------------------


def test_missing_file_raises_file_not_found_with_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"

    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_table(SourceConfig(path=str(path)), "events")


def test_unknown_extension_is_a_contract_error(tmp_path: Path) -> None:
    path = tmp_path / "events.xlsx"
    path.write_text("x")

    with pytest.raises(DataContractError, match="extension"):
        load_table(SourceConfig(path=str(path)), "events")


def test_missing_required_columns_name_them_and_suggest_a_mapping(
    tmp_path: Path, crm_export: pd.DataFrame
) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)

    with pytest.raises(DataContractError) as error:
        load_table(SourceConfig(path=str(path)), "events")

    message = str(error.value)
    assert "customer_id" in message and "'account_id'" in message  # missing and found
    assert "account_id: customer_id" in message  # the suggested mapping


def test_mapping_two_sources_onto_one_column_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("a,b,timestamp,event_type\n1,2,2024-01-01,visit\n")
    source = SourceConfig(path=str(path), columns={"a": "customer_id", "b": "customer_id"})

    with pytest.raises(DataContractError, match="same canonical name"):
        load_table(source, "events")


def test_empty_file_is_a_contract_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("")

    with pytest.raises(DataContractError, match="empty"):
        load_table(SourceConfig(path=str(path)), "events")


def test_corrupt_parquet_is_a_contract_error(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    path.write_bytes(b"not parquet at all")

    with pytest.raises(DataContractError, match="events.parquet"):
        load_table(SourceConfig(path=str(path)), "events")


def test_load_crm_data_without_events_source_raises() -> None:
    with pytest.raises(DataContractError, match="events"):
        load_crm_data(DataConfig())


def test_load_crm_data_leaves_unconfigured_tables_none(
    tmp_path: Path, crm_export: pd.DataFrame
) -> None:
    path = tmp_path / "events.csv"
    crm_export.to_csv(path, index=False)

    raw = load_crm_data(DataConfig(events=crm_source(path)))

    assert len(raw.events) == 4 and raw.customers is None and raw.subscriptions is None


# --- SQL -----------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path, crm_export: pd.DataFrame) -> str:
    """A SQLite file holding the CRM export under a column name that needs quoting."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    crm_export.rename(columns={"account_id": "Account ID"}).to_sql("crm events", engine)
    engine.dispose()
    return url


SQLITE_MAPPING = {"Account ID": "customer_id", "event_time": "timestamp", "type": "event_type"}


def test_sql_table_selects_needed_columns_with_quoted_identifiers(sqlite_url: str) -> None:
    source = SourceConfig(url=sqlite_url, table="crm events", columns=SQLITE_MAPPING)

    events = load_table(source, "events")

    assert list(events.columns) == ["customer_id", "timestamp", "event_type", "amount"]
    assert events["customer_id"].iloc[0] == "00123"


def test_sql_query_is_wrapped_and_trimmed_to_needed_columns(sqlite_url: str) -> None:
    source = SourceConfig(
        url=sqlite_url,
        query="SELECT * FROM \"crm events\" WHERE type = 'login';",
        columns=SQLITE_MAPPING,
        event_type_mapping=CRM_EVENT_TYPES,
    )

    events = load_table(source, "events")

    assert "notes" not in events.columns
    assert list(events["event_type"]) == ["visit", "visit"]


def test_sql_missing_table_lists_available_tables(sqlite_url: str) -> None:
    with pytest.raises(DataContractError, match="crm events"):
        load_table(SourceConfig(url=sqlite_url, table="events"), "events")


def test_sql_bad_query_is_a_contract_error(sqlite_url: str) -> None:
    source = SourceConfig(url=sqlite_url, query="SELECT nonsense FROM nowhere")

    with pytest.raises(DataContractError, match="rejected|cannot read"):
        load_table(source, "events")


def test_unreachable_database_is_a_contract_error() -> None:
    source = SourceConfig(url="postgresql+psycopg://postgres@127.0.0.1:1/test", table="events")

    with pytest.raises(DataContractError, match="127.0.0.1:1"):
        load_table(source, "events")


@pytest.fixture
def postgres_engine():
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (database 'test') is unreachable: {error}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_table(postgres_engine, crm_export: pd.DataFrame):
    """The CRM export in a uniquely named table, with a timestamptz column; dropped afterwards."""
    name = f"crm_events_{uuid.uuid4().hex[:12]}"
    frame = crm_export.iloc[:3].copy()
    frame["event_time"] = pd.to_datetime(
        frame["event_time"], format="%d/%m/%Y %H:%M"
    ).dt.tz_localize("Europe/Paris")
    frame.to_sql(name, postgres_engine, index=False)
    yield name
    with postgres_engine.begin() as connection:
        connection.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))


@pytest.mark.postgres
def test_postgres_table(postgres_table: str) -> None:
    source = SourceConfig(
        url=POSTGRES_URL,
        table=postgres_table,
        columns=CRM_MAPPING,
        event_type_mapping=CRM_EVENT_TYPES,
    )

    events = load_table(source, "events")

    assert list(events.columns) == ["customer_id", "timestamp", "event_type", "amount"]
    assert list(events["event_type"]) == ["purchase", "visit", "visit"]
    assert events["timestamp"].iloc[0] == pd.Timestamp("2024-01-05 09:30", tz="UTC")


@pytest.mark.postgres
def test_postgres_query(postgres_table: str) -> None:
    source = SourceConfig(
        url=POSTGRES_URL,
        query=f'SELECT account_id, event_time, type, notes FROM "{postgres_table}" '
        "WHERE amount IS NOT NULL",
        columns=CRM_MAPPING,
    )

    events = load_table(source, "events")

    assert list(events.columns) == ["customer_id", "timestamp", "event_type"]
    assert events["customer_id"].tolist() == ["00123"]


@pytest.mark.postgres
def test_postgres_missing_table(postgres_engine) -> None:
    source = SourceConfig(url=POSTGRES_URL, table=f"missing_{uuid.uuid4().hex[:12]}")

    with pytest.raises(DataContractError, match="not found"):
        load_table(source, "events")


@pytest.mark.postgres
def test_postgres_query_with_colons_is_not_read_as_parameters(postgres_engine) -> None:
    source = SourceConfig(
        url=POSTGRES_URL,
        query="SELECT 'c:1' AS customer_id, '2024-01-01 10:00'::text AS timestamp, "
        "':visit' AS event_type",
    )

    events = load_table(source, "events")

    assert events.iloc[0].tolist() == ["c:1", "2024-01-01 10:00", ":visit"]
