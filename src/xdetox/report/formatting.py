"""Numbers and names as the text of tables, captions and prose ("0.600 ± 0.010", "[+0.1, +0.3]", "<0.001")."""

from __future__ import annotations

import json
import math
from typing import Sequence

from xdetox.data import LANG_NAMES


def lang_title(code: str) -> str:
    return f"{LANG_NAMES[code]} ({code})" if code in LANG_NAMES else code


def seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds) or "none"


def n_phrase(counts: dict[str, int]) -> str:
    """"n=100 prompts/target", or the n of each target when they differ."""
    values = set(counts.values())
    if not values:
        return "n=0"
    if len(values) == 1:
        return f"n={values.pop()} prompts/target"
    return "n per target: " + ", ".join(f"{t} {n}" for t, n in counts.items())


def fmt_kv(mapping: dict) -> str:
    if not mapping:
        return "not recorded"
    return ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, str) else v}"
        for k, v in mapping.items()
    )


def fmt_value(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def fmt_pm(value: float | None, std: float | None, signed: bool = False) -> str:
    """"0.600 ± 0.010", or just the value without a std."""
    return fmt_value(value, signed) + ("" if value is None or std is None else f" ± {std:.3f}")


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def fmt_ci(interval: tuple[float, float] | None) -> str:
    """"[+0.100, +0.300]", or "-"."""
    return "-" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def fmt_p(value: float | None) -> str:
    """"0.042", "<0.001", or "-"."""
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"
