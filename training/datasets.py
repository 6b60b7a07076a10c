"""Honest training tables: which columns are features, a split by time, and feature encoding.

The snapshot table stacks one row per (customer_id, cutoff). A model trained on it is used at a
later date on customers it has already seen, so the only honest evaluation is by time: train
on earlier cutoffs, validate (early stopping, tuning, calibration, rule thresholds) on a later
one and test on the latest cutoff whose labels have matured. A random split by customer would
let the model learn the future of the market from the same period it is graded on.

Everything here is schema-driven: the feature columns are all columns except the identifiers,
the labels and the label bookkeeping listed in ``NON_FEATURE_COLUMNS`` / ``is_label_column``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import DataContractError

#: Columns of the snapshot table that are never model inputs. ``is_active`` IS a feature:
#: whether the customer was active in the window before the cutoff is known at the cutoff.
NON_FEATURE_COLUMNS: tuple[str, ...] = ("customer_id", "cutoff", "label_matured")

#: A categorical column keeps at most this many levels (the most frequent in training) ...
MAX_CATEGORY_LEVELS = 50
#: ... each seen at least this many times in training; rarer levels are scored as missing.
MIN_CATEGORY_COUNT = 5
#: A column whose most frequent value (missing counts as a value) fills this share of the
#: training rows or more carries almost nothing: left out.
NEAR_CONSTANT_SHARE = 0.999
#: At most this many features reach the models (see :func:`select_features`).
MAX_FEATURES = 300


def is_label_column(name: str) -> bool:
    """Labels and label bookkeeping: ``label_*`` and ``*_label`` columns."""
    return name.startswith("label_") or name.endswith("_label")


def is_feature_column(name: str) -> bool:
    """Whether a snapshot column may be a model input (see ``NON_FEATURE_COLUMNS``)."""
    return name not in NON_FEATURE_COLUMNS and not is_label_column(name)


def feature_columns(table: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """The feature columns of a snapshot table in table order, minus ``exclude``."""
    unknown = sorted(set(exclude) - set(table.columns))
    if unknown:
        raise DataContractError(f"exclude_features names columns not in the table: {unknown}")
    return [c for c in table.columns if is_feature_column(c) and c not in exclude]


# --------------------------------------------------------------------------------------------
# Time split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSplit:
    """Which cutoffs train, validate and test a model for one label."""

    train_cutoffs: tuple[pd.Timestamp, ...]
    validation_cutoff: pd.Timestamp
    test_cutoff: pd.Timestamp
    unusable_cutoffs: tuple[pd.Timestamp, ...] = ()  # no matured, eligible rows
    purge_gap_days: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_cutoffs": [c.date().isoformat() for c in self.train_cutoffs],
            "validation_cutoff": self.validation_cutoff.date().isoformat(),
            "test_cutoff": self.test_cutoff.date().isoformat(),
            "unusable_cutoffs": [c.date().isoformat() for c in self.unusable_cutoffs],
            "purge_gap_days": self.purge_gap_days,
        }


def check_snapshot_table(table: pd.DataFrame, label_column: str) -> None:
    """Raise a clear ``DataContractError`` when the table cannot be trained on at all."""
    missing = [c for c in ("customer_id", "cutoff", label_column) if c not in table.columns]
    if missing:
        raise DataContractError(f"snapshot table lacks required columns: {missing}")
    if not pd.api.types.is_datetime64_any_dtype(table["cutoff"]):
        raise DataContractError(f"'cutoff' must be datetime64, got {table['cutoff'].dtype}")
    if table["cutoff"].isna().any():
        raise DataContractError(f"'cutoff' has {int(table['cutoff'].isna().sum())} missing values")
    duplicated = table.duplicated(["customer_id", "cutoff"])
    if duplicated.any():
        raise DataContractError(
            f"snapshot table has {int(duplicated.sum())} duplicated (customer_id, cutoff) rows"
        )
    labels = table[label_column]
    if not pd.api.types.is_numeric_dtype(labels):
        raise DataContractError(f"{label_column} must be numeric 1.0/0.0/NaN, got {labels.dtype}")
    bad = labels.notna() & ~labels.isin([0.0, 1.0])
    if bad.any():
        raise DataContractError(
            f"{label_column} holds {int(bad.sum())} values other than 1.0, 0.0 and NaN"
        )


def eligible_mask(table: pd.DataFrame, label_column: str) -> pd.Series:
    """Rows that carry a matured label for this task (NaN label = not eligible / not matured)."""
    mask = table[label_column].notna()
    if "label_matured" in table.columns:
        mask &= table["label_matured"].fillna(False).astype(bool)
    return mask


def split_by_time(table: pd.DataFrame, label_column: str, purge_gap_days: int = 0) -> TimeSplit:
    """Test on the latest cutoff with matured labels, validate on the one before, train on the rest.

    With ``purge_gap_days`` > 0 the validation cutoff is the latest one at least that many days
    before the test cutoff, and training cutoffs are at least that many days before the
    validation cutoff, so no training label window reaches into the period being evaluated.
    """
    check_snapshot_table(table, label_column)
    eligible = eligible_mask(table, label_column)
    all_cutoffs = sorted(pd.Timestamp(c) for c in table["cutoff"].unique())
    usable = sorted(pd.Timestamp(c) for c in table.loc[eligible, "cutoff"].unique())
    unusable = tuple(c for c in all_cutoffs if c not in set(usable))
    if len(usable) < 3:
        raise DataContractError(
            f"{label_column}: need at least 3 cutoffs with matured, eligible rows "
            f"(train, validation, test); found {len(usable)} of {len(all_cutoffs)} cutoffs"
        )
    gap = pd.Timedelta(days=purge_gap_days)
    test_cutoff = usable[-1]
    validation_candidates = [c for c in usable[:-1] if c <= test_cutoff - gap]
    if not validation_candidates:
        raise DataContractError(
            f"{label_column}: no cutoff is {purge_gap_days} days before the test cutoff "
            f"{test_cutoff.date()}; lower purge_gap_days or add earlier cutoffs"
        )
    validation_cutoff = validation_candidates[-1]
    train_cutoffs = tuple(
        c for c in usable if c <= validation_cutoff - gap and c < validation_cutoff
    )
    if not train_cutoffs:
        raise DataContractError(
            f"{label_column}: no training cutoff is {purge_gap_days} days before the validation "
            f"cutoff {validation_cutoff.date()}; lower purge_gap_days or add earlier cutoffs"
        )
    return TimeSplit(
        train_cutoffs=train_cutoffs,
        validation_cutoff=validation_cutoff,
        test_cutoff=test_cutoff,
        unusable_cutoffs=unusable,
        purge_gap_days=purge_gap_days,
    )


# --------------------------------------------------------------------------------------------
# Feature metadata and encoding
# --------------------------------------------------------------------------------------------


def _kind_of(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return "categorical"
    if pd.api.types.is_object_dtype(dtype):
        non_null = series.dropna()
        if non_null.map(lambda v: isinstance(v, bool | np.bool_)).all() and len(non_null):
            return "boolean"
        return "categorical"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    raise DataContractError(
        f"feature column {series.name!r} has dtype {dtype}, which is neither numeric, boolean "
        "nor categorical; convert it (e.g. a date to days since it) or exclude it"
    )


@dataclass(frozen=True)
class FeatureSpec:
    """What the model expects as input; fitted on the training rows, shipped as JSON.

    ``kinds`` maps each feature to ``integer``/``float``/``boolean``/``categorical``; the
    categorical levels are those frequent enough in training, in a fixed order, so the codes
    XGBoost sees at serving time are the ones it was trained on.
    """

    features: tuple[str, ...]
    kinds: dict[str, str]
    categorical_levels: dict[str, tuple[str, ...]]
    readable_names: dict[str, str] = field(default_factory=dict)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if self.kinds[f] == "categorical")

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if self.kinds[f] != "categorical")

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        features: list[str],
        *,
        label_column: str | None = None,
        max_features: int = MAX_FEATURES,
    ) -> FeatureSpec:
        """Kinds and levels from the training rows, after :func:`select_features` when the
        label column is given (the selection then reads training rows and labels only)."""
        from training.explain import readable_feature_names

        kinds = {f: _kind_of(train[f]) for f in features}  # an unusable dtype fails first
        if label_column is not None:
            features = select_features(train, features, label_column, max_features).kept
        levels: dict[str, tuple[str, ...]] = {}
        for f in features:
            if kinds[f] != "categorical":
                continue
            counts = train[f].dropna().astype(str).value_counts()
            counts = counts[counts >= MIN_CATEGORY_COUNT]
            # most frequent first, ties by name, so the order is reproducible
            ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            levels[f] = tuple(level for level, _ in ordered[:MAX_CATEGORY_LEVELS])
        # A categorical with no level frequent enough in training (e.g. `plan` among lapsed
        # customers, who hold no subscription) carries no information: leave it out.
        features = [f for f in features if kinds[f] != "categorical" or levels[f]]
        kinds = {f: kinds[f] for f in features}
        levels = {f: v for f, v in levels.items() if v}
        return cls(
            features=tuple(features),
            kinds=kinds,
            categorical_levels=levels,
            readable_names=readable_feature_names(features),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "kinds": dict(self.kinds),
            "categorical_levels": {k: list(v) for k, v in self.categorical_levels.items()},
            "readable_names": dict(self.readable_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(
            features=tuple(data["features"]),
            kinds=dict(data["kinds"]),
            categorical_levels={k: tuple(v) for k, v in data["categorical_levels"].items()},
            readable_names=dict(data.get("readable_names", {})),
        )


@dataclass(frozen=True)
class FeatureSelection:
    """Which features were kept, and why each other one was left out."""

    kept: list[str]
    dropped: dict[str, str]


def _value_codes(column: pd.Series) -> np.ndarray:
    """Integer codes of a column's values, missing as its own value (-1)."""
    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
        codes, _ = pd.factorize(column.astype(object), use_na_sentinel=True)
        return codes
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes


def _comparable_values(column: pd.Series) -> np.ndarray:
    """A column as one comparable array: numbers as float64 with one NaN bit pattern, anything
    else as 64-bit hashes of its text (missing hashed as such)."""
    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
        text = (
            column.astype(object)
            .where(column.notna(), None)
            .map(lambda v: "\x00missing" if v is None else str(v))
        )
        return pd.util.hash_pandas_object(text, index=False).to_numpy()
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(values), np.nan, values + 0.0)


def _univariate_strength(column: pd.Series, y: np.ndarray) -> float:
    """|ROC AUC - 0.5| of the column's values alone (missing ranked lowest; categories by their
    positive rate), a model-free, sign-free measure of how much one column separates."""
    from sklearn.metrics import roc_auc_score

    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
        codes = _value_codes(column)
        rates = pd.Series(y).groupby(codes).mean()
        score = rates.reindex(codes).to_numpy(dtype=np.float64)
    else:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        score = np.where(np.isnan(values), -np.inf, values)
        finite = score[np.isfinite(score)]
        score = np.where(np.isneginf(score), (finite.min() - 1.0) if finite.size else 0.0, score)
    if np.unique(y).size < 2:
        return 0.0
    return abs(float(roc_auc_score(y, score)) - 0.5)


def select_features(
    train: pd.DataFrame, features: list[str], label_column: str, max_features: int = MAX_FEATURES
) -> FeatureSelection:
    """Features worth a model's time, decided on the training rows only (never validation or
    test rows, so the choice cannot leak them).

    In order: (1) near-constant columns, whose most frequent value (missing included) fills at
    least ``NEAR_CONSTANT_SHARE`` of the rows, are left out; (2) a column equal to an earlier
    one on every training row (same values, same missing pattern) is left out as a duplicate,
    the first in table order kept (so the canonical names win over generated ``ev_*`` ones);
    (3) when more than ``max_features`` remain, the ``max_features`` with the largest
    univariate |ROC AUC - 0.5| on the training labels stay, ties by table order. Width
    matters: hundreds of generated per-event-type columns would otherwise dilute the tuner's
    column sampling and the logistic baseline.
    """
    if max_features < 1:
        raise ValueError(f"max_features must be at least 1, got {max_features}")
    dropped: dict[str, str] = {}
    survivors: list[str] = []
    seen: dict[bytes, str] = {}
    n = len(train)
    for f in features:
        codes = _value_codes(train[f])
        if n and np.bincount(codes + 1).max() >= NEAR_CONSTANT_SHARE * n:
            dropped[f] = "near-constant on the training rows"
            continue
        values = _comparable_values(train[f])
        digest = hashlib.blake2b(values.tobytes(), digest_size=16).digest()
        first = seen.get(digest)
        if first is not None and np.array_equal(_comparable_values(train[first]), values):
            dropped[f] = f"duplicate of {first} on the training rows"
            continue
        seen.setdefault(digest, f)
        survivors.append(f)
    if len(survivors) > max_features:
        y = train[label_column].to_numpy(dtype=np.float64)
        strength = {f: _univariate_strength(train[f], y) for f in survivors}
        ranked = sorted(survivors, key=lambda f: (-strength[f], survivors.index(f)))
        chosen = set(ranked[:max_features])
        for f in survivors:
            if f not in chosen:
                dropped[f] = (
                    f"beyond the {max_features}-feature cap (univariate |AUC-0.5| "
                    f"{strength[f]:.4f})"
                )
        survivors = [f for f in survivors if f in chosen]
    return FeatureSelection(kept=survivors, dropped=dropped)


def encode_features(table: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The model matrix: numerics and booleans as float64, categoricals with the trained levels.

    Levels unseen (or too rare) in training become missing, which XGBoost routes like any
    missing value. Extra columns (ids, labels) are ignored; missing feature columns raise.
    """
    missing = [f for f in spec.features if f not in table.columns]
    if missing:
        raise DataContractError(f"input lacks feature columns the model needs: {missing}")
    encoded: dict[str, Any] = {}
    for f in spec.features:
        column = table[f]
        if spec.kinds[f] == "categorical":
            values = column.astype("object").where(column.notna(), None)
            values = values.map(lambda v: None if v is None else str(v))
            encoded[f] = pd.Categorical(values, categories=list(spec.categorical_levels[f]))
        elif spec.kinds[f] == "boolean":
            try:
                encoded[f] = column.astype("float64").to_numpy()
            except (TypeError, ValueError) as exc:
                raise DataContractError(f"feature {f!r} must be boolean: {exc}") from exc
        else:
            try:
                encoded[f] = pd.to_numeric(column, errors="raise").astype("float64").to_numpy()
            except (TypeError, ValueError) as exc:
                raise DataContractError(f"feature {f!r} must be numeric: {exc}") from exc
    return pd.DataFrame(encoded, index=table.index, columns=list(spec.features))


def unseen_category_counts(table: pd.DataFrame, spec: FeatureSpec) -> dict[str, int]:
    """Per categorical feature, how many non-missing values fall outside the trained levels."""
    counts: dict[str, int] = {}
    for f in spec.categorical:
        present = table[f].notna()
        known = table[f].astype("object").map(str).isin(spec.categorical_levels[f])
        n_unseen = int((present & ~known).sum())
        if n_unseen:
            counts[f] = n_unseen
    return counts


# --------------------------------------------------------------------------------------------
# One task's data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskData:
    """The rows of one task, split by time; ``tuning`` and ``calibration`` split validation."""

    split: TimeSplit
    spec: FeatureSpec
    label_column: str
    train: pd.DataFrame
    validation: pd.DataFrame
    tuning: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame

    def y(self, part: str) -> np.ndarray:
        return getattr(self, part)[self.label_column].to_numpy(dtype=np.int8)

    def X(self, part: str) -> pd.DataFrame:  # conventional name for a design matrix
        return encode_features(getattr(self, part), self.spec)


def calibration_mask(customer_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """A seeded, reproducible customer-level draw: True for the calibration share."""
    salted = customer_ids.astype(str) + f"|{seed}"
    hashes = pd.util.hash_pandas_object(salted, index=False).to_numpy()
    return (hashes % 10_000) < int(round(fraction * 10_000))


def _require_both_classes(frame: pd.DataFrame, label_column: str, part: str) -> None:
    counts = frame[label_column].value_counts()
    if len(frame) == 0 or counts.get(1.0, 0) == 0 or counts.get(0.0, 0) == 0:
        raise DataContractError(
            f"{label_column}: the {part} rows need both classes; got "
            f"{int(counts.get(1.0, 0))} positives and {int(counts.get(0.0, 0))} negatives"
        )


def build_task_data(
    table: pd.DataFrame,
    label_column: str,
    *,
    exclude_features: tuple[str, ...] = (),
    purge_gap_days: int = 0,
    calibration_fraction: float = 0.5,
    seed: int = 0,
    max_features: int = MAX_FEATURES,
) -> TaskData:
    """Eligible rows split by time, the feature spec fitted on training rows only."""
    split = split_by_time(table, label_column, purge_gap_days)
    eligible = table.loc[eligible_mask(table, label_column)]
    train = eligible.loc[eligible["cutoff"].isin(split.train_cutoffs)]
    validation = eligible.loc[eligible["cutoff"] == split.validation_cutoff]
    test = eligible.loc[eligible["cutoff"] == split.test_cutoff]
    in_calibration = calibration_mask(validation["customer_id"], calibration_fraction, seed)
    tuning = validation.loc[~in_calibration]
    calibration = validation.loc[in_calibration]
    for part, frame in (
        ("training", train),
        ("tuning (validation)", tuning),
        ("calibration (validation)", calibration),
        ("test", test),
    ):
        _require_both_classes(frame, label_column, part)
    features = feature_columns(table, exclude_features)
    if not features:
        raise DataContractError("the snapshot table has no feature columns")
    spec = FeatureSpec.fit(train, features, label_column=label_column, max_features=max_features)
    return TaskData(
        split=split,
        spec=spec,
        label_column=label_column,
        train=train,
        validation=validation,
        tuning=tuning,
        calibration=calibration,
        test=test,
    )
