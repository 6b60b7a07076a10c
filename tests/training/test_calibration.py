from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.calibration import MIN_SHAPE, ProbabilityCalibrator, laplace_bounds
from training.evaluation import expected_calibration_error, lift_at


def _miscalibrated(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores that rank well but over-state the rate (true p = raw ** 3)."""
    rng = np.random.default_rng(seed)
    raw = rng.random(n)
    y = (rng.random(n) < raw**3).astype(int)
    return raw, y


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_json_round_trip_predicts_exactly_like_sklearn(method, tmp_path):
    raw, y = _miscalibrated()
    calibrator = ProbabilityCalibrator(method).fit(raw, y)
    path = calibrator.save_json(tmp_path / "calibration.json")
    loaded = ProbabilityCalibrator.load_json(path)
    assert json.loads(path.read_text())["method"] == method

    fresh = np.concatenate([np.random.default_rng(1).random(500), [-0.5, 0.0, 1.0, 1.5]])
    if method == "isotonic":
        expected = calibrator.estimator_.predict(fresh)
    else:
        from training.calibration import _logit

        expected = calibrator.estimator_.predict_proba(_logit(fresh)[:, None])[:, 1]
    np.testing.assert_allclose(loaded.predict(fresh), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["beta", "isotonic", "sigmoid"])
def test_calibration_reduces_the_calibration_error(method):
    raw, y = _miscalibrated(seed=2)
    calibrator = ProbabilityCalibrator(method).fit(raw, y)
    held_out_raw, held_out_y = _miscalibrated(seed=3)
    before = expected_calibration_error(held_out_y, held_out_raw)
    after = expected_calibration_error(held_out_y, calibrator.predict(held_out_raw))
    assert after < before / 3


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=50))
def test_isotonic_calibration_never_reverses_the_order(points):
    raw, y = _miscalibrated(500, seed=4)
    calibrator = ProbabilityCalibrator("isotonic").fit(raw, y)
    ordered = np.sort(np.array(points))
    calibrated = calibrator.predict(ordered)
    assert np.all(np.diff(calibrated) >= 0)
    assert np.all((calibrated > 0) & (calibrated < 1))


def test_unfitted_calibrator_and_bad_json_are_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        ProbabilityCalibrator().predict(np.array([0.5]))
    with pytest.raises(ValueError, match="unknown calibration method"):
        ProbabilityCalibrator.from_dict({"method": "magic"})
    with pytest.raises(ValueError, match="non-decreasing"):
        ProbabilityCalibrator.from_dict(
            {"method": "isotonic", "x_thresholds": [0, 1], "y_thresholds": [0.9, 0.1]}
        )


def test_single_class_labels_are_refused():
    with pytest.raises(ValueError, match="both classes"):
        ProbabilityCalibrator().fit(np.array([0.1, 0.2]), np.array([1, 1]))


# --------------------------------------------------------------------------------------------
# The default: strictly increasing, bounded, ranking-preserving (beta calibration)
# --------------------------------------------------------------------------------------------


def _class_weighted_scores(n: int, base_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores like a class-weighted XGBoost model's: float32, ranking well, over-stating the
    rate by about negatives/positives and bent a little (not exactly a logit shift)."""
    from scipy.optimize import brentq
    from scipy.special import expit, logit

    rng = np.random.default_rng(seed)
    grid = np.random.default_rng(12345).normal(size=100_000)
    intercept = brentq(lambda c: expit(c + 1.5 * grid).mean() - base_rate, -20, 10)
    x = rng.normal(size=n)
    p = expit(intercept + 1.5 * x)
    y = (rng.random(n) < p).astype(int)
    raw = expit(logit(p) + np.log(1 / base_rate - 1) + 0.075 * x**2).astype(np.float32)
    return raw.astype(np.float64), y


#: (calibration rows, base rate, seed): a usual set, small sets with 5-10 positives, and
#: 1-2% base rates (the last like the 1.3% set of 2,709 customers isotonic collapsed).
SCENARIOS = [(3000, 0.10, 0), (300, 0.025, 1), (400, 0.02, 2), (2709, 0.013, 3), (600, 0.3, 5)]


def _ranking(y: np.ndarray, score: np.ndarray) -> tuple[float, float, float, int]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return (
        roc_auc_score(y, score),
        average_precision_score(y, score),
        lift_at(y, score, 0.1),
        len(np.unique(score)),
    )


@pytest.mark.parametrize(("n", "base_rate", "seed"), SCENARIOS)
def test_default_calibration_keeps_the_ranking_and_improves_the_estimates(n, base_rate, seed):
    raw, y = _class_weighted_scores(n, base_rate, seed)
    if n <= 400:
        assert 5 <= y.sum() <= 10  # the small-calibration-set case is really small
    calibrator = ProbabilityCalibrator().fit(raw, y)
    assert calibrator.method == "beta"

    held_out_raw, held_out_y = _class_weighted_scores(20_000, base_rate, seed + 100)
    calibrated = calibrator.predict(held_out_raw)
    # identical, not approximately equal: same order, same ties (none), same distinct values
    assert _ranking(held_out_y, calibrated) == _ranking(held_out_y, held_out_raw)
    assert _ranking(y, calibrator.predict(raw)) == _ranking(y, raw)
    assert expected_calibration_error(held_out_y, calibrated) <= expected_calibration_error(
        held_out_y, held_out_raw
    )
    lower, upper = laplace_bounds(n)
    assert np.all((calibrated > lower) & (calibrated < upper))


@pytest.mark.parametrize(("n", "base_rate", "seed"), SCENARIOS)
def test_isotonic_ties_would_have_changed_the_ranking_metrics(n, base_rate, seed):
    """Why isotonic is no longer the default: its steps merge customers and move ROC AUC."""
    raw, y = _class_weighted_scores(n, base_rate, seed)
    held_out_raw, held_out_y = _class_weighted_scores(20_000, base_rate, seed + 100)
    stepped = ProbabilityCalibrator("isotonic").fit(raw, y).predict(held_out_raw)
    assert len(np.unique(stepped)) < len(np.unique(held_out_raw)) / 10
    roc, pr, _, _ = _ranking(held_out_y, stepped)
    raw_roc, raw_pr, _, _ = _ranking(held_out_y, held_out_raw)
    assert roc != raw_roc and pr != raw_pr


def test_default_calibration_is_strictly_increasing_beyond_the_calibration_range():
    rng = np.random.default_rng(6)
    raw = rng.uniform(0.2, 0.8, 500)  # the calibration set never sees a score below 0.2
    y = (rng.random(500) < raw**2).astype(int)
    calibrator = ProbabilityCalibrator().fit(raw, y)
    grid = np.unique(
        np.concatenate(
            [
                np.geomspace(1e-4, 0.5, 4000),  # 2,000 times below the calibration range
                1 - np.geomspace(1e-6, 0.5, 4000),
                np.linspace(0, 1, 4001)[1:-1],
            ]
        ).astype(np.float32)
    ).astype(np.float64)
    calibrated = calibrator.predict(grid)
    assert np.all(np.diff(calibrated) > 0)  # no plateau below 0.2 or above 0.8
    extremes = calibrator.predict(np.array([-1.0, 0.0, 1.0, 2.0]))
    lower, upper = laplace_bounds(500)
    assert np.all((extremes >= lower) & (extremes <= upper))
    assert np.all((extremes > 0) & (extremes < 1))


def test_few_positives_cannot_claim_certainty():
    rng = np.random.default_rng(7)
    raw = rng.random(60)
    y = np.zeros(60, dtype=int)
    y[np.argsort(raw)[-5:]] = 1  # 5 positives, perfectly separated: an MLE would say 0 and 1
    calibrator = ProbabilityCalibrator().fit(raw, y)
    edges = calibrator.predict(np.array([0.0, 1e-12, 1 - 1e-12, 1.0]))
    assert edges[0] >= 1 / 62 and edges[-1] <= 61 / 62
    assert calibrator.to_dict()["lower"] == pytest.approx(1 / 62)


def test_monotonicity_guard_holds_when_the_labels_run_against_the_scores():
    rng = np.random.default_rng(8)
    raw = rng.random(400)
    y = (rng.random(400) < 1 - raw).astype(int)  # anti-correlated: a free fit would decrease
    calibrator = ProbabilityCalibrator().fit(raw, y)
    assert calibrator.a_ >= MIN_SHAPE and calibrator.b_ >= MIN_SHAPE
    grid = np.linspace(0.001, 0.999, 999).astype(np.float32).astype(np.float64)
    assert np.all(np.diff(calibrator.predict(grid)) > 0)
    with pytest.raises(ValueError, match="strictly monotone"):
        ProbabilityCalibrator.from_dict({**calibrator.to_dict(), "a": -0.5})
    with pytest.raises(ValueError, match="bounds"):
        ProbabilityCalibrator.from_dict({**calibrator.to_dict(), "upper": 1.0})


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.floats(float(np.float32(1e-4)), float(np.float32(1 - 1e-6)), width=32),
        min_size=2,
        max_size=50,
        unique=True,
    )
)
def test_default_calibration_keeps_every_float32_score_distinct(points):
    """Distinct float32 raw scores (what XGBoost outputs) stay distinct, neighbours included.

    Far below the calibration range (here under 1e-5, with a steep fit, a ~ 2.5) float64 can
    no longer resolve the calibrated values next to the Laplace floor; see the module doc."""
    raw, y = _miscalibrated(500, seed=4)
    calibrator = ProbabilityCalibrator().fit(raw, y)
    points = np.sort(np.array(points, dtype=np.float32))
    neighbours = np.nextafter(points, np.float32(1))  # the closest distinct float32 score
    calibrated = calibrator.predict(points.astype(np.float64))
    assert np.all(np.diff(calibrated) > 0)
    assert np.all(calibrator.predict(neighbours.astype(np.float64)) > calibrated)
    assert np.all((calibrated > 0) & (calibrated < 1))


def test_default_json_round_trip_predicts_exactly_the_same(tmp_path):
    raw, y = _class_weighted_scores(2709, 0.013, 3)
    calibrator = ProbabilityCalibrator().fit(raw, y)
    path = calibrator.save_json(tmp_path / "calibration.json")
    stored = json.loads(path.read_text())
    assert stored["method"] == "beta" and stored["n_calibration"] == 2709
    assert stored["n_positive"] == int(y.sum())
    loaded = ProbabilityCalibrator.load_json(path)
    fresh = np.concatenate([np.random.default_rng(1).random(500), [-0.5, 0.0, 1.0, 1.5]])
    np.testing.assert_array_equal(loaded.predict(fresh), calibrator.predict(fresh))


def test_isotonic_json_of_earlier_versions_loads_and_predicts_as_before():
    """A calibration.json as earlier versions wrote it (isotonic, then the default)."""
    legacy = {
        "method": "isotonic",
        "x_thresholds": [0.05, 0.2, 0.2, 0.6, 0.9],
        "y_thresholds": [1e-06, 1e-06, 0.1, 0.4, 0.999999],
    }
    calibrator = ProbabilityCalibrator.from_dict(json.loads(json.dumps(legacy)))
    raw = np.array([0.0, 0.05, 0.1, 0.4, 0.6, 0.75, 0.9, 1.0])
    expected = [1e-06, 1e-06, 1e-06, 0.25, 0.4, 0.6999995, 0.999999, 0.999999]
    np.testing.assert_allclose(calibrator.predict(raw), expected, rtol=1e-12)
    assert calibrator.to_dict() == legacy
