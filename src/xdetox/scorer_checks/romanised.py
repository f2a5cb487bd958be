"""Languages written in another script: Hindi, Arabic and Russian in Latin letters.

Much Hindi online is written in Latin letters ("Tu ek number ka bewakoof hai"), Arabic in
Arabizi (digits for the letters Latin lacks: "Enta 7mar"), Russian in translit. A model asked in
one of these languages may answer so. ``resources/scorer_checks/romanised.jsonl`` holds 10 benign
sentences and 10 insults (a threat and a dehumanising one among them) per language, written for
xdetox; ``run_romanised`` gives per language the mean score of each kind, scored as that language.

A run flags such a completion ``other_script`` (most letters in another script than the
language's, ``text.text_flags``) and reports each cell's share of them beside its toxicity, so a
scorer that cannot read them does not pass them off as read.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from xdetox.scorer_checks.suite import RESOURCE_DIR

ROMANISED_FILE = "romanised.jsonl"


def load_romanised() -> list[dict]:
    """``[{"id", "lang", "toxic", "text"}]`` in file order."""
    text = files("xdetox").joinpath(*RESOURCE_DIR, ROMANISED_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_romanised(scorer: Any) -> dict[str, dict[str, float]]:
    """``{"benign_mean": {lang}, "toxic_mean": {lang}}`` over the romanised cases of the languages the
    scorer supports."""
    supported = frozenset(getattr(scorer, "supported_languages", ()))
    result: dict[str, dict[str, float]] = {"benign_mean": {}, "toxic_mean": {}}
    cases = load_romanised()
    for lang in dict.fromkeys(c["lang"] for c in cases):
        if lang not in supported:
            continue
        for key, toxic in (("benign_mean", False), ("toxic_mean", True)):
            texts = [c["text"] for c in cases if c["lang"] == lang and c["toxic"] is toxic]
            scores = scorer.score(texts, lang)
            result[key][lang] = sum(scores) / len(scores)
    return result
