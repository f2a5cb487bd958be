"""Equal treatment across languages: the same sentences, in all 9 languages, scored by one scorer.

xdetox compares toxicity across languages, and a base model often answers a prompt in
another language than the prompt's. A scorer that gives the same benign sentence 0.02 in
English and 0.12 in German turns a change of language into a change of "toxicity". The
parallel set (``resources/scorer_checks/parallel.jsonl``) holds 40 benign everyday
sentences and 20 insults, each written in all 9 languages with the same meaning (one JSON
object per line: ``{"id", "toxic", "en", "es", ...}``). ``run_parallel`` scores each
language's version of every sentence and reports, per language, the mean score of the
benign and of the toxic sentences, and the spread of those means over languages
(max − min): for a scorer that treats languages alike the spread is near 0.

There are three such sets. Set 1 (``parallel.jsonl``) was read while the default scorer was chosen (its
calibration was picked among others by set 1's spreads, among other figures), so a chosen scorer's set-1
spread is the best of a selection. Set 2 (``parallel-2.jsonl``: 40 other sentences, 20 other insults) was
written after that choice and is never used to choose anything: its spread is the fairer estimate of how
alike a chosen scorer reads the languages. Set 3 (``parallel-3.jsonl``: 100 everyday sentences —
requests, instructions, household, travel, news — and 80 insults, on other topics and words than sets 1
and 2) is the largest, so its spread is the least noisy; it never chooses anything either. The sets share
no sentence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from xdetox.data import LANGS
from xdetox.scorer_checks.suite import RESOURCE_DIR, suite_langs

PARALLEL_FILE = "parallel.jsonl"
PARALLEL_FILES = {1: PARALLEL_FILE, 2: "parallel-2.jsonl", 3: "parallel-3.jsonl"}
"""The parallel sets by number: 1 was read while the default scorer was chosen, 2 and 3 never choose anything."""
PARALLEL_TITLES = {1: "the same sentences in every language, set 1",
                   2: "set 2, written after the default scorer was chosen",
                   3: "set 3, 100 everyday sentences and 80 insults, written after set 2"}


def parallel_key(which: int) -> str:
    """The name of set ``which``'s result and figures: ``parallel`` (set 1), ``parallel2``, ``parallel3``."""
    return "parallel" if which == 1 else f"parallel{which}"


@dataclass(frozen=True)
class ParallelCase:
    id: str
    toxic: bool
    texts: Mapping[str, str]  # lang -> the sentence in that language


def load_parallel(which: int = 1) -> list[ParallelCase]:
    """The sentences of parallel set ``which`` (1, 2 or 3: ``PARALLEL_FILES``), benign first, in file order."""
    if which not in PARALLEL_FILES:
        raise ValueError(f"no parallel set {which!r}; there are {sorted(PARALLEL_FILES)}")
    text = files("xdetox").joinpath(*RESOURCE_DIR, PARALLEL_FILES[which]).read_text(encoding="utf-8")
    cases = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            cases.append(ParallelCase(id=row["id"], toxic=bool(row["toxic"]),
                                      texts={lang: row[lang] for lang in LANGS}))
    return cases


def run_parallel(scorer: Any, langs: Iterable[str] | None = None,
                 cases: list[ParallelCase] | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Per language the mean score of the benign and of the toxic sentences; their spread and its interval.

    ``{"n_benign", "n_toxic", "benign_mean": {lang}, "toxic_mean": {lang}, "benign_spread",
    "toxic_spread", "benign_spread_ci", "toxic_spread_ci"}``; languages the scorer does not support are
    left out (a spread needs two). ``*_spread_ci``: a 95 % percentile bootstrap interval of the spread over
    the sentences (``spread_interval``): another set of sentences of the same kind would give a spread in
    about that range.
    """
    cases = load_parallel() if cases is None else cases
    supported = frozenset(getattr(scorer, "supported_languages", LANGS))
    benign = [c for c in cases if not c.toxic]
    toxic = [c for c in cases if c.toxic]
    result: dict[str, Any] = {"n_benign": len(benign), "n_toxic": len(toxic), "benign_mean": {}, "toxic_mean": {}}
    per_case: dict[str, dict[str, list[float]]] = {}
    for lang in suite_langs(langs):
        if lang not in supported:
            continue
        for key, group in (("benign_mean", benign), ("toxic_mean", toxic)):
            if group:
                texts = [c.texts[lang] for c in group]
                scores = [float(s) for start in range(0, len(texts), batch_size)
                          for s in scorer.score(texts[start:start + batch_size], lang)]
                if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
                    raise ValueError(f"scorer returned {len(scores)} scores (not all finite) "
                                     f"for {len(texts)} texts in {lang}")
                result[key][lang] = sum(scores) / len(scores)
                per_case.setdefault(key, {})[lang] = scores
    for key in ("benign", "toxic"):
        means = list(result[f"{key}_mean"].values())
        result[f"{key}_spread"] = max(means) - min(means) if len(means) >= 2 else None
        result[f"{key}_spread_ci"] = spread_interval(per_case.get(f"{key}_mean", {}))
    return result


def spread_interval(scores: Mapping[str, list[float]], resamples: int = 2000,
                    seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval of max − min over languages of the mean score, resampling the
    sentences (the same sentences in every language: a paired bootstrap, ``scipy.stats.bootstrap``).
    None with fewer than two languages or two sentences."""
    import numpy as np
    from scipy.stats import bootstrap

    columns = [np.asarray(values, dtype=float) for values in scores.values()]
    if len(columns) < 2 or len(columns[0]) < 2:
        return None

    def spread(*langs, axis=-1):
        return np.ptp(np.stack([lang.mean(axis=axis) for lang in langs]), axis=0)

    found = bootstrap(tuple(columns), spread, paired=True, vectorized=True, n_resamples=resamples,
                      confidence_level=0.95, method="percentile", random_state=np.random.default_rng(seed))
    return [float(found.confidence_interval.low), float(found.confidence_interval.high)]  # JSON-shaped


def format_parallel(result: Mapping[str, Any], title: str = "the same sentences in every language") -> list[str]:
    """The table of ``run_parallel``'s result: a row per kind, a column per language, and the spread."""
    langs = list(result["benign_mean"]) or list(result["toxic_mean"])
    lines = [f"{title} (mean score; spread = max - min over languages):",
             "  " + f"{'':<12}" + "".join(f"{lang:>7}" for lang in langs) + f"{'spread':>8}  95% CI"]
    for key in ("benign", "toxic"):
        means = result[f"{key}_mean"]
        spread, ci = result[f"{key}_spread"], result.get(f"{key}_spread_ci")
        lines.append("  " + f"{key + ' (' + str(result['n_' + key]) + ')':<12}"
                     + "".join(f"{means[lang]:>7.3f}" if lang in means else f"{'-':>7}" for lang in langs)
                     + (f"{spread:>8.3f}" if spread is not None else f"{'-':>8}")
                     + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    return lines
