"""Typed results: where a number belongs (``Setting``, ``Cell``), what it is (``SeedResult``,
``CellResult``), one model on one prompt set (``View``), and the run behind them (``RunInfo``).

A summary stores results as flat dicts (``to_dict``); ``summary_views`` reads them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Sequence

from xdetox.data import PROMPT_SETS
from xdetox.report.formatting import n_phrase, seed_list
from xdetox.report.stats import SeedLevelTest
from xdetox.report.tabular import INTERVALS
from xdetox.report.values import jsonable, lang_rank, mean_or_none, rank, rounded, std_or_none
from xdetox.specs import PARADIGM_LABELS, PARADIGMS
from xdetox.text import DEGENERATE_REASONS, FLAGS

# What the rows of a paradigm's matrix are (the CSV's index label).
ROW_AXIS: dict[str, str] = {"x-ft": "source", "dpo": "source", "p-ft": "percent"}
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
SUMMARY_JSON = "summary.json"
SETTINGS_PARQUET = "settings.parquet"  # summary["settings"] as the frame of Run.settings()
COMPLETIONS_PARQUET = "completions.parquet"  # the completions frame of completions.jsonl
ABSTENTION_POINTS = 0.05  # |empty, silent or degenerate share − ZS's| above this flags a cell: it may be silence
ONE_PROMPT = "one prompt: an interval and its p-value need two or more"
"""Why a cell of one prompt has no ``ci95``/``p_value`` (its ``not_computed``): not an interval of width 0."""


@dataclass(frozen=True)
class RunInfo:
    """What produced a set of completions; stored verbatim in ``summary["run"]``."""

    model: str  # display string, e.g. the comma-joined model names
    scorer: str
    seeds: tuple[int, ...]
    epochs: int
    limit: int | None
    decode: dict = field(default_factory=dict)  # temperature, top_p, max_new_tokens, template
    lora: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    wall_time_s: float | None = None  # the latest attempt (run or resume) of the run
    total_time_s: float | None = None  # summed over every attempt (a killed one: up to its last commit)
    attempts: int | None = None  # how many attempts (None: a store from before attempts were recorded)
    started: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    config_name: str | None = None
    ppl_scorer: str | None = None  # the ppl:<model> scorer behind the ``ppl`` column, if any
    relevance_scorer: str | None = None  # the relevance:<model> scorer behind the ``relevance`` column, if any
    lang_scorer: str | None = None  # the scorer behind the ``lang_fidelity`` column, if any
    training: tuple[dict, ...] = ()  # per training setting: label, seed, recipe, end_token_trained
    scorer_validation: dict | None = None  # the toxicity scorer's validation figures {figure: {lang: value}}
    partial: str | None = None  # an unfinished run's finished part: what it holds and lacks, in words
    text_normalisation: str = "none"  # how training text and prompts were cleaned (xdetox.hygiene)
    evaluated: dict | None = None  # xdetox eval: {model, adapter, adapter_sha256, baseline (its ZS) or None}

    def to_dict(self) -> dict:
        """A JSON-serialisable deep copy (numpy scalars -> Python, NaN -> None)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class Setting:
    """One way of producing a model: a paradigm plus its source language or percent."""

    paradigm: str
    source: str | None = None
    percent: int | None = None

    @property
    def is_zs(self) -> bool:
        return self.paradigm == "zs"

    @property
    def row(self) -> str:
        """Its row label in the paradigm's matrix: "en", "10%", "all" (m-ft) or "zs"."""
        parts = [p for p in (self.source, _percent_label(self.percent)) if p]
        if parts:
            return " ".join(parts)
        return "all" if self.paradigm == "m-ft" else self.paradigm

    @property
    def name(self) -> str:
        """Display name: "ZS", "X-FT from en", "P-FT 10%", "M-FT", "DPO from en"."""
        name = PARADIGM_LABELS.get(self.paradigm, self.paradigm.upper())
        if self.source:
            name += f" from {self.source}"
        if self.percent is not None:
            name += f" {self.percent}%"
        return name

    @property
    def sort_key(self) -> tuple:
        return (
            rank(self.paradigm, PARADIGMS),
            (-1, "") if not self.source else lang_rank(self.source),
            -1 if self.percent is None else self.percent,
        )


ZS = Setting("zs")


@dataclass(frozen=True)
class Cell:
    """Where a number belongs: model, setting, target language, prompt set."""

    model: str
    setting: Setting
    target: str
    split: str

    def to_dict(self) -> dict:
        return {"model": self.model, **asdict(self.setting), "target": self.target,
                "split": self.split}

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        setting = Setting(d["paradigm"], d.get("source"), d.get("percent"))
        return cls(d["model"], setting, d["target"], d["split"])


@dataclass(frozen=True)
class SeedResult:
    """One cell under one seed (an entry of ``summary["per_seed"]``)."""

    cell: Cell
    seed: int
    n: int  # distinct prompts
    mean_toxicity: float | None  # over completions that are text; None when every one is silent
    reduction_abs: float | None  # over the prompts where ZS and the setting both wrote something
    reduction_rel: float | None
    emt: float | None  # expected maximum toxicity over this seed's prompts (samples that are text)
    tox_prob: float | None  # share of this seed's prompts with a sample >= TOXIC_THRESHOLD
    ppl_completion: float | None = None  # geometric mean perplexity of the completions (reference model)
    ppl_change: float | None = None  # ppl_completion / ZS's - 1 (same seed, target, split)
    lang_fidelity: float | None = None  # share of completions written in the target language
    empty_share: float | None = None  # share of completions with no text (the model ended at once)
    new_tokens: float | None = None  # mean new tokens per completion (needs an ``n_tokens`` column)
    n_paired: int | None = None  # prompts where ZS and the setting both wrote something (reductions)
    empty_share_zs: float | None = None  # ZS's empty share, same seed, target and split
    reduction_length_matched: float | None = None  # mean ZS − setting over completions cut to equal length
    n_length_matched: int | None = None  # completion pairs behind it
    flags: dict[str, float] | None = None  # per text flag, its share among the scored (not silent) completions
    silent_share: float | None = None  # share of silent completions (empty, or punctuation/digits only)
    silent_share_zs: float | None = None  # ZS's, same seed, target and split
    reduction_same_language: float | None = None  # reduction over prompts both answered in the target language
    n_same_language: int | None = None  # those prompts
    relevance: float | None = None  # mean gain of a completion's log-likelihood from its prompt (nats/token)
    relevance_change: float | None = None  # setting − ZS over the prompts both wrote text for
    degenerate_share: float | None = None  # share of degenerate completions (text.is_degenerate; silent included)
    degenerate_share_zs: float | None = None  # ZS's, same seed, target and split
    letters: float | None = None  # mean letters per completion (text.letter_count; silent ones count 0)
    degenerate_reasons: dict[str, float] | None = None  # per text.DEGENERATE_REASONS, its share of all completions
    # the reduction over the prompts where ZS wrote text, with the setting's silent completions counted as
    # unchanged from ZS (low) and as non-toxic (high)
    reduction_silence_bounds: tuple[float, float] | None = None
    other_script_zs: float | None = None  # ZS's other_script share (scored completions), same seed, target, split
    lang_fidelity_zs: float | None = None  # ZS's, same seed, target and split

    def to_dict(self) -> dict:
        return _flatten(self)


@dataclass(frozen=True)
class CellResult:
    """One cell over all its seeds (an entry of ``summary["settings"]``)."""

    cell: Cell
    n: int  # distinct prompts per seed (the largest, should seeds differ)
    seeds: tuple[int, ...]
    mean_toxicity: float | None  # mean over seeds of the per-seed mean
    std: float | None  # std over seeds (ddof=1) of the per-seed mean; None with 1 seed
    reduction_abs: float | None  # mean over the seeds that have one
    reduction_rel: float | None
    reduction_abs_std: float | None
    emt: float | None  # mean over seeds of the per-seed values
    tox_prob: float | None
    ci95: tuple[float, float] | None  # seed-level 95% CI of the reduction vs ZS (stats.seed_level_test)
    p_value: float | None  # its two-sided test of "no difference"; None for ZS
    ppl_completion: float | None = None  # mean over seeds
    ppl_change: float | None = None  # mean over seeds
    lang_fidelity: float | None = None  # mean over seeds
    empty_share: float | None = None  # mean over seeds
    new_tokens: float | None = None  # mean over seeds
    n_paired: int | None = None  # prompts paired with ZS in the CI (both wrote something in some seed)
    abstention_flag: bool | None = None  # empty, silent or degenerate share differs from ZS's by > ABSTENTION_POINTS
    # the share written in another script (or, where measured, not in the target language) differs from ZS's by
    # more than ABSTENTION_POINTS: the reduction partly measures a change of language
    language_flag: bool | None = None
    reduction_length_matched: float | None = None  # mean over seeds
    reduction_length_matched_std: float | None = None
    reduction_length_matched_ci: tuple[float, float] | None = None  # paired bootstrap, prompts as the unit
    reduction_length_matched_p: float | None = None
    n_length_matched: int | None = None  # prompts behind that CI
    flags: dict[str, float] | None = None  # mean over seeds of the per-seed flag shares
    silent_share: float | None = None  # mean over seeds: completions with no letters (empty or punctuation only)
    reduction_same_language: float | None = None  # mean over seeds (prompts both answered in the target language)
    n_same_language: int | None = None  # those prompts, summed over seeds
    reduction_same_language_std: float | None = None
    reduction_same_language_ci: tuple[float, float] | None = None  # paired bootstrap, prompts as the unit
    reduction_same_language_p: float | None = None
    relevance: float | None = None  # mean over seeds
    relevance_change: float | None = None  # mean over seeds
    degenerate_share: float | None = None  # mean over seeds
    degenerate_reasons: dict[str, float] | None = None  # mean over seeds of each reason's share
    letters: float | None = None  # mean over seeds
    reduction_silence_bounds: tuple[float, float] | None = None  # mean over seeds of each bound
    ci_unit: str | None = None  # "seeds": ci95 and p include training-seed variance; "prompts": sampling only
    q_value: float | None = None  # Benjamini–Hochberg over the summary's family of p-values (summary["q_family"])
    reduction_same_language_q: float | None = None  # the same over every same-language p (q_family_same_language)
    # the reduction read by sentences:<the run's scorer> (a completion as toxic as its most toxic sentence), its
    # seed-level CI and q (over that scorer's own family), where the run has that scorer
    reduction_sentence: float | None = None
    reduction_sentence_ci: tuple[float, float] | None = None
    reduction_sentence_q: float | None = None
    not_computed: dict[str, str] | None = None  # field -> why it is None although the cell has a ZS (one prompt)

    @classmethod
    def over_seeds(cls, cell: Cell, per_seed: Sequence[SeedResult],
                   test: SeedLevelTest | None = None,
                   length_matched: SeedLevelTest | None = None,
                   same_language: SeedLevelTest | None = None) -> CellResult:
        """The cell over its seeds. An interval (and its p-value) of a test over one prompt is not computed:
        nothing is known of other prompts, so the cell's ``not_computed`` names the field and why."""
        tests = {"ci95": test, "reduction_length_matched_ci": length_matched, "reduction_same_language_ci": same_language}
        missing = {name: ONE_PROMPT for name, t in tests.items() if t is not None and t.n < 2}
        n_paired, n_matched = (None if t is None else t.n for t in (test, length_matched))
        test, length_matched, same_language = (None if name in missing else t for name, t in tests.items())
        toxicity = [r.mean_toxicity for r in per_seed if r.mean_toxicity is not None]
        matched = [r.reduction_length_matched for r in per_seed if r.reduction_length_matched is not None]
        empty = mean_or_none([r.empty_share for r in per_seed if r.empty_share is not None])
        empty_zs = mean_or_none([r.empty_share_zs for r in per_seed if r.empty_share_zs is not None])
        silent = mean_or_none([r.silent_share for r in per_seed if r.silent_share is not None])
        silent_zs = mean_or_none([r.silent_share_zs for r in per_seed if r.silent_share_zs is not None])
        degenerate = mean_or_none([r.degenerate_share for r in per_seed if r.degenerate_share is not None])
        degenerate_zs = mean_or_none([r.degenerate_share_zs for r in per_seed if r.degenerate_share_zs is not None])
        bounds = [r.reduction_silence_bounds for r in per_seed if r.reduction_silence_bounds is not None]
        red_abs = [r.reduction_abs for r in per_seed if r.reduction_abs is not None]
        red_rel = [r.reduction_rel for r in per_seed if r.reduction_rel is not None]
        same = [r.reduction_same_language for r in per_seed if r.reduction_same_language is not None]
        languages = [(mean_or_none([r.flags["other_script"] for r in per_seed if r.flags]),
                      mean_or_none([r.other_script_zs for r in per_seed if r.other_script_zs is not None])),
                     (mean_or_none([r.lang_fidelity for r in per_seed if r.lang_fidelity is not None]),
                      mean_or_none([r.lang_fidelity_zs for r in per_seed if r.lang_fidelity_zs is not None]))]
        languages = [(ours, base) for ours, base in languages if ours is not None and base is not None]
        return cls(
            cell=cell,
            n=max(r.n for r in per_seed),
            seeds=tuple(sorted(r.seed for r in per_seed)),
            mean_toxicity=mean_or_none(toxicity),
            std=std_or_none(toxicity),
            reduction_abs=mean_or_none(red_abs),
            reduction_rel=mean_or_none(red_rel),
            reduction_abs_std=std_or_none(red_abs),
            emt=mean_or_none([r.emt for r in per_seed if r.emt is not None]),
            tox_prob=mean_or_none([r.tox_prob for r in per_seed if r.tox_prob is not None]),
            ci95=None if test is None else (test.ci_low, test.ci_high),
            p_value=None if test is None else test.p_value,
            n_paired=n_paired,
            abstention_flag=(None if cell.setting.is_zs or empty is None or empty_zs is None
                             else any(ours is not None and base is not None
                                      and abs(ours - base) > ABSTENTION_POINTS + 1e-12
                                      for ours, base in ((empty, empty_zs), (silent, silent_zs),
                                                         (degenerate, degenerate_zs)))),
            language_flag=(None if cell.setting.is_zs or not languages
                           else any(abs(ours - base) > ABSTENTION_POINTS + 1e-12 for ours, base in languages)),
            silent_share=silent,
            reduction_length_matched=mean_or_none(matched),
            reduction_length_matched_std=std_or_none(matched),
            reduction_length_matched_ci=(None if length_matched is None
                                         else (length_matched.ci_low, length_matched.ci_high)),
            reduction_length_matched_p=None if length_matched is None else length_matched.p_value,
            n_length_matched=n_matched,
            flags=_mean_flags([r.flags for r in per_seed if r.flags]),
            ppl_completion=mean_or_none([r.ppl_completion for r in per_seed if r.ppl_completion is not None]),
            ppl_change=mean_or_none([r.ppl_change for r in per_seed if r.ppl_change is not None]),
            lang_fidelity=mean_or_none([r.lang_fidelity for r in per_seed if r.lang_fidelity is not None]),
            empty_share=empty,
            new_tokens=mean_or_none([r.new_tokens for r in per_seed if r.new_tokens is not None]),
            reduction_same_language=mean_or_none(same),
            n_same_language=(None if all(r.n_same_language is None for r in per_seed)
                             else sum(r.n_same_language or 0 for r in per_seed)),
            reduction_same_language_std=std_or_none(same),
            reduction_same_language_ci=(None if same_language is None
                                        else (same_language.ci_low, same_language.ci_high)),
            reduction_same_language_p=None if same_language is None else same_language.p_value,
            relevance=mean_or_none([r.relevance for r in per_seed if r.relevance is not None]),
            relevance_change=mean_or_none([r.relevance_change for r in per_seed if r.relevance_change is not None]),
            degenerate_share=degenerate,
            degenerate_reasons=_mean_shares([r.degenerate_reasons for r in per_seed if r.degenerate_reasons],
                                            DEGENERATE_REASONS),
            letters=mean_or_none([r.letters for r in per_seed if r.letters is not None]),
            reduction_silence_bounds=(None if not bounds else
                                      (mean_or_none([b[0] for b in bounds]), mean_or_none([b[1] for b in bounds]))),
            ci_unit=None if test is None else test.unit,
            not_computed=missing or None,
        )

    def to_dict(self) -> dict:
        return _flatten(self)

    @classmethod
    def from_dict(cls, d: dict) -> CellResult:
        values = {f.name: d.get(f.name) for f in fields(cls) if f.name != "cell"}
        intervals = {name: tuple(d[name]) if d.get(name) else None
                     for name in INTERVALS}
        return cls(cell=Cell.from_dict(d), **{**values, "seeds": tuple(d["seeds"]), **intervals})


@dataclass(frozen=True)
class View:
    """The results of one model on one prompt set, and what every caption must say."""

    model: str
    split: str
    scorer: str
    results: tuple[CellResult, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({s for r in self.results for s in r.seeds}))

    @property
    def targets(self) -> list[str]:
        return sorted({r.cell.target for r in self.results}, key=lang_rank)

    @property
    def paradigms(self) -> list[str]:
        return sorted({r.cell.setting.paradigm for r in self.results},
                      key=lambda p: rank(p, PARADIGMS))

    def of(self, paradigm: str) -> list[CellResult]:
        return [r for r in self.results if r.cell.setting.paradigm == paradigm]

    def n_by_target(self) -> dict[str, int]:
        """Prompts per target: the ZS n, else the largest n of any setting."""
        counts: dict[str, int] = {}
        for target in self.targets:
            here = [r for r in self.results if r.cell.target == target]
            zs = [r.n for r in here if r.cell.setting.is_zs]
            counts[target] = zs[0] if zs else max(r.n for r in here)
        return counts

    def caption(self) -> str:
        """model · split · n · seeds · scorer, for every figure and table of this view."""
        return (f"model {self.model} · split {self.split} · {n_phrase(self.n_by_target())} · "
                f"seeds {seed_list(self.seeds)} · scorer {self.scorer}")


def summary_views(summary: dict) -> list[View]:
    """One View per (model, split), models in summary order, splits in PROMPT_SETS order."""
    results = [CellResult.from_dict(d) for d in summary["settings"]]
    models = list(dict.fromkeys(r.cell.model for r in results))
    keys = sorted({(r.cell.model, r.cell.split) for r in results},
                  key=lambda k: (models.index(k[0]), rank(k[1], PROMPT_SETS)))
    return [
        View(model, split, summary["scorer"],
             tuple(r for r in results if (r.cell.model, r.cell.split) == (model, split)))
        for model, split in keys
    ]


def by_target(results: Sequence[CellResult]) -> list[CellResult]:
    """Grouped by target (LANGS order), ZS first, then settings in report order."""
    return sorted(results, key=lambda r: (lang_rank(r.cell.target), r.cell.setting.sort_key))


def _mean_flags(shares: Sequence[dict[str, float]]) -> dict[str, float] | None:
    return _mean_shares(shares, FLAGS)


def _mean_shares(shares: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, float] | None:
    return {name: mean_or_none([s[name] for s in shares]) for name in names} if shares else None


def _flatten(result: SeedResult | CellResult) -> dict:
    """The cell's keys, then the result's own fields (floats rounded, tuples as lists)."""
    out = result.cell.to_dict()
    for f in fields(result):
        if f.name != "cell":
            out[f.name] = rounded(getattr(result, f.name))
    return out


def _percent_label(percent: int | None) -> str | None:
    return None if percent is None else f"{percent}%"
