"""The `churn` command line as a CRM job calls it: files in, files and one JSON line out."""

from __future__ import annotations

import json
from pathlib import Path

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
    "command",
    ["generate", "validate", "check", "features", "snapshots", "score", "train", "demo"],
)
def test_every_command_has_help(command, capsys):
    code, text, _ = run_cli(capsys, command, "--help")
    assert code == 0
    assert f"churn {command}" in text and "--" in text


#: Each command with an ``--engine``, its required flags, and its two flows (module, name).
ENGINE_COMMANDS = {
    "features": (
        ["--as-of", "2024-06-01", "--out", "f.parquet"],
        ("pipelines.data", "run_features"),
        ("pipelines.spark_flows", "run_features_spark"),
    ),
    "snapshots": (
        ["--out", "s.parquet"],
        ("pipelines.data", "run_snapshots"),
        ("pipelines.spark_flows", "run_snapshots_spark"),
    ),
    "score": (
        ["--as-of", "2024-06-01", "--out", "r.parquet"],
        ("pipelines.scoring", "run_score"),
        ("pipelines.spark_flows", "run_score_spark"),
    ),
}


def _record_flows(monkeypatch) -> list[tuple[str, tuple]]:
    """Replace every command's local and Spark flow by one that records its call."""
    import importlib

    calls: list[tuple[str, tuple]] = []
    for _, local, spark in ENGINE_COMMANDS.values():
        for module, name in (local, spark):

            def flow(*args, _name=name, **kwargs):
                calls.append((_name, args))
                return {"flow": _name, "warnings": ["a warning"]}

            monkeypatch.setattr(importlib.import_module(module), name, flow)
    return calls


@pytest.mark.parametrize("engine", ["local", "spark"])
@pytest.mark.parametrize("command", sorted(ENGINE_COMMANDS))
def test_engine_picks_the_flow_of_that_engine(command, engine, monkeypatch, tmp_path, capsys):
    calls = _record_flows(monkeypatch)
    monkeypatch.chdir(tmp_path)
    flags, local, spark = ENGINE_COMMANDS[command]
    code, payload, _ = run_cli(capsys, command, *flags, "--engine", engine)
    expected = (spark if engine == "spark" else local)[1]
    assert code == 0
    assert payload["flow"] == expected
    assert [name for name, _ in calls] == [expected]
    if command != "snapshots":
        assert str(calls[0][1][1]) == "2024-06-01"  # --as-of reaches both engines parsed


@pytest.mark.parametrize("command", sorted(ENGINE_COMMANDS))
def test_an_unknown_engine_is_a_usage_error_before_any_flow_runs(
    command, monkeypatch, tmp_path, capsys
):
    calls = _record_flows(monkeypatch)
    flags = ENGINE_COMMANDS[command][0]
    code, payload, err = run_cli(
        capsys, command, *flags, "--config", str(tmp_path / "absent.yaml"), "--engine", "dask"
    )
    assert code == 2
    assert payload is None and calls == []
    assert "'dask' is not local or spark" in err  # the engine is refused before the config


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_score_without_a_champion_exits_2_on_either_engine(engine, monkeypatch, capsys):
    from serving.scoring import ChampionMissingError

    def no_champion(*args, **kwargs):
        raise ChampionMissingError("no churn model registered")

    _, local, spark = ENGINE_COMMANDS["score"]
    module, name = spark if engine == "spark" else local
    monkeypatch.setattr(f"{module}.{name}", no_champion)
    code, payload, err = run_cli(capsys, "score", "--engine", engine)
    assert code == 2
    assert payload is None
    assert "error: no churn model registered" in err


def test_score_prints_the_warnings_of_the_spark_flow(monkeypatch, capsys):
    _record_flows(monkeypatch)
    code, payload, err = run_cli(capsys, "score", "--engine", "spark")
    assert code == 0 and payload["flow"] == "run_score_spark"
    assert "warning: a warning" in err


def test_snapshots_can_train_on_a_shorter_window_than_the_horizon(generated, tmp_path, capsys):
    out = tmp_path / "snapshots.parquet"
    code, payload, _ = run_cli(
        capsys, "snapshots", "--out", str(out),
        "--events", str(generated / "events.parquet"),
        "--horizon-days", "273", "--training-horizon-days", "92",
    )  # fmt: skip
    assert code == 0 and payload["rows"] > 0
    table = pd.read_parquet(out)
    assert table["label_matured"].all()  # the grid ends where the 92-day window matures
    assert table.attrs["labels"] == {
        "horizon_days": 273,
        "training_horizon_days": 92,
        "lead_days": 0,
    }


def test_a_training_window_longer_than_the_horizon_is_a_one_line_error(generated, capsys):
    code, _, err = run_cli(
        capsys, "check", "--events", str(generated / "events.parquet"),
        "--horizon-days", "60", "--training-horizon-days", "92",
    )  # fmt: skip
    assert code == 2
    assert "training_horizon_days" in err


# --------------------------------------------------------------------------------------------
# churn demo: a complete first run from any folder
# --------------------------------------------------------------------------------------------


def _record_demo(monkeypatch) -> list:
    """Replace the demo flow by one that records the config it was given."""
    configs: list = []

    def flow(cfg, **kwargs):
        configs.append(cfg)
        return {"mlflow_tracking_uri": cfg.training.mlflow.tracking_uri}

    monkeypatch.setattr("pipelines.demo.run_demo", flow)
    return configs


def _demo_locations(cfg) -> dict[str, str]:
    mlflow = cfg.training.mlflow
    return {
        "events": cfg.data.events.path,
        "customers": cfg.data.customers.path,
        "subscriptions": cfg.data.subscriptions.path,
        "quarantine": cfg.data.quarantine_dir,
        "output": cfg.output_dir,
        "risk_list": str(cfg.serving.risk_list_location(cfg.output_dir)),
        "tracking": mlflow.tracking_uri.removeprefix("sqlite:///"),
        "registry": (mlflow.registry_uri or "").removeprefix("sqlite:///"),
        "artifacts": mlflow.artifact_location,
    }


def test_demo_writes_under_churn_demo_in_the_working_directory(monkeypatch, tmp_path, capsys):
    configs = _record_demo(monkeypatch)
    (tmp_path / "churn.yaml").write_text("output_dir: elsewhere\n")  # not read: no --config
    monkeypatch.chdir(tmp_path)
    code, payload, _ = run_cli(capsys, "demo")
    assert code == 0 and len(configs) == 1
    root = tmp_path.resolve() / "churn-demo"
    locations = _demo_locations(configs[0])
    assert all(Path(p).is_relative_to(root) for p in locations.values()), locations
    assert locations["events"] == str(root / "data" / "events.parquet")
    assert locations["tracking"] == locations["registry"] == str(root / "mlruns" / "mlflow.db")
    assert payload["mlflow_tracking_uri"] == f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def test_demo_with_a_config_and_no_out_writes_where_the_config_says(monkeypatch, tmp_path, capsys):
    configs = _record_demo(monkeypatch)
    config = tmp_path / "demo.yaml"
    config.write_text("data:\n  events:\n    path: data/demo/events.parquet\noutput_dir: out\n")
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_cli(capsys, "demo", "--config", str(config))
    assert code == 0
    assert configs[0].data.events.path == "data/demo/events.parquet"  # as `make demo` runs it
    assert configs[0].output_dir == "out"
    assert not (tmp_path / "churn-demo").exists()


def test_demo_on_a_config_without_event_files_and_no_out_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "sql.yaml"
    config.write_text("data:\n  events:\n    url: sqlite:///crm.db\n    table: events\n")
    code, payload, err = run_cli(capsys, "demo", "--config", str(config))
    assert code == 2 and payload is None
    assert err.strip() == "error: the demo writes generated files: data.events must be a file path"


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_demo_into_a_folder_it_cannot_write_is_a_one_line_error(
    where, monkeypatch, tmp_path, capsys
):
    configs = _record_demo(monkeypatch)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "a file" else blocker / "demo"
    code, payload, err = run_cli(capsys, "demo", "--out", str(out))
    assert code == 2 and payload is None and configs == []
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: cannot write the demo under {out}: ")


@pytest.mark.slow
def test_demo_runs_end_to_end_from_another_folder(tmp_path):
    """The console script, as after `pip install`, in a folder that is not the project's.

    Kept small as the scoring fixtures keep their trained stores (``TINY_TRAINING`` of
    ``benchmarks/trained_store.py``): 1,000 customers, one trial, a tiny boosting budget, no
    backtest; the settings come from ``--config``, every location from ``--out``.
    """
    import os
    import subprocess
    import sys

    churn = Path(sys.executable).with_name("churn")
    assert churn.is_file(), f"the console script is not installed beside {sys.executable}"
    cwd, out = tmp_path / "elsewhere", tmp_path / "first run"
    cwd.mkdir()
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "training:\n  max_boosting_rounds: 30\n  early_stopping_rounds: 5\n"
        "  log_trial_runs: false\n  backtest_cutoffs: 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    completed = subprocess.run(
        [str(churn), "demo", "--out", str(out), "--config", str(config),
         "--customers", "1000", "--trials", "1", "--time-budget", "1"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert list(cwd.iterdir()) == []  # nothing written where it was started
    root = out.resolve()
    assert summary["mlflow_tracking_uri"] == f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    assert (root / "mlruns" / "mlflow.db").is_file()
    assert set(summary["models"]) == {"churn", "upsell", "winback"}
    for written in (
        root / "data" / "events.parquet",
        root / "output" / "snapshots.parquet",
        root / "output" / "risk_list.parquet",
        Path(summary["retention_report"]),
        Path(summary["monitoring"]["html"]),
    ):
        assert written.is_file() and written.is_relative_to(root), written
