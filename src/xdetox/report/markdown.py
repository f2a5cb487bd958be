"""report.md: a short companion of report.html (tables, method and examples, no figures)."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from xdetox.report.examples import EXAMPLE_MAX_CHARS, pick_examples
from xdetox.report.formatting import fmt_value, lang_title
from xdetox.report.method import method_notes
from xdetox.report.results import REPORT_HTML, SUMMARY_JSON, View, by_target, summary_views
from xdetox.report.stats import TOXIC_THRESHOLD
from xdetox.report.tables import (SIGNIFICANCE_NOTE, TABLE_HEADER, flag_notes, not_computed_note,
                                  table_row)
from xdetox.report.transfer import analysis_markdown


def markdown_page(summary: dict, frame: pd.DataFrame, views: list[View]) -> str:
    """A short companion of report.html: tables, method and examples, no figures."""
    lines = [
        f"# xdetox report: {summary['model']}", "",
        *([f"> **{summary['run']['partial']}**", ""] if summary["run"].get("partial") else []),
        f"Figures and examples: [{REPORT_HTML}]({REPORT_HTML}); all numbers: "
        f"[{SUMMARY_JSON}]({SUMMARY_JSON}).", "",
        "## How these numbers were computed", "",
        *(f"- **{term}**: {text}" for term, text in method_notes(summary, frame)), "",
    ]
    for view in summary_views(summary):
        lines += [f"## {view.model}, {view.split}", "", view.caption(), ""]
        lines += [_md_row(TABLE_HEADER), "|---|---|" + "---:|" * (len(TABLE_HEADER) - 2)]
        lines += [_md_row(table_row(r)) for r in by_target(view.results)]
        lines += ["", SIGNIFICANCE_NOTE, ""]
        for note in flag_notes(view.results):
            lines += [note, ""]
        if note := not_computed_note(view.results):
            lines += [note, ""]
    for analysis in (summary.get("analysis") or {}).values():
        lines += [analysis_markdown(analysis).rstrip(), ""]
    if summary.get("scorer_agreement"):
        lines += ["## Toxicity scorers compared", "",
                  f"Spearman rho and agreement at {TOXIC_THRESHOLD} on the same completions "
                  "(all settings pooled); per-setting values of each scorer are in "
                  f"{SUMMARY_JSON} (`by_scorer`).", "",
                  "| target | scorers | n | Spearman | agreement |", "|---|---|---:|---:|---:|"]
        lines += [_md_row([a["lang"], f"{a['scorer_a']} vs {a['scorer_b']}", str(a["n"]),
                           "-" if a["spearman"] is None else f"{a['spearman']:.3f}", f"{a['agreement']:.3f}"])
                  for a in summary["scorer_agreement"]]
        lines.append("")
    for view in views:
        lines += [f"## Example completions: {view.model}, {view.split}", "",
                  "Model outputs are escaped untrusted text, cut to "
                  f"{EXAMPLE_MAX_CHARS} characters.", ""]
        for ex in pick_examples(frame, view):
            lines += [f"**{lang_title(ex.target)}, prompt {md_escape(ex.prompt_id)}:** "
                      f"{md_escape(ex.prompt)}", "", "| setting | toxicity | completion |",
                      "|---|---:|---|"]
            lines += [f"| {line.setting} | {fmt_value(line.toxicity)} | {md_escape(line.completion)} |"
                      for line in ex.lines]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


_MD_ESCAPES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "|": "&#124;", "`": "&#96;",
    "\\": "&#92;", "*": "&#42;", "_": "&#95;", "[": "&#91;", "]": "&#93;", "!": "&#33;",
    "#": "&#35;", "~": "&#126;", "$": "&#36;",
}


def md_escape(value: Any) -> str:
    """Make untrusted text inert inside Markdown (also inside a table cell).

    HTML (``< > & "``), table pipes, code backticks and link/emphasis/heading
    characters become HTML character references; line breaks become ``<br>``.
    Only for model and data text: our own labels are written as they are.
    """
    text = "" if value is None else str(value)
    text = "".join(_MD_ESCAPES.get(ch, ch) for ch in text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "<br>").replace("\t", " ")
