"""Reference measures of each setting's model (``grid.measure``) in the summary: perplexity of
the test_neutral references, silhouette and language similarity, and the 2-D projections."""

from __future__ import annotations

import pandas as pd

from xdetox.report.values import jsonable, lang_rank, mean_or_none, std_or_none


def with_measures(summary: dict, measures: pd.DataFrame | None) -> dict:
    """Add the per-setting reference measures (``grid.measure``) to a summary.

    ``summary["measures"]``: per model and setting, over seeds: ``ppl_ref`` (per
    language: geometric-mean perplexity of the test_neutral sentences under the
    setting's model, mean over seeds), ``ppl_ref_change`` (per language: that value
    over ZS's of the same seed, minus 1, mean over seeds), ``silhouette`` (of the
    sentences' mean-pooled hidden states grouped by language; mean and std over
    seeds) and ``similarity`` (language x language mean cosine similarity, first
    seed). Each ``settings`` entry gets its target's ``ppl_ref`` and ``ppl_ref_change``.
    ``not_computed``: the measures the sentences could not give in some seed (one language, a
    single sentence) and why, or None. The 2-D projections stay out of the JSON (the HTML plots them).
    """
    summary = dict(summary)
    if measures is None or measures.empty:
        summary["measures"] = []
        return summary
    rows = measures[measures["name"] != "skipped"]
    key_cols = ["model", "paradigm", "source", "percent"]

    def setting_key(row) -> tuple:
        return tuple(None if pd.isna(row[c]) else row[c] for c in key_cols)

    table: dict[tuple, dict[int, dict[str, dict]]] = {}
    for _, row in rows.iterrows():
        table.setdefault(setting_key(row), {}).setdefault(int(row["seed"]), {}).setdefault(row["name"], {})[
            row["lang"]] = row["value"]
    entries = []
    for key, by_seed in table.items():
        model = key[0]
        zs = table.get((model, "zs", None, None), {})
        seeds = sorted(by_seed)
        langs = sorted({lang for s in seeds for lang in by_seed[s].get("ppl_ref", {})}, key=lang_rank)
        ppl = {lang: mean_or_none([by_seed[s]["ppl_ref"][lang] for s in seeds if lang in by_seed[s].get("ppl_ref", {})])
               for lang in langs}
        change = {}
        if key[1] != "zs":
            for lang in langs:
                ratios = [by_seed[s]["ppl_ref"][lang] / zs[s]["ppl_ref"][lang] - 1 for s in seeds
                          if s in zs and lang in zs[s].get("ppl_ref", {}) and lang in by_seed[s].get("ppl_ref", {})]
                change[lang] = mean_or_none(ratios)
        silhouettes = [by_seed[s]["silhouette"]["*"] for s in seeds if "silhouette" in by_seed[s]]
        entries.append({
            "model": model, "paradigm": key[1], "source": key[2], "percent": key[3], "seeds": seeds,
            "ppl_ref": ppl, "ppl_ref_change": change or None,
            "silhouette": mean_or_none(silhouettes), "silhouette_std": std_or_none(silhouettes),
            "similarity": by_seed[seeds[0]].get("similarity", {}).get("*"),
            "not_computed": {name: why for s in reversed(seeds)
                             for name, why in by_seed[s].get("not_computed", {}).get("*", {}).items()} or None,
        })
    order = {(s["model"], s["paradigm"], s["source"], s["percent"]): i for i, s in enumerate(summary["settings"])}
    entries.sort(key=lambda e: order.get((e["model"], e["paradigm"], e["source"], e["percent"]), len(order)))
    by_key = {(e["model"], e["paradigm"], e["source"], e["percent"]): e for e in entries}
    settings = []
    for s in summary["settings"]:
        e = by_key.get((s["model"], s["paradigm"], s["source"], s["percent"]))
        settings.append({**s, "ppl_ref": (e or {}).get("ppl_ref", {}).get(s["target"]),
                         "ppl_ref_change": ((e or {}).get("ppl_ref_change") or {}).get(s["target"])})
    summary["settings"] = settings
    summary["measures"] = jsonable(entries)
    summary["_projections"] = {
        (e["model"], e["paradigm"], e["source"], e["percent"]): table[(e["model"], e["paradigm"], e["source"],
                                                                         e["percent"])][e["seeds"][0]]
        .get("projection", {}).get("*") for e in entries
    }
    return summary


def measures_projection(summary: dict, model: str) -> dict[tuple, list] | None:
    projections = summary.get("_projections") or {}
    return {k: v for k, v in projections.items() if k[0] == model and v} or None
