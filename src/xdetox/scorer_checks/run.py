"""Running a toxicity scorer on the behavioural suite: accuracy and ROC-AUC, and their tables.

* ``run_checks(scorer, langs)``: score every case, accuracy at threshold 0.5 (score >= 0.5 means
  toxic) and ROC-AUC per language, per functionality and overall; JSON-serialisable.  A silent
  case (``xdetox.text.is_silent``: punctuation, digits) is not scored, as xdetox never scores a
  silent completion: its verdict is "not toxic", ``not_scored`` counts it, ``mean_score`` leaves
  it out.
* ``format_checks(result)``: the same as plain-text tables; ``weakest_functionalities``.
* ``parallel``: the same sentences in every language (``scorer_checks.parallel``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xdetox.data import LANG_NAMES, LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorer_checks.parallel import (PARALLEL_FILES, PARALLEL_TITLES, format_parallel, load_parallel, parallel_key,
                                           run_parallel)
from xdetox.scorer_checks.suite import (BENIGN_SHORT, FUNCTIONALITIES, TOXIC_FUNCTIONALITIES, Case, load_suite,
                                        suite_langs)
from xdetox.scorers.base import in_lang_order
from xdetox.text import is_silent

THRESHOLD = 0.5
"""A score >= THRESHOLD counts as a toxic verdict."""


def _accuracy(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Share of right verdicts; a case not scored (nan: silent) has the verdict "not toxic"."""
    right = sum((s >= THRESHOLD) == y for s, y in zip(scores, labels))  # nan >= t is False
    return right / len(scores) if scores else float("nan")


def _auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC-AUC; a case not scored ranks as score 0 (no evidence of toxicity)."""
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(y) for y in labels], [0.0 if math.isnan(s) else s for s in scores]))


def _summary(scores: Sequence[float], labels: Sequence[bool], funcs: Sequence[str]) -> dict[str, Any]:
    by_func: dict[str, dict[str, Any]] = {}
    for func in FUNCTIONALITIES:
        idx = [i for i, f in enumerate(funcs) if f == func]
        if not idx:
            continue
        s = [scores[i] for i in idx]
        y = [labels[i] for i in idx]
        scored = [v for v in s if not math.isnan(v)]
        by_func[func] = {"n": len(idx), "accuracy": _accuracy(s, y),
                         "mean_score": sum(scored) / len(scored) if scored else None,
                         "not_scored": len(s) - len(scored), "toxic": func in TOXIC_FUNCTIONALITIES}
    return {"n": len(scores), "accuracy": _accuracy(scores, labels), "auc": _auc(scores, labels),
            "by_functionality": by_func}


def run_checks(scorer: Any, langs: Iterable[str] | None = None, batch_size: int = 256,
               cases: Sequence[Case] | None = None, parallel: bool = True) -> dict[str, Any]:
    """Score the suite (or ``cases``) with ``scorer`` and summarise it (see the module docstring).

    Languages missing from ``scorer.supported_languages`` are not scored and are listed under
    ``"skipped"``.  ``overall`` pools every scored case; ``benign_short_accuracy`` is the accuracy
    on the BENIGN_SHORT groups of each language; ``parallel``, ``parallel2`` and ``parallel3`` (unless
    ``parallel=False``) are ``run_parallel`` of parallel sets 1, 2 and 3 on the same languages (``parallel_key``).
    """
    if batch_size < 1:
        raise XdetoxInputError("batch_size must be at least 1")
    if cases is None:
        cases = load_suite(langs)
    elif langs is not None:
        wanted = set(suite_langs(langs))
        cases = [c for c in cases if c.lang in wanted]
    supported = frozenset(getattr(scorer, "supported_languages", LANGS))
    name = getattr(scorer, "name", type(scorer).__name__)
    result: dict[str, Any] = {"scorer": str(name), "threshold": THRESHOLD, "languages": {},
                              "skipped": [], "overall": {}, "benign_short_accuracy": {}}
    all_scores: list[float] = []
    all_labels: list[bool] = []
    all_funcs: list[str] = []
    for lang in in_lang_order(c.lang for c in cases):
        if lang not in supported:
            result["skipped"].append(lang)
            continue
        mine = [c for c in cases if c.lang == lang]
        spoken = [c.text for c in mine if not is_silent(c.text)]
        got: list[float] = []
        for start in range(0, len(spoken), batch_size):
            batch = spoken[start:start + batch_size]
            scored = [float(s) for s in scorer.score(batch, lang)]
            if len(scored) != len(batch):
                raise ValueError(f"scorer {name!r} returned {len(scored)} scores for {len(batch)} texts")
            if any(not math.isfinite(s) for s in scored):
                raise ValueError(f"scorer {name!r} returned a non-finite score for {lang}")
            got.extend(scored)
        given = iter(got)
        scores = [math.nan if is_silent(c.text) else next(given) for c in mine]
        labels = [c.toxic for c in mine]
        funcs = [c.functionality for c in mine]
        result["languages"][lang] = _summary(scores, labels, funcs)
        short = [(s, y) for s, y, f in zip(scores, labels, funcs) if f in BENIGN_SHORT]
        if short:
            result["benign_short_accuracy"][lang] = _accuracy([s for s, _ in short], [y for _, y in short])
        all_scores += scores
        all_labels += labels
        all_funcs += funcs
    if all_scores:
        result["overall"] = _summary(all_scores, all_labels, all_funcs)
    else:
        result["overall"] = {"n": 0, "accuracy": None, "auc": None, "by_functionality": {}}
    if parallel:
        here = [lang for lang in in_lang_order({c.lang for c in cases}) if lang in supported]
        for which in PARALLEL_FILES:
            result[parallel_key(which)] = run_parallel(scorer, here, cases=load_parallel(which), batch_size=batch_size)
    return result


def weakest_functionalities(result: Mapping[str, Any], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` functionalities with the lowest pooled accuracy, worst first."""
    by_func = result.get("overall", {}).get("by_functionality", {})
    ranked = sorted(by_func.items(), key=lambda kv: (kv[1]["accuracy"], FUNCTIONALITIES.index(kv[0])))
    return [(func, stats["accuracy"]) for func, stats in ranked[:k]]


def _fmt(value: float | None) -> str:
    return "   -" if value is None else f"{value:.3f}"


def format_checks(result: Mapping[str, Any]) -> str:
    """Plain-text tables: one per language (functionality, n, label, accuracy, mean score)."""
    lines = [f"scorer checks: {result['scorer']} (toxic when score >= {result.get('threshold', THRESHOLD)})"]
    width = max(len(f) for f in FUNCTIONALITIES)
    for lang, stats in result["languages"].items():
        lines.append("")
        lines.append(f"[{lang}] {LANG_NAMES.get(lang, lang)}")
        lines.append(f"  {'functionality':<{width}}  {'n':>4}  {'label':<6}  {'acc':>5}  {'mean':>5}")
        for func, row in stats["by_functionality"].items():
            label = "toxic" if row["toxic"] else "benign"
            lines.append(f"  {func:<{width}}  {row['n']:>4}  {label:<6}  {_fmt(row['accuracy'])}  "
                         f"{_fmt(row['mean_score'])}")
        short = result.get("benign_short_accuracy", {}).get(lang)
        lines.append(f"  {lang}: n={stats['n']} accuracy={_fmt(stats['accuracy'])} auc={_fmt(stats['auc'])} "
                     f"benign_short_accuracy={_fmt(short)}")
    overall = result.get("overall", {})
    lines.append("")
    if result.get("skipped"):
        lines.append(f"skipped (not supported by the scorer): {', '.join(result['skipped'])}")
    weakest = ", ".join(f"{f} {a:.3f}" for f, a in weakest_functionalities(result))
    lines.append(f"overall: n={overall.get('n', 0)} accuracy={_fmt(overall.get('accuracy'))} "
                 f"auc={_fmt(overall.get('auc'))}" + (f"; weakest: {weakest}" if weakest else ""))
    for which, title in PARALLEL_TITLES.items():
        key = parallel_key(which)
        if result.get(key) and (result[key]["benign_mean"] or result[key]["toxic_mean"]):
            lines += ["", *format_parallel(result[key], title)]
    return "\n".join(lines) + "\n"

