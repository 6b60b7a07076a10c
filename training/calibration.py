"""Probability calibration that ships as plain JSON, so "0.3" means about 30%.

Boosted trees trained with class weights rank well but their raw outputs are not rates. A
calibrator fitted on held-out rows (a share of the validation cutoff the model never used for
early stopping or tuning) maps raw probabilities to observed frequencies:

* ``isotonic``: a monotone step-wise linear map (sklearn ``IsotonicRegression``), stored as its
  thresholds; flexible, needs a few hundred positives.
* ``sigmoid``: Platt scaling, a logistic regression on the logit of the raw probability, stored
  as slope and intercept; smooth, works on little data.

Both are non-decreasing, so calibration never changes the order of customers. The JSON form
predicts exactly what the fitted sklearn estimator predicts (tested), and loading it needs
no unpickling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: Calibrated probabilities stay in [EPSILON, 1 - EPSILON] so log loss stays finite.
EPSILON = 1e-6
_LOGIT_CLIP = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


class ProbabilityCalibrator:
    """Maps raw model probabilities to calibrated ones (scikit-learn estimator contract)."""

    def __init__(self, method: Literal["isotonic", "sigmoid"] = "isotonic") -> None:
        self.method = method

    def fit(self, raw_probability: np.ndarray, y: np.ndarray) -> ProbabilityCalibrator:
        raw = np.asarray(raw_probability, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if raw.shape != y.shape or raw.ndim != 1:
            raise ValueError("raw_probability and y must be 1-d arrays of the same length")
        if len(np.unique(y)) != 2:
            raise ValueError("calibration needs both classes in y")
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            estimator = IsotonicRegression(
                y_min=EPSILON, y_max=1 - EPSILON, increasing=True, out_of_bounds="clip"
            ).fit(raw, y)
            self.estimator_ = estimator
            self.x_thresholds_ = np.asarray(estimator.X_thresholds_, dtype=np.float64)
            self.y_thresholds_ = np.asarray(estimator.y_thresholds_, dtype=np.float64)
        elif self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            estimator = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw)[:, None], y)
            self.estimator_ = estimator
            self.slope_ = float(estimator.coef_[0, 0])
            self.intercept_ = float(estimator.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def _check_fitted(self) -> None:
        fitted = hasattr(self, "x_thresholds_") or hasattr(self, "slope_")
        if not fitted:
            raise RuntimeError("ProbabilityCalibrator is not fitted; call fit or from_dict")

    def predict(self, raw_probability: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, from the stored parameters only."""
        self._check_fitted()
        raw = np.asarray(raw_probability, dtype=np.float64)
        if self.method == "isotonic":
            x, y = self.x_thresholds_, self.y_thresholds_
            if len(x) == 1:
                return np.full(raw.shape, y[0])
            return np.interp(np.clip(raw, x[0], x[-1]), x, y)
        margin = self.slope_ * _logit(raw) + self.intercept_
        return 1.0 / (1.0 + np.exp(-margin))

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        if self.method == "isotonic":
            return {
                "method": "isotonic",
                "x_thresholds": self.x_thresholds_.tolist(),
                "y_thresholds": self.y_thresholds_.tolist(),
            }
        return {"method": "sigmoid", "slope": self.slope_, "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbabilityCalibrator:
        method = data.get("method")
        calibrator = cls(method)  # type: ignore[arg-type]
        if method == "isotonic":
            x = np.asarray(data["x_thresholds"], dtype=np.float64)
            y = np.asarray(data["y_thresholds"], dtype=np.float64)
            if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
                raise ValueError("isotonic calibration needs equal-length, non-empty thresholds")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("isotonic thresholds must be non-decreasing")
            calibrator.x_thresholds_, calibrator.y_thresholds_ = x, y
        elif method == "sigmoid":
            calibrator.slope_ = float(data["slope"])
            calibrator.intercept_ = float(data["intercept"])
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return calibrator

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> ProbabilityCalibrator:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
