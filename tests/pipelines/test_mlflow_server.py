"""Tracking and registry on a shared MLflow server backed by the real PostgreSQL.

The configuration of docs/scaling.md ("MLflow on a shared server"), end to end: a fresh
database ``mlflow_test_<random>`` on 127.0.0.1:5432 (created with psycopg in autocommit mode,
dropped afterwards), ``mlflow server`` on it with proxied artifacts in a tmp directory, and the
project's own code talking to it only over HTTP:

train (two churn runs) -> register -> promote on merit -> serve (load ``models:/<name>@champion``
through the server and score).

Skipped, saying why, when PostgreSQL is unreachable or the server does not start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL_NAME = "churn-shared-server"
SERVER_START_TIMEOUT_S = 45


def _connect_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {error}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fresh_database():
    """A new, empty database for this run's tracking and registry tables; dropped after."""
    name = f"mlflow_test_{secrets.token_hex(4)}"
    with _connect_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with _connect_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tracking_server(fresh_database, tmp_path_factory):
    """``mlflow server`` on the fresh database; yields (tracking URI, artifacts directory)."""
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        fresh_database,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with log.open("wb") as output:
        # its own process group: the server starts uvicorn and job-runner children
        server = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.skip(f"mlflow server exited at start: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"mlflow server did not answer within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield uri, artifacts
    finally:
        _stop_group(server)


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (only what this fixture started: the server and its
    uvicorn / job-runner children), wait, then SIGKILL whatever is left of the group."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)  # anyone of the group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    server.wait()


@pytest.fixture(scope="module")
def snapshots():
    """A small real snapshot table: generated CRM data through the feature engine."""
    from features.config import FeatureParams, LabelParams
    from features.snapshots import build_snapshots
    from features.synthetic import GeneratorParams, generate_crm_data

    data = generate_crm_data(GeneratorParams(n_customers=600, seed=8, activity_scale=0.5))
    table, _ = build_snapshots(
        data.events,
        ["2024-10-01", "2024-12-01", "2025-02-01", "2025-04-01"],
        customers=data.customers,
        subscriptions=data.subscriptions,
        feature_params=FeatureParams(clv_fit_sample=2000),
        label_params=LabelParams(horizon_days=60),
    )
    return table


@pytest.fixture(scope="module")
def project_config(tracking_server, tmp_path_factory):
    """The project config a team would use: only the tracking URI points at the server."""
    from pipelines.config import load_config

    uri, _ = tracking_server
    overrides = {
        "training.mlflow.tracking_uri": uri,
        "training.mlflow.experiment_name": "shared-server-test",
        "training.n_trials": 1,
        "training.time_budget_s": 30,
        "training.max_boosting_rounds": 60,
        "training.early_stopping_rounds": 10,
        "training.n_jobs": 1,
        "training.log_trial_runs": False,
        "training.tasks": {"churn": {"registered_model_name": MODEL_NAME}},
        "output_dir": str(tmp_path_factory.mktemp("output")),
    }
    return load_config(None, overrides, environ={})


@pytest.fixture(scope="module")
def training_runs(project_config, snapshots, tmp_path_factory, monkeypatch_module):
    """Two churn runs through the server: the full model, then one without its strongest
    signals (it must not replace the champion)."""
    from training.config import configure_mlflow
    from training.train import train

    # a client-local ./mlruns must not be touched: run from an empty directory
    monkeypatch_module.chdir(tmp_path_factory.mktemp("cwd"))
    configure_mlflow(project_config.training.mlflow)
    cfg = project_config.training
    first = train(cfg, snapshots, task="churn", data_source="fixture", progress=False)
    # weaker: only tenure and country (with the per-event-type columns, leaving out a few
    # recency columns no longer makes a model weaker: others carry the same signal)
    from training.datasets import feature_columns

    kept = ("tenure_days", "country")
    weaker = cfg.task("churn").model_copy(
        update={"exclude_features": tuple(f for f in feature_columns(snapshots) if f not in kept)}
    )
    cfg_weaker = cfg.model_copy(update={"tasks": {**cfg.tasks, "churn": weaker}})
    second = train(cfg_weaker, snapshots, task="churn", data_source="fixture", progress=False)
    return first, second


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_runs_and_versions_live_in_postgres_and_artifacts_on_the_server(
    training_runs, fresh_database, tracking_server
):
    import sqlalchemy as sa

    first, second = training_runs
    _, artifacts = tracking_server
    engine = sa.create_engine(fresh_database)
    with engine.connect() as connection:
        runs = connection.execute(sa.text("select run_uuid from runs")).scalars().all()
        versions = connection.execute(
            sa.text("select version from model_versions where name = :name order by version"),
            {"name": MODEL_NAME},
        ).scalars()
        versions = [str(v) for v in versions]
    engine.dispose()
    assert {first.run_id, second.run_id} <= set(runs)
    assert versions == ["1", "2"]
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert "MLmodel" in stored  # the model files went through the server's artifact proxy
    assert not Path("mlruns").exists()


def test_first_version_is_promoted_and_a_weaker_one_is_not(training_runs, tracking_server):
    import mlflow

    first, second = training_runs
    assert (first.model_version, first.alias, first.promoted) == ("1", "champion", True)
    # the champion was loaded back through the server and re-scored on the same test rows
    assert second.alias == "challenger" and not second.promoted
    assert "does not beat champion v1" in second.promotion_reason
    client = mlflow.MlflowClient(tracking_uri=tracking_server[0])
    aliases = client.get_registered_model(MODEL_NAME).aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {
        "champion": "1",
        "challenger": "2",
    }


def test_champion_is_served_by_alias_through_the_server(training_runs, project_config, snapshots):
    import mlflow

    from serving.scoring import load_champions, score_customers
    from training.registry import score_registered_model

    uri = project_config.training.mlflow.tracking_uri
    models = load_champions(project_config)
    assert models.churn.version == "1"
    assert models.churn.model_uri == f"models:/{MODEL_NAME}/1"
    latest = snapshots[snapshots["cutoff"] == snapshots["cutoff"].max()]
    scores = score_customers(latest, models, project_config, explain=False)
    active = latest["is_active"].to_numpy(dtype=bool)
    churn = scores["churn_probability"].to_numpy(dtype=np.float64)
    assert np.isfinite(churn[active]).all() and np.isnan(churn[~active]).all()

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    expected = score_registered_model(f"models:/{MODEL_NAME}@champion", latest.loc[active])
    np.testing.assert_allclose(churn[active], expected, rtol=1e-12)
