"""Session fixtures shared across test folders.

``scoring_store``: one MLflow store with churn, up-sell and win-back champions trained (tiny
budget) on generated CRM data, built once per session for ``tests/serving/test_scoring.py`` and
``tests/pipelines/test_batch_scoring.py`` by ``benchmarks/trained_store.py``, the code the
scoring and serving benchmarks build theirs with. ``scoring_config`` turns it into a
``ProjectConfig`` with a caller's output folder and serving settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import trained_store


@pytest.fixture(scope="session")
def scoring_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Generated data (2,000 customers, seed 11) and its three champions, as plain JSON:
    ``paths`` (table -> file), ``mlflow`` (store settings), ``data_end``, ``n_customers``."""
    from training.config import TrainingConfig

    store = trained_store
    root = tmp_path_factory.mktemp("scoring-store")
    n_customers = 2000
    history = store.generate_history(root, n_customers=n_customers, seed=11)
    mlflow = store.mlflow_settings(root, "scoring-tests")
    training = TrainingConfig.model_validate({**store.TINY_TRAINING, "n_jobs": 2, "mlflow": mlflow})
    store.train_tasks(training, history)
    return {
        "paths": {name: str(path) for name, path in history.paths.items()},
        "mlflow": mlflow,
        "data_end": str(history.data_end.date()),
        "n_customers": n_customers,
    }


@pytest.fixture(scope="session")
def scoring_config(scoring_store: dict):
    """A factory: ``scoring_config(output_dir, **serving)`` is a ``ProjectConfig`` reading the
    store's data and champions, writing under ``output_dir``, with those serving settings."""
    from pipelines.config import ProjectConfig

    def build(output_dir: Path, **serving) -> ProjectConfig:
        settings = trained_store.project_settings(
            scoring_store["paths"],
            output_dir,
            training={"mlflow": scoring_store["mlflow"]},
            serving=serving,
        )
        return ProjectConfig.model_validate(settings)

    return build
