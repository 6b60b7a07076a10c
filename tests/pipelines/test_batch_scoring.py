"""Batch scoring (``pipelines.scoring.run_score``, ``churn score``): the ranked risk list in files
and SQL tables, idempotent per as-of date and atomic when a write fails midway.

The models are trained once per session into the MLflow store ``tests/serving/test_scoring.py``
uses too (``scoring_store`` in tests/conftest.py).
PostgreSQL tests use unique table names, drop them afterwards and are skipped (with the reason)
when the server at 127.0.0.1:5432 is unreachable.
"""

from __future__ import annotations

import json
import uuid
from datetime import date

import pandas as pd
import pytest

from pipelines.scoring import replace_risk_list_rows, run_score
from serving.scoring import read_risk_list

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# --------------------------------------------------------------------------------------------
# fixtures (``scoring_store`` and ``scoring_config`` come from tests/conftest.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg(scoring_config, tmp_path_factory):
    return scoring_config(tmp_path_factory.mktemp("batch-out"))


@pytest.fixture(scope="module")
def loaded(cfg):
    from pipelines.data import load_validated_data

    return load_validated_data(cfg)


@pytest.fixture(scope="module")
def models(cfg):
    from serving.scoring import load_champions

    return load_champions(cfg)


@pytest.fixture(scope="module")
def first_run(cfg, loaded, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-first") / "risk.parquet"
    summary = run_score(cfg, None, out, data=loaded, models=models)
    return summary, pd.read_parquet(out)


@pytest.fixture(scope="module")
def risk_table(first_run) -> pd.DataFrame:
    return first_run[1]


def _postgres_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except Exception as exc:  # unreachable server, missing database, auth
        engine.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (database test) is unreachable: {exc}")
    return engine


@pytest.fixture
def pg_table():
    """A unique table name in the test database, dropped afterwards."""
    import sqlalchemy as sa

    engine = _postgres_engine()
    name = f"risk_list_{uuid.uuid4().hex[:12]}"
    yield name
    with engine.begin() as connection:
        connection.execute(sa.text(f'drop table if exists "{name}"'))
    engine.dispose()


def _rows(url: str, table: str) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return pd.read_sql(sa.text(f'select * from "{table}" order by as_of, rank'), connection)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# the run and its files
# --------------------------------------------------------------------------------------------


def test_run_scores_every_customer_and_ranks_by_value_at_risk(first_run, scoring_store):
    summary, table = first_run
    assert summary["as_of"] == scoring_store["data_end"]
    assert summary["customers"] == scoring_store["n_customers"]
    assert summary["active"] + summary["lapsed"] == summary["status"]["scored"]
    assert summary["risk_list_rows"] == summary["active"] == len(table)
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    value = table["expected_value_at_risk"].dropna()
    assert value.is_monotonic_decreasing
    assert set(summary["model_versions"].values()) == {"1"}
    assert (table["churn_model_version"] == "1").all()
    assert summary["band_source"] == "test_predictions"
    assert summary["explained_rows"] == min(25_000, int(table["risk_band"].ne("low").sum()))


def test_rerunning_a_date_rewrites_the_same_files(cfg, loaded, models, risk_table, tmp_path):
    for name in ("risk.parquet", "risk.csv"):
        out = tmp_path / name
        run_score(cfg, None, out, data=loaded, models=models)
        first = out.read_bytes()
        run_score(cfg, None, out, data=loaded, models=models)
        table = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        assert len(table) == len(risk_table)
        assert table["customer_id"].tolist() == risk_table["customer_id"].tolist()
        if name.endswith(".csv"):
            assert out.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["risk.csv", "risk.parquet"]


def test_the_service_copy_holds_the_latest_date_with_its_reference_data(
    cfg, loaded, models, first_run
):
    summary, table = first_run
    service = read_risk_list(cfg.serving.risk_list_location(cfg.output_dir))
    assert service.as_of == summary["as_of"]
    assert service.meta.model_versions == summary["model_versions"]
    assert service.meta.global_stats["cutoff"] == summary["as_of"]
    assert service.meta.category_shares
    assert service.frame["customer_id"].tolist() == table["customer_id"].tolist()

    earlier = date.fromisoformat(summary["as_of"]) - pd.Timedelta(days=30)
    older = run_score(cfg, earlier, None, data=loaded, models=models)
    assert older["service_risk_list"]["written"] is False
    assert read_risk_list(service.path).as_of == summary["as_of"]


def test_as_of_after_the_data_is_refused(cfg, loaded, models):
    with pytest.raises(ValueError, match="after the end of the data"):
        run_score(cfg, date(2030, 1, 1), None, data=loaded, models=models)


def test_db_url_needs_a_table(cfg, loaded, models):
    with pytest.raises(ValueError, match="go together"):
        run_score(cfg, None, None, "sqlite://", None, data=loaded, models=models)
    with pytest.raises(ValueError, match="table name"):
        run_score(cfg, None, None, "sqlite://", "bad name;drop", data=loaded, models=models)


# --------------------------------------------------------------------------------------------
# SQL: idempotent per date, atomic on failure
# --------------------------------------------------------------------------------------------


def _replace_twice_keeps_one_copy(url: str, table_name: str, risk_table: pd.DataFrame) -> None:
    d1, d2 = date(2025, 5, 1), date(2025, 6, 1)
    stamp = pd.Timestamp("2025-06-01 06:00").to_pydatetime()
    replace_risk_list_rows(url, table_name, risk_table.head(40), d1, scored_at=stamp)
    replace_risk_list_rows(url, table_name, risk_table.head(10), d2, scored_at=stamp)
    replace_risk_list_rows(url, table_name, risk_table.head(25), d2, scored_at=stamp)
    replace_risk_list_rows(url, table_name, risk_table.head(25), d2, scored_at=stamp)
    rows = _rows(url, table_name)
    counts = rows.groupby(pd.to_datetime(rows["as_of"]).dt.date).size().to_dict()
    assert counts == {d1: 40, d2: 25}
    latest = rows.loc[pd.to_datetime(rows["as_of"]).dt.date == d2]
    assert latest["customer_id"].tolist() == risk_table["customer_id"].head(25).tolist()
    assert latest["churn_run_id"].notna().all()


def _failure_midway_keeps_the_previous_rows(
    url: str, table_name: str, risk_table: pd.DataFrame, monkeypatch
) -> None:
    import pipelines.scoring as scoring

    day = date(2025, 6, 1)
    stamp = pd.Timestamp("2025-06-01 06:00").to_pydatetime()
    replace_risk_list_rows(url, table_name, risk_table.head(30), day, scored_at=stamp)
    before = _rows(url, table_name)

    insert_rows = scoring._insert_rows

    def insert_half_then_fail(connection, table, rows):
        insert_rows(connection, table, rows[: len(rows) // 2])
        raise RuntimeError("connection lost midway")

    monkeypatch.setattr(scoring, "_insert_rows", insert_half_then_fail)
    with pytest.raises(RuntimeError, match="midway"):
        replace_risk_list_rows(url, table_name, risk_table.head(60), day, scored_at=stamp)
    pd.testing.assert_frame_equal(_rows(url, table_name), before)


def _a_bad_row_midway_rolls_back(url: str, table_name: str, risk_table: pd.DataFrame) -> None:
    day = date(2025, 6, 1)
    stamp = pd.Timestamp("2025-06-01 06:00").to_pydatetime()
    replace_risk_list_rows(url, table_name, risk_table.head(30), day, scored_at=stamp)
    before = _rows(url, table_name)
    broken = risk_table.head(60).copy()
    broken.loc[broken.index[45], "customer_id"] = None  # NOT NULL: the database refuses it
    with pytest.raises(Exception, match="(?i)null"):
        replace_risk_list_rows(url, table_name, broken, day, scored_at=stamp)
    pd.testing.assert_frame_equal(_rows(url, table_name), before)


def test_sqlite_a_bad_row_midway_rolls_back(risk_table, tmp_path):
    _a_bad_row_midway_rolls_back(f"sqlite:///{tmp_path / 'crm.db'}", "risk_list", risk_table)


def test_sqlite_replaces_a_date_once(risk_table, tmp_path):
    _replace_twice_keeps_one_copy(f"sqlite:///{tmp_path / 'crm.db'}", "risk_list", risk_table)


def test_sqlite_failure_midway_keeps_the_previous_rows(risk_table, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _failure_midway_keeps_the_previous_rows(url, "risk_list", risk_table, monkeypatch)


def test_a_table_with_another_layout_is_left_alone(risk_table, tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("create table risk_list (as_of date, customer_id text)"))
        connection.execute(sa.text("insert into risk_list values ('2025-06-01', 'C1')"))
    engine.dispose()
    with pytest.raises(ValueError, match="another layout"):
        replace_risk_list_rows(
            url, "risk_list", risk_table.head(5), date(2025, 6, 1), scored_at=pd.Timestamp(0)
        )
    assert len(_rows_plain(url)) == 1


def _rows_plain(url: str) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return pd.read_sql(sa.text("select * from risk_list"), connection)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_run_twice_keeps_one_copy_of_the_date(
    cfg, loaded, models, risk_table, pg_table, tmp_path
):
    first = run_score(
        cfg, None, tmp_path / "a.parquet", POSTGRES_URL, pg_table, data=loaded, models=models
    )
    second = run_score(
        cfg, None, tmp_path / "b.parquet", POSTGRES_URL, pg_table, data=loaded, models=models
    )
    assert first["db_rows"] == second["db_rows"] == len(risk_table)
    rows = _rows(POSTGRES_URL, pg_table)
    assert len(rows) == len(risk_table)
    assert rows["customer_id"].tolist() == risk_table["customer_id"].tolist()
    assert (rows["as_of"].astype(str) == first["as_of"]).all()
    assert (rows["churn_model_version"] == "1").all()
    assert rows["churn_run_id"].eq(models.churn.run_id).all()
    assert rows["scored_at"].nunique() == 1  # the second run replaced the first


@pytest.mark.postgres
def test_postgres_replaces_only_the_date_given(risk_table, pg_table):
    _replace_twice_keeps_one_copy(POSTGRES_URL, pg_table, risk_table)


@pytest.mark.postgres
def test_postgres_a_bad_row_midway_rolls_back(risk_table, pg_table):
    _a_bad_row_midway_rolls_back(POSTGRES_URL, pg_table, risk_table)


@pytest.mark.postgres
def test_postgres_failure_midway_keeps_the_previous_rows(risk_table, pg_table, monkeypatch):
    _failure_midway_keeps_the_previous_rows(POSTGRES_URL, pg_table, risk_table, monkeypatch)


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------


def test_cli_score_prints_the_summary(scoring_config, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    cfg = scoring_config(tmp_path / "output")
    config_file = tmp_path / "churn.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = tmp_path / "risk.csv"
    monkeypatch.delenv("CHURN_SCORE_DB_URL", raising=False)
    result = CliRunner().invoke(
        app, ["score", "--config", str(config_file), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(out)
    assert len(pd.read_csv(out)) == summary["risk_list_rows"]


# --------------------------------------------------------------------------------------------
# who gets a churn score: the churn population of labels.churn_definition
# --------------------------------------------------------------------------------------------


def _subscription_config(scoring_config, output_dir):
    cfg = scoring_config(output_dir)
    labels = cfg.labels.model_copy(update={"churn_definition": "subscription"})
    return cfg.model_copy(update={"labels": labels})


def _subscribed_at(subscriptions: pd.DataFrame, as_of: pd.Timestamp) -> set[str]:
    running = (subscriptions["start_date"] < as_of) & ~(subscriptions["end_date"] < as_of)
    return set(subscriptions.loc[running, "customer_id"].astype(str))


def test_subscription_churn_scores_subscribers_without_qualifying_events(
    scoring_config, loaded, models, tmp_path
):
    from dataclasses import replace

    cfg = _subscription_config(scoring_config, tmp_path / "output")
    events = loaded.events[~loaded.events["event_type"].isin(["purchase", "visit"])]
    data = replace(loaded, events=events.reset_index(drop=True))
    out = tmp_path / "risk.parquet"

    summary = run_score(cfg, None, out, data=data, models=models)

    subscribed = _subscribed_at(loaded.subscriptions, data.data_end)
    risk = pd.read_parquet(out)
    assert summary["active"] == len(subscribed) > 0
    assert set(risk["customer_id"].astype(str)) == subscribed
    assert summary["risk_list_rows"] == len(subscribed)


def _ended_subscriptions(loaded) -> tuple[pd.DataFrame, pd.Timestamp]:
    as_of = loaded.data_end
    subscriptions = loaded.subscriptions.copy()
    subscriptions["end_date"] = subscriptions["start_date"] + pd.Timedelta(days=1)
    return subscriptions[subscriptions["end_date"] < as_of].reset_index(drop=True), as_of


def test_nobody_to_score_fails_without_writing(scoring_config, loaded, models, tmp_path):
    from dataclasses import replace

    from pipelines.scoring import NobodyToScoreError

    cfg = _subscription_config(scoring_config, tmp_path / "output")
    subscriptions, as_of = _ended_subscriptions(loaded)
    data = replace(loaded, subscriptions=subscriptions)
    out = tmp_path / "risk.parquet"

    with pytest.raises(NobodyToScoreError) as raised:
        run_score(cfg, None, out, data=data, models=models)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"nobody to score as of {as_of.date()}: none of the ")
    assert "has an active subscription" in message and "'subscription'" in message
    assert not out.exists()
    assert not cfg.serving.risk_list_location(cfg.output_dir).exists()


def test_cli_score_exits_2_with_one_line_when_nobody_is_active(
    scoring_config, loaded, tmp_path, monkeypatch, capsys
):
    import yaml

    from pipelines.cli import main

    cfg = _subscription_config(scoring_config, tmp_path / "output")
    subscriptions, _ = _ended_subscriptions(loaded)
    subscriptions_file = tmp_path / "subscriptions.parquet"
    subscriptions.to_parquet(subscriptions_file)
    config_file = tmp_path / "churn.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.delenv("CHURN_SCORE_DB_URL", raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["score", "--config", str(config_file), "--subscriptions", str(subscriptions_file)])

    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exited.value.code == 2
    assert len(errors) == 1 and errors[0].startswith("error: nobody to score as of ")
    seen = {
        str(c)
        for table in (loaded.events, loaded.customers, subscriptions)
        for c in table["customer_id"].unique()
    }
    assert f"none of the {len(seen):,} customers seen" in errors[0]


def test_the_activity_rule_is_named_when_nobody_is_active():
    from pipelines.config import ProjectConfig
    from pipelines.scoring import NobodyToScoreError, require_someone_to_score

    scores = pd.DataFrame(
        {"status": ["scored", "scored", "no_history"], "is_active": [False, False, None]}
    )

    with pytest.raises(NobodyToScoreError) as raised:
        require_someone_to_score(scores, ProjectConfig(), date(2024, 6, 1))

    assert str(raised.value) == (
        "nobody to score as of 2024-06-01: none of the 3 customers seen (2 with history before "
        "that date) is active by the rule labels.churn_definition 'activity': a purchase/visit "
        "event in the 90 days before the date; no risk list was written"
    )
    active = scores.assign(is_active=[True, False, None])
    require_someone_to_score(active, ProjectConfig(), date(2024, 6, 1))  # no error
