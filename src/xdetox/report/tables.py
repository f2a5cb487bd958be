"""Matrices (one per model and paradigm: settings x targets) and the results table, as text."""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterable

import pandas as pd

from xdetox.report.formatting import fmt_ci, fmt_p, fmt_pct, fmt_pm, fmt_value
from xdetox.report.results import ABSTENTION_POINTS, ROW_AXIS, CellResult, View, by_target, summary_views
from xdetox.specs import EMBEDDED, EMBEDDED_NAME

TABLE_HEADER: tuple[str, ...] = (
    "target", "setting", "n", "seeds", "toxicity", "reduction (abs)", "reduction (rel)",
    "95% CI (abs)", "p", "q", "silence bounds", "by sentence [95% CI]", "length-matched", "95% CI (l-m)", "p (l-m)", "ppl", "ppl vs ZS",
    "in target lang", "same-lang [95% CI] (n)", "relevance (vs ZS)", "empty", "new tokens", "letters", "short", "other script", "silent",
    "degenerate",
)
MEASURE_SCORERS = {"by sentence [95% CI]": "sentences:<toxicity scorer>", "ppl": "ppl:<model>", "ppl vs ZS": "ppl:<model>", "in target lang": "lang-fidelity",
                   "same-lang [95% CI] (n)": "lang-fidelity", "relevance (vs ZS)": "relevance:<model>"}
"""The columns that exist only when the run has their scorer, and that scorer (a printed table leaves them out
when empty and names the scorers that would fill them)."""
MEASURE_COLUMNS: tuple[int, ...] = tuple(TABLE_HEADER.index(c) for c in MEASURE_SCORERS)
ABSTENTION_MARK = "†"
SIGNIFICANT_MARK = "*"
SIGNIFICANCE_NOTE = (f"{SIGNIFICANT_MARK} q < 0.05: the reduction is significant after Benjamini–Hochberg correction "
                     "over the family summary.json's q_family names (in the same-lang column: over "
                     "q_family_same_language; in the by-sentence column: over that scorer's cells).")
ABSTENTION_NOTE = (f"{ABSTENTION_MARK} the setting's share of empty completions, of completions without a "
                   f"letter (punctuation or digits only: 'silent'), or of degenerate ones (mostly letterless, or "
                   f"dominated by repeated n-grams) differs from ZS's by more than "
                   f"{100 * ABSTENTION_POINTS:.0f} points: it abstains, or writes nothing of substance, more (or less) "
                   "often than the base model, so its reduction partly measures that (a base model that repeats its "
                   "toxic prompt is 'repetitive': summary.json's degenerate_reasons says which); read the silence "
                   "bounds and the length-matched reduction beside it.")
LANGUAGE_MARK = "‡"
LANGUAGE_NOTE = (f"{LANGUAGE_MARK} the setting's share of completions written in another script than the target's "
                 "(or, where lang-fidelity measured it, not in the target language) differs from ZS's by more than "
                 f"{100 * ABSTENTION_POINTS:.0f} points: its reduction partly measures that change of language, which "
                 "a toxicity scorer can read as a change of toxicity by itself (the default scorer reads a benign "
                 "English sentence 0.05–0.10 lower than the same sentence in the other languages); read the "
                 "same-language reduction beside it where it was measured.")
NOT_COMPUTED = "n/c"
"""A table cell's value that could not be computed from the data (a cell's ``not_computed`` says why)."""


def not_computed_note(results: Iterable[CellResult]) -> str | None:
    """What ``NOT_COMPUTED`` marks in these cells, and why (each reason once); None where nothing is marked."""
    reasons = list(dict.fromkeys(why for r in results for why in (r.not_computed or {}).values()))
    return (f"{NOT_COMPUTED}: not computed from so little data ({'; '.join(reasons)}); summary.json's not_computed "
            "names each field.") if reasons else None


def result_matrix(
    summary: dict, model: str, paradigm: str, split: str = "test_toxic"
) -> pd.DataFrame:
    """The content of ``matrix_<model>_<paradigm>.csv`` (NaN = no value).

    Rows are the paradigm's settings (source language, "10%", "all" for m-ft),
    columns the model's targets in LANGS order; values the mean reduction_abs
    over seeds, or for ``paradigm="zs"`` one row "zs" of mean toxicity.
    """
    view = next((v for v in summary_views(summary) if (v.model, v.split) == (model, split)), None)
    if view is None:
        return pd.DataFrame(dtype=float)
    return view_matrix(view, paradigm)


def view_matrix(view: View, paradigm: str, value_of: str | Callable[[CellResult], float | None] = "reduction_abs"
                ) -> pd.DataFrame:
    """Rows = the paradigm's settings, columns = targets; ZS: mean toxicity, else ``value_of`` (a field's
    name, or a function of the cell)."""
    results = view.of(paradigm)
    settings = sorted({r.cell.setting for r in results}, key=lambda s: s.sort_key)
    rows = [s.row for s in settings] or (["zs"] if paradigm == "zs" else [])
    matrix = pd.DataFrame(float("nan"), index=rows, columns=view.targets, dtype=float)
    for r in results:
        value = (r.mean_toxicity if paradigm == "zs"
                 else value_of(r) if callable(value_of) else getattr(r, value_of))
        matrix.loc[r.cell.setting.row, r.cell.target] = float("nan") if value is None else value
    matrix.index.name = ROW_AXIS.get(paradigm, "setting")
    matrix.columns.name = "target"
    return matrix


def silence_bound(index: int) -> Callable[[CellResult], float | None]:
    """A cell's ``reduction_silence_bounds[index]`` (0: silent as unchanged, 1: silent as non-toxic), or None."""
    return lambda r: None if r.reduction_silence_bounds is None else r.reduction_silence_bounds[index]


def model_aliases(models: Iterable[str]) -> dict[str, str]:
    """Each model's short name for file names: ``embedded`` for the bundled model, else the last part of its
    name (an HF id's repository, a directory's name), cut to [A-Za-z0-9._-]. Models whose short names
    would collide in one run keep their whole names, cut the same way, so no file is written twice."""
    def cut(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("_") or "model"

    models = list(dict.fromkeys(models))
    short = {m: EMBEDDED if m == EMBEDDED_NAME else cut(m.rstrip("/").rsplit("/", 1)[-1]) for m in models}
    uses = Counter(short.values())
    return {m: cut(m) if uses[a] > 1 else a for m, a in short.items()}


def matrix_filename(alias: str, paradigm: str, suffix: str = "") -> str:
    """``matrix_<alias>_<paradigm>[<suffix>].csv`` (``alias``: ``model_aliases``)."""
    return f"matrix_{alias}_{paradigm}{suffix}.csv"


def table_row(r: CellResult) -> tuple[str, ...]:
    empty = "-" if r.empty_share is None else f"{100 * r.empty_share:.0f}%"
    missing = r.not_computed or {}
    ci, p = ((NOT_COMPUTED, NOT_COMPUTED) if "ci95" in missing else
             (fmt_ci(r.ci95) + (" (prompts)" if r.ci_unit == "prompts" else ""), fmt_p(r.p_value)))
    lm_ci, lm_p = ((NOT_COMPUTED, NOT_COMPUTED) if "reduction_length_matched_ci" in missing else
                   (fmt_ci(r.reduction_length_matched_ci), fmt_p(r.reduction_length_matched_p)))
    language = f" {LANGUAGE_MARK}" if r.language_flag else ""
    return (
        r.cell.target, r.cell.setting.name, str(r.n), str(len(r.seeds)),
        fmt_pm(r.mean_toxicity, r.std), fmt_pm(r.reduction_abs, r.reduction_abs_std, signed=True),
        fmt_pct(r.reduction_rel), ci, p,
        fmt_p(r.q_value) + (f" {SIGNIFICANT_MARK}" if significant(r.q_value) else ""),
        fmt_ci(r.reduction_silence_bounds),
        ("-" if r.reduction_sentence is None else fmt_value(r.reduction_sentence, signed=True)
         + ("" if r.reduction_sentence_ci is None else f" {fmt_ci(r.reduction_sentence_ci)}")
         + (f" {SIGNIFICANT_MARK}" if significant(r.reduction_sentence_q) else "")),
        fmt_pm(r.reduction_length_matched, r.reduction_length_matched_std, signed=True),
        lm_ci, lm_p,
        "-" if r.ppl_completion is None else f"{r.ppl_completion:.1f}", fmt_pct(r.ppl_change),
        "-" if r.lang_fidelity is None else f"{100 * r.lang_fidelity:.0f}%" + language,
        ("-" if r.reduction_same_language is None
         else f"{fmt_value(r.reduction_same_language, signed=True)}"
              + (f" [{NOT_COMPUTED}]" if "reduction_same_language_ci" in missing
                 else "" if r.reduction_same_language_ci is None else f" {fmt_ci(r.reduction_same_language_ci)}")
              + (f" {SIGNIFICANT_MARK}" if significant(r.reduction_same_language_q) else "")
              + f" ({r.n_same_language})"),
        ("-" if r.relevance is None else f"{r.relevance:.2f}"
         + ("" if r.relevance_change is None else f" ({fmt_value(r.relevance_change, signed=True)})")),
        empty + (f" {ABSTENTION_MARK}" if r.abstention_flag else ""),
        "-" if r.new_tokens is None else f"{r.new_tokens:.1f}",
        "-" if r.letters is None else f"{r.letters:.0f}",
        "-" if not r.flags else f"{100 * r.flags['short']:.0f}%",
        "-" if not r.flags else f"{100 * r.flags['other_script']:.0f}%" + language,
        "-" if r.silent_share is None else f"{100 * r.silent_share:.0f}%",
        "-" if r.degenerate_share is None else f"{100 * r.degenerate_share:.0f}%",
    )


def significant(q: float | None) -> bool:
    """q < 0.05: the mark ``SIGNIFICANT_MARK`` stands for."""
    return q is not None and q < 0.05


def any_flagged(results: Iterable[CellResult]) -> bool:
    return any(r.abstention_flag for r in results)


def flag_notes(results: Iterable[CellResult]) -> list[str]:
    """The notes of the marks some of ``results`` carry: abstention (†), a change of language (‡)."""
    results = list(results)
    return ([ABSTENTION_NOTE] if any_flagged(results) else []) + \
        ([LANGUAGE_NOTE] if any(r.language_flag for r in results) else [])


def print_table(summary: dict) -> str:
    """A plain-text table per model and split: mean ± std over seeds per setting and target."""
    out: list[str] = []
    for view in summary_views(summary):
        body = [table_row(r) for r in by_target(view.results)]
        shown = [i for i in range(len(TABLE_HEADER))
                 if i not in MEASURE_COLUMNS or any(row[i] != "-" for row in body)]
        rows = [tuple(row[i] for i in shown) for row in [TABLE_HEADER, *body]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
        rows.insert(1, tuple("-" * w for w in widths))
        if out:
            out.append("")
        out.append(view.caption())
        out.extend(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows
        )
        if hidden := [TABLE_HEADER[i] for i in MEASURE_COLUMNS if i not in shown]:
            scorers = ", ".join(dict.fromkeys(MEASURE_SCORERS[c] for c in hidden))
            out.append(f"Not measured in this run: {', '.join(hidden)} (their scorers: {scorers}).")
        if any(significant(q) for r in view.results
               for q in (r.q_value, r.reduction_same_language_q, r.reduction_sentence_q)):
            out.append(SIGNIFICANCE_NOTE)
        out.extend(flag_notes(view.results))
        if note := not_computed_note(view.results):
            out.append(note)
    return "\n".join(out) if out else "(no results)"
