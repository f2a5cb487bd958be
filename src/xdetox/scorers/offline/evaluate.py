"""How good the offline scorer is: ROC-AUC per language on paradetox test and the held-out corpus."""

from __future__ import annotations

import numpy as np

from xdetox.data import LANGS
from xdetox.scorers.base import Scorer
from xdetox.scorers.offline.data import LabelledText, paradetox_rows, split_heldout, toxicity_corpus
from xdetox.scorers.offline.scorer import OfflineScorer


def _auc(scorer: Scorer, rows: list[LabelledText], lang: str) -> float | None:
    from sklearn.metrics import roc_auc_score

    mine = [r for r in rows if r.lang == lang]
    if len({r.label for r in mine}) < 2:
        return None
    return float(roc_auc_score([r.label for r in mine], scorer.score([r.text for r in mine], lang)))


def evaluate_offline(scorer: OfflineScorer) -> dict[str, dict[str, float]]:
    """ROC-AUC per language on the paradetox test split and on the corpus held-out part.

    ``{"paradetox_test": {lang: auc, ...9 langs}, "heldout": {lang: auc, ...8 langs}}``;
    the held-out part is the one ``scorer.config`` chose (empty when its fraction is 0).
    """
    config = scorer.config
    test = paradetox_rows("test", config.max_chars)
    _, heldout = split_heldout(toxicity_corpus(config.drop_sources, config.max_chars),
                               config.heldout_fraction)
    results: dict[str, dict[str, float]] = {"paradetox_test": {}, "heldout": {}}
    for column, rows in (("paradetox_test", test), ("heldout", heldout)):
        for lang in LANGS:
            auc = _auc(scorer, rows, lang)
            if auc is not None:
                results[column][lang] = auc
    return results


def format_auc_table(results: dict[str, dict[str, float]]) -> str:
    """Plain-text table: a row per language, a column per result set, "–" where missing; then the mean and
    the spread (max − min) over languages of each column."""
    columns = list(results)
    langs = [lang for lang in LANGS if any(lang in results[c] for c in columns)]
    langs += sorted({lang for c in columns for lang in results[c]} - set(langs))
    width = max([len("lang"), len("mean")] + [len(lang) for lang in langs])
    col_width = [max(len(c), 6) for c in columns]

    def line(label: str, cells: list[str]) -> str:
        return "  ".join([label.ljust(width)] + [cell.rjust(w) for cell, w in zip(cells, col_width)])

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [line("lang", columns)]
    for lang in langs:
        lines.append(line(lang, [cell(results[c].get(lang)) for c in columns]))
    means = [float(np.mean(list(results[c].values()))) if results[c] else None for c in columns]
    lines.append(line("mean", [cell(m) for m in means]))
    spreads = [float(np.ptp(list(results[c].values()))) if len(results[c]) > 1 else None for c in columns]
    lines.append(line("spread", [cell(m) for m in spreads]))
    return "\n".join(lines) + "\n(spread: max - min over the languages; of parallel_benign and parallel_toxic, the same" \
        " sentences in every language, it is the scorer's parity; parallel2_*, parallel3_*: a second and a third such" \
        " set, written after the default scorer was chosen)"


def format_validation(results: dict) -> str:
    """``xdetox scorer eval``'s text: the figures' table (``format_auc_table``), then the bootstrap interval of
    each parallel spread (``results["intervals"]``, where the figures have them)."""
    lines = [format_auc_table({figure: values for figure, values in results.items() if figure != "intervals"})]
    for figure, interval in (results.get("intervals") or {}).items():
        if interval:
            lines.append(f"spread of {figure}: 95% bootstrap interval over the sentences"
                         f" [{interval[0]:.3f}, {interval[1]:.3f}]")
    return "\n".join(lines)
