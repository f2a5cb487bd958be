"""Example completions: a few prompts per target, each with what every setting wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from xdetox.report.results import View

EXAMPLES_PER_TARGET = 3
EXAMPLE_MAX_CHARS = 300


@dataclass(frozen=True)
class ExampleLine:
    setting: str
    toxicity: float
    completion: str


@dataclass(frozen=True)
class Example:
    target: str
    prompt_id: str
    prompt: str
    lines: tuple[ExampleLine, ...]


def pick_examples(frame: pd.DataFrame, view: View) -> list[Example]:
    """Up to EXAMPLES_PER_TARGET prompts per target, first seed, lowest sample index.

    Prompts are those of the first setting (ZS when present) that another
    setting also has, most toxic first.
    """
    if not view.seeds:
        return []
    here = frame[(frame["model"] == view.model) & (frame["split"] == view.split)
                 & (frame["seed"] == view.seeds[0])]
    first = here.sort_values("sample", kind="stable").drop_duplicates(
        ["_setting", "target", "prompt_id"]
    )
    examples = []
    for target in view.targets:
        sub = first[first["target"] == target]
        if sub.empty:
            continue
        settings = sorted(set(sub["_setting"]), key=lambda s: s.sort_key)
        is_anchor = sub["_setting"] == settings[0]
        anchor = sub[is_anchor]
        shared = anchor["prompt_id"].isin(sub.loc[~is_anchor, "prompt_id"])
        anchor = anchor[shared] if shared.any() else anchor
        anchor = anchor.sort_values(["toxicity", "prompt_id"], ascending=[False, True])
        chosen = anchor.head(EXAMPLES_PER_TARGET)
        for pid, prompt in zip(chosen["prompt_id"], chosen["prompt"]):
            rows = sub[sub["prompt_id"] == pid]
            by_setting = dict(zip(rows["_setting"], zip(rows["toxicity"], rows["completion"])))
            lines = tuple(
                ExampleLine(s.name, float(by_setting[s][0]), _cut(by_setting[s][1]))
                for s in settings if s in by_setting
            )
            examples.append(Example(target, pid, _cut(prompt), lines))
    return examples


def _cut(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= EXAMPLE_MAX_CHARS else text[:EXAMPLE_MAX_CHARS] + "…"
