"""Schemathesis against the live service's own OpenAPI document: no input gets a 5xx.

The real server (``bentoml serve``, with an API key; ``conftest.py`` starts it) on the tiny
trained models of ``benchmarks/serving.py:prepare_fixture``; Schemathesis generates requests from
``/docs.json`` for every operation (up to 30 examples per operation and mode, positive and
negative: wrong types, missing and extra fields, odd strings, huge numbers) and each must be
answered below 500. (Schemathesis' pytest plugin, ``from_fixture``/``parametrize``, fails on
this pytest version - it sets ``request.node._nodeid`` - so its strategies are driven by
Hypothesis directly.) ``POST /admin/reload`` is left out: its only input is ``force``, and
every forced reload loads all models again (seconds each); ``test_service.py`` covers it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

API_KEY = "schemathesis-key"
KEY_ENV = "CHURN_TEST_SCHEMATHESIS_KEY"


@pytest.fixture(scope="module")
def live(serving_fixture, start_server, tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("schemathesis")
    config = yaml.safe_load(Path(serving_fixture["config"]).read_text())
    config["serving"] = {"reload_interval_s": 0, "api_key_env": KEY_ENV}
    path = directory / "churn.yaml"
    path.write_text(yaml.safe_dump(config))
    with start_server(path, directory / "server.log", {KEY_ENV: API_KEY}) as url:
        yield url


def _operations(live: str) -> list:
    loaded = schemathesis.openapi.from_url(f"{live}/docs.json")
    operations = [result.ok() for result in loaded.get_all_operations()]
    return [op for op in operations if op.path != "/admin/reload"]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_gets_a_server_error(live, mode):
    """Every operation of the document, inputs that fit its schema and inputs that do not."""
    from schemathesis.generation.modes import GenerationMode

    operations = _operations(live)
    assert {op.path for op in operations} >= {"/score", "/risk_list", "/model_info"}
    failures: list[str] = []
    calls: dict[str, int] = {}
    for operation in operations:

        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(GenerationMode(mode)))
        def exercise(case) -> None:
            response = case.call(base_url=live, headers={"X-API-Key": API_KEY}, timeout=30)
            calls[case.path] = calls.get(case.path, 0) + 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.path} -> {response.status_code}: "
                    f"{response.text[:300]}\n{case.as_curl_command()}"
                )

        try:
            exercise()
        except Unsatisfiable:
            # nothing to violate (an operation without inputs): no negative case exists
            assert mode == "negative" and operation.method.upper() == "GET", operation.path
    assert failures == []
    assert calls["/score"] >= 20 and calls["/risk_list"] >= 20, calls  # the run did explore
