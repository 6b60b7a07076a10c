"""The framework's floor: a minimal BentoML service returning one raw XGBoost probability.

``benchmarks/serving.py`` serves this next to ``serving.service:ChurnService`` with the same
booster, so the difference between the two is what our service adds (validation, feature
checks, calibration, reasons, segments, actions), not what BentoML itself costs on the machine.

The booster file comes from ``CHURN_FLOOR_BOOSTER`` (an XGBoost UBJ/JSON file, e.g. the
``booster.ubj`` artifact of the champion churn model). The request carries one encoded feature
row in the booster's column order (null for missing, category codes for categoricals).

    CHURN_FLOOR_BOOSTER=.../booster.ubj bentoml serve benchmarks.floor_service:FloorService
"""

from __future__ import annotations

import os

import bentoml
import numpy as np

BOOSTER_ENV = "CHURN_FLOOR_BOOSTER"
#: Worker processes, the same variable as the churn service's so both get the same number.
WORKERS_ENV = "CHURN_SERVICE_WORKERS"


@bentoml.service(
    name="floor",
    workers=max(1, int(os.environ.get(WORKERS_ENV, "1") or 1)),
    envs=[{"name": "OMP_NUM_THREADS", "value": "1"}],
)
class FloorService:
    """Loads the booster once; ``/predict`` is ``inplace_predict`` on a one-row array."""

    def __init__(self) -> None:
        import xgboost as xgb

        path = os.environ.get(BOOSTER_ENV)
        if not path:
            raise RuntimeError(f"set {BOOSTER_ENV} to the XGBoost booster file to serve")
        self.booster = xgb.Booster()
        self.booster.load_model(path)
        self.booster.set_param({"nthread": 1})
        self.n_features = self.booster.num_features()

    @bentoml.api
    async def predict(self, x: list[float | None]) -> dict[str, float]:
        # async: run on the event loop like our /score; a plain `def` would add a thread hop
        # per request (BentoML runs sync APIs in a thread pool) costing more than the
        # prediction itself, and make the floor slower than it has to be.
        row = np.asarray([x], dtype=np.float64)  # None becomes NaN
        if row.shape[1] != self.n_features:
            raise bentoml.exceptions.InvalidArgument(
                f"x has {row.shape[1]} values, the booster expects {self.n_features}"
            )
        return {"probability": float(self.booster.inplace_predict(row)[0])}
