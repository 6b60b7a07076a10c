"""Output helpers shared by the flows: every file is written atomically.

A reader (a CRM job, a dashboard) never sees a half-written file: we write to a temporary file
in the same directory and ``os.replace`` it onto the target, which is atomic on POSIX.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def write_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``target`` in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


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
