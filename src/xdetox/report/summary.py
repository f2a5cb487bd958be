"""From a validated completions frame to the summary dict (what summary.json holds).

Every cell says how much of it is not writing: ``empty_share`` (the model ended at once),
``silent_share`` (empty, or punctuation and digits only: ``text.is_silent``),
``degenerate_share`` (silent, mostly letterless, or dominated by repeated n-grams:
``text.is_degenerate``), and how much it wrote: ``new_tokens`` and ``letters`` per completion.
Toxicity means are over the completions that are text (not silent), and reductions pair the
prompts where both ZS and the setting wrote text; ``reduction_silence_bounds`` says what the
reduction would be if the setting's silent completions were counted instead of dropped
(as unchanged from ZS, as non-toxic). A cell whose empty, silent or degenerate share differs
from ZS's by more than ``ABSTENTION_POINTS`` gets ``abstention_flag``;
``reduction_length_matched`` is the paired mean difference (ZS − setting) of the
length-matched columns.

Besides mean toxicity and its reduction vs ZS, every setting gets the expected maximum
toxicity (``emt``), the toxicity probability (``tox_prob``) and, against ZS, a seed-level 95%
interval of the reduction (``ci95``) with its ``p_value`` (``stats.seed_level_test``: training
seeds and prompts both sampled; ``ci_unit`` "prompts" where one seed covers sampling variance
only), and a Benjamini–Hochberg ``q_value`` over the family ``q_family`` names.
With other toxicity scorers' columns, the summary also holds ``scorers`` (all names,
the primary first), ``by_scorer`` (per other scorer, the ``settings`` entries it
gives) and ``scorer_agreement`` (per target and scorer pair: n, Spearman rho and
the share of completions both put on the same side of ``TOXIC_THRESHOLD``); where one of them is
``sentences:<the primary scorer>``, each tuned entry also holds its ``reduction_sentence`` (with ``_ci``, ``_q``).
``analysis`` holds the transfer analysis of each metric of ``ANALYSIS_METRICS``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from xdetox.data import PROMPT_SETS
from xdetox.report.frame import EXTRA_TOXICITY, LM_COLUMN, LM_ZS_COLUMN, extra_scorers, prepare_frame
from xdetox.report.measures import with_measures
from xdetox.report.results import ZS, Cell, CellResult, RunInfo, SeedResult, Setting
from xdetox.report.stats import (
    SeedLevelTest,
    expected_max_toxicity,
    q_values,
    scorer_agreement,
    seed_level_test,
    toxicity_probability,
)
from xdetox.report.transfer import transfer_analysis
from xdetox.report.values import jsonable, lang_rank, rank
from xdetox.scorers.sentences import SENTENCES_PREFIX
from xdetox.text import DEGENERATE_REASONS, FLAGS

ANALYSIS_METRICS = ("reduction_abs", "reduction_length_matched", "reduction_same_language")
"""What the transfer analysis is run on (the last two where the run has them)."""


def summarize(completions: pd.DataFrame, info: RunInfo, measures: pd.DataFrame | None = None) -> dict:
    """Per (model, setting, target, split): n, mean toxicity and reduction vs ZS, over seeds.

    Per seed, ``reduction_abs`` = ZS mean − setting mean, both over the
    completions of the prompts the two have in common, ZS being the same model,
    seed, target and split; ``reduction_rel`` = reduction_abs / that ZS mean.
    Both are None for ZS itself, without a ZS for the target/split/seed, with no
    common prompt, and (rel only) when that ZS mean is 0. ``settings`` holds the
    means (and stds, ddof=1, None with one seed) over seeds, ``per_seed`` the
    per-seed values.

    ``emt`` and ``tox_prob`` are computed per seed (``per_seed``) and averaged over
    seeds (``settings``).  ``ci95`` ([low, high]) and ``p_value`` (``settings`` only;
    None for ZS and without a common prompt) come from ``seed_level_test`` on the per-seed,
    per-prompt differences (a prompt's value is its mean toxicity over samples); ``q_value``
    adjusts every tuned cell's ``p_value`` (Benjamini–Hochberg), the family named in ``q_family``;
    ``reduction_same_language_q`` the same for ``reduction_same_language_p`` (``q_family_same_language``).
    """
    summary = full_summary(prepare_frame(completions, info), info, measures)
    summary.pop("_projections", None)
    return summary


def full_summary(frame: pd.DataFrame, info: RunInfo, measures: pd.DataFrame | None) -> dict:
    """The summary of a prepared frame, with the other scorers, the reference measures (plot points
    kept) and the transfer analysis (``summary["analysis"]``, one per metric of ``ANALYSIS_METRICS``)."""
    summary = with_measures(_with_scorers(_summarize(frame, info), frame, info), measures)
    summary["analysis"] = {metric: transfer_analysis(summary, metric) for metric in ANALYSIS_METRICS
                           if metric == ANALYSIS_METRICS[0]
                           or any(c.get(metric) is not None for c in summary["settings"])}
    return summary


GroupKey = tuple[str, Setting, str, str, int]  # model, setting, target, split, seed


def _summarize(frame: pd.DataFrame, info: RunInfo) -> dict:
    groups: dict[GroupKey, pd.DataFrame] = dict(
        iter(frame.groupby(["model", "_setting", "target", "split", "seed"], sort=False)))
    per_seed = _per_seed(groups)
    order = _cell_order(info)
    per_seed.sort(key=lambda r: (order(r.cell), r.seed))
    by_cell: dict[Cell, list[SeedResult]] = {}
    for result in per_seed:
        by_cell.setdefault(result.cell, []).append(result)
    scored = {key: group[~group["_silent"]] for key, group in groups.items()}
    same_language = _in_target_language(scored)
    cells = [CellResult.over_seeds(cell, results, _paired_test(scored, cell, [r.seed for r in results]),
                                   _length_matched_test(groups, cell, [r.seed for r in results]),
                                   None if same_language is None
                                   else _paired_test(same_language, cell, [r.seed for r in results]))
             for cell, results in by_cell.items()]
    cells, family, family_same = _with_q_values(cells, info.scorer)
    return jsonable({
        "model": info.model,
        "scorer": info.scorer,
        "seeds": sorted({r.seed for r in per_seed}),
        "text_normalisation": info.text_normalisation,
        "q_family": family,
        "q_family_same_language": family_same,
        "run": info.to_dict(),
        "training": list(info.training),
        "settings": [c.to_dict() for c in cells],
        "per_seed": [r.to_dict() for r in per_seed],
    })


def _with_q_values(cells: list[CellResult], scorer: str) -> tuple[list[CellResult], str, str | None]:
    """The cells with ``q_value`` (Benjamini–Hochberg over every tuned cell's ``p_value``) and
    ``reduction_same_language_q`` (the same over every ``reduction_same_language_p``), and both families in words
    (the second None without same-language tests)."""
    q = q_values([c.p_value for c in cells])
    q_same = q_values([c.reduction_same_language_p for c in cells])
    tested, tested_same = (sum(value is not None for value in values) for values in (q, q_same))
    family = (f"the reduction_abs p-values of all {tested} tuned cells (every model, setting, target and prompt set) "
              f"of this summary under {scorer}")
    family_same = (f"the reduction_same_language p-values of all {tested_same} tuned cells with one, under {scorer}"
                   if tested_same else None)
    return ([replace(c, q_value=value, reduction_same_language_q=same) for c, value, same in zip(cells, q, q_same)],
            family, family_same)


def _cell_order(info: RunInfo) -> Callable[[Cell], tuple]:
    """Models in the order RunInfo.model names them, then setting, target (LANGS), split."""
    models = [m.strip() for m in info.model.split(",")]
    return lambda c: (rank(c.model, models), c.setting.sort_key, lang_rank(c.target),
                      rank(c.split, PROMPT_SETS))


def _per_seed(groups: dict[GroupKey, pd.DataFrame]) -> list[SeedResult]:
    results = []
    for (model, setting, target, split, seed), group in groups.items():
        zs = None if setting.is_zs else groups.get((model, ZS, target, split, seed))
        scored = group[~group["_silent"]]
        zs_scored = None if zs is None else zs[~zs["_silent"]]
        red_abs, red_rel = _reduction(scored, zs_scored)
        by_prompt = _scores_by_prompt(scored)
        matched = _length_matched_diffs(group)
        same_language = _same_language(scored, zs_scored)
        results.append(SeedResult(
            cell=Cell(model, setting, target, split),
            seed=int(seed),
            n=int(group["prompt_id"].nunique()),
            mean_toxicity=float(scored["toxicity"].mean()) if len(scored) else None,
            reduction_abs=red_abs,
            reduction_rel=red_rel,
            emt=expected_max_toxicity(by_prompt) if by_prompt else None,
            tox_prob=toxicity_probability(by_prompt) if by_prompt else None,
            ppl_completion=_geo_mean_ppl(group),
            ppl_change=_ppl_change(group, zs),
            lang_fidelity=_mean_of(group, "lang_fidelity"),
            empty_share=float(group["_empty"].mean()),
            new_tokens=_mean_of(group, "n_tokens"),
            n_paired=(None if zs_scored is None
                      else len(set(scored["prompt_id"]) & set(zs_scored["prompt_id"]))),
            empty_share_zs=None if zs is None else float(zs["_empty"].mean()),
            reduction_length_matched=float(matched.mean()) if matched is not None and len(matched) else None,
            n_length_matched=None if matched is None else len(matched),
            flags={flag: float(scored["_" + flag].mean()) for flag in FLAGS} if len(scored) else None,
            silent_share=_silent_share(group),
            silent_share_zs=None if zs is None else _silent_share(zs),
            reduction_same_language=same_language[0],
            n_same_language=same_language[1],
            relevance=_mean_of(scored, "relevance"),
            relevance_change=_paired_change(scored, zs_scored, "relevance"),
            degenerate_share=float(group["_degenerate"].mean()),
            degenerate_reasons={reason: float((group["_degenerate_reason"] == reason).mean())
                                for reason in DEGENERATE_REASONS},
            degenerate_share_zs=None if zs is None else float(zs["_degenerate"].mean()),
            letters=float(group["_letters"].mean()),
            reduction_silence_bounds=_silence_bounds(group, zs_scored),
            other_script_zs=(None if zs_scored is None or zs_scored.empty
                             else float(zs_scored["_other_script"].mean())),
            lang_fidelity_zs=None if zs is None else _mean_of(zs, "lang_fidelity"),
        ))
    return results


def _silence_bounds(group: pd.DataFrame, zs_scored: pd.DataFrame | None) -> tuple[float, float] | None:
    """[silent counted as unchanged, silent counted as non-toxic]: ZS − setting over the prompts where ZS
    wrote text, a prompt's values being means over samples, with each silent completion of the setting
    scored as ZS's mean toxicity on that prompt (low) or as 0 (high). None without ZS or a ZS text."""
    if zs_scored is None or zs_scored.empty:
        return None
    base = zs_scored.groupby("prompt_id")["toxicity"].mean()
    rows = group[group["prompt_id"].isin(base.index)]
    if rows.empty:
        return None
    zs_of_row = rows["prompt_id"].map(base)
    unchanged = rows["toxicity"].where(~rows["_silent"], zs_of_row)
    nontoxic = rows["toxicity"].where(~rows["_silent"], 0.0)
    ids = rows["prompt_id"]
    low = float((base - unchanged.groupby(ids).mean()).dropna().mean())
    high = float((base - nontoxic.groupby(ids).mean()).dropna().mean())
    return low, high


def _same_language(scored: pd.DataFrame, zs: pd.DataFrame | None) -> tuple[float | None, int | None]:
    """(reduction, prompts) over the prompts where both ZS and the setting wrote text in the target
    language (``lang_fidelity`` 1): the reduction without a change of language in it (a base model
    that answers in another language is scored as another language). (None, None) without ZS or
    a language scorer."""
    if zs is None or "lang_fidelity" not in scored.columns or scored["lang_fidelity"].isna().all():
        return None, None
    mine, base = scored[scored["lang_fidelity"] == 1], zs[zs["lang_fidelity"] == 1]
    return _reduction(mine, base)[0], len(set(mine["prompt_id"]) & set(base["prompt_id"]))


def _in_target_language(scored: dict[GroupKey, pd.DataFrame]) -> dict[GroupKey, pd.DataFrame] | None:
    """Each group's completions written in the target language (``lang_fidelity`` 1), the rows
    ``_same_language`` pairs; None without a language scorer."""
    if not any("lang_fidelity" in g.columns and g["lang_fidelity"].notna().any() for g in scored.values()):
        return None
    return {key: (g[g["lang_fidelity"] == 1] if "lang_fidelity" in g.columns else g.iloc[:0])
            for key, g in scored.items()}


def _silent_share(group: pd.DataFrame) -> float:
    """Share of silent completions: empty, or punctuation and digits only (``text.is_silent``)."""
    return float(group["_silent"].mean())


def _length_matched_diffs(group: pd.DataFrame) -> pd.Series | None:
    """ZS − setting toxicity per completion pair cut to equal length; None without those columns."""
    if _is_zs_group(group) or LM_COLUMN not in group.columns or LM_ZS_COLUMN not in group.columns:
        return None
    both = group[group[LM_COLUMN].notna() & group[LM_ZS_COLUMN].notna()]
    return both[LM_ZS_COLUMN] - both[LM_COLUMN]


def _is_zs_group(group: pd.DataFrame) -> bool:
    return bool(len(group)) and group["_setting"].iloc[0].is_zs


def _length_matched_test(groups: dict[GroupKey, pd.DataFrame], cell: Cell, seeds: Sequence[int]
                         ) -> SeedLevelTest | None:
    """``seed_level_test`` of the length-matched scores: per seed and prompt, ZS − setting (sample means)."""
    if cell.setting.is_zs:
        return None
    diffs = {}
    for seed in seeds:
        group = groups[(cell.model, cell.setting, cell.target, cell.split, seed)]
        if _length_matched_diffs(group) is not None:
            rows = group[group[LM_COLUMN].notna() & group[LM_ZS_COLUMN].notna()]
            if len(rows):
                by_prompt = rows.groupby("prompt_id")[[LM_ZS_COLUMN, LM_COLUMN]].mean()
                diffs[seed] = (by_prompt[LM_ZS_COLUMN] - by_prompt[LM_COLUMN]).to_dict()
    return seed_level_test(diffs) if diffs else None


def _geo_mean_ppl(group: pd.DataFrame) -> float | None:
    """exp(mean log perplexity) of a group's completions; None without a ``ppl`` column."""
    if "ppl" not in group.columns or group["ppl"].isna().all():
        return None
    return float(np.exp(np.log(group["ppl"].dropna().astype(float)).mean()))


def _ppl_change(group: pd.DataFrame, zs: pd.DataFrame | None) -> float | None:
    """Relative change of the completions' perplexity against ZS, on the prompts both have."""
    if zs is None or "ppl" not in group.columns:
        return None
    common = set(group["prompt_id"]) & set(zs["prompt_id"])
    ours = _geo_mean_ppl(group[group["prompt_id"].isin(common)])
    base = _geo_mean_ppl(zs[zs["prompt_id"].isin(common)])
    return None if ours is None or not base else ours / base - 1


def _mean_of(group: pd.DataFrame, column: str) -> float | None:
    """Mean of a measure over a group's completions that have it; None without the column or a value."""
    if column not in group.columns or group[column].isna().all():
        return None
    return float(group[column].mean())


def _paired_change(scored: pd.DataFrame, zs: pd.DataFrame | None, column: str) -> float | None:
    """Setting − ZS mean of a measure over the prompts both wrote text for (their samples' means)."""
    if zs is None or column not in scored.columns or column not in zs.columns:
        return None
    ours, base = (g.dropna(subset=[column]).groupby("prompt_id")[column].mean() for g in (scored, zs))
    common = ours.index.intersection(base.index)
    return float((ours[common] - base[common]).mean()) if len(common) else None


def _scores_by_prompt(group: pd.DataFrame) -> dict[str, np.ndarray]:
    """prompt_id -> the toxicity of its samples."""
    return {pid: values.to_numpy() for pid, values in group.groupby("prompt_id", sort=False)["toxicity"]}


def _paired_test(groups: dict[GroupKey, pd.DataFrame], cell: Cell, seeds: Sequence[int]
                 ) -> SeedLevelTest | None:
    """``seed_level_test`` of ZS vs the cell's setting: per seed, each prompt that both have gives its
    mean toxicity under ZS minus under the setting (ZS of the same seed)."""
    if cell.setting.is_zs:
        return None
    diffs = {}
    for seed in seeds:
        zs = groups.get((cell.model, ZS, cell.target, cell.split, seed))
        if zs is None:
            continue
        zs_means = zs.groupby("prompt_id")["toxicity"].mean()
        ft_means = groups[(cell.model, cell.setting, cell.target, cell.split, seed)].groupby(
            "prompt_id")["toxicity"].mean()
        common = zs_means.index.intersection(ft_means.index)
        if len(common):
            diffs[seed] = (zs_means[common] - ft_means[common]).to_dict()
    return seed_level_test(diffs) if diffs else None


def _reduction(group: pd.DataFrame, zs: pd.DataFrame | None) -> tuple[float | None, float | None]:
    """(ZS mean − group mean, that / ZS mean) over the prompts both have; None where undefined."""
    if zs is None:
        return None, None
    common = set(group["prompt_id"]) & set(zs["prompt_id"])
    if not common:
        return None, None
    zs_mean = float(zs.loc[zs["prompt_id"].isin(common), "toxicity"].mean())
    ft_mean = float(group.loc[group["prompt_id"].isin(common), "toxicity"].mean())
    reduction = zs_mean - ft_mean
    return reduction, (reduction / zs_mean if zs_mean > 0 else None)


def _with_scorers(summary: dict, frame: pd.DataFrame, info: RunInfo) -> dict:
    """Add ``scorers``, ``by_scorer`` and ``scorer_agreement`` when other scorers' columns are present."""
    others = extra_scorers(frame)
    if not others:
        return summary
    scores = {info.scorer: frame["toxicity"]}
    by_scorer = {}
    for name in others:
        column = frame[EXTRA_TOXICITY + name]
        scores[name] = column
        alone = frame.drop(columns=[EXTRA_TOXICITY + n for n in others] + [LM_COLUMN, LM_ZS_COLUMN],
                           errors="ignore").assign(toxicity=column)
        by_scorer[name] = _summarize(alone, replace(info, scorer=name))["settings"]
    summary["scorers"] = [info.scorer, *others]
    summary["by_scorer"] = by_scorer
    if (by_sentence := by_scorer.get(SENTENCES_PREFIX + info.scorer)) is not None:
        _attach_sentence_level(summary["settings"], by_sentence)
    summary["scorer_agreement"] = jsonable([asdict(a) for a in scorer_agreement(scores, frame["target"])])
    return summary


def _attach_sentence_level(entries: list[dict], by_sentence: list[dict]) -> None:
    """Each entry's ``reduction_sentence`` (and ``_ci``, ``_q``): its cell's reduction, seed-level CI and q
    read by ``sentences:<the primary scorer>`` (the same cell's entry in ``by_scorer``)."""
    found = {Cell.from_dict(e): e for e in by_sentence}
    for entry in entries:
        if (other := found.get(Cell.from_dict(entry))) is not None and entry["paradigm"] != "zs":
            entry.update(reduction_sentence=other["reduction_abs"], reduction_sentence_ci=other["ci95"],
                         reduction_sentence_q=other["q_value"])
