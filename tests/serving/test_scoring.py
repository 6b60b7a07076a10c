"""The scoring core (serving.scoring): loading champions, scores, decisions, the risk list.

The session fixture trains real (tiny) models with ``training.train.train`` on a real snapshot
table (``features.synthetic`` + ``features.snapshots``) into an MLflow store in a temporary
directory: ``scoring_store`` in tests/conftest.py, shared with
``tests/pipelines/test_batch_scoring.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from serving.decisions import ACTIONS, fit_risk_bands, percentile_rank
from serving.scoring import (
    SCORE_COLUMNS,
    ChampionMissingError,
    RiskListMeta,
    bought_categories,
    category_purchase_shares,
    champion_versions,
    filter_risk_list,
    load_champions,
    model_info,
    read_risk_list,
    result_records,
    risk_list_records,
    risk_list_table,
    score_customers,
    score_events,
    write_risk_list,
)

TASKS = ("churn", "upsell", "winback")


# --------------------------------------------------------------------------------------------
# fixtures: one MLflow store with three champions, shared by the session (tests/conftest.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def crm(scoring_store: dict) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(path) for name, path in scoring_store["paths"].items()}


@pytest.fixture(scope="session")
def cfg(scoring_config, tmp_path_factory: pytest.TempPathFactory):
    return scoring_config(tmp_path_factory.mktemp("scoring-out"))


@pytest.fixture(scope="session")
def models(cfg, monkeypatch_session):
    monkeypatch_session.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    return load_champions(cfg)


@pytest.fixture(scope="session")
def monkeypatch_session():
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()


@pytest.fixture(scope="session")
def as_of(scoring_store: dict) -> pd.Timestamp:
    return pd.Timestamp(scoring_store["data_end"])


@pytest.fixture(scope="session")
def features(crm, cfg, as_of) -> pd.DataFrame:
    from features.snapshots import build_features

    table, _ = build_features(
        crm["events"],
        as_of,
        customers=crm["customers"],
        subscriptions=crm["subscriptions"],
        params=cfg.features,
        label_params=cfg.labels,
    )
    return table


@pytest.fixture(scope="session")
def scores(features, models, cfg, crm) -> pd.DataFrame:
    return score_customers(features, models, cfg, events=crm["events"])


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def test_load_champions_loads_every_task_without_pickle(models, cfg):
    assert set(models.tasks) == set(TASKS)
    for task, model in models.tasks.items():
        assert model.name == task
        assert model.alias == "champion"
        assert model.version == "1"
        assert model.run_id
        assert model.metrics["roc_auc"] is not None
        assert model.trained_at is not None
        assert "recency_days" in model.features
    assert models.model_versions() == champion_versions(cfg)


def test_bands_and_percentiles_come_from_the_churn_run_test_predictions(models):
    import mlflow

    from training.artifacts import REFERENCE_DIR, TEST_PREDICTIONS_ARTIFACT

    run_id = models.churn.run_id
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id, REFERENCE_DIR)}
    assert TEST_PREDICTIONS_ARTIFACT in logged, "training.train logs no test_predictions.parquet"
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=TEST_PREDICTIONS_ARTIFACT
    )
    test_scores = pd.read_parquet(path)["probability"].to_numpy()
    assert models.band_source == "test_predictions"
    assert models.risk_bands == fit_risk_bands(test_scores, 0.10, 0.30)
    np.testing.assert_array_equal(models.reference_scores, np.sort(test_scores))


def test_missing_churn_champion_refuses_to_load(scoring_config, tmp_path):
    cfg = scoring_config(tmp_path, model_uris={"churn": "models:/no_such_model@champion"})
    with pytest.raises(ChampionMissingError, match="no churn model at models:/no_such_model"):
        load_champions(cfg)


def test_missing_optional_model_is_a_warning_and_leaves_its_scores_empty(
    scoring_config, tmp_path, features
):
    cfg = scoring_config(tmp_path, model_uris={"winback": "models:/winback@nobody"})
    models = load_champions(cfg)
    assert "winback" not in models.tasks
    assert any("no winback model" in w for w in models.warnings)
    result = score_customers(features.head(300), models, cfg)
    assert result["winback_probability"].isna().all()
    assert result["winback_model_version"].isna().all()
    lapsed = result.loc[~result["is_active"]]
    assert (lapsed["suggested_action"] == "no_action").all()


def test_model_info_reports_models_bands_and_rules(models, cfg):
    from serving.schemas import ModelInfo

    info = ModelInfo.model_validate(model_info(models, cfg))
    assert set(info.models) == set(TASKS)
    assert info.risk_bands == models.risk_bands
    assert len(info.action_rules) > 5


# --------------------------------------------------------------------------------------------
# score_customers: schema and invariants
# --------------------------------------------------------------------------------------------


def test_one_row_per_customer_in_input_order_with_the_documented_columns(scores, features):
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert scores["customer_id"].tolist() == features.index.astype(str).tolist()
    assert (scores["status"] == "scored").all()


def test_percentiles_lie_in_0_100_and_only_active_customers_have_them(scores):
    active = scores["is_active"]
    percentile = scores["churn_percentile"]
    assert percentile[active].between(0, 100).all()
    assert percentile[~active].isna().all()


def test_bands_follow_the_thresholds(scores, models):
    bands = models.risk_bands
    active = scores.loc[scores["is_active"]]
    p = active["churn_probability"]
    expected = np.where(p >= bands.high, "high", np.where(p >= bands.medium, "medium", "low"))
    assert (active["risk_band"].to_numpy() == expected).all()
    assert (active["at_risk"].astype(bool) == (active["risk_band"] == "high")).all()


def test_lapsed_customers_get_winback_and_active_customers_churn_and_upsell(scores):
    active = scores.loc[scores["is_active"]]
    lapsed = scores.loc[~scores["is_active"]]
    assert len(active) and len(lapsed)
    assert active["churn_probability"].between(0, 1).all()
    assert active["upsell_probability"].between(0, 1).all()
    assert active["winback_probability"].isna().all()
    assert lapsed["winback_probability"].between(0, 1).all()
    assert lapsed["churn_probability"].isna().all()
    assert lapsed["upsell_probability"].isna().all()
    assert lapsed["risk_band"].isna().all()
    assert lapsed["at_risk"].isna().all()


def test_every_scored_customer_gets_exactly_one_known_action(scores):
    assert scores["suggested_action"].isin(ACTIONS).all()
    assert scores["action_reason"].map(lambda s: isinstance(s, str) and len(s) > 10).all()
    assert (scores.loc[~scores["is_active"], "suggested_action"] != "retain").all()


def test_value_at_risk_is_churn_probability_times_customer_value(scores, features):
    active = scores.loc[scores["is_active"]]
    value = features["value_365d"].to_numpy()[scores["is_active"].to_numpy()]
    np.testing.assert_allclose(active["customer_value"], value)
    np.testing.assert_allclose(
        active["expected_value_at_risk"], active["churn_probability"] * value
    )
    assert scores.loc[~scores["is_active"], "expected_value_at_risk"].isna().all()


def test_reasons_are_the_strongest_risk_raising_contributions_in_words(scores):
    active = scores.loc[scores["is_active"]]
    assert active["reasons_computed"].all()
    assert not scores.loc[~scores["is_active"], "reasons_computed"].any()
    for reasons in active["reasons"]:
        assert len(reasons) <= 3
        contributions = [r["contribution"] for r in reasons]
        assert all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert all(r["text"].endswith("(raises risk)") for r in reasons)
    # a high risk is explained by what raises it
    high = active.loc[active["risk_band"] == "high", "reasons"]
    assert high.map(len).gt(0).all()


def test_explaining_top_n_explains_the_largest_values_at_risk_in_high_and_medium(
    features, models, cfg
):
    result = score_customers(features, models, cfg, explain=25)
    explained = result.loc[result["reasons_computed"]]
    assert len(explained) == 25
    assert explained["risk_band"].isin(["high", "medium"]).all()
    rest = result.loc[~result["reasons_computed"] & result["risk_band"].isin(["high", "medium"])]
    assert explained["expected_value_at_risk"].min() >= rest["expected_value_at_risk"].max()
    assert result.loc[~result["reasons_computed"], "reasons"].map(len).eq(0).all()


def test_segments_are_carried_over_from_the_feature_rows(scores, features):
    for column in ("rfm_segment", "lifecycle_stage", "value_tier", "value_growth_segment"):
        assert scores[column].tolist() == features[column].tolist()


def test_missing_model_features_are_an_error_unless_allowed(features, models, cfg):
    rows = features.head(50).drop(columns=["recency_days", "visits_30d"])
    with pytest.raises(ValueError, match="lack 2 columns"):
        score_customers(rows, models, cfg)
    result = score_customers(rows, models, cfg, allow_missing_features=True)
    assert len(result) == 50
    assert any("scored as missing" in w for w in result.attrs["warnings"])


def test_feature_rows_without_is_active_are_rejected(features, models, cfg):
    with pytest.raises(ValueError, match="is_active"):
        score_customers(features.head(5).drop(columns=["is_active"]), models, cfg)


def test_repeated_customers_are_rejected(features, models, cfg):
    rows = pd.concat([features.head(3), features.head(1)])
    with pytest.raises(ValueError, match="repeat a customer"):
        score_customers(rows, models, cfg)


# --------------------------------------------------------------------------------------------
# score_events
# --------------------------------------------------------------------------------------------


def test_score_events_equals_build_features_then_score_customers(crm, models, cfg, as_of):
    ids = sorted(crm["customers"]["customer_id"].astype(str))[:400]
    from_events = score_events(
        crm["events"],
        as_of,
        models,
        cfg,
        customers=crm["customers"],
        subscriptions=crm["subscriptions"],
        customer_ids=ids,
    )
    from features.snapshots import build_features

    table, _ = build_features(
        crm["events"],
        as_of,
        customers=crm["customers"],
        subscriptions=crm["subscriptions"],
        params=cfg.features,
        stats=models.global_stats,
        label_params=cfg.labels,
    )
    from_features = score_customers(table.loc[ids], models, cfg, events=crm["events"])
    pd.testing.assert_frame_equal(from_events, from_features)


def test_unknown_and_history_less_customers_are_reported_not_failed(crm, models, cfg, as_of):
    customers = crm["customers"].copy()
    newcomer = customers.iloc[[0]].assign(
        customer_id="NEW-1", signup_date=as_of + pd.Timedelta(days=3)
    )
    customers = pd.concat([customers, newcomer], ignore_index=True)
    known = str(crm["customers"]["customer_id"].iloc[5])
    result = score_events(
        crm["events"],
        as_of,
        models,
        cfg,
        customers=customers,
        subscriptions=crm["subscriptions"],
        customer_ids=["GHOST-9", known, "NEW-1"],
    )
    assert result["customer_id"].tolist() == ["GHOST-9", known, "NEW-1"]
    assert result["status"].tolist() == ["unknown_customer", "scored", "no_history"]
    unscored = result.loc[result["status"] != "scored"]
    assert unscored["churn_probability"].isna().all()
    assert unscored["winback_probability"].isna().all()
    assert unscored["suggested_action"].isna().all()
    warnings = " ".join(result.attrs["warnings"])
    assert "1 customers have no history" in warnings
    assert "1 requested customers are in none" in warnings


def test_events_after_as_of_are_ignored(crm, models, cfg, as_of):
    ids = sorted(crm["customers"]["customer_id"].astype(str))[:50]
    earlier = as_of - pd.Timedelta(days=60)
    customers = crm["customers"]
    base = score_events(crm["events"], earlier, models, cfg, customers=customers, customer_ids=ids)
    truncated = crm["events"].loc[crm["events"]["timestamp"] < earlier]
    again = score_events(truncated, earlier, models, cfg, customers=customers, customer_ids=ids)
    pd.testing.assert_frame_equal(base, again)


def test_only_future_events_means_no_history(crm, models, cfg, as_of):
    early = pd.Timestamp("2023-06-01")
    result = score_events(crm["events"].head(200), early, models, cfg)
    assert (result["status"] == "no_history").all()
    assert len(result) == crm["events"].head(200)["customer_id"].astype(str).nunique()


# --------------------------------------------------------------------------------------------
# cross-sell
# --------------------------------------------------------------------------------------------


def test_cross_sell_offers_unbought_categories_by_propensity(scores, crm, as_of):
    bought = bought_categories(crm["events"], as_of)
    shares = category_purchase_shares(crm["events"], as_of)
    assert shares and all(0 < s <= 1 for s in shares.values())
    active = scores.loc[scores["is_active"]]
    assert active["cross_sell_candidates"].map(len).gt(0).any()
    for _, row in active.head(200).iterrows():
        owned = set(bought.get(row["customer_id"], []))
        candidates = row["cross_sell_candidates"]
        assert len(candidates) <= 3
        assert not owned & {c["category"] for c in candidates}
        for c in candidates:
            assert math.isclose(c["propensity"], row["upsell_probability"] * shares[c["category"]])
        propensities = [c["propensity"] for c in candidates]
        assert propensities == sorted(propensities, reverse=True)
    lapsed = scores.loc[~scores["is_active"], "cross_sell_candidates"]
    assert lapsed.map(len).eq(0).all()


def test_without_events_no_candidates_and_a_warning(features, models, cfg):
    result = score_customers(features.head(20), models, cfg)
    assert result["cross_sell_candidates"].map(len).eq(0).all()
    assert any("cross-sell" in w for w in result.attrs["warnings"])


# --------------------------------------------------------------------------------------------
# the risk list
# --------------------------------------------------------------------------------------------


def test_risk_list_ranks_active_customers_by_value_at_risk(scores, models):
    table = risk_list_table(scores, models)
    assert len(table) == int(scores["is_active"].sum())
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    value = table["expected_value_at_risk"].to_numpy()
    assert (np.diff(value[np.isfinite(value)]) <= 0).all()
    assert (table["churn_model_version"] == "1").all()
    assert (table["churn_run_id"] == models.churn.run_id).all()
    top = table.iloc[0]
    assert json.loads(top["reasons"])[0]["text"] == top["reason_1"]


def test_risk_list_round_trips_and_filters(scores, models, tmp_path):
    table = risk_list_table(scores, models)
    path = write_risk_list(table, tmp_path / "risk.parquet", RiskListMeta(as_of="2025-07-01"))
    read = read_risk_list(path)
    assert read.as_of == "2025-07-01"
    assert read.frame["reasons"].map(lambda r: isinstance(r, list)).all()
    total, rows = filter_risk_list(read.frame, risk_band=["high"], value_tier=["A", "B"], top_n=5)
    expected = table.loc[table["risk_band"].eq("high") & table["value_tier"].isin(["A", "B"])]
    assert total == len(expected)
    assert rows["customer_id"].tolist() == expected["customer_id"].head(5).tolist()
    total_min, rows_min = filter_risk_list(read.frame, risk_band=None, min_value=500.0)
    assert total_min == int((table["customer_value"] >= 500).sum())
    assert (rows_min["customer_value"] >= 500).all()


def test_risk_list_meta_round_trips_through_the_sidecar(tmp_path):
    from serving.scoring import risk_list_meta_path

    meta = RiskListMeta(
        as_of="2025-07-01",
        scored_at="2025-07-02T06:00:00+00:00",
        rows=1,
        model_versions={"churn": "3", "upsell": None, "winback": "1"},
        run_ids={"churn": "abc", "upsell": None, "winback": "def"},
        risk_bands={"high": 0.4, "medium": 0.1},
        band_source="test_predictions",
        global_stats={"cutoff": "2025-07-01"},
        category_shares={"books": 0.5},
        explained_rows=1,
    )
    assert RiskListMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    table = pd.DataFrame({"customer_id": ["C1"], "reasons": ["[]"]})
    path = write_risk_list(table, tmp_path / "risk.parquet", meta)
    sidecar = json.loads(risk_list_meta_path(path).read_text())
    assert sidecar == meta.to_dict()
    assert read_risk_list(path).meta == meta

    # an older or hand-written sidecar: missing keys are None, unknown keys are ignored
    partial = RiskListMeta.from_dict({"as_of": "2025-06-01", "written_by": "hand"})
    assert partial == RiskListMeta(as_of="2025-06-01")
    risk_list_meta_path(path).unlink()
    assert read_risk_list(path).meta == RiskListMeta()


def test_a_batch_risk_list_gives_the_service_its_stats_and_category_shares(
    scoring_config, tmp_path, crm, as_of, scores, models
):
    cfg = scoring_config(tmp_path)
    from features.snapshots import build_features

    shares = category_purchase_shares(crm["events"], as_of)
    _, fitted = build_features(
        crm["events"],
        as_of,
        customers=crm["customers"],
        params=cfg.features,
        label_params=cfg.labels,
    )
    stats = fitted.to_dict()
    meta = RiskListMeta(
        as_of=str(as_of.date()),
        model_versions=models.model_versions(),
        risk_bands=models.risk_bands.model_dump(),
        global_stats=stats,
        category_shares=shares,
    )
    write_risk_list(
        risk_list_table(scores, models), cfg.serving.risk_list_location(cfg.output_dir), meta
    )
    loaded = load_champions(cfg)
    assert loaded.stats_source == "risk_list"
    assert loaded.global_stats.to_dict() == stats
    assert loaded.category_shares == shares
    assert loaded.category_shares_source == "risk_list"


def test_without_stored_test_scores_bands_come_from_the_batch_risk_list(
    scoring_config, tmp_path, scores, models, features, monkeypatch
):
    import serving.scoring as scoring

    monkeypatch.setattr(scoring, "_test_prediction_scores", lambda client, model: None)
    cfg = scoring_config(tmp_path)
    fallback = load_champions(cfg)
    assert fallback.band_source == "scored_population"
    assert fallback.risk_bands is None
    assert any("fitted on each call" in w for w in fallback.warnings)

    single = features.loc[features["is_active"]].head(1)
    with pytest.raises(ValueError, match="risk bands are unknown"):
        score_customers(single, fallback, cfg)
    population = score_customers(features, fallback, cfg)
    assert population.attrs["band_source"] == "scored_population"
    churn = population["churn_probability"].to_numpy()
    np.testing.assert_allclose(population["churn_percentile"], percentile_rank(churn))

    bands = {"high": 0.4, "medium": 0.1}
    write_risk_list(
        risk_list_table(scores, models),
        cfg.serving.risk_list_location(cfg.output_dir),
        RiskListMeta(as_of="2025-07-01", model_versions=models.model_versions(), risk_bands=bands),
    )
    from_list = load_champions(cfg)
    assert from_list.band_source == "risk_list"
    assert from_list.risk_bands.model_dump() == bands
    active = scores["churn_probability"].dropna().to_numpy()
    np.testing.assert_array_equal(from_list.reference_scores, np.sort(active))


# --------------------------------------------------------------------------------------------
# response records
# --------------------------------------------------------------------------------------------


def test_result_records_validate_as_score_results(crm, models, cfg, as_of):
    from serving.schemas import ScoreResult

    ids = sorted(crm["customers"]["customer_id"].astype(str))[:60] + ["GHOST-1"]
    result = score_events(
        crm["events"], as_of, models, cfg, customers=crm["customers"], customer_ids=ids
    )
    records = [ScoreResult.model_validate(r) for r in result_records(result)]
    assert [r.customer_id for r in records] == ids
    ghost = records[-1]
    assert ghost.status == "unknown_customer"
    assert ghost.churn_probability is None and ghost.segments is None
    lapsed = [r for r in records if r.status == "scored" and r.winback_probability is not None]
    assert lapsed and all(r.churn_probability is None for r in lapsed)
    assert all(r.model_versions.churn == "1" for r in records)


def test_risk_list_records_validate_as_risk_list_rows(scores, models, tmp_path):
    from serving.schemas import RiskListRow

    path = write_risk_list(risk_list_table(scores, models), tmp_path / "r.parquet", RiskListMeta())
    _, rows = filter_risk_list(read_risk_list(path).frame, risk_band=["high"], top_n=20)
    records = [RiskListRow.model_validate(r) for r in risk_list_records(rows)]
    assert [r.rank for r in records] == sorted(r.rank for r in records)
    assert all(r.risk_band == "high" and r.reasons for r in records)


def test_models_of_another_flavour_score_through_pyfunc_predict(features, models, cfg, monkeypatch):
    import serving.scoring as scoring

    rows = features.head(200)
    direct = score_customers(rows, models, cfg)
    monkeypatch.setattr(scoring, "_python_model", lambda pyfunc: None)
    through_pyfunc = score_customers(rows, models, cfg)
    pd.testing.assert_frame_equal(direct, through_pyfunc)
