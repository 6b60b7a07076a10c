"""The `churn` command line as a CRM job calls it: files in, files and one JSON line out."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run `churn ARGV`; return the exit code, the last stdout line as JSON, and stderr.

    For `--help` the payload is the whole help text.
    """
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    if "--help" in argv:
        return code, out, err
    payload = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return code, payload, err


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("crm")
    main_args = ["generate", "--customers", "400", "--seed", "3", "--out", str(out)]
    try:
        main(main_args)
    except SystemExit as exc:
        assert not exc.code
    return out


def test_generate_writes_the_three_tables_deterministically(generated, tmp_path, capsys):
    code, payload, _ = run_cli(
        capsys, "generate", "--customers", "400", "--seed", "3", "--out", str(tmp_path)
    )
    assert code == 0
    assert set(payload["files"]) == {"events", "customers", "subscriptions"}
    again = pd.read_parquet(tmp_path / "events.parquet")
    first = pd.read_parquet(generated / "events.parquet")
    pd.testing.assert_frame_equal(again, first)
    assert payload["events"] == len(first)


def test_features_gives_one_row_per_customer_with_history(generated, tmp_path, capsys):
    out = tmp_path / "features.parquet"
    code, payload, _ = run_cli(
        capsys,
        "features",
        "--as-of", "2024-06-01",
        "--out", str(out),
        "--events", str(generated / "events.parquet"),
        "--customers", str(generated / "customers.parquet"),
    )  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out)
    events = pd.read_parquet(generated / "events.parquet")
    before = events[events["timestamp"] < pd.Timestamp("2024-06-01")]
    assert len(table) == payload["customers"] == before["customer_id"].nunique()
    assert table["customer_id"].is_unique
    assert payload["events_at_or_after_cutoff_ignored"] == int(
        (events["timestamp"] >= pd.Timestamp("2024-06-01")).sum()
    )
    assert (tmp_path / "features.parquet.stats.json").is_file()


def test_a_crm_export_with_other_names_is_mapped_and_bad_rows_quarantined(
    generated, tmp_path, capsys
):
    events = pd.read_parquet(generated / "events.parquet").head(2000)
    export = pd.DataFrame(
        {
            "account_id": events["customer_id"].astype(str),
            "event_time": events["timestamp"].dt.strftime("%d/%m/%Y %H:%M:%S"),
            "type": events["event_type"].astype(str).replace({"purchase": "order"}),
            "revenue": events["amount"],
        }
    )
    export.loc[0, "event_time"] = "not a date"
    export.loc[1, "revenue"] = -5.0
    path = tmp_path / "export.csv"
    export.to_csv(path, index=False)
    config = tmp_path / "crm.yaml"
    config.write_text(
        f"""
data:
  events:
    path: {path}
    columns: {{account_id: customer_id, event_time: timestamp, type: event_type, revenue: amount}}
    timestamp_format: "%d/%m/%Y %H:%M:%S"
    event_type_mapping: {{order: purchase}}
  quarantine_dir: {tmp_path / "quarantine"}
"""
    )
    code, payload, err = run_cli(capsys, "validate", "--config", str(config))
    assert code == 0
    assert payload["events"] == len(export) - 2  # nothing silently dropped
    quarantine = pd.read_csv(tmp_path / "quarantine" / "events_quarantine.csv")
    assert sorted(quarantine["row"]) == [0, 1]
    assert "timestamp" in err and "negative" in err


def test_a_missing_required_column_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "events.csv"
    pd.DataFrame({"customer_id": ["a"], "event_type": ["visit"]}).to_csv(path, index=False)
    code, payload, err = run_cli(
        capsys, "features", "--as-of", "2024-01-01", "--out", str(tmp_path / "f.parquet"),
        "--events", str(path),
    )  # fmt: skip
    assert code == 2
    assert payload is None
    assert "timestamp" in err and "Traceback" not in err


def test_a_bad_date_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "features", "--as-of", "2024-13-01", "--out", str(tmp_path / "f.parquet")
    )
    assert code == 2
    assert "YYYY-MM-DD" in err


def test_check_exits_3_when_the_data_cannot_support_a_model(generated, tmp_path, capsys):
    code, payload, err = run_cli(
        capsys, "check", "--events", str(generated / "events.parquet"),
    )  # fmt: skip
    assert code == 3  # 400 customers are below the 500-customer minimum
    assert payload["verdict"] == "not usable"
    assert "not usable" in err.lower()


def test_snapshots_stack_cutoffs_with_labels(generated, tmp_path, capsys):
    out = tmp_path / "snapshots.parquet"
    code, payload, _ = run_cli(
        capsys, "snapshots", "--out", str(out),
        "--events", str(generated / "events.parquet"),
        "--customers", str(generated / "customers.parquet"),
        "--subscriptions", str(generated / "subscriptions.parquet"),
    )  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out)
    assert table.groupby("cutoff")["customer_id"].apply(lambda s: s.is_unique).all()
    assert len(payload["cutoffs"]) == 4  # the default grid: 4 cutoffs 30 days apart
    assert table["churn_label"].notna().any() and table["winback_label"].notna().any()


@pytest.mark.parametrize(
    "command", ["generate", "validate", "check", "features", "snapshots", "train", "demo"]
)
def test_every_command_has_help(command, capsys):
    code, text, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert f"churn {command}" in text and "--" in text
