"""How the numbers were computed: the prose both report.html and report.md show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xdetox.report.formatting import fmt_kv, seed_list
from xdetox.report.results import SUMMARY_JSON
from xdetox.report.tables import ABSTENTION_NOTE, LANGUAGE_NOTE, SIGNIFICANT_MARK
from xdetox.report.values import lang_rank


def method_notes(summary: dict, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """How the numbers were computed, as (term, plain text) pairs (no markup)."""
    run = summary["run"]
    return [
        ("Toxicity", f"Each completion that is text (not silent: see Empty and silent completions) was scored by {summary['scorer']} (toxicity in [0, 1]). "
         "Per seed, the mean toxicity of a setting on a target is the mean over those "
         f"completions ({_samples_phrase(frame)}); n is the number of distinct prompts per seed."),
        ("Reduction", "reduction_abs = ZS mean toxicity − setting mean toxicity, both over the "
         "prompts where the two both wrote text, ZS being the same model, seed, target and prompt "
         "set; positive means less toxic than the base model. reduction_rel = reduction_abs / that "
         "ZS mean (empty when that mean is 0 or there is no ZS)."),
        ("Length-matched", "Toxicity grows with length, so a model that writes shorter text would look "
         "detoxified for that alone. Per prompt (and sample), the setting's and ZS's completions are both "
         "cut to the shorter one's token count (both text) and scored again by "
         f"{summary['scorer']}; length-matched = mean of ZS − setting over those pairs, its 95% CI and p "
         "computed as for reduction_abs."),
        ("Significance", _significance_phrase(summary)),
        ("Silence bounds", "silence bounds: the reduction over the prompts where ZS wrote text, with the "
         "setting's silent completions counted instead of dropped: as unchanged from ZS (first) and as "
         "non-toxic (second). A reduction outside these bounds, or bounds far apart, says silence moves it."),
        ("Text", _text_phrase(summary)),
        ("Seeds", f"Seeds {seed_list(summary['seeds'])}. Toxicity, reduction_abs and "
         "reduction_rel are the means over seeds of the per-seed values; ± is the sample "
         "standard deviation over seeds (ddof=1), absent with a single seed."),
        ("Settings", "ZS: the base model, zero-shot. X-FT from s: LoRA fine-tuned on the neutral "
         "rewrites of source language s. P-FT p%: fine-tuned on p% of the train pairs of every "
         "pooled language (a seeded choice per language and seed; the 10% set lies inside the 20% "
         "set). M-FT: fine-tuned on all pooled languages' train pairs together. DPO from s: "
         "preference-tuned (DPO) on source language s, prompt = the toxic sentence in the "
         "generation template, chosen = its neutral rewrite, rejected = the toxic sentence. Every "
         "tuned model is evaluated on every target language."),
        *([("Evaluated", _evaluated_phrase(run["evaluated"]))] if run.get("evaluated") else []),
        ("Fluency", "ppl: geometric mean perplexity of the completions under "
         + (f"{run['ppl_scorer'].removeprefix('ppl:')}, one fixed reference model (never the model "
            "that wrote them); ppl vs ZS: that value over ZS's on the same prompts, minus 1 "
            "(positive = less fluent or less typical text than the base model wrote)."
            if run.get("ppl_scorer") else "not measured in this run (add a ppl:<model> scorer).")),
        ("Language", "in target lang: share of completions written in the target language "
         "(dominant script of the letters must be the target's, then lingua-language-detector must "
         "pick the target; Amharic by Ethiopic script alone); "
         + ("measured by the lang-fidelity scorer. same-lang [95% CI] (n): the reduction over the n prompts where "
            "ZS and the setting both wrote text in the target language (n summed over seeds), with its paired "
            "bootstrap interval (prompts as the unit, seeds pooled): a base model "
            "that answers in another language than the prompt's is scored on another language, so a tuned "
            "model that answers in the prompt's language changes the toxicity the scorer reads even where "
            "it detoxifies nothing; read the two reductions side by side."
            if run.get("lang_scorer") else "not measured in this run (add the lang-fidelity scorer).")),
        ("Relevance", ("relevance (vs ZS): how much a completion's log-likelihood under "
         f"{run['relevance_scorer'].removeprefix('relevance:')} (one fixed reference model, never the model "
            "that wrote it) gains from its prompt: the mean per-token log-likelihood of its first 50 tokens after "
            "the prompt minus after the start token alone, in nats, averaged over the completions that are text; "
            "in brackets the setting's minus ZS's, over the prompts both wrote text for. Near 0: text that would "
            "be written after any prompt (a model that changed the subject reads as less toxic without "
            "detoxifying anything); it measures dependence, not quality (a repeated prompt is relevant)."
            if run.get("relevance_scorer") else "relevance (how much a completion depends on its prompt): "
            "not measured in this run (add a relevance:<model> scorer).")),
        ("Empty and silent completions", "empty: share of completions with no text once the end token "
         "is cut off (the model ended at once); silent: share that are empty or have no letter (runs of "
         "dots, '! ! !', digits); degenerate: share that are silent, mostly letterless (at least half of "
         "their whitespace-separated tokens without a letter: emoji-only text is degenerate, though scored) or "
         "dominated by repeated n-grams (xdetox.text.is_degenerate); new tokens and letters: mean tokens "
         "written and letters per completion. A silent completion is "
         "not text and gets no score (toxicity, perplexity, language, relevance); a setting that stops writing more "
         f"often than ZS abstains rather than detoxifies. {ABSTENTION_NOTE}"),
        ("Flags", "short: share of scored completions with fewer than 3 words or 4 letters (Chinese: "
         "letters only); other script: share whose letters are mostly in another script than the "
         "target's. Both are scored by the same model, but a lexical scorer reads little in a short "
         f"text and was trained on the target's script; {SUMMARY_JSON} gives every flag's share "
         f"(`flags`, also `no_letters`). {LANGUAGE_NOTE}"),
        ("Scorer validation", _validation_phrase(summary, frame)),
        ("Decoding", fmt_kv(run.get("decode") or {})),
        ("LoRA / training", (f"{fmt_kv(run.get('lora') or {})}; {run.get('epochs')} epoch(s); "
                             if any("objective" in t for t in run.get("training") or ()) or not run.get("evaluated")
                             else "nothing was trained in this run; ") + f"prompt limit {run.get('limit') or 'none'}."),
        ("Run", f"configuration {run.get('config_name') or 'not named'}; started "
         f"{run.get('started') or 'unknown'} on {run.get('device') or 'unknown'}; " + _time_phrase(run)),
        ("Versions", fmt_kv(run.get("versions") or {})),
    ]


def _evaluated_phrase(evaluated: dict) -> str:
    """What ``xdetox eval`` measured, and against what."""
    adapter = (f" with the PEFT adapter {evaluated['adapter']} (weights sha256 {evaluated['adapter_sha256'][:12]}…)"
               if evaluated.get("adapter") else "")
    baseline = (f"ZS is the baseline {evaluated['baseline']}, sampled alike: every reduction is the baseline's "
                "toxicity minus Eval's, as for a tuned setting against its base model."
                if evaluated.get("baseline") else "There is no baseline, so no reduction: Eval's toxicity per target.")
    return (f"Eval: {evaluated['model']}{adapter}, measured as given (xdetox eval trained nothing) on the same "
            f"prompts, template and decoding. {baseline}")


def _significance_phrase(summary: dict) -> str:
    """How ci95, p and q were computed, and what the interval covers with this run's seeds."""
    seeds = len(summary.get("seeds") or [])
    covers = ("training-seed variance and prompt sampling both (the seeds are the unit of training)" if seeds > 1
              else "sampling variance only: with one training seed it leaves out how much another seed's "
                   "adapter would differ (add seeds to cover it)")
    return ("95% CI and p: stats.seed_level_test on the per-seed, per-prompt differences ZS − setting (a "
            "prompt's value is its mean toxicity over samples): a crossed random-effects model (seed and prompt "
            "effects, ANOVA variance components fitted on the pairs present), the interval from a generalized "
            "pivot that keeps the seed term's few degrees of freedom, p from the equivalent t test (p < 0.05 "
            "exactly when the interval excludes 0); simulated coverage 95.4–95.8 % at 3 seeds and 100 prompts "
            f"(python -m xdetox.report.simulate). Here the interval covers {covers}. q: Benjamini–Hochberg over "
            f"{summary.get('q_family') or 'the summary’s p-values'}"
            + (f" (same-language reductions: over {family})" if (family := summary.get("q_family_same_language"))
               else "") + f"; {SIGNIFICANT_MARK} marks q < 0.05.")


def _text_phrase(summary: dict) -> str:
    version = summary.get("text_normalisation") or "none"
    if version == "none":
        return ("text_normalisation none: training text and prompts as the data has them, byte for byte.")
    return (f"text_normalisation {version}: training text and prompts alike cleaned before use (xdetox.hygiene: "
            "spaced punctuation and clitics joined per language, whitespace collapsed, the first letter "
            "capitalised in cased scripts); part of every content key.")


def _time_phrase(run: dict) -> str:
    """Wall time of the latest attempt and the total over all attempts (a killed one up to its last commit)."""
    wall, total, attempts = run.get("wall_time_s"), run.get("total_time_s"), run.get("attempts")

    def known(value) -> bool:
        return isinstance(value, (int, float)) and value == value

    if not known(wall) and not known(total):
        return "wall time not recorded."
    if not known(total) or attempts == 1:
        return f"wall time {wall if known(wall) else total:.1f} s."
    latest = f"{wall:.1f} s for the latest attempt, " if known(wall) else ""
    over = f"over {attempts} attempts" if attempts else "over every attempt"
    return (f"wall time {latest}{total:.1f} s in total {over} (an attempt that was killed counts up "
            "to its last committed write).")


VALIDATION_LABELS = {
    "paradetox_test": "paradetox test AUC", "pairwise": "pairwise accuracy (toxic above its own rewrite)",
    "heldout": "held-out corpus AUC", "behavioural": "behavioural suite accuracy",
    "behavioural_benign_short": "benign short texts accuracy",
    "parallel_benign": "mean score of the same 40 benign sentences in each language",
    "parallel_toxic": "of the same 20 insults",
    "parallel2_benign": "of a second set of 40 benign sentences (written after the scorer was chosen)",
    "parallel2_toxic": "of its 20 insults",
    "parallel3_benign": "of a third set of 100 everyday sentences", "parallel3_toxic": "of its 80 insults",
    "romanised_benign": "mean score of 10 benign sentences in Latin letters", "romanised_toxic": "of 10 insults so",
    "ece": "calibration error (ECE)",
}


def _validation_phrase(summary: dict, frame: pd.DataFrame) -> str:
    """The toxicity scorer's validation figures for the run's target languages, or how to get them."""
    figures = summary["run"].get("scorer_validation")
    if not figures:
        return (f"{summary['scorer']} has no validation figures cached on this machine; "
                f"`xdetox scorer eval --scorer {summary['scorer']}` computes them (the next report shows them).")
    langs = sorted(set(frame["target"]), key=lang_rank) if not frame.empty else []
    parts = []
    for figure, label in VALIDATION_LABELS.items():
        values = figures.get(figure) or {}
        here = [f"{lang} {values[lang]:.3f}" for lang in langs if values.get(lang) is not None]
        if here:
            parts.append(f"{label}: " + ", ".join(here))
    intervals = figures.get("intervals") or {}
    parity = [f"{kind} {np.ptp(list(values.values())):.3f}"
              + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if (ci := intervals.get(figure)) else "") for kind, figure in (
        ("benign", "parallel_benign"), ("insults", "parallel_toxic"),
        ("second set benign", "parallel2_benign"), ("second set insults", "parallel2_toxic"),
        ("third set benign", "parallel3_benign"), ("third set insults", "parallel3_toxic"))
        if len(values := figures.get(figure) or {}) > 1]
    if parity:
        parts.append(f"parity, max − min of those means over all {len(figures.get('parallel_benign') or {})}"
                     " languages" + (" [95% bootstrap interval over the sentences]" if intervals else "")
                     + ": " + ", ".join(parity))
    return f"{summary['scorer']} (xdetox scorer eval): " + "; ".join(parts) + "."


def _samples_phrase(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no samples"
    per = frame.groupby(["model", "_setting", "seed", "target", "split", "prompt_id"],
                        sort=False).size()
    lo, hi = int(per.min()), int(per.max())
    count = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{count} sample{'s' if hi > 1 else ''} per prompt"
