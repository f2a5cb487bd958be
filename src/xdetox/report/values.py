"""Plain values: report order (LANGS, PARADIGMS, PROMPT_SETS), means, rounding and JSON conversion."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, Sequence

import pandas as pd

from xdetox.data import LANGS

DIGITS = 6


def rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (list(order).index(value), "") if value in order else (len(order), str(value))


def lang_rank(value: str) -> tuple[int, str]:
    return rank(value, LANGS)


def mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def std_or_none(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def round_value(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if not math.isfinite(value) else round(value, DIGITS)


def rounded(value: Any) -> Any:
    """``jsonable`` with every float rounded to DIGITS, also inside tuples and lists."""
    if isinstance(value, float):
        return round_value(value)
    if isinstance(value, (tuple, list)):
        return [rounded(v) for v in value]
    return jsonable(value)


def jsonable(value: Any) -> Any:
    """Deep copy with plain Python types only: no numpy scalars, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
