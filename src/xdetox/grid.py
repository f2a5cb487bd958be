"""Plan a run (training settings x evaluations) and execute it against the store.

A *training setting* trains at most one adapter (ZS trains none); an
*evaluation* is (training setting, target language, prompt split). Every one
has a content key, so re-running the same plan on the same store skips what is
done: adapters already trained, batches already committed, completions already
scored.
"""

from __future__ import annotations

import gc
import hashlib
import json
import platform

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from xdetox import data as data_mod
from xdetox.data import LANGS, Corpus
from xdetox.errors import XdetoxInputError
from xdetox.generate import DecodeSpec, derive_seed, make_batches
from xdetox.models import ModelSpec
from xdetox.store import Store
from xdetox.train import TrainSpec, adapter_key, training_texts

STORE_FILE = "xdetox.sqlite"
ADAPTERS_DIR = "adapters"
COMPLETIONS_FILE = "completions.jsonl"


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run's results (``out`` and ``progress`` do not)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    source: str = "en"
    targets: tuple[str, ...] = LANGS
    split: str = "test_toxic"
    limit: int | None = None
    seed: int = 42
    include_zs: bool = True
    train: TrainSpec = field(default_factory=TrainSpec)
    decode: DecodeSpec = field(default_factory=DecodeSpec)
    scorer: str = "offline"
    data_path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainSetting:
    key: str
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
    config: RunConfig
    settings: tuple[TrainSetting, ...]
    evaluations: tuple[Evaluation, ...]


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_plan(config: RunConfig, corpus: Corpus) -> Plan:
    """Validate the config against the corpus and list what the run computes."""
    data_mod.check_langs(list(config.targets), corpus.langs)
    if config.limit is not None and config.limit < 1:
        raise XdetoxInputError(f"--limit must be at least 1, got {config.limit}")
    if config.split not in data_mod.PROMPT_SETS:
        raise XdetoxInputError(
            f"unknown split {config.split!r}; choose one of {', '.join(data_mod.PROMPT_SETS)}"
        )
    specs = []
    if config.include_zs:
        specs.append(replace(config.train, paradigm="zs", source=None))
    specs.append(replace(config.train, paradigm="x-ft", source=config.source, seed=config.seed))
    settings = []
    for spec in specs:
        if spec.paradigm == "zs":
            key = "zs-" + _hash(config.model.to_dict())
        else:
            key = adapter_key(config.model, spec, training_texts(spec, corpus))
        settings.append(TrainSetting(key, spec))
    evaluations = []
    for setting in settings:
        for target in config.targets:
            prompts = corpus.prompts(target, config.split)[: config.limit]
            if not prompts:
                raise XdetoxInputError(f"no {config.split} prompts for {target!r} in {corpus.name}")
            ids = tuple(p.id for p in prompts)
            key = _hash({
                "setting": setting.key, "target": target, "split": config.split,
                "decode": config.decode.to_dict(), "seed": config.seed,
                "prompts": corpus.digest(target), "ids": ids,
            })
            evaluations.append(Evaluation(key, setting, target, config.split, ids))
    return Plan(config, tuple(settings), tuple(evaluations))


def execute(plan: Plan, corpus: Corpus, run_dir: Path, store: Store, progress: bool = True) -> None:
    """Train, generate and score whatever the store does not hold yet (local, in-process)."""
    adapters = _train_all(plan, corpus, run_dir, store, progress)
    _generate_all(plan, corpus, store, adapters, progress)
    _score_all(plan, store, progress)


def _train_all(plan: Plan, corpus: Corpus, run_dir: Path, store: Store, progress: bool) -> dict[str, Path]:
    from xdetox.train import train_adapter

    adapters: dict[str, Path] = {}
    for setting in plan.settings:
        store.add_train_setting(setting.key, setting.label, setting.spec.to_dict())
        if setting.spec.paradigm == "zs":
            store.finish_train_setting(setting.key, None, None)
            continue
        path = run_dir / ADAPTERS_DIR / setting.key
        row = store.train_setting(setting.key)
        if row["status"] != "done" or not (path / "adapter_model.safetensors").is_file():
            if progress:
                tqdm.write(f"training {setting.label} ({setting.spec.epochs} epochs) -> {path}")
            train_adapter(plan.config.model, setting.spec, corpus, path, progress=progress)
            store.finish_train_setting(setting.key, str(path), _sha256(path / "adapter_model.safetensors"))
            gc.collect()
        adapters[setting.key] = path
    return adapters


def _generate_all(plan: Plan, corpus: Corpus, store: Store, adapters: dict[str, Path], progress: bool) -> None:
    from xdetox import models
    from xdetox.generate import Generator

    decode = plan.config.decode
    todo = []
    loaded = None
    for ev in plan.evaluations:
        prompts = {p.id: p for p in corpus.prompts(ev.target, ev.split)}
        prompts = [prompts[i] for i in ev.prompt_ids]
        if loaded is None:
            loaded = models.load(plan.config.model)
        batches = make_batches(prompts, loaded.tokenizer, decode)
        store.add_evaluation(
            ev.key, ev.setting.key, ev.setting.spec.paradigm, ev.setting.spec.source,
            ev.target, ev.split, decode.to_dict(), len(batches),
        )
        done = store.done_batches(ev.key)
        todo.extend((ev, b) for b in batches if b.index not in done)
    if not todo:
        return
    model = loaded.model
    peft_model = None
    bar = tqdm(total=len(todo), desc="generate", unit="batch", disable=not progress)
    for ev, batch in todo:
        bar.set_postfix_str(f"{ev.setting.label} -> {ev.target}")
        if ev.setting.spec.paradigm == "zs":
            if peft_model is None:
                gen_model = model
            else:
                peft_model.base_model.disable_adapter_layers()
                gen_model = peft_model
        else:
            peft_model = _activate(peft_model, model, ev.setting.key, adapters[ev.setting.key])
            gen_model = peft_model
        generator = Generator(gen_model, loaded.tokenizer)
        seed = derive_seed(plan.config.seed, ev.key)
        completions = generator.generate_batch(batch, decode, derive_seed(seed, batch.index))
        store.add_batch(ev.key, batch.index, completions)
        bar.update()
    bar.close()


def _activate(peft_model, base, key: str, path: Path):
    """Load an adapter into the (shared) base weights once; switch to it by name."""
    from peft import PeftModel

    if peft_model is None:
        peft_model = PeftModel.from_pretrained(base, str(path), adapter_name=key)
    elif key not in peft_model.peft_config:
        peft_model.load_adapter(str(path), adapter_name=key)
    peft_model.base_model.enable_adapter_layers()
    peft_model.set_adapter(key)
    peft_model.eval()
    return peft_model


def _score_all(plan: Plan, store: Store, progress: bool, chunk: int = 256) -> None:
    from xdetox.score import get_scorer

    pending = store.unscored(plan.config.scorer)
    if pending.empty:
        return
    scorer = get_scorer(plan.config.scorer)
    bar = tqdm(total=len(pending), desc=f"score ({scorer.name})", unit="text", disable=not progress)
    for target, group in pending.groupby("target", sort=False):
        for start in range(0, len(group), chunk):
            part = group.iloc[start:start + chunk]
            values = scorer.score(part["text"].tolist(), target)
            store.add_scores(scorer.name, zip(part["eval_key"], part["prompt_id"], part["sample"], values))
            bar.update(len(part))
    bar.close()


def _sha256(path: Path) -> str:
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
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {"versions": versions, "device": f"{dev.type} ({name})"}


