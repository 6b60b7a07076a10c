from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.calibration import ProbabilityCalibrator
from training.evaluation import expected_calibration_error


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


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
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
