"""Notebooks cannot rot: every notebook in notebooks/ runs top to bottom on small generated data.

One shared set-up (module-scoped) does what a user does before opening a notebook: generate a
small CRM history (``features.synthetic``), write a project config pointing at it, build the
snapshot table and train a churn model into a temporary MLflow store, all through the
pipeline's own flows (``pipelines.data``). Each notebook then runs in a fresh kernel with
environment variables pointing at that world; a notebook needing more (another model, other
files) gets its own entry in ``NOTEBOOK_SETUPS``, and a new notebook without one runs with the
common variables (``common_environment``).

Also checked: notebooks are committed without outputs (they are stripped before commit).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

N_CUSTOMERS = 1500
SEED = 11
CELL_TIMEOUT_S = 300


@dataclass(frozen=True)
class NotebookWorld:
    """What the shared set-up made: data, config, snapshots and a registered churn model."""

    root: Path
    data_dir: Path
    config_file: Path
    snapshots: Path
    tracking_uri: str
    churn_model_name: str
    churn_run_id: str


def _write_config(root: Path, data_dir: Path) -> Path:
    """A project config like churn.yaml, every path absolute and inside ``root``."""
    import yaml

    config = {
        "data": {
            "events": {"path": str(data_dir / "events.parquet")},
            "customers": {"path": str(data_dir / "customers.parquet")},
            "subscriptions": {"path": str(data_dir / "subscriptions.parquet")},
            "quarantine_dir": str(root / "quarantine"),
        },
        "cutoffs": {"count": 5, "every_days": 30},
        "output_dir": str(root / "output"),
        "training": {
            "n_trials": 2,
            "time_budget_s": 60,
            "max_boosting_rounds": 150,
            "early_stopping_rounds": 15,
            "n_jobs": 1,
            "seed": 0,
            "mlflow": {
                "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                "artifact_location": str(root / "mlruns" / "artifacts"),
                "experiment_name": "notebook-tests",
            },
        },
    }
    path = root / "churn.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> NotebookWorld:
    from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data
    from pipelines.config import load_config
    from pipelines.data import run_snapshots, run_train
    from training.config import resolved_tracking_uri

    root = tmp_path_factory.mktemp("notebook-world")
    data_dir = root / "data"
    write_crm_data(generate_crm_data(GeneratorParams(n_customers=N_CUSTOMERS, seed=SEED)), data_dir)
    config_file = _write_config(root, data_dir)
    cfg = load_config(config_file, environ={})
    snapshots = root / "output" / "snapshots.parquet"
    run_snapshots(cfg, snapshots)
    result = run_train(cfg, "churn", snapshots_path=snapshots, progress=False)
    return NotebookWorld(
        root=root,
        data_dir=data_dir,
        config_file=config_file,
        snapshots=snapshots,
        tracking_uri=resolved_tracking_uri(cfg.training.mlflow),
        churn_model_name=result.model_name,
        churn_run_id=result.run_id,
    )


def common_environment(world: NotebookWorld) -> dict[str, str]:
    """The variables every notebook understands (see each notebook's parameters cell)."""
    return {
        "CHURN_CONFIG": str(world.config_file),
        "CHURN_MLFLOW_TRACKING_URI": world.tracking_uri,
        "CHURN_SNAPSHOTS": str(world.snapshots),
        "CHURN_DATA_DIR": str(world.data_dir),
    }


@dataclass(frozen=True)
class NotebookSetup:
    """How to run one notebook: its environment, and how many figures it must show at least."""

    environment: Callable[[NotebookWorld], dict[str, str]] = common_environment
    min_figures: int = 1


def _model_evaluation_environment(world: NotebookWorld) -> dict[str, str]:
    return {
        **common_environment(world),
        "CHURN_MODEL_NAME": world.churn_model_name,
        "CHURN_MODEL_ALIAS": "champion",
    }


#: Per-notebook set-up; a notebook not listed runs with ``NotebookSetup()``.
NOTEBOOK_SETUPS: dict[str, NotebookSetup] = {
    # the 7 evaluation plots of the run, and the segment bar chart
    "01_model_evaluation.ipynb": NotebookSetup(_model_evaluation_environment, min_figures=8),
}


def _figure_outputs(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def _error_outputs(notebook) -> list[str]:
    return [
        f"{output.get('ename')}: {output.get('evalue')}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_and_shows_figures(
    path: Path, world: NotebookWorld, monkeypatch: pytest.MonkeyPatch
):
    import nbformat
    from nbclient import NotebookClient

    setup = NOTEBOOK_SETUPS.get(path.name, NotebookSetup())
    for name, value in setup.environment(world).items():
        monkeypatch.setenv(name, value)  # inherited by the kernel process
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        # run where Jupyter would: in the notebooks folder
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    assert not _error_outputs(notebook)
    figures = _figure_outputs(notebook)
    assert figures >= setup.min_figures, (
        f"{path.name} showed {figures} figure(s), expected at least {setup.min_figures}"
    )
