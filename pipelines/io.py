"""Output helpers shared by the flows: tables and JSON, every file written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from features.files import write_atomically


def write_table(frame: pd.DataFrame, target: Path) -> Path:
    """Write a DataFrame as Parquet or CSV (by the target's extension), atomically."""
    target = Path(target)
    suffix = "".join(target.suffixes[-2:]) if target.suffix == ".gz" else target.suffix
    if suffix in (".parquet", ".pq"):
        return write_atomically(target, lambda p: frame.to_parquet(p, index=False))
    if suffix in (".csv", ".csv.gz"):
        compression = "gzip" if suffix == ".csv.gz" else None
        return write_atomically(
            target, lambda p: frame.to_csv(p, index=False, compression=compression)
        )
    raise ValueError(f"unsupported output format {target.name!r}: use .parquet or .csv")


def write_json(payload: Any, target: Path) -> Path:
    """Write JSON (sorted keys, ISO dates) atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return write_atomically(Path(target), lambda p: p.write_text(text + "\n", encoding="utf-8"))
