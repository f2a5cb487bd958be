"""The plan: a config's training settings and evaluations, each with its content key.

A *training setting* = (model, paradigm, source language or percent, seed) and
trains at most one adapter (ZS trains none; ``eval`` is given its model, and maybe an
adapter, by ``GridConfig.evaluate``, and samples with that under the config's model's name). An *evaluation* = (training
setting, target language, split). Both have content keys (``xdetox._io.content_key``
of what defines them, the data included), so running the same config again on the
same store skips what is done. Evaluations = models x (ZS + X-FT x sources + P-FT x
percents + M-FT + DPO x dpo_sources) x targets x splits x seeds, in that order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from xdetox import data as data_mod
from xdetox._io import content_key
from xdetox.data import Corpus
from xdetox.errors import XdetoxInputError
from xdetox.given import GivenSpec
from xdetox.grid.config import GridConfig
from xdetox.hygiene import clean_corpus
from xdetox.specs import UNTRAINED, ModelSpec, TrainSpec
from xdetox.train import adapter_key, training_examples


@dataclass(frozen=True)
class TrainSetting:
    key: str
    model: ModelSpec
    spec: TrainSpec
    given: GivenSpec | None = None  # an eval setting's model (and adapter)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def generates_with(self) -> ModelSpec:
        """The model it samples with: ``model``, or an eval setting's given model (the run's baseline, its ZS, is
        ``model``: the report reads both under that name)."""
        return self.model if self.given is None else self.given.model


@dataclass(frozen=True)
class Evaluation:
    key: str
    setting: TrainSetting
    target: str
    split: str
    prompt_ids: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    config: GridConfig
    settings: tuple[TrainSetting, ...]
    evaluations: tuple[Evaluation, ...]

    def identity(self) -> str:
        """A digest of the work: the training settings and evaluations, by content key."""
        keys = sorted(s.key for s in self.settings) + sorted(e.key for e in self.evaluations)
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()

    def evaluations_of(self, setting: TrainSetting) -> list[Evaluation]:
        return [e for e in self.evaluations if e.setting.key == setting.key]

    def decomposition(self) -> str:
        """How the evaluation count decomposes, as one line."""
        c = self.config
        per = {
            "zs": "ZS", "x-ft": f"{len(c.sources)} X-FT", "p-ft": f"{len(c.percents)} P-FT",
            "m-ft": "M-FT", "dpo": f"{len(c.dpo_sources or c.sources)} DPO", "eval": "Eval",
        }
        parts = " + ".join(per[p] for p in c.paradigms)
        n_settings = len(self.settings) // (len(c.models) * len(c.seeds))
        return (f"{len(self.evaluations)} evaluations = {len(c.models)} model(s) x {n_settings} training settings"
                f" ({parts}) x {len(c.targets)} targets x {len(c.splits)} split(s) x {len(c.seeds)} seed(s)")


def training_specs(config: GridConfig, seed: int) -> list[TrainSpec]:
    """The training settings of one model and seed, in report order."""
    specs = []
    for paradigm in config.paradigms:
        base = replace(config.train_for(paradigm), paradigm="zs", seed=seed, pool=config.sources, source=None,
                       percent=None)
        if paradigm in ("x-ft", "dpo"):
            sources = config.dpo_sources or config.sources if paradigm == "dpo" else config.sources
            specs.extend(replace(base, paradigm=paradigm, source=s) for s in sources)
        elif paradigm == "p-ft":
            specs.extend(replace(base, paradigm=paradigm, percent=p) for p in config.percents)
        else:
            specs.append(replace(base, paradigm=paradigm))
    return specs


def make_plan(config: GridConfig, corpus: Corpus) -> Plan:
    """Validate the config against the corpus and list what the run computes.

    The corpus is read as the config's ``text_normalisation`` cleans it (``hygiene.clean_corpus``; a
    corpus already cleaned so is used as it is); a version other than ``none`` is part of every key.
    """
    corpus = clean_corpus(corpus, config.text_normalisation)
    text = {} if config.text_normalisation == "none" else {"text": config.text_normalisation}
    check_prompt_only(config, corpus)
    data_mod.check_langs(list(config.targets), corpus.langs)
    if any(p not in UNTRAINED for p in config.paradigms):
        data_mod.check_langs(list(config.sources), corpus.langs)
    if "dpo" in config.paradigms:
        data_mod.check_langs(list(config.dpo_sources or config.sources), corpus.langs)
    settings = []
    for model in config.models:
        for seed in config.seeds:
            for spec in training_specs(config, seed):
                given = config.evaluate if spec.paradigm == "eval" else None
                if spec.paradigm == "zs":
                    key = "zs-" + content_key({"model": model.to_dict(), "seed": seed})
                elif given is not None:
                    key = "eval-" + content_key({"model": model.to_dict(), "given": given.key_parts(), "seed": seed})
                else:
                    key = adapter_key(model, spec, training_examples(spec, corpus), config.text_normalisation)
                settings.append(TrainSetting(key, model, spec, given))
    evaluations = []
    for setting in settings:
        for split in config.splits:
            for target in config.targets:
                prompts = corpus.prompts(target, split)[: config.limit]
                if not prompts:
                    raise XdetoxInputError(f"no {split} prompts for {target!r} in {corpus.name}")
                ids = tuple(p.id for p in prompts)
                key = content_key({
                    "setting": setting.key, "target": target, "split": split,
                    "decode": config.decode.to_dict(), "seed": setting.spec.seed,
                    "prompts": corpus.digest(target), "ids": ids, **text,
                })
                evaluations.append(Evaluation(key, setting, target, split, ids))
    return Plan(config, tuple(settings), tuple(evaluations))


def check_prompt_only(config: GridConfig, corpus: Corpus) -> None:
    """A prompt-only corpus (no neutral column) serves the untrained paradigms alone, on toxic prompts."""
    if not corpus.prompt_only:
        return
    trained = [p for p in config.paradigms if p not in UNTRAINED]
    needs = (f"{', '.join(trained)} trains on neutral rewrites" if trained else
             "test_neutral prompts are its neutral sentences" if "test_neutral" in config.splits else
             "the reference measures read its neutral sentences (set measure_references = false)"
             if config.measure_references else None)
    if needs:
        raise XdetoxInputError(f"{corpus.name}: missing column(s) neutral: a prompt-only set (toxic prompts, no"
                               f" neutrals) serves `xdetox eval`, but {needs}")


def plan_table(plan: Plan, corpus: Corpus) -> str:
    """One line per training setting: model, setting, seed, training examples, recipe, evaluations.

    The recipe is epochs x (batch size x gradient accumulation) and max length: the
    per-paradigm tables of a config show here.
    """
    rows = [("model", "setting", "seed", "examples", "epochs x batch", "max length", "evaluations")]
    counts: dict[str, int] = {}
    for ev in plan.evaluations:
        counts[ev.setting.key] = counts.get(ev.setting.key, 0) + 1
    for s in plan.settings:
        zs = s.spec.paradigm in UNTRAINED
        n = "-" if zs else str(len(training_examples(s.spec, corpus)))
        recipe = "-" if zs else f"{s.spec.epochs} x {s.spec.batch_size * s.spec.gradient_accumulation_steps}"
        length = "-" if zs else str(s.spec.max_length)
        rows.append((s.model.name, s.label, str(s.spec.seed), n, recipe, length, str(counts[s.key])))
    return "\n".join(left_aligned(rows))


def left_aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` (a header first) as lines of left-aligned columns two spaces apart (``plan_table``,
    ``xdetox status``)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def describe_plan(config: GridConfig) -> str:
    """``xdetox grid plan``: the config's ``plan_table`` and how its evaluations decompose, after the checks a
    run makes before any work (the data, and each scorer and its languages: a run would refuse them too)."""
    from xdetox.scorers.registry import check_languages, check_scorer

    corpus = clean_corpus(data_mod.load(config.data_path), config.text_normalisation)
    plan = make_plan(config, corpus)
    for scorer in config.scorers:
        check_scorer(scorer)
        check_languages(scorer, config.targets)
    return f"{plan_table(plan, corpus)}\n\n{plan.decomposition()}"
