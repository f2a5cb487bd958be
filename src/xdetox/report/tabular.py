"""Summary rows as flat frames: ``summary_frame`` (``Run.settings()``, ``Run.per_seed()``, ``settings.parquet``).

Lives in the report package so that ``write_report`` can write ``settings.parquet`` with the very frame
``xdetox.api.Run.settings()`` returns (``xdetox.api`` imports it from here; the report never imports the API).
"""

from __future__ import annotations

import pandas as pd

from xdetox.errors import XdetoxInputError

KEPT_LISTS = frozenset({"seeds"})
"""Summary fields whose list stays whole (a tuple) in a frame; every other list is an interval [low, high]."""
INTERVALS = frozenset({"ci95", "reduction_length_matched_ci", "reduction_same_language_ci",
                       "reduction_silence_bounds", "reduction_sentence_ci"})
"""The interval fields summary.json writes: ``<field>_low``/``_high`` columns even where every row holds null
(a run whose cells all have one prompt has the same columns as any other)."""


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` (``summary.json``'s ``settings`` or ``per_seed``) as a frame, one row each, in order.

    A column per field, in the order the fields first appear: a dict field becomes a column per key,
    ``<field>.<key>`` (``flags.short``, ``degenerate_reasons.silent``); a list field is an interval and
    becomes ``<field>_low`` and ``<field>_high`` (``ci95_low``), except ``seeds``, kept as a tuple. A
    field a row lacks or holds as null is missing there (None, or NaN in a numeric column).
    """
    order: dict[str, None] = {}
    dict_keys: dict[str, dict[str, None]] = {}
    intervals = set(INTERVALS)
    for row in rows:
        for key, value in row.items():
            order.setdefault(key)
            if isinstance(value, dict):
                dict_keys.setdefault(key, {}).update(dict.fromkeys(value))
            elif isinstance(value, list) and key not in KEPT_LISTS:
                intervals.add(key)
    records = []
    for row in rows:
        record = {}
        for key in order:
            value = row.get(key)
            if key in dict_keys:
                record |= {f"{key}.{sub}": (value or {}).get(sub) for sub in dict_keys[key]}
            elif key in intervals:
                if value is not None and (not isinstance(value, list) or len(value) != 2):
                    raise XdetoxInputError(f"summary field {key} is not an interval [low, high]: {value!r}")
                record[f"{key}_low"], record[f"{key}_high"] = value if value is not None else (None, None)
            else:
                record[key] = tuple(value) if isinstance(value, list) else value
        records.append(record)
    columns = [c for key in order for c in ([f"{key}.{sub}" for sub in dict_keys[key]] if key in dict_keys else
                                            [f"{key}_low", f"{key}_high"] if key in intervals else [key])]
    return pd.DataFrame.from_records(records, columns=columns)
