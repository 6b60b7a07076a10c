"""`churn monitor` and `churn retrain` end to end on generated data and a tmp MLflow store.

One world per module: a CRM history without drift (A) and one from the same seed with a 30%
price rise and a new sales channel from 2025-03-01 (B). The champion is trained by
``run_retrain`` on A as it was on 2025-04-01 (events before that day), so its test cutoff is
2025-01-01; the monitor then sees A or B up to 2025-07-01: a current batch on 2025-06-25 (the
reference's weekday) and a batch whose labels have matured since training (2025-04-02).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

N_CUSTOMERS = 3000
SEED = 11
TRAINED_ON_DATA_UNTIL = pd.Timestamp("2025-04-01")
DRIFT_START = "2025-03-01"
CHANNEL_FEATURES = {"last_purchase_channel", "acquisition_channel"}
UNRELATED_FEATURES = {"customer_type", "country", "support_tickets_90d", "has_subscription"}


@dataclass(frozen=True)
class World:
    root: Path
    config_a: Path
    config_b: Path
    retrain: dict


def _write_config(root: Path, name: str) -> Path:
    import yaml

    data_dir = root / name
    config = {
        "data": {
            "events": {"path": str(data_dir / "events.parquet")},
            "customers": {"path": str(data_dir / "customers.parquet")},
            "subscriptions": {"path": str(data_dir / "subscriptions.parquet")},
            "quarantine_dir": str(data_dir / "quarantine"),
        },
        "cutoffs": {"count": 4, "every_days": 30},
        "output_dir": str(data_dir / "output"),
        "training": {
            "n_trials": 2,
            "time_budget_s": 60,
            "max_boosting_rounds": 120,
            "early_stopping_rounds": 15,
            "n_jobs": 1,
            "log_trial_runs": False,
            "mlflow": {
                "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                "artifact_location": str(root / "mlruns" / "artifacts"),
                "experiment_name": "monitoring-tests",
            },
        },
        "monitoring": {"report_columns": 4},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _config(path: Path):
    from pipelines.config import load_config

    return load_config(path, environ={})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from features.synthetic import DriftSpec, GeneratorParams, generate_crm_data, write_crm_data
    from pipelines.data import load_validated_data
    from pipelines.monitoring import run_retrain

    root = tmp_path_factory.mktemp("monitoring-world")
    write_crm_data(
        generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=SEED)), root / "A"
    )
    drift = DriftSpec(start=DRIFT_START, price_increase=0.3, new_channel="marketplace")
    write_crm_data(
        generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=SEED, drift=drift)),
        root / "B",
    )
    config_a, config_b = _write_config(root, "A"), _write_config(root, "B")
    cfg = _config(config_a)
    data = load_validated_data(cfg)
    then = replace(data, events=data.events.loc[data.events["timestamp"] < TRAINED_ON_DATA_UNTIL])
    summary = run_retrain(cfg, data=then)
    return World(root=root, config_a=config_a, config_b=config_b, retrain=summary)


def _client(cfg):
    import mlflow

    from training.config import configure_mlflow

    configure_mlflow(cfg.training.mlflow)
    return mlflow.MlflowClient()


def _aliases(cfg) -> dict[str, str]:
    from pipelines.monitoring import registry_aliases

    return registry_aliases(_client(cfg), cfg.training.task("churn").registered_model_name)


# --------------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------------


def test_first_retrain_promotes_and_records_the_decision(world: World):
    summary = world.retrain
    assert summary["status"] == "promoted", summary
    assert summary["champion_before"] is None and summary["champion_after"] == "1"
    assert summary["test_cutoff"] == "2025-01-01"
    client = _client(_config(world.config_a))
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["retrain_status"] == "promoted"
    assert parent.data.tags["trigger"] == "manual"
    assert "challenger_pr_auc" in parent.data.metrics


def test_training_logs_the_reference_data_serving_and_monitoring_read(world: World):
    import mlflow

    client = _client(_config(world.config_a))
    run_id = world.retrain["challenger_run_id"]
    files = {f.path for f in client.list_artifacts(run_id, "reference")}
    assert files == {
        "reference/test_predictions.parquet",
        "reference/reference_features.parquet",
        "reference/global_stats.json",
        "reference/reference_info.json",
    }
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reference"))
    predictions = pd.read_parquet(local / "test_predictions.parquet")
    assert list(predictions.columns) == ["customer_id", "cutoff", "probability", "label"]
    assert (predictions["cutoff"] == pd.Timestamp("2025-01-01")).all()
    features = pd.read_parquet(local / "reference_features.parquet")
    assert {"customer_id", "cutoff", "probability", "churn_label", "recency_days"} <= set(
        features.columns
    )
    stats = json.loads((local / "global_stats.json").read_text())
    assert stats["cutoff"] == "2025-01-01"


def test_a_failed_retrain_leaves_the_champion_untouched(world: World, monkeypatch):
    from pipelines.monitoring import run_retrain

    cfg = _config(world.config_a)
    before = _aliases(cfg)

    def broken_tuning(*args, **kwargs):
        raise RuntimeError("tuning crashed midway")

    monkeypatch.setattr("training.train.tune_xgboost", broken_tuning)
    summary = run_retrain(cfg)
    assert summary["status"] == "failed"
    assert "tuning crashed midway" in summary["error"]
    assert _aliases(cfg) == before
    assert summary["champion_after"] == before["champion"]
    assert _client(cfg).get_run(summary["mlflow_run_id"]).info.status == "FAILED"


def test_restore_aliases_undoes_a_half_done_promotion(world: World):
    import mlflow

    from pipelines.monitoring import restore_aliases

    cfg = _config(world.config_a)
    client = _client(cfg)
    name = cfg.training.task("churn").registered_model_name
    before = _aliases(cfg)
    source = client.get_model_version(name, before["champion"]).source
    extra = mlflow.register_model(source, name).version
    client.set_registered_model_alias(name, "challenger", extra)
    client.set_registered_model_alias(name, "champion", extra)  # crashed right after this
    changed = restore_aliases(client, name, before)
    assert _aliases(cfg) == before
    assert changed == [
        f"champion: back to v{before['champion']}",
        f"challenger: removed from v{extra}",
    ]


class _ReloadHandler(BaseHTTPRequestHandler):
    calls: list[tuple[str, str | None]] = []

    def do_POST(self):  # the http.server API
        self.calls.append((self.path, self.headers.get("X-API-Key")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notify_reload_posts_and_never_raises(monkeypatch):
    from pipelines.monitoring import notify_reload

    server = HTTPServer(("127.0.0.1", 0), _ReloadHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    monkeypatch.setenv("CHURN_API_KEY", "secret")
    url = f"http://127.0.0.1:{server.server_port}/admin/reload"
    assert notify_reload(url) == "reloaded: HTTP 200"
    thread.join(5)
    server.server_close()
    assert _ReloadHandler.calls == [("/admin/reload", "secret")]
    assert "failed" in notify_reload(url, timeout_s=1)  # nobody listens any more


# --------------------------------------------------------------------------------------------
# monitor
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor_a(world: World) -> dict:
    from pipelines.monitoring import run_monitor

    return run_monitor(_config(world.config_a))


def test_same_process_raises_no_alarm(monitor_a: dict):
    assert monitor_a["alarm"] is False, monitor_a["alarm_reasons"]
    assert monitor_a["exit_code"] == 0
    assert monitor_a["reference_cutoff"] == "2025-01-01"
    assert monitor_a["current_cutoff"] == "2025-06-25"  # the reference's weekday


def test_realised_performance_is_judged_on_the_matured_batch(monitor_a: dict):
    performance = monitor_a["performance"]
    assert performance["cutoff"] == "2025-04-02" and performance["sufficient"]
    assert not performance["decayed"], performance["reasons"]
    assert set(performance["promised"]) >= {"roc_auc", "pr_auc", "lift_at_10", "ece"}
    assert abs(performance["realised"]["roc_auc"] - performance["promised"]["roc_auc"]) < 0.05
    assert monitor_a["target_drift"]["drifted"] is False


def test_report_and_summary_are_written_and_logged(monitor_a: dict, world: World):
    html_path, json_path = Path(monitor_a["html"]), Path(monitor_a["json"])
    page = html_path.read_text(encoding="utf-8")
    assert "id='crm-summary'" in page and "drawDashboard" in page
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["alarm"] is False and summary["mlflow_run_id"] == monitor_a["mlflow_run_id"]
    assert len(summary["feature_drift"]["columns"]) > 50
    client = _client(_config(world.config_a))
    run = client.get_run(monitor_a["mlflow_run_id"])
    assert run.data.tags["run_type"] == "monitor" and run.data.tags["alarm"] == "false"
    assert "drift.recency_days" in run.data.metrics
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "monitoring")}
    assert logged == {f"monitoring/{html_path.name}", f"monitoring/{json_path.name}"}


def test_injected_drift_raises_the_alarm_on_the_shifted_features(world: World):
    from pipelines.monitoring import run_monitor

    summary = run_monitor(_config(world.config_b), log_to_mlflow=False)
    assert summary["alarm"] and summary["exit_code"] == 4
    alarms = set(summary["feature_drift"]["alarms"])
    assert alarms >= CHANNEL_FEATURES
    assert not alarms & UNRELATED_FEATURES
    assert {"channel", "purchase_amount", "purchase_amount_vs_category"} <= set(
        summary["event_drift"]["alarms"]
    )


def test_cli_exits_with_the_alarm_code_and_retrains_on_drift(world: World, monkeypatch, capsys):
    import pipelines.monitoring
    from pipelines.cli import main

    calls = []

    def fake_retrain(cfg, **kwargs):
        calls.append(kwargs)
        return {"status": "kept_champion"}

    monkeypatch.setattr(pipelines.monitoring, "run_retrain", fake_retrain)
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", "--config", str(world.config_b), "--retrain-on-drift"])
    assert exit_info.value.code == 4
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["alarm"] is True and printed["retrain"] == {"status": "kept_champion"}
    assert [c["trigger"] for c in calls] == ["monitor"]
