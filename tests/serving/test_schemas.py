from __future__ import annotations

import json
import math
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving import schemas
from serving.decisions import ActionPolicy, RiskBands, rule_table
from serving.schemas import (
    NON_FINITE_WORDS,
    CustomerFeatures,
    ModelInfo,
    Reason,
    RiskListRequest,
    RiskListResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    TaskModelInfo,
    feature_value_problems,
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


def test_non_finite_feature_values_are_named_in_words():
    text = messages(errors_of('{"customers": [{"customer_id": "C1", "features": {"r": NaN}}]}'))
    assert "feature 'r' is nan: only finite numbers are accepted (null if missing)" in text


@pytest.mark.parametrize("digits", ["1" + "0" * 400, "-1" + "0" * 400, str(2**1024)])
def test_integers_beyond_the_float_range_are_a_readable_error_not_an_overflow(digits):
    payload = '{"customers": [{"customer_id": "C1", "features": {"recency_days": ' + digits + "}}]}"
    expected = "feature 'recency_days' is an integer too large for a number"
    assert expected in messages(errors_of(payload))
    assert expected in messages(errors_of(customers_request({"recency_days": int(digits)})))


def test_a_float_beyond_the_range_is_infinity_and_refused():
    payload = '{"customers": [{"customer_id": "C1", "features": {"recency_days": 1e400}}]}'
    assert "feature 'recency_days' is inf" in messages(errors_of(payload))


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


_NAMES = st.one_of(st.sampled_from(["recency_days", "plan", " ", ""]), st.text(max_size=6))
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**1030), max_value=2**1030),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([*NON_FINITE_WORDS, " Inf", "NaN ", "-INFINITY", "basic", ""]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(features=st.dictionaries(_NAMES, _VALUES, max_size=6))
def test_a_feature_row_is_accepted_exactly_when_it_breaks_no_rule(features):
    """The fast check (pydantic first, words only on refusal) against the rules one by one."""
    problems = feature_value_problems(features)
    try:
        row = CustomerFeatures.model_validate({"customer_id": "C1", "features": features})
    except ValidationError as refused:
        assert problems, refused  # nothing refused without a rule saying why ...
        assert problems[0] in str(refused)  # ... in those words
        return
    assert problems == []
    numbers = (bool, int, float)
    assert row.features == {
        n: float(v) if isinstance(v, numbers) else v for n, v in features.items()
    }
    assert all(type(v) in (float, str, type(None)) for v in row.features.values())


def test_plain_rows_skip_the_value_by_value_check(monkeypatch):
    """The rules run value by value only for rows pydantic refuses or that are not plain JSON
    (half the time of a 100-customer request went there)."""
    checked: list[dict] = []
    rules = schemas.feature_value_problems

    def counted(features: dict) -> list[str]:
        checked.append(features)
        return rules(features)

    monkeypatch.setattr(schemas, "feature_value_problems", counted)
    row = {"is_active": True, "recency_days": 3, "plan": "basic", "spend_90d": None}
    ScoreRequest.model_validate(customers_request(*[row] * 100))
    assert checked == []
    errors_of(customers_request(row, {**row, "recency_days": float("nan")}))
    assert len(checked) == 1 and math.isnan(checked[0]["recency_days"])  # the refused row only


def test_score_request_schema_documents_fields_and_examples_for_openapi():
    schema = ScoreRequest.model_json_schema()
    assert schema["title"] == "ScoreRequest" and schema["example"]["customers"]
    assert schema["additionalProperties"] is False
    for field in ("customers", "events", "as_of"):
        assert schema["properties"][field]["description"]


@pytest.mark.parametrize(
    "model", [ScoreRequest, RiskListRequest, ScoreResponse, RiskListResponse, ModelInfo]
)
def test_schemas_are_objects_bentoml_can_write_into_its_openapi_document(model):
    """BentoML 1.4 turns a model's schema and each of its definitions into an OpenAPI 3.0 Schema
    object, which has ``example`` but not JSON Schema's ``examples`` (a TypeError there would
    take /docs.json down)."""
    from bentoml._internal.service.openapi.specification import Schema

    schema = model.model_json_schema()
    for part in [schema, *schema.pop("$defs", {}).values()]:
        Schema(**part)


def test_documented_examples_are_valid_requests():
    """The examples /docs.json shows, each a request the schema accepts, feature rows with
    ``is_active`` (the service needs it to choose the model)."""
    score = ScoreRequest.model_json_schema()
    row = score["$defs"]["CustomerFeatures"]["properties"]
    example_row = {
        "customer_id": row["customer_id"]["examples"][0],
        "features": row["features"]["examples"][0],
    }
    events = {
        "events": score["properties"]["events"]["examples"][0],
        "as_of": score["properties"]["as_of"]["examples"][0],
    }
    for payload in (score["example"], {"customers": [example_row]}, events):
        ScoreRequest.model_validate(payload)
    for request in (score["example"], {"customers": [example_row]}):
        assert all(c["features"]["is_active"] is True for c in request["customers"])
    RiskListRequest.model_validate(RiskListRequest.model_json_schema()["example"])


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
