"""Cross-lingual transfer analysis of a summary (what summary.json holds), per (model, split).

Reads ``summary["settings"]`` (cells averaged over seeds) and ``summary["per_seed"]``; a
missing key counts as None.  ``metric`` (default ``reduction_abs`` = ZS mean - setting mean,
higher = less toxic) is read from each cell; cells without it are left out of parts 1-3.

1. same_script -- X-FT cells only, self-transfer (source == target) excluded.  Scripts: Latin
   (en es de), Cyrillic (uk ru), every other language its own (zh Han, ar Arabic, hi
   Devanagari, am Ethiopic).  Per target t with >= 1 same-script source s != t and >= 1
   other-script source: same / other = mean metric over those sources, diff = same - other,
   p = permutation test shuffling the same/other labels among t's sources (sizes kept).
   Overall: mean_diff = mean of the per-target diffs; p shuffles labels within each target.
2. source_strength -- per X-FT source s: mean metric over the other targets (t != s), ranked
   by mean (rank 1 = strongest).  CI95: percentile [2.5, 97.5] of a bootstrap over targets and
   seeds: resample targets with replacement, within each resampled target resample its
   per-seed values (per_seed; the settings value alone where per_seed lacks the metric) and
   take their mean; the statistic is the mean over targets.  DPO sources likewise
   (dpo_source_strength, None without DPO cells).  Fluency cost beside each row: mean
   ppl_ref_change, lang_fidelity, empty_share, silent_share over the same targets.
3. self_vs_cross -- per X-FT source with its self cell (t == s) and >= 1 other target:
   self = metric at t == s, cross = mean over t != s, diff = self - cross (and the four
   fluency keys for self and cross).  Overall: mean self, mean cross, mean diff, and a
   sign-flip permutation p over the per-source diffs.
4. data_efficiency -- the curve ZS -> P-FT (percent ascending) -> M-FT (percent 0 ... 100), per
   target and averaged over targets (plain means of the available values): mean_toxicity,
   metric (0.0 for ZS: ZS minus ZS), and the fluency cost empty_share, silent_share, new_tokens,
   lang_fidelity, ppl_ref_change.  Needs ZS and at least one P-FT or M-FT cell.

Permutation p-values are two-sided.  With at most n_perm distinct labelings they are exact,
p = #{|d| >= |observed|} / #labelings; else p = (1 + #{|d| >= |observed|}) / (1 + n_perm)
over n_perm random labelings.  Deterministic: one numpy Generator seeded with ``seed``.
A part lacking its cells is None, and the group's ``missing`` says in words what it lacks.
"""

from __future__ import annotations

import functools
import html
import itertools
import math
from collections.abc import Iterable, Iterator

import numpy as np

from xdetox.data import LANGS

SCRIPTS = {"en": "Latin", "es": "Latin", "de": "Latin", "uk": "Cyrillic", "ru": "Cyrillic",
           "zh": "Han", "ar": "Arabic", "hi": "Devanagari", "am": "Ethiopic"}
FLUENCY = ("ppl_ref_change", "lang_fidelity", "empty_share", "silent_share")
CURVE_KEYS = ("mean_toxicity", "metric", "empty_share", "silent_share", "new_tokens", "lang_fidelity",
              "ppl_ref_change")
_TOL = 1e-12  # |d| >= |observed| up to float noise
Table = dict[str, dict[str, dict]]  # source -> target -> cell


# ---------------------------------------------------------------- small helpers

def _num(cell: dict, key: str) -> float | None:
    value = cell.get(key)
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _lang_key(lang: str) -> tuple[int, str]:
    return (LANGS.index(lang) if lang in LANGS else len(LANGS), lang)


def _script(lang: str) -> str:
    return SCRIPTS.get(lang, lang)


def _fluency(cells: Iterable[dict], prefix: str = "") -> dict:
    cells = list(cells)
    return {prefix + k: _mean(_num(c, k) for c in cells) for k in FLUENCY}


def _by_source(cells: list[dict], paradigm: str, metric: str) -> Table:
    table: Table = {}
    for c in sorted((c for c in cells if c.get("paradigm") == paradigm and c.get("source")),
                    key=lambda c: (_lang_key(c["source"]), _lang_key(c["target"]))):
        if _num(c, metric) is not None:
            table.setdefault(c["source"], {})[c["target"]] = c
    return table


def _describe(table: Table, metric: str, paradigm: str = "x-ft") -> str:
    if not table:
        return f"no {paradigm} cells with {metric}"
    return "; ".join(f"{s} -> {', '.join(by_t)}" for s, by_t in table.items())


# ---------------------------------------------------------------- permutation tests

def _p_value(observed: float, null: np.ndarray, exact: bool) -> float:
    hits = int(np.sum(np.abs(null) >= abs(observed) - _TOL))
    return hits / len(null) if exact else (1 + hits) / (1 + len(null))


def _label_null(values: list[float], k: int, n_perm: int, rng, exact: bool) -> np.ndarray:
    """mean(first group) - mean(rest) under every (exact) or n_perm random relabelings."""
    v = np.asarray(values, float)
    if exact:
        masks = np.zeros((math.comb(len(v), k), len(v)), bool)
        for row, idx in enumerate(itertools.combinations(range(len(v)), k)):
            masks[row, list(idx)] = True
    else:
        masks = rng.permuted(np.tile(np.arange(len(v)) < k, (n_perm, 1)), axis=1)
    return masks @ v / k - ~masks @ v / (len(v) - k)


def _stratified_p(strata: list[tuple[list[float], int]], n_perm: int, rng) -> float:
    """p of the mean over strata of (mean first k - mean rest), labels shuffled per stratum."""
    observed = float(np.mean([np.mean(v[:k]) - np.mean(v[k:]) for v, k in strata]))
    exact = math.prod(math.comb(len(v), k) for v, k in strata) <= n_perm
    nulls = [_label_null(v, k, n_perm, rng, exact) for v, k in strata]
    total = (functools.reduce(lambda a, b: np.add.outer(a, b).ravel(), nulls) if exact
             else np.sum(nulls, axis=0))
    return _p_value(observed, total / len(strata), exact)


def _sign_flip_p(diffs: list[float], n_perm: int, rng) -> float:
    d = np.asarray(diffs, float)
    exact = 2 ** len(d) <= n_perm
    signs = (np.array(list(itertools.product((1.0, -1.0), repeat=len(d)))) if exact
             else rng.choice((1.0, -1.0), size=(n_perm, len(d))))
    return _p_value(float(d.mean()), signs @ d / len(d), exact)


def _bootstrap_ci(samples: list[list[float]], n_boot: int, rng) -> list[float]:
    """Resample targets, then each resampled target's seeds; percentile CI of the mean."""
    pick = rng.integers(0, len(samples), size=(n_boot, len(samples)))
    boot = np.empty(pick.shape)
    for j, values in enumerate(samples):
        v = np.asarray(values, float)
        draws = v[rng.integers(0, len(v), size=(*pick.shape, len(v)))].mean(axis=-1)
        boot[pick == j] = draws[pick == j]
    lo, hi = np.percentile(boot.mean(axis=1), [2.5, 97.5])
    return [float(lo), float(hi)]


# ---------------------------------------------------------------- the four parts

def _same_script(table: Table, metric: str, n_perm: int, rng) -> tuple[dict | None, str | None]:
    rows, strata = [], []
    for t in sorted({t for by_t in table.values() for t in by_t}, key=_lang_key):
        sources = [s for s in table if s != t and t in table[s]]
        same = [s for s in sources if _script(s) == _script(t)]
        other = [s for s in sources if _script(s) != _script(t)]
        if not same or not other:
            continue
        values = [_num(table[s][t], metric) for s in same + other]
        row = {"target": t, "same_sources": same, "other_sources": other,
               "same": _mean(values[:len(same)]), "other": _mean(values[len(same):])}
        row["diff"] = row["same"] - row["other"]
        row["p_value"] = _stratified_p([(values, len(same))], n_perm, rng)
        rows.append(row)
        strata.append((values, len(same)))
    if rows:
        return {"targets": rows, "mean_diff": _mean(r["diff"] for r in rows),
                "p_value": _stratified_p(strata, n_perm, rng)}, None
    if len({_script(s) for s in table}) < 2:
        have = f"x-ft from {', '.join(table)} only" if table else _describe(table, metric)
        return None, f"same_script: needs x-ft from at least two scripts; has {have}"
    return None, ("same_script: needs a target with both a same-script source (other than "
                  f"itself) and an other-script source; has x-ft {_describe(table, metric)}")


def _source_strength(table: Table, seed_values: dict, metric: str, n_boot: int,
                     rng) -> list[dict] | None:
    rows = []
    for s, by_t in table.items():
        others = [t for t in by_t if t != s]
        if not others:
            continue
        samples = [seed_values.get((s, t)) or [_num(by_t[t], metric)] for t in others]
        rows.append({"source": s, "mean": _mean(_num(by_t[t], metric) for t in others),
                     "ci95": _bootstrap_ci(samples, n_boot, rng), "n_targets": len(others),
                     **_fluency(by_t[t] for t in others)})
    rows.sort(key=lambda r: (-round(r["mean"], 12), _lang_key(r["source"])))  # ties: LANGS
    return [{**r, "rank": i} for i, r in enumerate(rows, 1)] or None


def _self_vs_cross(table: Table, metric: str, n_perm: int, rng) -> dict | None:
    rows = []
    for s, by_t in table.items():
        others = [by_t[t] for t in by_t if t != s]
        if s not in by_t or not others:
            continue
        own, cross = _num(by_t[s], metric), _mean(_num(c, metric) for c in others)
        rows.append({"source": s, "self": own, "cross": cross, "diff": own - cross,
                     "n_cross": len(others), **_fluency([by_t[s]], "self_"),
                     **_fluency(others, "cross_")})
    if not rows:
        return None
    return {"sources": rows, **{f"mean_{k}": _mean(r[k] for r in rows)
                                for k in ("self", "cross", "diff")},
            "p_value": _sign_flip_p([r["diff"] for r in rows], n_perm, rng)}


def _data_efficiency(cells: list[dict], metric: str) -> tuple[dict | None, str | None]:
    of = {p: [c for c in cells if c.get("paradigm") == p] for p in ("zs", "p-ft", "m-ft")}
    if not of["zs"] or not (of["p-ft"] or of["m-ft"]):
        have = ", ".join(p for p, cs in of.items() if cs) or "none of them"
        return None, f"data_efficiency: needs zs and at least one p-ft or m-ft cell; has {have}"
    percents = sorted({int(c["percent"]) for c in of["p-ft"] if c.get("percent") is not None})
    curve = [("zs", 0, of["zs"])] + [
        (f"p-ft {p}%", p, [c for c in of["p-ft"] if c.get("percent") == p]) for p in percents]
    curve += [("m-ft", 100, of["m-ft"])] if of["m-ft"] else []
    by_target: dict[str, list[dict]] = {}
    mean = []
    for label, percent, group in curve:
        points = [{"point": label, "percent": percent, "mean_toxicity": _num(c, "mean_toxicity"),
                   "metric": 0.0 if label == "zs" else _num(c, metric),
                   **{k: _num(c, k) for k in CURVE_KEYS[2:]}} for c in group]
        for c, point in zip(group, points):
            by_target.setdefault(c["target"], []).append(point)
        mean.append({"point": label, "percent": percent,
                     **{k: _mean(p[k] for p in points) for k in CURVE_KEYS}})
    return {"by_target": {t: by_target[t] for t in sorted(by_target, key=_lang_key)},
            "mean": mean}, None


def _group(model, split, cells, per_seed, metric, n_perm, n_boot, rng) -> dict:
    xft = _by_source(cells, "x-ft", metric)
    seeds: dict[str, dict] = {}  # paradigm -> (source, target) -> per-seed values
    for r in per_seed:
        if _num(r, metric) is not None and r.get("paradigm") in ("x-ft", "dpo"):
            key = (r.get("source"), r.get("target"))
            seeds.setdefault(r["paradigm"], {}).setdefault(key, []).append(_num(r, metric))
    same, missing_same = _same_script(xft, metric, n_perm, rng)
    strength = _source_strength(xft, seeds.get("x-ft", {}), metric, n_boot, rng)
    dpo = _by_source(cells, "dpo", metric)
    dpo_strength = _source_strength(dpo, seeds.get("dpo", {}), metric, n_boot, rng)
    self_cross = _self_vs_cross(xft, metric, n_perm, rng)
    efficiency, missing_eff = _data_efficiency(cells, metric)
    missing = [missing_same] if missing_same else []
    if strength is None:
        missing.append(f"source_strength: needs x-ft cells with {metric} on a target other "
                       f"than the source; has {_describe(xft, metric)}")
    if dpo_strength is None and any(c.get("paradigm") == "dpo" for c in cells):
        missing.append(f"dpo_source_strength: needs dpo cells with {metric} on a target "
                       f"other than the source; has {_describe(dpo, metric, 'dpo')}")
    if self_cross is None:
        missing.append("self_vs_cross: needs an x-ft source with both its self cell "
                       f"(target == source) and another target; has {_describe(xft, metric)}")
    missing += [missing_eff] if missing_eff else []
    return {"model": model, "split": split, "same_script": same, "source_strength": strength,
            "dpo_source_strength": dpo_strength, "self_vs_cross": self_cross,
            "data_efficiency": efficiency, "missing": missing}


def transfer_analysis(summary: dict, metric: str = "reduction_abs", n_perm: int = 10_000,
                      n_boot: int = 10_000, seed: int = 0) -> dict:
    """The four transfer questions of the module docstring, one group per (model, split)."""
    rng = np.random.default_rng(seed)
    settings, per_seed = summary.get("settings") or [], summary.get("per_seed") or []
    keys = dict.fromkeys((c.get("model"), c.get("split")) for c in settings)
    groups = [_group(m, sp, [c for c in settings if (c.get("model"), c.get("split")) == (m, sp)],
                     [r for r in per_seed if (r.get("model"), r.get("split")) == (m, sp)],
                     metric, n_perm, n_boot, rng) for m, sp in keys]
    return {"metric": metric, "groups": groups}


# ---------------------------------------------------------------- rendering

def _f(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _p(value) -> str:
    return "–" if value is None else f"{value:.2g}"


def _pair(row: dict, key: str) -> str:
    return f"{_f(row['self_' + key])} / {_f(row['cross_' + key])}"


# One section per reduction; the raw one keeps the plain heading.
HEADING_SUFFIX = {"reduction_abs": "", "reduction_length_matched": ": length-matched reductions",
                  "reduction_same_language": ": same-language reductions"}


def _blocks(analysis: dict) -> Iterator[tuple]:
    """("h2"|"h3"|"h4"|"p", text) or ("table", headers, rows): what both renderers show."""
    metric = analysis["metric"]
    yield "h2", "Transfer analysis" + HEADING_SUFFIX.get(metric, f" ({metric})")
    yield "p", (f"Values are {metric}, the mean over seeds of each cell; p-values are "
                "two-sided permutation tests.")
    for g in analysis["groups"]:
        yield "h3", f"{g['model']} — {g['split']}"
        if (same := g["same_script"]) is not None:
            yield "h4", "Same script vs other script (x-ft, self-transfer excluded)"
            yield "table", ["target", "same-script sources", "other-script sources", "same",
                            "other", "diff", "p"], [
                [r["target"], ", ".join(r["same_sources"]), ", ".join(r["other_sources"]),
                 _f(r["same"]), _f(r["other"]), _f(r["diff"]), _p(r["p_value"])]
                for r in same["targets"]]
            yield "p", (f"Mean diff over targets: {_f(same['mean_diff'])} (stratified "
                        f"permutation p = {_p(same['p_value'])}).")
        for key, title in (("source_strength", "x-ft"), ("dpo_source_strength", "dpo")):
            if g[key] is not None:
                yield "h4", f"Source strength ({title}, mean over the other targets)"
                yield "table", ["rank", "source", "mean", "CI95", "targets", *FLUENCY], [
                    [str(r["rank"]), r["source"], _f(r["mean"]),
                     f"[{_f(r['ci95'][0])}, {_f(r['ci95'][1])}]", str(r["n_targets"]),
                     *(_f(r[k]) for k in FLUENCY)] for r in g[key]]
        if (sc := g["self_vs_cross"]) is not None:
            yield "h4", "Self vs cross transfer (x-ft)"
            yield "table", ["source", "self", "cross", "diff", "cross targets",
                            *(f"{k} self / cross" for k in FLUENCY)], [
                [r["source"], _f(r["self"]), _f(r["cross"]), _f(r["diff"]), str(r["n_cross"]),
                 *(_pair(r, k) for k in FLUENCY)] for r in sc["sources"]]
            yield "p", (f"Mean self {_f(sc['mean_self'])}, mean cross {_f(sc['mean_cross'])}, "
                        f"mean diff {_f(sc['mean_diff'])} (sign-flip p = {_p(sc['p_value'])}).")
        if (eff := g["data_efficiency"]) is not None:
            yield "h4", "Data efficiency (zs → p-ft → m-ft) and fluency cost"
            rows = [("mean", p) for p in eff["mean"]]
            rows += [(t, p) for t, points in eff["by_target"].items() for p in points]
            yield "table", ["target", "point", "percent", *CURVE_KEYS[:1], metric,
                            *CURVE_KEYS[2:]], [
                [t, p["point"], str(p["percent"]), *(_f(p[k]) for k in CURVE_KEYS)]
                for t, p in rows]
        for sentence in g["missing"]:
            yield "p", f"Missing: {sentence}."


def analysis_markdown(analysis: dict) -> str:
    """A "## Transfer analysis" Markdown section: one table per part, then what is missing."""
    out = []
    for kind, *body in _blocks(analysis):
        if kind == "table":
            headers, rows = body
            lines = [headers, ["---"] * len(headers), *rows]
            out.append("\n".join("| " + " | ".join(c.replace("|", r"\|") for c in line) + " |"
                                 for line in lines))
        else:
            out.append({"h2": "## ", "h3": "### ", "h4": "#### ", "p": ""}[kind] + body[0])
    return "\n\n".join(out) + "\n"


def analysis_html(analysis: dict) -> str:
    """The same content as an HTML fragment; every string goes through html.escape."""
    out = []
    for kind, *body in _blocks(analysis):
        if kind == "table":
            headers, rows = body
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                            for row in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        else:
            out.append(f"<{kind}>{html.escape(body[0])}</{kind}>")
    return "\n".join(out) + "\n"
