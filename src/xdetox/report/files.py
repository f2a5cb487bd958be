"""``write_report``: a run directory's result files, each written atomically, summary.json last."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from xdetox._io import atomic_write
from xdetox.data import PROMPT_SETS
from xdetox.report.frame import prepare_frame
from xdetox.report.html import html_page
from xdetox.report.markdown import markdown_page
from xdetox.report.results import (
    COMPLETIONS_PARQUET,
    REPORT_HTML,
    REPORT_MD,
    SETTINGS_PARQUET,
    SUMMARY_JSON,
    RunInfo,
    summary_views,
)
from xdetox.report.summary import full_summary
from xdetox.report.tables import matrix_filename, model_aliases, silence_bound, view_matrix
from xdetox.report.tabular import summary_frame
from xdetox.report.values import rank


def write_report(
    run_dir: Path, completions: pd.DataFrame, info: RunInfo, split: str | None = None,
    measures: pd.DataFrame | None = None,
) -> dict:
    """Write the matrix CSVs, report.html, report.md, settings.parquet, completions.parquet and finally
    summary.json.

    Per model and tuned paradigm the matrices hold ``reduction_abs``, ``reduction_length_matched``
    (``_length_matched``), the two silence bounds (``_silent_unchanged``, ``_silent_nontoxic``) and, with
    a language scorer, ``reduction_same_language`` (``_same_language``).

    ``settings.parquet`` is ``summary["settings"]`` as ``summary_frame`` flattens it (the frame
    ``xdetox.open_run(run_dir).settings()`` returns: ``ci95_low``/``ci95_high``, ``flags.short``, ...; its
    ``seeds`` read back as arrays); ``completions.parquet`` is ``completions`` as given, the rows and
    columns of ``completions.jsonl``.

    ``split`` picks the prompt set of the matrices, figures and examples; by
    default ``test_toxic`` when present, else the first split the results have.
    Any existing summary.json is removed first, so a partly rewritten run
    directory never looks finished. Returns the summary.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    frame = prepare_frame(completions, info)
    summary = full_summary(frame, info, measures)
    (run_dir / SUMMARY_JSON).unlink(missing_ok=True)
    split = split or _default_split(summary)
    views = [v for v in summary_views(summary) if v.split == split]

    for old in run_dir.glob("matrix_*.csv"):  # an earlier report's, perhaps under other names
        old.unlink()
    aliases = model_aliases(v.model for v in views)
    for view in views:
        for paradigm in ["zs", *(p for p in view.paradigms if p != "zs")]:
            matrices = {"": view_matrix(view, paradigm)}
            if paradigm != "zs":
                matrices["_length_matched"] = view_matrix(view, paradigm, "reduction_length_matched")
                matrices["_silent_unchanged"] = view_matrix(view, paradigm, silence_bound(0))
                matrices["_silent_nontoxic"] = view_matrix(view, paradigm, silence_bound(1))
                same_language = view_matrix(view, paradigm, "reduction_same_language")
                if same_language.notna().any().any():  # a run with a language scorer
                    matrices["_same_language"] = same_language
            for suffix, matrix in matrices.items():
                atomic_write(run_dir / matrix_filename(aliases[view.model], paradigm, suffix),
                             lambda p, m=matrix: m.to_csv(p, index_label=m.index.name))
    page = html_page(summary, frame, views)
    atomic_write(run_dir / REPORT_HTML, lambda p: p.write_text(page, encoding="utf-8"))
    markdown = markdown_page(summary, frame, views)
    atomic_write(run_dir / REPORT_MD, lambda p: p.write_text(markdown, encoding="utf-8"))
    summary.pop("_projections", None)  # plotted above; not part of summary.json
    text = json.dumps(summary, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    settings = summary_frame(json.loads(text)["settings"])  # as Run.settings() reads it back from summary.json
    atomic_write(run_dir / SETTINGS_PARQUET, lambda p: settings.to_parquet(p, index=False))
    atomic_write(run_dir / COMPLETIONS_PARQUET, lambda p: completions.to_parquet(p, index=False))
    atomic_write(run_dir / SUMMARY_JSON, lambda p: p.write_text(text, encoding="utf-8"))
    return summary


def _default_split(summary: dict) -> str:
    splits = {s["split"] for s in summary["settings"]}
    if "test_toxic" in splits or not splits:
        return "test_toxic"
    return min(splits, key=lambda v: rank(v, PROMPT_SETS))
