"""report.html: self-contained (inline CSS, figures as PNG data URIs, no script); every model
and data string is escaped."""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

from xdetox.report.examples import EXAMPLE_MAX_CHARS, pick_examples
from xdetox.report.figures import SAME_LANGUAGE_TITLE, heatmap, pft_curve, projection_plot, zs_bars
from xdetox.report.formatting import fmt_pct, fmt_value, lang_title, seed_list
from xdetox.report.measures import measures_projection
from xdetox.report.method import method_notes
from xdetox.report.results import SUMMARY_JSON, Setting, View, by_target
from xdetox.report.stats import TOXIC_THRESHOLD
from xdetox.report.tables import (SIGNIFICANCE_NOTE, TABLE_HEADER, flag_notes, not_computed_note, significant,
                                  table_row)
from xdetox.report.transfer import analysis_html
from xdetox.report.values import lang_rank
from xdetox.specs import PARADIGM_LABELS

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text, p.prompt { white-space: pre-wrap; word-break: break-word; }
dt { font-weight: bold; } dd { margin: 0 0 0.6em 1.5em; }
p.partial { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.6em 0.8em; }
"""


def _h(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def html_page(summary: dict, frame: pd.DataFrame, views: list[View]) -> str:
    run = summary["run"]
    title = f"xdetox report: {summary['model']}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        *([f'<p class="partial"><strong>{_h(run["partial"])}</strong></p>'] if run.get("partial") else []),
        f"<p>Scorer {_h(summary['scorer'])} · seeds {_h(seed_list(summary['seeds']))} · "
        f"configuration {_h(run.get('config_name') or 'not named')} · started "
        f"{_h(run.get('started'))}. All numbers are in {SUMMARY_JSON}; the matrices in the "
        "matrix_*.csv files.</p>",
        "<nav><ul>",
        *(f'<li><a href="#{_anchor(v.model)}">{_h(v.model)}</a></li>' for v in views),
        *(['<li><a href="#scorers">Toxicity scorers compared</a></li>'] if summary.get("by_scorer") else []),
        '<li><a href="#method">How these numbers were computed</a></li></ul></nav>',
    ]
    for view in views:
        parts += _html_model(view, frame)
        parts += _html_measures(view.model, summary, measures_projection(summary, view.model))
    parts += _html_scorers(summary, views)
    for analysis in (summary.get("analysis") or {}).values():
        parts.append(analysis_html(analysis))
    parts += ['<h2 id="method">How these numbers were computed</h2>', "<dl>"]
    parts += [f"<dt>{_h(term)}</dt><dd>{_h(text)}</dd>" for term, text in method_notes(summary, frame)]
    parts += ["</dl>", "</body></html>", ""]
    return "\n".join(parts)


def _html_model(view: View, frame: pd.DataFrame) -> list[str]:
    caption = _h(view.caption())
    parts = [f'<section id="{_anchor(view.model)}">', f"<h2>{_h(view.model)}</h2>"]
    figures: list[tuple[str, str, str]] = []  # (css class, alt text, data URI)
    if view.of("zs"):
        figures.append(("zs-bars", "Zero-shot toxicity per language", zs_bars(view)))
    for paradigm in view.paradigms:
        if paradigm != "zs":
            label = PARADIGM_LABELS.get(paradigm, paradigm.upper())
            figures.append(("heatmap", f"{label} toxicity reduction heatmap",
                            heatmap(view, paradigm)))
            if any(r.reduction_same_language is not None for r in view.of(paradigm)):
                figures.append(("heatmap", f"{label} toxicity reduction heatmap, {SAME_LANGUAGE_TITLE}",
                                heatmap(view, paradigm, "reduction_same_language")))
    if view.of("p-ft"):
        figures.append(("pft-curve", "P-FT reduction by percent", pft_curve(view)))
    for css, alt, uri in figures:
        parts.append(f'<figure><img class="{css}" alt="{_h(alt)}" src="{uri}">'
                     f"<figcaption>{_h(alt)} — {caption}</figcaption></figure>")
    parts += [
        "<h3>Mean ± std over seeds</h3>", f"<p><small>{caption}</small></p>", "<table>",
        "<tr>" + "".join(f"<th>{_h(c)}</th>" for c in TABLE_HEADER) + "</tr>",
        *("<tr>" + "".join(f'<td class="{"text" if i < 2 else "num"}">{_h(c)}</td>'
                           for i, c in enumerate(table_row(r))) + "</tr>"
          for r in by_target(view.results)),
        "</table>",
        f"<p><small>{_h(SIGNIFICANCE_NOTE)}</small></p>",
        *(f'<p class="flag">{_h(note)}</p>' for note in flag_notes(view.results)),
        *([f"<p><small>{_h(note)}</small></p>"] if (note := not_computed_note(view.results)) else []),
        "<h3>Example completions</h3>",
        f"<p>Model outputs are untrusted text, shown escaped and cut to {EXAMPLE_MAX_CHARS} "
        f"characters; seed {_h(view.seeds[0] if view.seeds else '-')}, lowest sample index.</p>",
    ]
    for ex in pick_examples(frame, view):
        parts += [
            f"<h4>{_h(lang_title(ex.target))}, prompt {_h(ex.prompt_id)}</h4>",
            f'<p class="prompt">{_h(ex.prompt)}</p>',
            "<table><tr><th>setting</th><th>toxicity</th><th>completion</th></tr>",
            *(f'<tr><td>{_h(line.setting)}</td><td class="num">{fmt_value(line.toxicity)}</td>'
              f'<td class="text">{_h(line.completion)}</td></tr>' for line in ex.lines),
            "</table>",
        ]
    parts.append("</section>")
    return parts


def _html_measures(model: str, summary: dict, projections: dict[tuple, list] | None) -> list[str]:
    entries = [e for e in summary.get("measures", []) if e["model"] == model]
    if not entries:
        return []
    langs = sorted({lang for e in entries for lang in e["ppl_ref"]}, key=lang_rank)
    seeds = seed_list(sorted({s for e in entries for s in e["seeds"]}))
    n = "test_neutral sentences per language as in the run (its limit)"
    parts = ["<h3>Knowledge preservation and representation</h3>",
             f"<p><small>model {_h(model)} · {_h(n)} · seeds {_h(seeds)} · perplexity of the test_neutral "
             "references under each setting's model (ZS = base), change vs ZS in brackets; silhouette of "
             "mean-pooled last hidden states grouped by language (cosine).</small></p>",
             "<table><tr><th>setting</th><th>silhouette</th>"
             + "".join(f"<th>ppl {_h(lang)}</th>" for lang in langs) + "</tr>"]
    for e in entries:
        name = Setting(e["paradigm"], e["source"], e["percent"]).name
        cells = []
        for lang in langs:
            value = e["ppl_ref"].get(lang)
            change = (e.get("ppl_ref_change") or {}).get(lang)
            cells.append("-" if value is None else f"{value:.1f}" + ("" if change is None else f" ({fmt_pct(change)})"))
        sil = ("not computed" if "silhouette" in (e.get("not_computed") or {})
               else "-" if e["silhouette"] is None else f"{e['silhouette']:.3f}")
        parts.append(f"<tr><td>{_h(name)}</td><td class=\"num\">{_h(sil)}</td>"
                     + "".join(f'<td class="num">{_h(c)}</td>' for c in cells) + "</tr>")
    parts.append("</table>")
    missing = {f"{name}: {why}" for e in entries for name, why in (e.get("not_computed") or {}).items()}
    if missing:
        parts.append(f"<p><small>Not computed from these sentences: {_h('; '.join(sorted(missing)))}.</small></p>")
    for key, points in (projections or {}).items():
        if key[1] not in ("zs", "m-ft"):
            continue
        name = Setting(key[1], key[2], key[3]).name
        title = f"{name}: 2-D PCA of test_neutral embeddings\n{model} · seed {entries[0]['seeds'][0]}"
        parts.append(f'<figure><img class="projection" alt="{_h(name)} embedding projection" '
                     f'src="{projection_plot(points, title)}"><figcaption>{_h(name)} — sentence embeddings '
                     f"(mean-pooled last hidden state), coloured by language; model {_h(model)}.</figcaption></figure>")
    return parts


def _html_scorers(summary: dict, views: list[View]) -> list[str]:
    """Agreement of the toxicity scorers, and each one's reduction per setting (multi-scorer runs)."""
    if not summary.get("by_scorer"):
        return []
    scorers = summary["scorers"]
    splits = {v.split for v in views}
    parts = ['<h2 id="scorers">Toxicity scorers compared</h2>',
             f"<p><small>Scorers {_h(', '.join(scorers))} on the same completions; the first is the one "
             "the rest of the report uses. Spearman: rank correlation of the two scorers' values; "
             f"agreement: share of completions both put on the same side of {TOXIC_THRESHOLD} "
             "(all settings, splits and seeds pooled).</small></p>",
             "<table><tr><th>target</th><th>scorers</th><th>n</th><th>Spearman</th><th>agreement</th></tr>"]
    for a in summary["scorer_agreement"]:
        rho = "-" if a["spearman"] is None else f"{a['spearman']:.3f}"
        parts.append(f"<tr><td>{_h(lang_title(a['lang']))}</td><td>{_h(a['scorer_a'])} vs "
                     f"{_h(a['scorer_b'])}</td><td class=\"num\">{a['n']}</td><td class=\"num\">{_h(rho)}"
                     f"</td><td class=\"num\">{a['agreement']:.3f}</td></tr>")
    parts.append("</table>")
    by_scorer = {scorers[0]: summary["settings"], **summary["by_scorer"]}
    rows: dict[tuple, dict[str, list[dict]]] = {}
    for name, entries in by_scorer.items():
        for e in entries:
            if e["paradigm"] != "zs" and e["split"] in splits:
                key = (e["model"], Setting(e["paradigm"], e["source"], e["percent"]), e["split"])
                rows.setdefault(key, {}).setdefault(name, []).append(e)
    parts += ["<p><small>Per setting: mean over targets of reduction_abs against ZS, and in how many "
              "targets the reduction is significant (q &lt; 0.05: the seed-level test, Benjamini–Hochberg corrected), "
              "per scorer.</small></p>",
              "<table><tr><th>model</th><th>setting</th>"
              + "".join(f"<th>{_h(n)}</th>" for n in scorers) + "</tr>"]
    for (model, setting, _split), per in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key)):
        cells = []
        for name in scorers:
            entries = [e for e in per.get(name, []) if e["reduction_abs"] is not None]
            if not entries:
                cells.append("-")
                continue
            mean = sum(e["reduction_abs"] for e in entries) / len(entries)
            n_significant = sum(significant(e.get("q_value")) for e in entries)
            cells.append(f"{mean:+.3f} ({n_significant}/{len(entries)} significant)")
        parts.append(f"<tr><td>{_h(model)}</td><td>{_h(setting.name)}</td>"
                     + "".join(f'<td class="num">{_h(c)}</td>' for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def _anchor(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", model)
