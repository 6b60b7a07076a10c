"""The HTTP service (serving.service) at three levels.

1. Pieces without models: the request guard (API key, body size, content type) on a stub ASGI
   app, the cached action table against the rule table, the fast feature check against the
   schema's, the OpenAPI document, the ``churn serve`` command.
2. In-process with real models: the fast path gives exactly what ``serving.scoring`` gives,
   merged requests equal separate ones, bad feature values are 400s with readable messages.
3. The real server (``bentoml serve`` in a subprocess on a free port, like ``churn serve``
   starts it) called over HTTP with httpx (as a CRM would) and ``bentoml.SyncHTTPClient``:
   every endpoint, the API key, bad inputs, unknown customers, keep-alive, reload without
   downtime, refusing to start without a churn champion.

The models: tiny ones trained with ``training.train.train`` (one trial) on synthetic data, in an
MLflow store built once per session by ``benchmarks/serving.py:prepare_fixture`` (the harness
the serving benchmark uses too); ``conftest.py`` holds it and the server start-up.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from features.segments import LIFECYCLE_STAGES, RFM_SEGMENTS, VALUE_GROWTH_SEGMENTS, VALUE_TIERS
from pipelines.config import ProjectConfig, load_config
from serving import scoring
from serving.decisions import RISK_BANDS, ActionPolicy, apply_action_rules
from serving.guard import OPEN_PATHS, RequestError, RequestGuard
from serving.rows import _ActionTable
from serving.schemas import CustomerFeatures
from serving.service import ChurnService
from serving.settings import ServiceSettings, serve_command
from serving.state import load_state

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"
KEY_ENV = "CHURN_TEST_SERVICE_KEY"


# --------------------------------------------------------------------------------------------
# level 1: no models
# --------------------------------------------------------------------------------------------


async def _stub_app(scope, receive, send):
    """Echoes the body length: proves the guard let the request through (and replayed it)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = json.dumps({"received": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def guarded(api_key: str | None = API_KEY, max_bytes: int = 2048) -> httpx.AsyncClient:
    settings = ServiceSettings(
        config=ProjectConfig(serving={"max_request_bytes": max_bytes}),
        config_path=None,
        api_key=api_key,
    )
    app = RequestGuard(_stub_app, settings_loader=lambda: settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def call(client: httpx.AsyncClient, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        async with client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_guard_refuses_a_request_without_the_api_key():
    response = call(guarded(), "POST", "/score", json={})
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["error"]


def test_guard_refuses_a_wrong_api_key():
    response = call(guarded(), "POST", "/score", json={}, headers={"X-API-Key": "nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid API key"


@pytest.mark.parametrize(
    "headers", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}]
)
def test_guard_lets_the_right_key_through(headers):
    response = call(guarded(), "POST", "/score", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": 8}


def test_guard_compares_keys_in_constant_time(monkeypatch):
    import hmac

    compared = []
    original = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    call(guarded(), "POST", "/score", json={}, headers={"X-API-Key": "guess"})
    assert compared == [(b"guess", API_KEY.encode())]


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_guard_leaves_health_metrics_and_docs_open(path):
    assert call(guarded(), "GET", path).status_code == 200


def test_guard_without_a_configured_key_is_open():
    assert call(guarded(api_key=None), "POST", "/score", json={}).status_code == 200


def test_guard_refuses_a_large_body_by_its_length_without_reading_it():
    response = call(
        guarded(), "POST", "/score", content=b"x" * 4096, headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 413
    assert "4,096 bytes exceeds the limit of 2,048" in response.json()["error"]


def test_guard_counts_a_chunked_body_and_replays_a_small_one():
    async def chunks(n):  # no Content-Length: sent chunked
        for _ in range(n):
            yield b"x" * 512

    big = call(guarded(), "POST", "/score", content=chunks(8), headers={"X-API-Key": API_KEY})
    small = call(guarded(), "POST", "/score", content=chunks(2), headers={"X-API-Key": API_KEY})
    assert big.status_code == 413
    assert small.status_code == 200 and small.json() == {"received": 1024}


def test_guard_refuses_bodies_that_are_not_json():
    response = call(
        guarded(),
        "POST",
        "/score",
        content=b"a=1",
        headers={"X-API-Key": API_KEY, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


_RULE_ROW = st.fixed_dictionaries(
    {
        "is_active": st.booleans(),
        "risk_band": st.sampled_from([*RISK_BANDS, None]),
        "upsell_probability": st.one_of(st.none(), st.floats(0, 1)),
        "winback_probability": st.one_of(st.none(), st.floats(0, 1)),
        "value_tier": st.sampled_from([*VALUE_TIERS, None]),
        "lifecycle_stage": st.sampled_from([*LIFECYCLE_STAGES, None]),
        "value_growth_segment": st.sampled_from([*VALUE_GROWTH_SEGMENTS, None]),
        "rfm_segment": st.sampled_from([*RFM_SEGMENTS, None]),
    }
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_RULE_ROW, min_size=1, max_size=20))
def test_cached_action_table_decides_like_the_rule_table(rows):
    rows = [r for r in rows if not (r["is_active"] and r["risk_band"] is None)] or [
        {**rows[0], "is_active": False}
    ]
    policy = ActionPolicy()
    table = _ActionTable(policy)
    expected = apply_action_rules(pd.DataFrame(rows), policy)
    decided = table.decide(rows)
    assert [d[0] for d in decided] == expected["suggested_action"].tolist()
    assert [d[1] for d in decided] == expected["action_rule"].tolist()
    assert table.decide(rows) == decided  # the second time from memory


def test_openapi_document_lists_every_endpoint_with_a_valid_score_example():
    spec = ChurnService.openapi_spec.asdict()
    paths = spec["paths"]
    assert {"/score", "/risk_list", "/admin/reload", "/model_info"} <= set(paths)
    assert "get" in paths["/model_info"]
    body = paths["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    example = body["example"]
    assert example["customers"][0]["features"]["is_active"] is True
    assert body["title"] == "ScoreRequest"
    risk_list = paths["/risk_list"]["post"]["requestBody"]["content"]["application/json"]
    assert risk_list["schema"]["example"] == {"risk_band": ["high"], "top_n": 20}


def test_serve_command_keeps_idle_connections_longer_than_clients_do():
    command = serve_command(host="127.0.0.1", port=4321)
    assert command[1:3] == ["serve", "serving.service:ChurnService"]
    keep_alive = int(command[command.index("--timeout-keep-alive") + 1])
    assert keep_alive > 15  # httpx keeps idle connections 5 s, aiohttp 15 s


# --------------------------------------------------------------------------------------------
# level 2: in-process with the trained models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def project(serving_fixture) -> ProjectConfig:
    return load_config(Path(serving_fixture["config"]), environ={})


@pytest.fixture(scope="session")
def state(project):
    return load_state(project)


@pytest.fixture(scope="session")
def rows(serving_harness, serving_fixture, state) -> list[dict]:
    features = sorted({f for m in state.models.tasks.values() for f in m.features})
    return serving_harness.feature_rows(serving_fixture["features"], features)


def customers(*payloads: dict) -> list[CustomerFeatures]:
    return [CustomerFeatures(**p) for p in payloads]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_fast_path_gives_what_the_scoring_core_gives(state, project, serving_fixture, rows):
    fast, warnings = state.rows.score(customers(*rows))
    table = pd.read_parquet(serving_fixture["features"])
    core = scoring.score_customers(table, state.models, project)
    expected = scoring.result_records(core)
    assert len(fast) == len(expected) == len(table)
    mismatched = [a["customer_id"] for a, b in zip(fast, expected, strict=True) if not _same(a, b)]
    assert mismatched == []
    assert warnings == core.attrs["warnings"]
    statuses = {r["status"] for r in fast}
    assert statuses == {"scored"}
    assert {r["winback_probability"] is None for r in fast} == {True, False}  # both kinds


def test_merged_requests_get_what_they_get_alone(state, rows):
    first = state.rows.check(customers(*rows[:3]))
    second = state.rows.check(customers(*rows[3:4], {"customer_id": "X", "features": {}}))
    merged = state.rows.score_checked([first, second])
    alone = [state.rows.score_checked([first])[0], state.rows.score_checked([second])[0]]
    assert _same(merged, alone)


def test_models_without_the_fast_path_give_the_same_answers(state, project, rows):
    """Models that are not this project's pyfunc go through serving.scoring instead."""
    service = ChurnService.inner.__new__(ChurnService.inner)  # no model loading
    service.cfg = project
    chosen = customers(*rows[:5], {"customer_id": "nobody", "features": {}})
    general, _ = service._score_rows_general(state, chosen)
    fast, _ = state.rows.score(chosen)
    assert _same(general, fast)
    with pytest.raises(RequestError) as caught:
        service._score_rows_general(
            state, customers({"customer_id": "C1", "features": {"is_active": 1, "nope": 1}})
        )
    assert caught.value.status == 400 and "'nope'" in caught.value.message


def test_a_customer_without_any_feature_value_is_unknown(state, rows):
    results, _ = state.rows.score(
        customers(rows[0], {"customer_id": "nobody", "features": {"plan": None}})
    )
    assert results[0]["status"] == "scored"
    assert results[1] == {
        "customer_id": "nobody",
        "status": "unknown_customer",
        "model_versions": {"churn": "1", "upsell": "1", "winback": "1"},
    }


def test_features_not_given_are_scored_as_missing_with_a_warning(state):
    results, warnings = state.rows.score(
        customers({"customer_id": "C1", "features": {"is_active": True, "recency_days": 20.0}})
    )
    assert results[0]["status"] == "scored" and results[0]["churn_probability"] is not None
    assert any("were not given" in w and "scored as missing" in w for w in warnings)


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"is_active": True, "no_such_feature": 1.0}, "unknown feature name(s) ['no_such"),
        ({"is_active": True, "recency_days": "63"}, "'recency_days' is a number"),
        ({"is_active": True, "plan": 3.0}, "'plan' is a category"),
        ({"is_active": True, "rfm_segment": "vip"}, "'rfm_segment' is 'vip': expected one of"),
        ({"is_active": 2.0}, "'is_active' is a flag"),
        ({"is_active": True, "recency_days": 1e300}, "values beyond +-1e+15"),
        ({"recency_days": 12.0}, "'is_active' is required"),
    ],
)
def test_bad_feature_values_are_400_with_a_readable_message(state, features, expected):
    with pytest.raises(RequestError) as caught:
        state.rows.score(customers({"customer_id": "C1", "features": features}))
    assert caught.value.status == 400
    assert expected in caught.value.message
    assert "customer 'C1'" in caught.value.message or "unknown" in caught.value.message


# --------------------------------------------------------------------------------------------
# level 3: the real server
# --------------------------------------------------------------------------------------------


def _service_config(serving_fixture: dict, directory: Path, **serving) -> Path:
    """The fixture's config with its own ``serving:`` section, written to ``directory``."""
    config = yaml.safe_load(Path(serving_fixture["config"]).read_text())
    config["serving"] = {"reload_interval_s": 0, **serving}
    path = directory / "churn.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def server(serving_fixture, start_server, tmp_path_factory):
    """One server with an API key and a 300 kB body limit, for the module."""
    directory = tmp_path_factory.mktemp("service")
    config = _service_config(
        serving_fixture, directory, api_key_env=KEY_ENV, max_request_bytes=300_000
    )
    with start_server(config, directory / "server.log", {KEY_ENV: API_KEY}) as url:
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        yield client


def _score_body(*rows: dict, **extra) -> dict:
    return {"customers": list(rows), **extra}


@pytest.mark.slow
def test_health_readiness_metrics_and_docs_need_no_key(server):
    for path in ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(server + path).status_code == 200, path
    spec = httpx.get(server + "/docs.json").json()
    assert {"/score", "/risk_list", "/model_info", "/admin/reload"} <= set(spec["paths"])


def _request_schema(spec: dict, path: str) -> dict:
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.slow
def test_docs_show_the_request_examples_and_the_service_accepts_them(server, http):
    """Each request body's own example, and the requests the field examples make, as /docs.json
    shows them: all answered 200 (a documented example is one a CRM can send as it is)."""
    spec = httpx.get(server + "/docs.json").json()
    score = _request_schema(spec, "/score")
    row = spec["components"]["schemas"]["CustomerFeatures"]["properties"]
    documented = [
        ("/score", score["example"]),
        (
            "/score",
            {
                "customers": [
                    {
                        "customer_id": row["customer_id"]["examples"][0],
                        "features": row["features"]["examples"][0],
                    }
                ]
            },
        ),
        (
            "/score",
            {
                "events": score["properties"]["events"]["examples"][0],
                "as_of": score["properties"]["as_of"]["examples"][0],
            },
        ),
        ("/risk_list", _request_schema(spec, "/risk_list")["example"]),
    ]
    for path, body in documented:
        response = http.post(path, json=body)
        assert response.status_code == 200, (path, body, response.text)
    scored = http.post("/score", json=score["example"]).json()["results"][0]
    assert scored["status"] == "scored" and scored["churn_probability"] is not None


@pytest.mark.slow
def test_api_endpoints_need_the_key(server, rows):
    body = _score_body(rows[0])
    assert httpx.post(server + "/score", json=body).status_code == 401
    wrong = httpx.post(server + "/score", json=body, headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid API key"}
    assert httpx.get(server + "/model_info").status_code == 401


@pytest.mark.slow
def test_score_feature_rows_returns_everything_a_crm_needs(http, rows):
    active = next(r for r in rows if r["features"]["is_active"] == 1.0)
    lapsed = next(r for r in rows if r["features"]["is_active"] == 0.0)
    response = http.post("/score", json=_score_body(active, lapsed, as_of="2025-07-01"))
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["as_of"] == "2025-07-01"
    assert payload["model_versions"] == {"churn": "1", "upsell": "1", "winback": "1"}
    first, second = payload["results"]
    assert [first["customer_id"], second["customer_id"]] == [
        active["customer_id"],
        lapsed["customer_id"],
    ]
    assert 0 <= first["churn_probability"] <= 1 and 0 <= first["churn_percentile"] <= 100
    assert first["risk_band"] in RISK_BANDS and first["at_risk"] == (first["risk_band"] == "high")
    assert 0 <= first["upsell_probability"] <= 1 and first["winback_probability"] is None
    assert all(
        r["text"].endswith("(raises risk)") and r["contribution"] > 0 for r in first["reasons"]
    )
    assert len(first["reasons"]) <= 3
    assert first["segments"]["rfm_segment"] in RFM_SEGMENTS
    assert first["suggested_action"] and first["action_reason"]
    assert second["churn_probability"] is None and 0 <= second["winback_probability"] <= 1
    assert second["suggested_action"] in ("win_back", "nurture", "no_action")


@pytest.mark.slow
def test_score_with_the_bentoml_client(server, rows):
    import bentoml

    with bentoml.SyncHTTPClient(server, token=API_KEY) as client:
        assert client.is_ready()
        scored = client.score({"customers": [rows[1]]})
        info = client.model_info()
        risk = client.risk_list({"risk_band": ["high", "medium"], "top_n": 3})
    assert scored["results"][0]["customer_id"] == rows[1]["customer_id"]
    assert info["models"]["churn"]["version"] == "1"
    assert len(risk["rows"]) == 3


@pytest.mark.slow
def test_score_raw_events_uses_the_training_features(http, serving_fixture):
    events = pd.read_parquet(serving_fixture["events"])
    as_of = pd.Timestamp(serving_fixture["data_end"])
    ids = events["customer_id"].astype(str).drop_duplicates().head(3).tolist()
    chosen = events[events["customer_id"].astype(str).isin(ids) & (events["timestamp"] < as_of)]
    late = {
        "customer_id": "NEW-1",
        "timestamp": (as_of + pd.Timedelta(hours=3)).isoformat(),
        "event_type": "visit",
    }
    body = {
        "events": [
            {
                "customer_id": str(e.customer_id),
                "timestamp": e.timestamp.isoformat(),
                "event_type": str(e.event_type),
                **({"amount": float(e.amount)} if pd.notna(e.amount) else {}),
                **({"category": str(e.category)} if pd.notna(e.category) else {}),
            }
            for e in chosen.itertuples()
        ]
        + [late],
        "as_of": str(as_of.date()),
    }
    response = http.post("/score", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    statuses = {r["customer_id"]: r["status"] for r in payload["results"]}
    assert statuses == {**dict.fromkeys(ids, "scored"), "NEW-1": "no_history"}
    assert any("ignored" in w for w in payload["warnings"])
    scored = [r for r in payload["results"] if r["status"] == "scored"]
    assert all(
        (r["churn_probability"] is None) != (r["winback_probability"] is None) for r in scored
    )


@pytest.mark.slow
def test_unknown_customers_are_answered_explicitly(http, rows):
    response = http.post(
        "/score", json=_score_body(rows[0], {"customer_id": "ghost", "features": {}})
    )
    assert response.status_code == 200
    ghost = response.json()["results"][1]
    assert ghost["status"] == "unknown_customer" and ghost["churn_probability"] is None


BAD_REQUESTS = {
    "wrong type": ({"customers": "C1"}, 400, "customers"),
    "missing field": ({"customers": [{"features": {}}]}, 400, "customer_id"),
    "NaN": (
        b'{"customers": [{"customer_id": "C1", "features": {"x": NaN}}]}',
        400,
        "feature 'x' is nan: only finite numbers are accepted",
    ),
    "infinity": (
        b'{"customers": [{"customer_id": "C1", "features": {"x": 1e999}}]}',
        400,
        "feature 'x' is inf: only finite numbers are accepted",
    ),
    "empty batch": ({"customers": []}, 400, "empty"),
    "neither source": ({}, 400, "give exactly one"),
    "unknown field": ({"customer": []}, 400, "customer"),
    "unknown column": (
        {"customers": [{"customer_id": "C1", "features": {"is_active": 1, "colour": "red"}}]},
        400,
        "unknown feature name(s) ['colour']",
    ),
    "bad date": (
        {"customers": [{"customer_id": "C1", "features": {}}], "as_of": "2024-13-45"},
        400,
        "as_of",
    ),
    "ancient date": (
        {"customers": [{"customer_id": "C1", "features": {}}], "as_of": "0001-01-01"},
        400,
        "out of range",
    ),
    "future as_of for events": (
        {
            "events": [
                {"customer_id": "C1", "timestamp": "2024-01-01T00:00:00", "event_type": "visit"}
            ],
            "as_of": str(date.today() + timedelta(days=30)),
        },
        400,
        "in the future",
    ),
    "ancient event": (
        {
            "events": [
                {"customer_id": "C1", "timestamp": "0001-01-01T00:00:00", "event_type": "visit"}
            ]
        },
        400,
        "out of range",
    ),
    "huge integer": (
        b'{"customers": [{"customer_id": "C1", "features": {"x": 1' + b"0" * 400 + b"}}]}",
        400,
        "feature 'x' is an integer too large for a number",
    ),
    "huge negative integer": (
        b'{"customers": [{"customer_id": "C1", "features": {"x": -1' + b"0" * 400 + b"}}]}",
        400,
        "feature 'x' is an integer too large for a number",
    ),
    "not json": (b"{customers", 400, ""),
    "duplicate ids": (
        {
            "customers": [
                {"customer_id": "C1", "features": {}},
                {"customer_id": "C1", "features": {}},
            ]
        },
        400,
        "distinct",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_readable_4xx(http, case):
    body, status, fragment = BAD_REQUESTS[case]
    if isinstance(body, bytes):
        response = http.post("/score", content=body, headers={"Content-Type": "application/json"})
    else:
        response = http.post("/score", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.text
    assert response.json()["error"]


@pytest.mark.slow
def test_too_large_batch_and_too_large_body(http):
    many = {"customers": [{"customer_id": f"C{i}", "features": {}} for i in range(1001)]}
    too_many = http.post("/score", json=many)
    assert too_many.status_code == 400 and "at most 1,000" in too_many.text
    huge = http.post("/score", content=b" " * 400_000, headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "exceeds the limit" in huge.json()["error"]
    assert (
        http.post("/score", content=b"{}", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )


@pytest.mark.slow
def test_risk_list_filters_and_ranks_by_value_at_risk(http):
    response = http.post(
        "/risk_list", json={"risk_band": ["high", "medium"], "value_tier": ["A", "B"], "top_n": 5}
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    rows = payload["rows"]
    assert 0 < len(rows) <= 5 and payload["total_matching"] >= len(rows)
    assert all(r["risk_band"] in ("high", "medium") for r in rows)
    assert all(r["segments"]["value_tier"] in ("A", "B") for r in rows)
    values = [r["expected_value_at_risk"] for r in rows]
    assert values == sorted(values, reverse=True)
    ranks = [r["rank"] for r in rows]
    assert ranks == sorted(ranks)
    minimum = http.post("/risk_list", json={"risk_band": ["high"], "min_value": 1e12}).json()
    assert minimum["total_matching"] == 0 and minimum["rows"] == []


@pytest.mark.slow
def test_risk_list_of_another_date_is_not_found(http):
    response = http.post("/risk_list", json={"as_of": "2001-01-01"})
    assert response.status_code == 404
    assert "holds the risk list of" in response.json()["error"]


@pytest.mark.slow
def test_model_info_by_get_and_post(http):
    got = http.get("/model_info")
    posted = http.post("/model_info", json={})
    assert got.status_code == posted.status_code == 200
    info = got.json()
    assert info == posted.json()
    churn = info["models"]["churn"]
    assert churn["alias"] == "champion" and churn["run_id"] and churn["trained_at"]
    assert "recency_days" in churn["features"] and "roc_auc" in churn["metrics"]
    assert info["risk_bands"]["medium"] < info["risk_bands"]["high"]
    assert info["action_rules"][0]["order"] == 1


@pytest.mark.slow
def test_metrics_count_scored_customers(http, rows):
    http.post("/score", json=_score_body(rows[2]))
    metrics = httpx.get(str(http.base_url) + "/metrics").text
    assert "churn_scored_customers" in metrics
    assert "bentoml_service_request_total" in metrics or "request_total" in metrics


@pytest.mark.slow
def test_an_idle_connection_is_kept_open_longer_than_clients_keep_it(server, rows):
    """uvicorn's default (5 s) closes idle connections just when clients reuse them, and a
    request sent at that moment is reset; the service keeps them 75 s."""
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps(_score_body(rows[0])).encode()
    request = (
        f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for attempt in range(2):
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, f"connection closed by the server on request {attempt + 1}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            if attempt == 0:
                time.sleep(6)


# --- reload ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reload_server(serving_fixture, start_server, tmp_path_factory):
    """A server on a COPY of the registry (tests move aliases), checking every second."""
    import shutil

    directory = tmp_path_factory.mktemp("reload")
    shutil.copy(Path(serving_fixture["root"]) / "mlflow.db", directory / "mlflow.db")
    config = yaml.safe_load(Path(serving_fixture["config"]).read_text())
    config["training"]["mlflow"]["tracking_uri"] = f"sqlite:///{directory / 'mlflow.db'}"
    config["serving"] = {"reload_interval_s": 1}
    path = directory / "churn.yaml"
    path.write_text(yaml.safe_dump(config))
    with start_server(path, directory / "server.log") as url:
        yield url, load_config(path, environ={})


def _registry(cfg: ProjectConfig):
    import mlflow

    from training.config import configure_mlflow

    configure_mlflow(cfg.training.mlflow)
    return mlflow.MlflowClient()


def _wait_for(check, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
def test_reload_swaps_a_moved_champion_without_downtime_and_keeps_it_if_the_next_fails(
    reload_server, rows
):
    url, cfg = reload_server
    client = _registry(cfg)
    current = client.get_model_version_by_alias("churn", "champion")
    current_version = str(current.version)
    body = _score_body(rows[0])
    failures: list[str] = []
    versions_seen: list[str] = []
    stop, scoring_started = threading.Event(), threading.Event()

    def keep_scoring():
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/score", json=body)
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    versions_seen.append(response.json()["model_versions"]["churn"])
                scoring_started.set()

    worker = threading.Thread(target=keep_scoring)
    worker.start()
    try:
        assert scoring_started.wait(30)
        moved = client.create_model_version("churn", current.source, run_id=current.run_id)
        moved_version = str(moved.version)
        client.set_registered_model_alias("churn", "champion", moved_version)
        reloaded = httpx.post(url + "/admin/reload", json={}, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model_versions"]["churn"] == moved_version
        assert reloaded.json()["status"] in ("reloaded", "unchanged")  # the 1 s check may win

        broken = client.create_model_version("churn", "/nonexistent/model", run_id=None)
        client.set_registered_model_alias("churn", "champion", broken.version)
        failed = httpx.post(url + "/admin/reload", json={"force": True}, timeout=60)
        assert failed.status_code == 503
        assert failed.json()["status"] == "failed"
        assert failed.json()["model_versions"]["churn"] == moved_version
        assert "still serving" in failed.json()["message"]

        # the periodic check (every second) brings the original champion back by itself
        client.set_registered_model_alias("churn", "champion", current_version)
        _wait_for(
            lambda: (
                httpx.get(url + "/model_info").json()["models"]["churn"]["version"]
                == current_version
            )
        )
    finally:
        stop.set()
        worker.join(timeout=30)
    assert failures == []
    assert versions_seen[0] == current_version and moved_version in versions_seen


@pytest.mark.slow
def test_server_refuses_to_start_without_a_churn_champion(serving_fixture, start_server, tmp_path):
    config = _service_config(
        serving_fixture, tmp_path, model_uris={"churn": "models:/no-such-model@champion"}
    )
    with pytest.raises(RuntimeError) as caught, start_server(config, tmp_path / "server.log"):
        pass
    assert "refusing to start: no churn model at models:/no-such-model@champion" in str(
        caught.value
    )


def test_churn_serve_checks_the_models_before_starting(serving_fixture, tmp_path, capsys):
    from pipelines.cli import main

    config = _service_config(
        serving_fixture, tmp_path, model_uris={"churn": "models:/no-such-model@champion"}
    )
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--config", str(config)])
    assert caught.value.code == 2
    assert "refusing to start: no churn model" in capsys.readouterr().err
    good = _service_config(serving_fixture, tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--config", str(good), "--check", "--port", "4999"])
    assert caught.value.code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["models"] == {"churn": "1", "upsell": "1", "winback": "1"}
    assert "--timeout-keep-alive" in summary["command"]


@pytest.mark.slow
def test_bentoml_build_packs_code_and_champions_and_the_bento_serves_them(
    serving_harness, serving_fixture, tmp_path, rows
):
    """`churn bento` = export the champions to the BentoML store + `bentoml build`; the Bento
    then serves without the MLflow registry (here: a config pointing at an empty one)."""
    import subprocess

    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    churn = str(Path(sys.executable).with_name("churn"))
    built = subprocess.run(
        [churn, "bento", "--config", serving_fixture["config"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    summary = json.loads(built.stdout.strip().splitlines()[-1])
    tag = summary["bento"]
    assert tag.startswith("churn-crm:")
    assert set(summary["models"]) == {"churn", "upsell", "winback"}
    bento_dir = tmp_path / "bentoml" / "bentos" / "churn-crm" / tag.split(":")[1]
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert {m["tag"] for m in manifest["models"]} == set(summary["models"].values())
    assert (bento_dir / "src" / "serving" / "service.py").is_file()
    assert not (bento_dir / "src" / "tests").exists()

    config = yaml.safe_load(Path(serving_fixture["config"]).read_text())
    config["training"]["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'empty.db'}"
    config["serving"] = {"reload_interval_s": 0}
    path = tmp_path / "bento.yaml"
    path.write_text(yaml.safe_dump(config))
    h = serving_harness
    port = h.free_port()
    command = [
        str(Path(sys.executable).with_name("bentoml")),
        *("serve", tag, "--host", "127.0.0.1", "--port", str(port)),
    ]
    serve_env = {"BENTOML_HOME": env["BENTOML_HOME"], "CHURN_CONFIG": str(path)}
    with h.running_server(
        command, port=port, env=serve_env, log_path=tmp_path / "bento.log"
    ) as url:
        response = httpx.post(url + "/score", json=_score_body(rows[0]), timeout=30)
        info = httpx.get(url + "/model_info", timeout=30).json()
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "scored"
    assert info["models"]["churn"]["version"] == "1"
    assert info["risk_bands"] is not None
