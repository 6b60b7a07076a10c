from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from features.config import CutoffConfig
from pipelines.config import load_config
from pipelines.data import resolve_cutoffs

REPO = Path(__file__).resolve().parents[2]


def test_committed_example_config_is_valid():
    cfg = load_config(REPO / "churn.yaml")
    assert cfg.data.events is not None
    assert cfg.labels.horizon_days == 90


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("labels:\n  horizon_days: 30\n")
    cfg = load_config(path, {"labels.horizon_days": 60, "labels.lead_days": None})
    assert cfg.labels.horizon_days == 60
    assert cfg.labels.lead_days == 0  # None overrides are ignored


def test_unknown_keys_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("labels:\n  horizon_dayz: 30\n")
    with pytest.raises(ValidationError, match="horizon_dayz"):
        load_config(path)


def test_source_needs_exactly_one_location(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  events:\n    path: a.csv\n    url: sqlite://\n    table: t\n")
    with pytest.raises(ValidationError, match="exactly one"):
        load_config(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_default_cutoffs_end_at_latest_matured_cutoff():
    data_end = pd.Timestamp("2025-07-01")
    cutoffs = resolve_cutoffs(CutoffConfig(count=3, every_days=30), data_end, label_span_days=90)
    assert cutoffs[-1] == pd.Timestamp("2025-04-02")
    assert cutoffs[-1] + pd.Timedelta(days=90) <= data_end
    assert [c2 - c1 for c1, c2 in zip(cutoffs, cutoffs[1:], strict=False)] == [
        pd.Timedelta(days=30)
    ] * 2


def test_explicit_cutoff_dates_are_sorted():
    cfg = CutoffConfig(dates=(date(2024, 6, 1), date(2024, 3, 1)))
    assert resolve_cutoffs(cfg, pd.Timestamp("2025-01-01"), 90) == [
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-06-01"),
    ]


def test_tracking_uri_comes_from_the_environment(tmp_path):
    cfg = load_config(environ={"CHURN_MLFLOW_TRACKING_URI": "postgresql://u@db/mlflow"})
    assert cfg.training.mlflow.tracking_uri == "postgresql://u@db/mlflow"


def test_cli_flag_beats_the_environment():
    cfg = load_config(
        overrides={"training.n_trials": 3},
        environ={"CHURN_MLFLOW_TRACKING_URI": "sqlite:///x.db"},
    )
    assert cfg.training.n_trials == 3
