"""The two model families: XGBoost (main) and a logistic-regression pipeline (baseline).

XGBoost takes the encoded matrix directly (native categorical support, missing values routed
by the trees). Monotone constraints encode domain knowledge the retention team relies on,
e.g. for churn a longer silence (``recency_days``) or more complaints (``complaints_90d``) never
lowers the score; they are configured per task and applied to the features present.

Class imbalance (``imbalance_strategy``): with ``class_weight`` positives are up-weighted by
negatives/positives during fitting (XGBoost ``scale_pos_weight``, LR ``class_weight``), which
helps the trees find splits for the rare class; the resulting scores over-state the rate, so
both models are calibrated afterwards on held-out rows. With ``none`` the models are fitted
unweighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training.datasets import FeatureSpec

#: Project metric name -> (XGBoost eval metric, larger is better).
XGB_EVAL_METRICS: dict[str, tuple[str, bool]] = {
    "pr_auc": ("aucpr", True),
    "roc_auc": ("auc", True),
    "log_loss": ("logloss", False),
}


def positive_class_weight(y: np.ndarray, strategy: str) -> float:
    """The weight of a positive row: negatives/positives for ``class_weight``, else 1."""
    if strategy == "none":
        return 1.0
    if strategy != "class_weight":
        raise ValueError(f"unknown imbalance strategy {strategy!r}")
    positives = int(np.sum(y == 1))
    negatives = int(np.sum(y == 0))
    if positives == 0:
        raise ValueError("no positive rows to weight")
    return negatives / positives


def applicable_monotone_constraints(
    spec: FeatureSpec, constraints: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Constraints on numeric features present in the spec, and the names that were skipped."""
    applied = {
        f: int(direction)
        for f, direction in constraints.items()
        if f in spec.features and spec.kinds[f] != "categorical"
    }
    skipped = sorted(set(constraints) - set(applied))
    return applied, skipped


def base_xgb_params(
    *,
    scale_pos_weight: float,
    monotone_constraints: dict[str, int],
    tuning_metric: str,
    seed: int,
    n_jobs: int,
) -> dict[str, Any]:
    """Parameters every XGBoost fit shares; the tuner adds the searched ones."""
    eval_metric, _ = XGB_EVAL_METRICS[tuning_metric]
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": eval_metric,
        "scale_pos_weight": scale_pos_weight,
        "seed": seed,
        "nthread": n_jobs,
        "max_cat_to_onehot": 8,
        "verbosity": 0,
    }
    if monotone_constraints:
        params["monotone_constraints"] = dict(monotone_constraints)
    return params


def to_dmatrix(X: pd.DataFrame, y: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(X, label=y, enable_categorical=True)


def fit_xgboost(
    params: dict[str, Any],
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    *,
    max_rounds: int,
    early_stopping_rounds: int,
    maximize: bool,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
) -> xgb.Booster:
    """Boost until the validation metric stops improving; the booster keeps the best rounds."""
    early_stopping = xgb.callback.EarlyStopping(
        rounds=early_stopping_rounds,
        metric_name=params["eval_metric"],
        data_name="validation",
        maximize=maximize,
        save_best=True,
    )
    return xgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dvalid, "validation")],
        callbacks=[*callbacks, early_stopping],
        verbose_eval=False,
    )


def predict_xgboost(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
    """Uncalibrated probability of the positive class."""
    return np.asarray(booster.predict(to_dmatrix(X)), dtype=np.float64)


#: Inverse L2 strength of the logistic baseline. Strong on purpose: with hundreds of correlated
#: per-event-type columns a weak penalty lets collinear columns take large opposite weights that
#: fit the training cutoffs and break on later dates (socialnet7 as of 2020-05-01: ROC AUC 0.48
#: with C=1, 0.53 with 0.1, 0.70 with 0.01, while validation read 0.78-0.79 for all three).
LR_INVERSE_REGULARISATION = 0.01


def build_logistic_regression(spec: FeatureSpec, imbalance_strategy: str, seed: int) -> Pipeline:
    """Impute, compress (arcsinh), scale and one-hot encode, then an L2 logistic regression.

    Takes the encoded matrix of ``datasets.encode_features`` (categoricals as pandas
    Categorical with the trained levels, missing as NaN); unseen levels encode as all zeros.
    """
    numeric = list(spec.numeric)
    categorical = list(spec.categorical)
    transformers = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(
                                strategy="median", add_indicator=True, keep_empty_features=True
                            ),
                        ),
                        # counts, rates and money are heavy-tailed: arcsinh reads them on a
                        # log scale (and keeps sign and zero), so a handful of extreme rows do
                        # not dominate hundreds of scaled columns
                        (
                            "compress",
                            FunctionTransformer(np.arcsinh, feature_names_out="one-to-one"),
                        ),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="constant", fill_value="__missing__"),
                        ),
                        ("one_hot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    class_weight = "balanced" if imbalance_strategy == "class_weight" else None
    return Pipeline(
        [
            ("prepare", ColumnTransformer(transformers, remainder="drop")),
            (
                "classifier",
                LogisticRegression(
                    C=LR_INVERSE_REGULARISATION,
                    max_iter=2000,
                    class_weight=class_weight,
                    random_state=seed,
                ),
            ),
        ]
    )


def lr_input(X: pd.DataFrame) -> pd.DataFrame:
    """The LR pipeline's input: categoricals as object strings (NaN for missing)."""
    converted = X.copy()
    for column in converted.columns:
        if isinstance(converted[column].dtype, pd.CategoricalDtype):
            converted[column] = converted[column].astype("object")
    return converted


def predict_logistic_regression(pipeline: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(pipeline.predict_proba(lr_input(X))[:, 1], dtype=np.float64)
