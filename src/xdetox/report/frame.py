"""The completions frame: its columns, and its validation before anything is computed.

Input is one DataFrame row per completion with the columns ``model`` (display
name; default ``RunInfo.model``), ``setting`` (label such as ``"zs"``,
``"x-ft:en"``, ``"p-ft:10%"``, ``"m-ft"``, ``"dpo:en"``), ``paradigm``
(``"zs"``, ``"x-ft"``, ``"p-ft"``, ``"m-ft"``, ``"dpo"``), ``source`` (training
language of x-ft and dpo, else None), ``percent`` (p-ft only: 10, 20, 30; default
None), ``seed`` (default the first of ``RunInfo.seeds``), ``target``, ``split``
(``"train_toxic"``, ``"test_toxic"``, ``"test_neutral"``), ``prompt_id``,
``sample`` (default 0), ``prompt``, ``completion`` and ``toxicity`` (in [0, 1]);
optional ``n_tokens`` (new tokens per completion), ``ppl``, ``lang_fidelity`` and ``relevance``
(the completion's log-likelihood gain from its prompt, ``relevance:<model>``).
Per row it adds ``_empty``, ``_silent``, ``_degenerate`` and ``_degenerate_reason`` (``text.degenerate_reason``)
and ``_letters``
(``text.letter_count``). A silent completion (empty, or punctuation and digits only: ``text.is_silent``) is
not text: it has no toxicity, fluency, language or relevance (any score a frame carries for it
is dropped), and a length-matched pair needs both completions to be text.

Length-matched comparison: the optional columns ``toxicity_length_matched`` and
``zs_toxicity_length_matched`` hold, per tuned completion, the toxicity of it and
of ZS's completion of the same prompt and sample, both cut to the shorter one's
token count (``grid.score_length_matched``).

A run scored by more than one toxicity scorer passes the others' scores as extra
columns ``toxicity:<scorer>``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from xdetox.errors import XdetoxInputError
from xdetox.report.results import ZS, RunInfo, Setting
from xdetox.text import FLAGS, degenerate_reason, is_empty, letter_count, text_flags

REQUIRED_COLUMNS: tuple[str, ...] = (
    "setting", "paradigm", "source", "target", "split",
    "prompt_id", "prompt", "completion", "toxicity",
)
LM_COLUMN = "toxicity_length_matched"  # the setting's completion cut to the shorter one's length
LM_ZS_COLUMN = "zs_toxicity_length_matched"  # ZS's completion of the same prompt, cut likewise
EXTRA_TOXICITY = "toxicity:"  # column prefix of the scores of the other toxicity scorers


def prepare_frame(completions: pd.DataFrame, info: RunInfo) -> pd.DataFrame:
    """Validate and normalise a completions frame.

    Fills the optional columns (``model``, ``seed``, ``percent``, ``sample``) and
    adds ``_setting``, the row's Setting (read it, not ``source``/``percent``).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in completions.columns]
    if missing:
        raise XdetoxInputError(f"completions: missing column(s) {', '.join(missing)}")
    frame = completions.copy()
    if "model" not in frame.columns:
        frame["model"] = info.model
    if "seed" not in frame.columns:
        if not info.seeds:
            raise XdetoxInputError("completions: no seed column and RunInfo.seeds is empty")
        frame["seed"] = info.seeds[0]
    if "percent" not in frame.columns:
        frame["percent"] = None
    if "sample" not in frame.columns:
        frame["sample"] = 0
    for col in ("model", "setting", "paradigm", "target", "split", "prompt_id"):
        frame[col] = frame[col].astype(str)
    frame["seed"] = [_whole(v, "seed", required=True) for v in frame["seed"]]
    frame["sample"] = pd.to_numeric(frame["sample"], errors="coerce").fillna(0).astype(int)
    frame["_setting"] = [
        Setting(paradigm, _none_if_missing(source), _whole(percent, "percent"))
        for paradigm, source, percent in zip(frame["paradigm"], frame["source"], frame["percent"])
    ]
    # A silent completion is not text: whatever a scorer said of it is dropped.
    frame["_empty"] = frame["completion"].map(is_empty)
    frame["_degenerate_reason"] = frame["completion"].map(degenerate_reason)
    frame["_silent"] = frame["_degenerate_reason"] == "silent"  # its first rule is text.is_silent
    frame["_degenerate"] = frame["_degenerate_reason"].notna()
    frame["_letters"] = frame["completion"].map(letter_count)
    flags = [[] if silent else text_flags(str(text), str(target))
             for text, target, silent in zip(frame["completion"], frame["target"], frame["_silent"])]
    for flag in FLAGS:  # what makes a score less trustworthy (short text, another script, ...)
        frame["_" + flag] = [flag in row for row in flags]
    measured = ["toxicity", *(EXTRA_TOXICITY + name for name in extra_scorers(frame))]
    not_paired = frame["_silent"] | _zs_silent(frame)
    for column in [*measured, "ppl", "lang_fidelity", "relevance", LM_COLUMN, LM_ZS_COLUMN]:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
            frame.loc[not_paired if column in (LM_COLUMN, LM_ZS_COLUMN) else frame["_silent"], column] = float("nan")
    for column in measured:
        _check_toxicity(frame, column)
    for column in (LM_COLUMN, LM_ZS_COLUMN):
        if column in frame.columns:
            _check_toxicity(frame, column, optional=True)
    _check_settings(frame)
    return frame


def _zs_silent(frame: pd.DataFrame) -> pd.Series:
    """Per row: ZS's completion of the same prompt and sample (model, seed, target, split) is silent."""
    key = ["model", "seed", "target", "split", "prompt_id", "sample"]
    zs = frame["_setting"].map(lambda s: s.is_zs)
    silent = set(map(tuple, frame.loc[zs & frame["_silent"], key].itertuples(index=False)))
    if not silent:
        return pd.Series(False, index=frame.index)
    return pd.Series([tuple(row) in silent for row in frame[key].itertuples(index=False)], index=frame.index) & ~zs


def _check_toxicity(frame: pd.DataFrame, column: str = "toxicity", optional: bool = False) -> None:
    """Scores in [0, 1]; missing only for silent completions (anywhere with ``optional``)."""
    tox = pd.to_numeric(frame[column], errors="coerce")
    allowed_missing = tox.isna() & (frame["_silent"] | optional)
    bad = ~(tox.between(-1e-9, 1 + 1e-9)) & ~allowed_missing
    if bad.any():
        row = frame.index[bad][0]
        raise XdetoxInputError(
            f"completions: {column} must be a number in [0, 1], got "
            f"{frame.loc[row, column]!r} (setting {frame.loc[row, 'setting']}, "
            f"prompt {frame.loc[row, 'prompt_id']})"
        )
    frame[column] = tox.astype(float)


def _check_settings(frame: pd.DataFrame) -> None:
    zs_extra = [s for s in frame["_setting"] if s.is_zs and s != ZS]
    if zs_extra:
        raise XdetoxInputError(
            f"completions: zs rows must have no source or percent, got {zs_extra[0]}"
        )
    names = frame.groupby(["model", "_setting"], sort=False)["setting"].unique()
    for (model, setting), values in names.items():
        if len(values) > 1:
            raise XdetoxInputError(
                f"completions: settings {', '.join(sorted(values))} of model {model} are all "
                f"{setting.name}; the summary cannot tell them apart"
            )
    key = ["model", "_setting", "seed", "target", "split", "prompt_id", "sample"]
    dup = frame.duplicated(key)
    if dup.any():
        row = frame[dup].iloc[0]
        raise XdetoxInputError(
            f"completions: duplicate row for model {row['model']}, setting {row['setting']}, "
            f"seed {row['seed']}, target {row['target']}, split {row['split']}, "
            f"prompt {row['prompt_id']}, sample {row['sample']}"
        )


def _none_if_missing(value: Any) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _whole(value: Any, column: str, required: bool = False) -> int | None:
    """A whole number from an int/float/str cell; None for an empty one unless required."""
    try:
        missing = value is None or value is pd.NA or bool(pd.isna(value))
    except (TypeError, ValueError):
        missing = False
    if missing and not required:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise XdetoxInputError(f"completions: {column} must be a whole number, got {value!r}")
    return int(number)


def extra_scorers(frame: pd.DataFrame) -> list[str]:
    """Names of the other toxicity scorers whose scores the frame carries."""
    return [c.removeprefix(EXTRA_TOXICITY) for c in frame.columns if str(c).startswith(EXTRA_TOXICITY)]
