from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from pydantic import ValidationError

from serving import schemas
from serving.decisions import ActionPolicy, RiskBands, rule_table
from serving.schemas import (
    ModelInfo,
    Reason,
    RiskListRequest,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    TaskModelInfo,
)

EVENT = {
    "customer_id": "C1",
    "timestamp": "2024-08-14T09:30:00",
    "event_type": "purchase",
    "amount": 59.9,
}


def customers_request(*features: dict) -> dict:
    return {
        "customers": [
            {"customer_id": f"C{i}", "features": values} for i, values in enumerate(features)
        ]
    }


def errors_of(payload: dict | str, model=ScoreRequest) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        if isinstance(payload, str):
            model.model_validate_json(payload)
        else:
            model.model_validate(payload)
    return caught.value.errors()


def messages(errors: list[dict]) -> str:
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)


# ------------------------------------------------------------------------------------------
# POST /score
# ------------------------------------------------------------------------------------------


def test_score_request_accepts_feature_rows():
    request = ScoreRequest.model_validate(
        customers_request({"recency_days": 63, "plan": "basic", "spend_90d": None})
    )
    assert request.customers[0].features == {
        "recency_days": 63.0,
        "plan": "basic",
        "spend_90d": None,
    }
    assert request.events is None


def test_score_request_accepts_events_and_reads_offsets_as_utc():
    event = {**EVENT, "timestamp": "2024-08-14T09:30:00+02:00"}
    request = ScoreRequest.model_validate({"events": [event], "as_of": "2024-09-01"})
    assert request.events[0].timestamp == datetime(2024, 8, 14, 7, 30)
    assert request.as_of == date(2024, 9, 1)


def test_boolean_features_become_numbers():
    request = ScoreRequest.model_validate(customers_request({"is_active": True}))
    assert request.customers[0].features == {"is_active": 1.0}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"'])
def test_non_finite_feature_values_are_rejected_with_the_feature_named(literal):
    payload = '{"customers": [{"customer_id": "C1", "features": {"recency_days": VALUE}}]}'
    payload = payload.replace("VALUE", literal)
    text = messages(errors_of(payload))
    assert "recency_days" in text and "finite" in text


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_finite_event_amounts_are_rejected(literal):
    event = json.dumps(EVENT).replace("59.9", literal)
    errors = errors_of('{"events": [' + event + "]}")
    assert errors[0]["loc"] == ("events", 0, "amount")
    assert "finite" in errors[0]["msg"]


def test_feature_values_of_other_types_are_rejected():
    text = messages(errors_of(customers_request({"tags": ["a", "b"]})))
    assert "tags" in text and "list" in text


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ({**customers_request({"x": 1}), "customer": "C1"}, ("customer",)),
        (
            {"customers": [{"customer_id": "C1", "features": {}, "segment": "x"}]},
            ("customers", 0, "segment"),
        ),
        ({"events": [{**EVENT, "price": 3}]}, ("events", 0, "price")),
    ],
)
def test_unknown_fields_are_rejected_by_name(payload, location):
    errors = errors_of(payload)
    assert [(e["loc"], e["type"]) for e in errors] == [(location, "extra_forbidden")]


@pytest.mark.parametrize("field", ["customers", "events"])
def test_empty_batches_are_rejected(field):
    errors = errors_of({field: []})
    assert errors[0]["loc"] == (field,)
    assert "empty" in errors[0]["msg"]


def test_more_customers_than_the_limit_are_rejected():
    payload = {"customers": [{"customer_id": f"C{i}"} for i in range(1001)]}
    errors = errors_of(payload)
    assert "at most 1,000 customers" in errors[0]["msg"]


def test_more_events_than_the_limit_are_rejected():
    errors = errors_of({"events": [EVENT] * 100_001})
    assert "at most 100,000 events" in errors[0]["msg"]


def test_batch_limits_are_read_at_validation_time(monkeypatch):
    monkeypatch.setattr(schemas, "MAX_CUSTOMERS_PER_REQUEST", 2)
    errors = errors_of(customers_request({}, {}, {}))
    assert "at most 2 customers" in errors[0]["msg"]


def test_both_customers_and_events_are_rejected():
    text = messages(errors_of({**customers_request({}), "events": [EVENT]}))
    assert "exactly one of 'customers'" in text and "not both" in text


def test_neither_customers_nor_events_is_rejected():
    text = messages(errors_of({"as_of": "2024-09-01"}))
    assert "exactly one of 'customers'" in text and "neither" in text


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ({**customers_request({}), "as_of": "2024-02-30"}, ("as_of",)),
        ({**customers_request({}), "as_of": "next week"}, ("as_of",)),
        ({"events": [{**EVENT, "timestamp": "14/08/2024 9:30"}]}, ("events", 0, "timestamp")),
    ],
)
def test_unparseable_dates_are_rejected(payload, location):
    errors = errors_of(payload)
    assert errors[0]["loc"] == location
    assert "date" in errors[0]["msg"]


@pytest.mark.parametrize(
    ("event", "location"),
    [
        ({**EVENT, "customer_id": ""}, ("events", 0, "customer_id")),
        ({**EVENT, "customer_id": "   "}, ("events", 0, "customer_id")),
        ({**EVENT, "customer_id": 17}, ("events", 0, "customer_id")),
        ({**EVENT, "event_type": 3}, ("events", 0, "event_type")),
        ({**EVENT, "amount": -1.0}, ("events", 0, "amount")),
        ({k: v for k, v in EVENT.items() if k != "timestamp"}, ("events", 0, "timestamp")),
    ],
)
def test_bad_event_fields_are_rejected(event, location):
    assert [e["loc"] for e in errors_of({"events": [event]})] == [location]


def test_repeated_customer_ids_are_rejected():
    payload = {"customers": [{"customer_id": "C1"}, {"customer_id": "C1"}]}
    assert "repeated: ['C1']" in messages(errors_of(payload))


def test_score_request_schema_documents_fields_and_examples_for_openapi():
    schema = ScoreRequest.model_json_schema()
    assert schema["examples"]
    assert schema["additionalProperties"] is False
    for field in ("customers", "events", "as_of"):
        assert schema["properties"][field]["description"]


def test_score_result_refuses_nan_and_out_of_range_probabilities():
    for value in (float("nan"), 1.5):
        with pytest.raises(ValidationError):
            ScoreResult(customer_id="C1", status="scored", churn_probability=value)


def test_reasons_must_raise_the_risk():
    with pytest.raises(ValidationError):
        Reason(feature="visits_30d", text="...", contribution=-0.2)


def test_score_response_serialises_a_full_result():
    result = ScoreResult(
        customer_id="C1",
        status="scored",
        churn_probability=0.42,
        churn_percentile=93.5,
        risk_band="high",
        at_risk=True,
        reasons=[{"feature": "recency_days", "text": "no activity", "contribution": 0.8}],
        segments={"rfm_segment": "at_risk", "value_tier": "A"},
        suggested_action="retain",
        model_versions={"churn": "7"},
    )
    response = ScoreResponse(results=[result], as_of=date(2024, 9, 1), model_versions={})
    payload = json.loads(response.model_dump_json())
    assert payload["results"][0]["segments"]["rfm_segment"] == "at_risk"
    assert payload["results"][0]["winback_probability"] is None


# ------------------------------------------------------------------------------------------
# POST /risk_list and GET /model_info
# ------------------------------------------------------------------------------------------


def test_risk_list_defaults_to_the_high_band_and_removes_repeated_filter_values():
    assert RiskListRequest().risk_band == ["high"]
    assert RiskListRequest(risk_band=["high", "medium", "high"]).risk_band == ["high", "medium"]


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ({"top_n": 0}, ("top_n",)),
        ({"top_n": 10_001}, ("top_n",)),
        ({"risk_band": ["severe"]}, ("risk_band", 0)),
        ({"value_tier": []}, ("value_tier",)),
        ({"rfm_segment": ["vip"]}, ("rfm_segment", 0)),
        ({"min_value": -5}, ("min_value",)),
        ({"min_value": float("inf")}, ("min_value",)),
        ({"segment": ["A"]}, ("segment",)),
    ],
)
def test_risk_list_request_rejects_bad_filters(payload, location):
    assert [e["loc"] for e in errors_of(payload, RiskListRequest)] == [location]


def test_model_info_carries_models_bands_and_the_rule_table():
    info = ModelInfo(
        models={
            "churn": TaskModelInfo(
                task="churn",
                name="churn",
                version="7",
                alias="champion",
                run_id="abc",
                metrics={"pr_auc": 0.61, "ece": None},
                features=["recency_days"],
                trained_at=datetime(2024, 9, 2, 3, 0),
            )
        },
        risk_bands=RiskBands(high=0.6, medium=0.3),
        action_policy=ActionPolicy(),
        action_rules=rule_table(),
    )
    payload = json.loads(info.model_dump_json())
    assert payload["models"]["churn"]["alias"] == "champion"
    assert payload["risk_bands"] == {"high": 0.6, "medium": 0.3}
    assert [r["name"] for r in payload["action_rules"]] == [r["name"] for r in rule_table()]
