"""Fixtures of the serving tests that run the real service.

``serving_harness``: the module ``benchmarks.serving``, the harness the serving benchmark
uses too (``prepare_fixture``, ``feature_rows``, ``running_server``, ``free_port``).
``serving_fixture``: the complete set-up it builds - tiny trained champions in an MLflow store,
the batch risk list, the feature table, the project config - once per session for every module
of this folder. ``start_server``: ``bentoml serve`` in a subprocess on a free port, started as
``churn serve`` starts it, for a config file and extra environment variables.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks import serving as serving_benchmark


@pytest.fixture(scope="session")
def serving_harness() -> ModuleType:
    """``benchmarks.serving``, the serving benchmark's module."""
    return serving_benchmark


@pytest.fixture(scope="session")
def serving_fixture(serving_harness, tmp_path_factory) -> dict:
    """Paths of the serving set-up (``prepare_fixture``): root, config, features, events..."""
    return serving_harness.prepare_fixture(tmp_path_factory.getbasetemp() / "serving-fixture")


@pytest.fixture(scope="session")
def start_server(serving_harness) -> Callable[..., AbstractContextManager[str]]:
    """``start_server(config, log_path, env=None)``: a context manager yielding the base URL of
    a server reading ``config`` (one worker), stopped on exit; ``env`` adds variables such as
    the API key. Refusing to start raises ``RuntimeError`` with the log's tail."""

    def start(
        config: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> AbstractContextManager[str]:
        port = serving_harness.free_port()
        return serving_harness.running_server(
            serving_harness.service_command(port),
            port=port,
            env={"CHURN_CONFIG": str(config), "CHURN_SERVICE_WORKERS": "1", **(env or {})},
            log_path=log_path,
        )

    return start
