"""Config -> plan (training settings x evaluations) -> execution against the store.

A *training setting* = (model, paradigm, source language or percent, seed) and
trains at most one adapter (ZS trains none). An *evaluation* = (training
setting, target language, split). Both have content keys, so running the same
config again on the same store skips what is done: adapters already trained,
batches already committed, completions already scored.

A config is a TOML file (see ``configs/``)::

    name = "embedded"
    models = ["embedded"]                      # or [{name = "...", quantization = "nf4"}]
    paradigms = ["zs", "x-ft", "p-ft", "m-ft"] # and/or "dpo"
    sources = "all"        # X-FT/DPO sources, and the languages P-FT/M-FT pool
    # dpo_sources = ["en"] # DPO sources, when they differ from sources
    percents = [10, 20, 30]
    targets = "all"
    splits = ["test_toxic"]
    seeds = [42]
    scorers = ["offline"]
    # limit = 20           # first N prompts per target
    # generator = "auto"   # "transformers" or "vllm"; auto = vLLM when CUDA and vllm are present
    # data = "pairs.jsonl" # instead of the bundled corpus
    [train]                # objective, epochs, learning_rate, batch_size, gradient_accumulation_steps,
                           # max_length, dpo_beta
    [train.lora]           # r, alpha, dropout, target_modules
    [train.x-ft]           # per-paradigm overrides of [train] (also p-ft, m-ft, dpo), with their own .lora
    [decode]               # template, temperature, top_p, top_k, max_new_tokens, samples_per_prompt, batch_size
    [resources]            # per setting, --backend ray only: num_cpus, num_gpus, memory_gb, max_retries

Evaluations = models x (ZS + X-FT x sources + P-FT x percents + M-FT + DPO x
dpo_sources) x targets x splits x seeds.

Execution is one unit per training setting (``run_setting``: train if needed,
generate the missing batches, score), in plan order; the base model is loaded
once per model and adapters are switched in it, not reloaded. ``--backend ray``
(``xdetox.distributed``) runs the same unit as one Ray task per training setting.
"""

from __future__ import annotations

import gc
import hashlib
import json
import platform
import shutil
import time
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from xdetox import data as data_mod
from xdetox.data import LANGS, Corpus
from xdetox.errors import XdetoxInputError
from xdetox.generate import Batch, derive_seed, make_batches
from xdetox.specs import GENERATORS, PARADIGMS, DecodeSpec, LoraSpec, ModelSpec, TrainSpec
from xdetox.store import Store
from xdetox.text import is_silent
from xdetox.train import adapter_key, training_examples

STORE_FILE = "xdetox.sqlite"
LENGTH_MATCHED = "|length-matched"  # scorer-name suffix: the setting's completion cut to the shorter one
LENGTH_MATCHED_ZS = "|length-matched-zs"  # ... and ZS's completion of the same prompt, cut likewise
ADAPTERS_DIR = "adapters"
COMPLETIONS_FILE = "completions.jsonl"
VLLM_CHUNK = 64  # batches per vLLM call when generating with vLLM


@dataclass(frozen=True)
class ResourceSpec:
    """What one training setting (a Ray task) asks of the cluster; read by ``--backend ray`` only.

    Not part of a run's identity: changing it never blocks resuming a run.
    """

    num_cpus: float = 1
    num_gpus: float = 0
    memory_gb: float | None = None  # None: no memory reservation
    max_retries: int = 3  # re-runs of a setting whose worker process or node died

    def __post_init__(self):
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise XdetoxInputError(f"config [resources]: {name} must be a number >= 0, got {value!r}")
        if self.memory_gb is not None and (isinstance(self.memory_gb, bool)
                                           or not isinstance(self.memory_gb, (int, float)) or self.memory_gb <= 0):
            raise XdetoxInputError(
                f"config [resources]: memory_gb must be a positive number, got {self.memory_gb!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise XdetoxInputError(f"config [resources]: max_retries must be an integer >= 0, got {self.max_retries!r}")


@dataclass(frozen=True)
class GridConfig:
    """Everything that defines a run's results."""

    name: str = "run"
    models: tuple[ModelSpec, ...] = (ModelSpec(),)
    paradigms: tuple[str, ...] = ("zs", "x-ft")
    sources: tuple[str, ...] = ("en",)
    dpo_sources: tuple[str, ...] | None = None  # None: the same as sources
    percents: tuple[int, ...] = (10, 20, 30)
    targets: tuple[str, ...] = LANGS
    splits: tuple[str, ...] = ("test_toxic",)
    seeds: tuple[int, ...] = (42,)
    limit: int | None = None
    scorers: tuple[str, ...] = ("offline",)
    train: TrainSpec = field(default_factory=TrainSpec)
    train_by_paradigm: tuple[tuple[str, TrainSpec], ...] = ()
    """Per-paradigm training settings (``[train.x-ft]`` ...), each ``train`` with that table's values."""
    decode: DecodeSpec = field(default_factory=DecodeSpec)
    data_path: str | None = None
    measure_references: bool = True  # test_neutral perplexity + embedding analysis per setting
    resources: ResourceSpec = field(default_factory=ResourceSpec, compare=False)
    generator: str = field(default="auto", compare=False)
    """"auto" (vLLM when CUDA and vllm are present, else transformers), "transformers" or "vllm"."""

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise XdetoxInputError(f"config: unknown generator {self.generator!r}; choose from {', '.join(GENERATORS)}")
        for name in ("models", "paradigms", "targets", "splits", "seeds", "scorers"):
            if not getattr(self, name):
                raise XdetoxInputError(f"config: {name} must not be empty")
        for paradigm in self.paradigms:
            if paradigm not in PARADIGMS:
                raise XdetoxInputError(f"config: unknown paradigm {paradigm!r}; choose from {', '.join(PARADIGMS)}")
        if len(set(self.paradigms)) != len(self.paradigms):
            raise XdetoxInputError("config: paradigms are listed twice")
        for split in self.splits:
            if split not in data_mod.PROMPT_SETS:
                raise XdetoxInputError(f"config: unknown split {split!r}; choose from {', '.join(data_mod.PROMPT_SETS)}")
        for percent in self.percents:
            if not isinstance(percent, int) or not 0 < percent <= 100:
                raise XdetoxInputError(f"config: percents must be integers in 1..100, got {percent!r}")
        data_mod.check_langs(list(self.sources))
        data_mod.check_langs(list(self.dpo_sources or ()))
        data_mod.check_langs(list(self.targets))
        if self.limit is not None and self.limit < 1:
            raise XdetoxInputError(f"limit must be at least 1, got {self.limit}")
        if len(set(self.seeds)) != len(self.seeds):
            raise XdetoxInputError("config: seeds are listed twice")

    def train_for(self, paradigm: str) -> TrainSpec:
        """The training settings of a paradigm: ``[train]`` with its ``[train.<paradigm>]`` overrides."""
        return dict(self.train_by_paradigm).get(paradigm, self.train)

    def to_dict(self) -> dict:
        """What defines the results (stored in the run, compared on resume): resources and generator are not."""
        raw = asdict(self)
        raw.pop("resources")
        raw.pop("generator")
        return json.loads(json.dumps(raw))


@dataclass(frozen=True)
class TrainSetting:
    key: str
    model: ModelSpec
    spec: TrainSpec

    @property
    def label(self) -> str:
        return self.spec.label


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
            "m-ft": "M-FT", "dpo": f"{len(c.dpo_sources or c.sources)} DPO",
        }
        parts = " + ".join(per[p] for p in c.paradigms)
        n_settings = len(self.settings) // (len(c.models) * len(c.seeds))
        return (f"{len(self.evaluations)} evaluations = {len(c.models)} model(s) x {n_settings} training settings"
                f" ({parts}) x {len(c.targets)} targets x {len(c.splits)} split(s) x {len(c.seeds)} seed(s)")


# --------------------------------------------------------------------------- config files


def load_config(path: str | Path) -> GridConfig:
    """Read a TOML config; every mistake is one XdetoxInputError line."""
    path = Path(path)
    if not path.is_file():
        raise XdetoxInputError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise XdetoxInputError(f"{path}: not valid TOML: {err}") from None
    raw.setdefault("name", path.stem)
    if raw.get("data") is not None:
        data_path = (path.parent / raw["data"]).resolve()
        raw["data"] = str(data_path)
    return config_from_dict(raw, where=str(path))


def config_from_dict(raw: dict, where: str = "config") -> GridConfig:
    raw = dict(raw)
    train_raw = dict(raw.pop("train", {}))
    lora_raw = train_raw.pop("lora", {})
    decode_raw = raw.pop("decode", {})
    models_raw = raw.pop("models", ["embedded"])
    resources_raw = raw.pop("resources", {})
    if not isinstance(resources_raw, dict):
        raise XdetoxInputError(f"{where}: resources must be a table ([resources])")
    _check_keys(raw, {f.name for f in fields(GridConfig)} - {"train", "train_by_paradigm", "decode", "models", "data_path"}
                | {"data"},
                where)
    per_paradigm = {p: train_raw.pop(p) for p in PARADIGMS if p != "zs" and p in train_raw}
    _check_keys(train_raw, TRAIN_KEYS, f"{where} [train]")
    _check_keys(lora_raw, {f.name for f in fields(LoraSpec)}, f"{where} [train.lora]")
    for paradigm, table in per_paradigm.items():
        if not isinstance(table, dict):
            raise XdetoxInputError(f"{where}: train.{paradigm} must be a table ([train.{paradigm}])")
        _check_keys(table, TRAIN_KEYS | {"lora"}, f"{where} [train.{paradigm}]")
        _check_keys(table.get("lora", {}), {f.name for f in fields(LoraSpec)}, f"{where} [train.{paradigm}.lora]")
    _check_keys(decode_raw, {f.name for f in fields(DecodeSpec)}, f"{where} [decode]")
    _check_keys(resources_raw, {f.name for f in fields(ResourceSpec)}, f"{where} [resources]")
    try:
        models = tuple(_model_spec(m, where) for m in _as_list(models_raw))
        if "target_modules" in lora_raw:
            lora_raw["target_modules"] = tuple(lora_raw["target_modules"])
        decode = DecodeSpec(**decode_raw)
        train = TrainSpec(lora=LoraSpec(**lora_raw), prompt_template=decode.template, **train_raw)
        by_paradigm = tuple((p, _override(train, table)) for p, table in per_paradigm.items())
        return GridConfig(
            name=str(raw.pop("name", "run")),
            models=models,
            paradigms=tuple(_as_list(raw.pop("paradigms", GridConfig.paradigms))),
            sources=_langs(raw.pop("sources", "all")),
            dpo_sources=_langs(raw.pop("dpo_sources")) if "dpo_sources" in raw else None,
            percents=tuple(_as_list(raw.pop("percents", GridConfig.percents))),
            targets=_langs(raw.pop("targets", "all")),
            splits=tuple(_as_list(raw.pop("splits", GridConfig.splits))),
            seeds=tuple(int(s) for s in _as_list(raw.pop("seeds", GridConfig.seeds))),
            limit=raw.pop("limit", None),
            scorers=tuple(_as_list(raw.pop("scorers", GridConfig.scorers))),
            train=train,
            train_by_paradigm=by_paradigm,
            decode=decode,
            data_path=raw.pop("data", None),
            measure_references=bool(raw.pop("measure_references", True)),
            resources=ResourceSpec(**resources_raw),
            generator=str(raw.pop("generator", "auto")),
        )
    except TypeError as err:  # a value of the wrong type inside a spec
        raise XdetoxInputError(f"{where}: {err}") from None


TRAIN_KEYS = {f.name for f in fields(TrainSpec)} - {"paradigm", "source", "percent", "pool", "seed", "lora",
                                                    "prompt_template"}


def _override(train: TrainSpec, table: dict) -> TrainSpec:
    """``train`` with a per-paradigm table's values (its ``lora`` table over ``train.lora``)."""
    table = dict(table)
    lora = table.pop("lora", {})
    if "target_modules" in lora:
        lora["target_modules"] = tuple(lora["target_modules"])
    return replace(train, lora=replace(train.lora, **lora), **table)


def _check_keys(raw: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise XdetoxInputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _model_spec(value, where: str) -> ModelSpec:
    if isinstance(value, str):
        return ModelSpec(name=value)
    if isinstance(value, dict):
        _check_keys(value, {f.name for f in fields(ModelSpec)}, f"{where} models")
        return ModelSpec(**value)
    raise XdetoxInputError(f"{where}: a model is a name or a table, got {value!r}")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _langs(value) -> tuple[str, ...]:
    if value == "all":
        return LANGS
    return tuple(_as_list(value))


# --------------------------------------------------------------------------- plan


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    """Validate the config against the corpus and list what the run computes."""
    data_mod.check_langs(list(config.targets), corpus.langs)
    if any(p != "zs" for p in config.paradigms):
        data_mod.check_langs(list(config.sources), corpus.langs)
    if "dpo" in config.paradigms:
        data_mod.check_langs(list(config.dpo_sources or config.sources), corpus.langs)
    settings = []
    for model in config.models:
        for seed in config.seeds:
            for spec in training_specs(config, seed):
                if spec.paradigm == "zs":
                    key = "zs-" + _hash({"model": model.to_dict(), "seed": seed})
                else:
                    key = adapter_key(model, spec, training_examples(spec, corpus))
                settings.append(TrainSetting(key, model, spec))
    evaluations = []
    for setting in settings:
        for split in config.splits:
            for target in config.targets:
                prompts = corpus.prompts(target, split)[: config.limit]
                if not prompts:
                    raise XdetoxInputError(f"no {split} prompts for {target!r} in {corpus.name}")
                ids = tuple(p.id for p in prompts)
                key = _hash({
                    "setting": setting.key, "target": target, "split": split,
                    "decode": config.decode.to_dict(), "seed": setting.spec.seed,
                    "prompts": corpus.digest(target), "ids": ids,
                })
                evaluations.append(Evaluation(key, setting, target, split, ids))
    return Plan(config, tuple(settings), tuple(evaluations))


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
        zs = s.spec.paradigm == "zs"
        n = "-" if zs else str(len(training_examples(s.spec, corpus)))
        recipe = "-" if zs else f"{s.spec.epochs} x {s.spec.batch_size * s.spec.gradient_accumulation_steps}"
        length = "-" if zs else str(s.spec.max_length)
        rows.append((s.model.name, s.label, str(s.spec.seed), n, recipe, length, str(counts[s.key])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# --------------------------------------------------------------------------- execution


def check_runnable(config: GridConfig, here: bool = True) -> None:
    """Everything that can be refused before any work starts.

    ``here=False`` (the Ray backend): the settings run on other machines, so what this
    machine lacks (a CUDA GPU, bitsandbytes) is checked by each task where it runs; here
    only that a 4-bit model asks for a GPU.
    """
    from xdetox import models
    from xdetox.scorers.registry import check_languages, check_scorer

    for scorer in config.scorers:
        check_scorer(scorer)
        check_languages(scorer, config.targets)
    for model in config.models:
        if here:
            models.check_runnable(model)
        elif model.quantization == "nf4" and config.resources.num_gpus <= 0:
            raise XdetoxInputError(
                f"{model.name}: quantization = \"nf4\" needs a CUDA GPU per setting; ask for one with"
                " [resources] num_gpus = 1 in the config"
            )
        models.locate(model)


def execute(plan: Plan, corpus: Corpus, run_dir: Path, store: Store, progress: bool = True) -> None:
    """Run every training setting in plan order (local, in-process)."""
    for name in plan.config.scorers:  # scores of another model than today's are dropped first
        check_scorer_identity(store, name)
    session = Session()
    bar = tqdm(total=len(plan.settings), desc="settings", unit="setting", disable=not progress, position=0)
    for setting in plan.settings:
        bar.set_postfix_str(f"{setting.model.name} {setting.label} seed {setting.spec.seed}")
        start = time.perf_counter()
        run_setting(plan, setting, corpus, run_dir, store, session, progress)
        # Wall time summed over settings, so a run resumed across sessions reports its real cost.
        store.set_meta("wall_time_s", round(store.get_meta("wall_time_s", 0.0) + time.perf_counter() - start, 1))
        bar.update()
    bar.close()
    start = time.perf_counter()
    score_length_matched(plan, store, session, progress)  # pairs whose ZS came after the setting
    store.set_meta("wall_time_s", round(store.get_meta("wall_time_s", 0.0) + time.perf_counter() - start, 1))


class Session:
    """What a worker process keeps between settings: the loaded base model, its adapters, scorers."""

    def __init__(self):
        self.loaded = None
        self.peft = None
        self.scorers: dict[str, object] = {}
        self.tokenizers: dict[ModelSpec, object] = {}  # tokenizers loaded without their model
        self.vllm = None  # (ModelSpec, VLLMGenerator) of the last model generated with vLLM

    def base(self, spec: ModelSpec):
        from xdetox import models

        if self.loaded is None or self.loaded.spec != spec:
            self.loaded = self.peft = None
            gc.collect()
            self.loaded = models.load(spec)
        return self.loaded

    def tokenizer(self, spec: ModelSpec):
        """The base model's tokenizer (without loading the model when it is not loaded)."""
        if self.loaded is not None and self.loaded.spec == spec:
            return self.loaded.tokenizer
        if spec not in self.tokenizers:  # loaded once: the sweep after a Ray run asks for every evaluation
            from transformers import AutoTokenizer

            from xdetox import models

            self.tokenizers[spec] = AutoTokenizer.from_pretrained(models.locate(spec),
                                                                  trust_remote_code=spec.trust_remote_code)
        return self.tokenizers[spec]

    def model_for(self, setting: TrainSetting, adapter: Path | None):
        """The base model with the setting's adapter active (or none, for ZS)."""
        loaded = self.base(setting.model)
        if adapter is None:
            if self.peft is None:
                return loaded.model
            self.peft.base_model.disable_adapter_layers()
            return self.peft
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(loaded.model, str(adapter), adapter_name=setting.key)
        elif setting.key not in self.peft.peft_config:
            self.peft.load_adapter(str(adapter), adapter_name=setting.key)
        self.peft.base_model.enable_adapter_layers()
        self.peft.set_adapter(setting.key)
        self.peft.eval()
        return self.peft

    def vllm_for(self, spec: ModelSpec, max_lora_rank: int):
        """The vLLM engine of this base model (built once; adapters come as LoRA requests)."""
        from xdetox import models
        from xdetox.generate import VLLMGenerator

        if self.vllm is None or self.vllm[0] != spec:
            self.vllm = None
            gc.collect()
            loaded = self.base(spec)
            self.vllm = (spec, VLLMGenerator(models.locate(spec), loaded.tokenizer, max_lora_rank=max_lora_rank,
                                             generation_config=loaded.model.generation_config))
        return self.vllm[1]

    def scorer(self, name: str):
        from xdetox.scorers.registry import get_scorer

        if name not in self.scorers:
            self.scorers[name] = get_scorer(name)
        return self.scorers[name]


def run_setting(
    plan: Plan, setting: TrainSetting, corpus: Corpus, run_dir: Path, store: Store,
    session: Session, progress: bool = False,
) -> None:
    """One unit of work: train the setting's adapter if needed, generate and score its evaluations.

    The adapter is needed (and trained when its directory is missing) only while the setting
    has batches to generate or measures to take: a store whose completions are all in can be
    scored again, or resumed on another machine, without its adapters.
    """
    evaluations = plan.evaluations_of(setting)
    todo = pending_batches(plan, setting, evaluations, corpus, store, session)
    to_measure = plan.config.measure_references and not store.has_measures(setting.key)
    if todo or to_measure or store.train_setting(setting.key) is None:
        adapter = ensure_adapter(plan, setting, corpus, run_dir, store, progress)
        generate(plan, setting, todo, store, session, adapter, progress)
        if to_measure:
            measure(plan, setting, corpus, store, session, adapter)
    score(plan, [e.key for e in evaluations], store, session, progress)
    score_length_matched(plan, store, session, progress, evaluations)


def measure(plan: Plan, setting: TrainSetting, corpus: Corpus, store: Store, session: Session,
            adapter: Path | None) -> None:
    """Knowledge preservation and representation: the setting's model on the test_neutral references.

    Per target: the perplexity of its test_neutral sentences (``ppl_ref``); over all
    targets: the silhouette of the sentences' mean-pooled hidden states grouped by
    language, the language similarity matrix and a 2-D projection. Stored in one
    transaction, so a setting has all its measures or none.
    """
    from xdetox.analysis import embedding_analysis, reference_measures

    loaded = session.base(setting.model)
    if loaded.seq2seq:
        store.add_measures(setting.key, [("*", "skipped", "encoder-decoder model: no causal-LM perplexity")])
        return
    limit = plan.config.limit
    texts = {t: [p.text for p in corpus.prompts(t, "test_neutral")[:limit]] for t in plan.config.targets}
    model = session.model_for(setting, adapter)
    measures = reference_measures(model, loaded.tokenizer, texts)
    analysis = embedding_analysis(measures.embeddings)
    rows = [(lang, "ppl_ref", value) for lang, value in measures.ppl.items()]
    rows += [("*", "silhouette", analysis.silhouette), ("*", "similarity", analysis.similarity),
             ("*", "projection", analysis.projection)]
    store.add_measures(setting.key, rows)


def ensure_adapter(
    plan: Plan, setting: TrainSetting, corpus: Corpus, run_dir: Path, store: Store, progress: bool
) -> Path | None:
    """The setting's adapter, trained now unless the store (and the disk) already hold it."""
    from xdetox.train import train_adapter

    spec = setting.spec
    store.add_train_setting(
        setting.key, setting.label, setting.model.display_name, spec.paradigm, spec.source, spec.percent,
        spec.seed, spec.to_dict(),
    )
    if spec.paradigm == "zs":
        store.finish_train_setting(setting.key, None, None)
        return None
    relative = f"{ADAPTERS_DIR}/{setting.key}"
    path = run_dir / relative
    complete = (path / "adapter_model.safetensors").is_file()  # renamed into place only when done
    if not complete:
        for stale in path.parent.glob(f".{setting.key}-*"):  # a training killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            tqdm.write(f"training {setting.model.name} {setting.label} seed {spec.seed} -> {path}")
        train_adapter(setting.model, spec, corpus, path, progress=False)
        gc.collect()
    if store.train_setting(setting.key)["status"] != "done":
        store.finish_train_setting(setting.key, relative, file_sha256(path / "adapter_model.safetensors"))
    return path


def pending_batches(
    plan: Plan, setting: TrainSetting, evaluations: Iterable[Evaluation], corpus: Corpus, store: Store,
    session: Session,
) -> list[tuple[Evaluation, Batch]]:
    """Register the setting's evaluations in the store; the batches it does not hold yet."""
    decode = plan.config.decode
    todo = []
    for ev in evaluations:
        by_id = {p.id: p for p in corpus.prompts(ev.target, ev.split)}
        prompts = [by_id[i] for i in ev.prompt_ids]
        batches = make_batches(prompts, session.tokenizer(setting.model), decode)
        store.add_evaluation(ev.key, setting.key, ev.target, ev.split, decode.to_dict(), len(batches))
        done = store.done_batches(ev.key)
        todo.extend((ev, b) for b in batches if b.index not in done)
    return todo


def generate(
    plan: Plan, setting: TrainSetting, todo: list[tuple[Evaluation, Batch]], store: Store,
    session: Session, adapter: Path | None, progress: bool,
) -> None:
    """Sample these batches (``pending_batches``) with the setting's model and commit each."""
    from xdetox.generate import Generator, choose_generator

    decode = plan.config.decode
    if not todo:
        return
    seq2seq = session.base(setting.model).seq2seq
    if choose_generator(plan.config.generator, seq2seq, warn=lambda _: None) == "vllm":
        engine = session.vllm_for(setting.model, plan.config.train.lora.r)
        lora = None if adapter is None else (setting.key, adapter)
        for start in range(0, len(todo), VLLM_CHUNK):  # committed a chunk of batches at a time
            chunk = todo[start:start + VLLM_CHUNK]
            work = [(b, derive_seed(setting.spec.seed, ev.key, b.index)) for ev, b in chunk]
            for (ev, batch), completions in zip(chunk, engine.generate_batches(work, decode, lora)):
                store.add_batch(ev.key, batch.index, completions)
        return
    model = session.model_for(setting, adapter)
    generator = Generator(model, session.base(setting.model).tokenizer)
    bar = tqdm(total=len(todo), desc=f"generate {setting.label}", unit="batch", disable=not progress,
               leave=False, position=1)
    for ev, batch in todo:
        bar.set_postfix_str(ev.target)
        seed = derive_seed(setting.spec.seed, ev.key, batch.index)
        store.add_batch(ev.key, batch.index, generator.generate_batch(batch, decode, seed))
        bar.update()
    bar.close()


def score(plan: Plan, eval_keys: list[str], store: Store, session: Session, progress: bool) -> None:
    """Score every completion of these evaluations that is text with every configured scorer.

    A silent completion (empty after normalisation, or punctuation and digits only:
    ``text.is_silent``) is not text: no scorer sees it. What is scored already is skipped. Scores are committed a chunk at a time
    (the scorer's ``batch_size``, default 256), so a slow remote scorer interrupted
    half-way resumes where it stopped.
    """
    for name in plan.config.scorers:
        check_scorer_identity(store, name)
        pending = store.unscored(name, eval_keys)
        pending = pending[~pending["text"].map(is_silent)]
        if pending.empty:
            continue
        scorer = session.scorer(name)
        chunk = getattr(scorer, "batch_size", 256)
        for target, group in pending.groupby("target", sort=False):
            for start in range(0, len(group), chunk):
                part = group.iloc[start:start + chunk]
                values = scorer.score(part["text"].tolist(), target)
                store.add_scores(name, zip(part["eval_key"], part["prompt_id"], part["sample"], values))


def primary_toxicity_scorer(scorers: Iterable[str]) -> str | None:
    """The first toxicity scorer of a config: the one every headline number is read with."""
    from xdetox.scorers.registry import scorer_kind

    return next((name for name in scorers if scorer_kind(name) == "toxicity"), None)


def zs_evaluation(plan: Plan, ev: Evaluation) -> Evaluation | None:
    """The ZS evaluation that ``ev`` is compared with: same model, seed, target and split."""
    return next((z for z in plan.evaluations if z.setting.spec.paradigm == "zs"
                 and z.setting.model == ev.setting.model and z.setting.spec.seed == ev.setting.spec.seed
                 and (z.target, z.split) == (ev.target, ev.split)), None)


def score_length_matched(plan: Plan, store: Store, session: Session, progress: bool,
                         evaluations: Iterable[Evaluation] | None = None) -> None:
    """Score each tuned completion and ZS's completion of the same prompt, cut to equal length.

    Per (prompt, sample) where both are text (not ``is_silent``), both token sequences (the base
    model's tokenizer, no special tokens) are cut to the shorter one's length, decoded and
    scored by the primary toxicity scorer, as ``<scorer>|length-matched`` (the setting's)
    and ``<scorer>|length-matched-zs`` (ZS's), on the setting's evaluation. Needs both
    evaluations complete; what is scored already is skipped.
    """
    name = primary_toxicity_scorer(plan.config.scorers)
    if name is None:
        return
    check_scorer_identity(store, name)
    for ev in plan.evaluations if evaluations is None else evaluations:
        zs = None if ev.setting.spec.paradigm == "zs" else zs_evaluation(plan, ev)
        if zs is None or len(store.complete_evaluations([ev.key, zs.key])) < 2:
            continue
        pairs = store.unmatched_pairs(ev.key, zs.key, name + LENGTH_MATCHED_ZS)
        pairs = pairs[~pairs["text"].map(is_silent) & ~pairs["zs_text"].map(is_silent)]
        if pairs.empty:
            continue
        tokenizer = session.tokenizer(ev.setting.model)
        cut, cut_zs = zip(*(cut_to_shorter(tokenizer, a, b) for a, b in zip(pairs["text"], pairs["zs_text"])))
        scorer = session.scorer(name)
        chunk = getattr(scorer, "batch_size", 256)
        for start in range(0, len(pairs), chunk):
            part = pairs.iloc[start:start + chunk]
            keys = list(zip(part["prompt_id"], part["sample"]))
            ours = scorer.score(list(cut[start:start + chunk]), ev.target)
            theirs = scorer.score(list(cut_zs[start:start + chunk]), ev.target)
            store.add_scores(name + LENGTH_MATCHED, [(ev.key, p, s, v) for (p, s), v in zip(keys, ours)])
            store.add_scores(name + LENGTH_MATCHED_ZS, [(ev.key, p, s, v) for (p, s), v in zip(keys, theirs)])


def check_scorer_identity(store: Store, name: str) -> None:
    """A scorer name whose model changed since the run scored with it (a new ``offline``, say)
    would mix two instruments in one column: its old scores (and their length-matched
    derivatives) are dropped, with a line saying so, and the run scores everything again."""
    from xdetox.scorers.registry import scorer_identity

    identity = scorer_identity(name)
    key = f"scorer_identity:{name}"
    recorded = store.get_meta(key)
    if recorded == identity:
        return
    if store.has_scores(name):  # scored by another model (or before runs recorded which)
        tqdm.write(f"xdetox: scorer {name} is not the model this run scored with"
                   f" ({recorded or 'unrecorded'} -> {identity}); its scores are computed again")
        store.drop_scores([name, name + LENGTH_MATCHED, name + LENGTH_MATCHED_ZS])
    store.set_meta(key, identity)


def cut_to_shorter(tokenizer, text: str, other: str) -> tuple[str, str]:
    """Both texts cut to the token count of the shorter one (tokens of ``tokenizer``, no special tokens)."""
    a = tokenizer(text, add_special_tokens=False).input_ids
    b = tokenizer(other, add_special_tokens=False).input_ids
    n = min(len(a), len(b))
    return (tokenizer.decode(a[:n], skip_special_tokens=True).strip(),
            tokenizer.decode(b[:n], skip_special_tokens=True).strip())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, str]:
    """Library versions and device: results are promised identical only when these match."""
    import importlib.metadata as md

    import torch

    from xdetox import models

    versions = {"python": platform.python_version()}
    for pkg in ("xdetox", "torch", "transformers", "peft", "trl", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "absent"
    dev = models.device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(0)
    else:  # the CPU model and whether it computes in bf16: timings and samples depend on both
        name = f"{_cpu_model()}; {torch.get_num_threads()} threads; " + (
            "native bf16" if models.cpu_supports_bf16() else "no native bf16 (fp32)")
    return {"versions": versions, "device": f"{dev.type} ({name})",
            "dtype": str(models.resolve_dtype("auto")).removeprefix("torch.")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
