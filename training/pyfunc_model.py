"""MLflow "models from code" definition of the scoring model: nothing in it is pickled.

``training.train`` logs this FILE (``mlflow.pyfunc.log_model(python_model=<this path>,
artifacts=...)``); MLflow copies it next to the artifacts and executes it when the model is
loaded, so the model loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. Do not import
this module: executing it registers the model object with ``mlflow.models.set_model``.

Artifacts (see ``training.scorer``): ``booster`` (XGBoost UBJ/JSON), ``calibration`` (JSON),
``feature_metadata`` (JSON: features, kinds, categorical levels, readable names, input types).
Loading needs the ``churn-crm`` package (``training``) and xgboost in the environment.

Prediction contract (what serving relies on):

* input: a DataFrame with the feature columns of the signature; other columns (customer_id,
  cutoff, labels) are ignored.
* output: a DataFrame with ``probability`` (calibrated, float) per input row, in input order.
* ``params={"explain": True, "top_k": k}`` adds ``reasons``: per row a JSON string holding a
  list of at most k objects ``{"feature", "label", "value", "contribution", "direction"}``,
  largest |SHAP contribution| first (``label`` is the readable feature name, ``direction`` is
  "raises" or "lowers" the score).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from training.scorer import Scorer


class CrmScoringModel(mlflow.pyfunc.PythonModel):
    """Calibrated XGBoost probability with optional per-customer reasons."""

    def load_context(self, context: Any) -> None:
        self._scorer = Scorer.load_artifacts(context.artifacts)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        explain = bool(params.get("explain", False))
        top_k = params.get("top_k")
        output = self._scorer.predict_frame(
            model_input, explain=explain, top_k=int(top_k) if top_k else None
        )
        return output.reset_index(drop=True)


mlflow.models.set_model(CrmScoringModel())
