"""How far a toxicity scorer can be trusted, per language, on data it was not trained on.

``validate(scorer)`` returns ``{figure: {lang: value}}`` with

* ``paradetox_test``: ROC-AUC on the bundled paradetox test split (toxic sentences vs
  their neutral rewrites, 100 pairs per language);
* ``pairwise``: the share of those pairs in which the toxic sentence scores above its own
  neutral rewrite (ties count half);
* ``heldout``: ROC-AUC on the toxicity corpus' validation slice (texts whose
  ``heldout_hash`` lies in ``VALIDATION_SLICE``, at most ``max_per_lang`` per language;
  no offline model trains or calibrates on it; no Ukrainian corpus exists);
* ``behavioural``: accuracy at 0.5 on the behavioural suite (``xdetox.scorer_checks``),
  ``behavioural_benign_short`` the same on its benign short-text groups;
* ``parallel_benign`` / ``parallel_toxic``: the mean score of the same 40 benign sentences / 20
  insults written in every language (``scorer_checks.parallel``, set 1): how alike the scorer treats
  languages; ``parallel2_benign`` / ``parallel2_toxic`` the same on set 2 (40 / 20 other sentences,
  written after the default scorer was chosen and never used to choose: the fairer estimate), and
  ``parallel3_benign`` / ``parallel3_toxic`` on set 3 (100 / 80 more, the least noisy);
* ``romanised_benign`` / ``romanised_toxic``: the mean score of 10 benign sentences / 10 insults of
  hi, ar and ru written in Latin letters (``scorer_checks.romanised``), scored as that language;
* ``ece``: expected calibration error (10 equal-width bins) on paradetox test and the
  validation slice together.

Beside the figures, ``intervals`` holds a 95 % bootstrap interval over the sentences for the spread (max − min
over languages) of each parallel figure (``scorer_checks.parallel.spread_interval``): ``{figure: [low, high]}``.

The figures are computed once per scorer model and cached (``cached_validation``), so a
run's report can print them for its languages without scoring anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xdetox.data import LANGS
from xdetox.scorer_checks.parallel import PARALLEL_FILES, parallel_key
from xdetox.scorers.offline.config import OfflineScorerConfig
from xdetox.scorers.offline.data import hash_slice, paradetox_rows, toxicity_corpus

VALIDATION_SLICE = (0.1, 0.2)  # heldout_hash range: outside every offline model's training and calibration
PARALLEL_FIGURES = tuple(f"{parallel_key(which)}_{kind}" for which in PARALLEL_FILES for kind in ("benign", "toxic"))
"""``parallel_benign``, ``parallel_toxic``, ``parallel2_benign``, … one pair per parallel set."""
FIGURES = ("paradetox_test", "pairwise", "heldout", "behavioural", "behavioural_benign_short", *PARALLEL_FIGURES,
           "romanised_benign", "romanised_toxic", "ece")


def validation_rows(max_per_lang: int = 1000):
    """The corpus' validation slice, at most ``max_per_lang`` rows per language (hash order)."""
    config = OfflineScorerConfig()
    return hash_slice(toxicity_corpus(config.drop_sources, config.max_chars), *VALIDATION_SLICE, max_per_lang)


def validate(scorer, langs: Iterable[str] = LANGS, max_per_lang: int = 1000) -> dict[str, dict[str, float]]:
    """Every figure of the module docstring for ``scorer`` on ``langs`` (JSON-serialisable)."""
    from sklearn.metrics import roc_auc_score

    from xdetox import scorer_checks
    from xdetox.scorer_checks.romanised import run_romanised

    langs = [lang for lang in langs if lang in scorer.supported_languages]
    results: dict[str, dict[str, float]] = {name: {} for name in FIGURES}
    test = paradetox_rows("test", OfflineScorerConfig().max_chars)
    heldout = validation_rows(max_per_lang)
    for lang in langs:
        pairs = [r for r in test if r.lang == lang]
        toxic = [r.text for r in pairs if r.label == 1]
        neutral = [r.text for r in pairs if r.label == 0]
        tox_scores = np.asarray(scorer.score(toxic, lang))
        neu_scores = np.asarray(scorer.score(neutral, lang))
        labels = np.r_[np.ones(len(toxic)), np.zeros(len(neutral))]
        scores = np.r_[tox_scores, neu_scores]
        results["paradetox_test"][lang] = float(roc_auc_score(labels, scores))
        results["pairwise"][lang] = float(np.mean((tox_scores > neu_scores) + 0.5 * (tox_scores == neu_scores)))
        mine = [r for r in heldout if r.lang == lang]
        if len({r.label for r in mine}) == 2:
            held_scores = np.asarray(scorer.score([r.text for r in mine], lang))
            held_labels = np.array([r.label for r in mine])
            results["heldout"][lang] = float(roc_auc_score(held_labels, held_scores))
            scores, labels = np.r_[scores, held_scores], np.r_[labels, held_labels]
        results["ece"][lang] = expected_calibration_error(scores, labels)
    checks = scorer_checks.run_checks(scorer, cases=scorer_checks.load_suite(langs))
    for lang, figures in checks["languages"].items():
        results["behavioural"][lang] = figures["accuracy"]
        results["behavioural_benign_short"][lang] = checks["benign_short_accuracy"][lang]
    results["intervals"] = {}
    for figure in PARALLEL_FIGURES:  # parallel_benign ... parallel3_toxic
        name, kind = figure.rsplit("_", 1)
        results[figure] = checks[name][f"{kind}_mean"]
        results["intervals"][figure] = checks[name][f"{kind}_spread_ci"]
    romanised = run_romanised(scorer)
    results["romanised_benign"] = {lang: v for lang, v in romanised["benign_mean"].items() if lang in langs}
    results["romanised_toxic"] = {lang: v for lang, v in romanised["toxic_mean"].items() if lang in langs}
    return results


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """sum over equal-width score bins of (bin share) x |mean label − mean score|."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        here = which == b
        if here.any():
            total += here.mean() * abs(labels[here].mean() - scores[here].mean())
    return float(total)


def cached_validation(scorer, cache_file: Path) -> dict[str, dict[str, float]]:
    """``validate(scorer)`` on every language, read from ``cache_file`` or computed and written there
    (again when the cached file lacks a figure of ``FIGURES``: written before that figure existed)."""
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
            if all(figure in cached for figure in FIGURES):
                return cached
        except (OSError, ValueError):
            pass
    results = validate(scorer)
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name, suffix=".tmp")
    os.close(fd)
    Path(tmp).write_text(json.dumps(results, indent=1))
    os.replace(tmp, cache_file)
    return results
