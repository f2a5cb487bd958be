"""The grid's config: ``GridConfig`` and ``ResourceSpec``, read from a TOML file (``load_config``) or a dict.

Torch-free. A config is a TOML file (see ``configs/``)::

    name = "embedded"
    models = ["embedded"]                      # or [{name = "...", quantization = "nf4"}]
    paradigms = ["zs", "x-ft", "p-ft", "m-ft"] # and/or "dpo"
    sources = "all"        # X-FT/DPO sources, and the languages P-FT/M-FT pool
    # dpo_sources = ["en"] # DPO sources, when they differ from sources
    percents = [10, 20, 30]
    targets = "all"
    splits = ["test_toxic"]
    seeds = [42]
    scorers = ["offline-tuned"]
    # limit = 20           # first N prompts per target
    # generator = "auto"   # "transformers" or "vllm"; auto = vLLM when CUDA and vllm are present
    # data = "pairs.jsonl" # instead of the bundled corpus
    # text_normalisation = "v1"  # (default) training text and prompts cleaned (xdetox.hygiene); "none": as shipped
    [train]                # objective, epochs, learning_rate, batch_size, gradient_accumulation_steps,
                           # max_length, dpo_beta
    [train.lora]           # r, alpha, dropout, target_modules
    [train.x-ft]           # per-paradigm overrides of [train] (also p-ft, m-ft, dpo), with their own .lora
    [decode]               # template, temperature, top_p, top_k, max_new_tokens, samples_per_prompt, batch_size
    [resources]            # per setting, --backend ray only: num_cpus, num_gpus, memory_gb, max_retries

Every mistake in a config is one ``XdetoxInputError`` line.

One more way to a ``GridConfig``: ``config_from_stored`` (what a run stored with ``GridConfig.to_dict``,
read back: ``xdetox.open_run(...).config``). The flags of ``xdetox run`` and ``xdetox eval`` make theirs in
``xdetox.grid.options`` (``RunOptions``) and ``xdetox.grid.evaluate`` (``EvalOptions``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from xdetox import data as data_mod
from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError, refuse_repeats
from xdetox.given import GivenSpec
from xdetox.hygiene import DEFAULT_TEXT_NORMALISATION, check_text_normalisation
from xdetox.scorers.base import DEFAULT_TOXICITY_SCORER
from xdetox.specs import GENERATORS, PARADIGMS, DecodeSpec, LoraSpec, ModelSpec, TrainSpec, check_config_tables


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
    """Everything that defines a run's results.

    Its lists are sets: a model, paradigm, target, source, percent, split, seed or scorer given twice is
    refused (``errors.refuse_repeats``), as it would plan (or score) the same work twice."""

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
    scorers: tuple[str, ...] = (DEFAULT_TOXICITY_SCORER,)
    train: TrainSpec = field(default_factory=TrainSpec)
    train_by_paradigm: tuple[tuple[str, TrainSpec], ...] = ()
    """Per-paradigm training settings (``[train.x-ft]`` ...), each ``train`` with that table's values."""
    decode: DecodeSpec = field(default_factory=DecodeSpec)
    data_path: str | None = None
    measure_references: bool = True  # test_neutral perplexity + embedding analysis per setting
    text_normalisation: str = DEFAULT_TEXT_NORMALISATION
    """How training text and prompts are cleaned before use (``xdetox.hygiene``); "none": as the data has them."""
    resources: ResourceSpec = field(default_factory=ResourceSpec, compare=False)
    generator: str = field(default="auto", compare=False)
    """"auto" (vLLM when CUDA and vllm are present, else transformers), "transformers" or "vllm"."""
    evaluate: GivenSpec | None = None
    """The model (and adapter) the ``eval`` paradigm measures as it is (``xdetox eval``): set exactly with "eval"."""

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise XdetoxInputError(f"config: unknown generator {self.generator!r}; choose from {', '.join(GENERATORS)}")
        for name in ("models", "paradigms", "targets", "splits", "seeds", "scorers"):
            if not getattr(self, name):
                raise XdetoxInputError(f"config: {name} must not be empty")
        for paradigm in self.paradigms:
            if paradigm not in PARADIGMS:
                raise XdetoxInputError(f"config: unknown paradigm {paradigm!r}; choose from {', '.join(PARADIGMS)}")
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
        for name in ("models", "paradigms", "targets", "sources", "dpo_sources", "percents", "splits", "seeds",
                     "scorers"):  # lists are sets (errors.refuse_repeats)
            refuse_repeats(f"config: {name}", getattr(self, name) or (),
                           lambda v: v.name if isinstance(v, ModelSpec) else str(v))
        check_text_normalisation(self.text_normalisation)
        if ("eval" in self.paradigms) != isinstance(self.evaluate, GivenSpec):
            raise XdetoxInputError("config: the eval paradigm and the model it evaluates (evaluate) come together")

    def train_for(self, paradigm: str) -> TrainSpec:
        """The training settings of a paradigm: ``[train]`` with its ``[train.<paradigm>]`` overrides."""
        return dict(self.train_by_paradigm).get(paradigm, self.train)

    def to_dict(self) -> dict:
        """What defines the results (stored in the run, compared on resume): resources and generator are not.

        ``text_normalisation`` "none" is left out, as in the configs stored before it existed."""
        raw = asdict(self)
        raw.pop("resources")
        raw.pop("generator")
        if self.text_normalisation == "none":
            raw.pop("text_normalisation")
        raw["decode"] = self.decode.to_dict()  # fields added later appear only when set: older configs stay equal
        if self.evaluate is None:
            raw.pop("evaluate")
        return json.loads(json.dumps(raw))


TRAIN_KEYS = {f.name for f in fields(TrainSpec)} - {"paradigm", "source", "percent", "pool", "seed", "lora",
                                                    "prompt_template"}
"""The keys of ``[train]`` and each ``[train.<paradigm>]``: the ``TrainSpec`` fields less those a training setting
sets (paradigm, source, percent, pool, seed), ``lora`` (a table of its own) and ``prompt_template`` (``[decode]``)."""


def load_config(path: str | Path) -> GridConfig:
    """Read a TOML config; every mistake is one XdetoxInputError line."""
    path = Path(path)
    if not path.is_file():
        raise XdetoxInputError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise XdetoxInputError(f"{path}: not valid TOML: {err}") from None
    check_config_tables(raw, str(path))
    raw.setdefault("name", path.stem)
    if raw.get("data") is not None:
        raw["data"] = data_mod.data_ref(raw["data"], path.parent)  # a path relative to the config, or a hub id
    return config_from_dict(raw, where=str(path))


def config_from_dict(raw: dict, where: str = "config") -> GridConfig:
    """A ``GridConfig`` from a config file's tables (the TOML schema above), as a dict."""
    raw = dict(raw)
    train_raw = dict(raw.pop("train", {}))
    lora_raw = train_raw.pop("lora", {})
    decode_raw = raw.pop("decode", {})
    models_raw = raw.pop("models", ["embedded"])
    resources_raw = raw.pop("resources", {})
    if not isinstance(resources_raw, dict):
        raise XdetoxInputError(f"{where}: resources must be a table ([resources])")
    _check_keys(raw, {f.name for f in fields(GridConfig)} - {"train", "train_by_paradigm", "decode", "models", "data_path",
                                                             "evaluate"} | {"data"},
                where)
    per_paradigm = {p: train_raw.pop(p) for p in PARADIGMS if p not in ("zs", "eval") and p in train_raw}
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
            seeds=tuple(_as_list(raw.pop("seeds", GridConfig.seeds))),  # TrainSpec checks each seed
            limit=raw.pop("limit", None),
            scorers=tuple(_as_list(raw.pop("scorers", GridConfig.scorers))),
            train=train,
            train_by_paradigm=by_paradigm,
            decode=decode,
            data_path=raw.pop("data", None),
            measure_references=bool(raw.pop("measure_references", True)),
            text_normalisation=raw.pop("text_normalisation", DEFAULT_TEXT_NORMALISATION),
            resources=ResourceSpec(**resources_raw),
            generator=str(raw.pop("generator", "auto")),
        )
    except TypeError as err:  # a value of the wrong type inside a spec
        raise XdetoxInputError(f"{where}: {err}") from None


LEGACY_STORED = {"text_normalisation": "none"}
"""Values of the ``GridConfig`` fields a config stored by an older xdetox lacks (added later; see ``to_dict``)."""
LEGACY_STORED_TRAIN = {"sentences_per_sequence": 1}
"""The same for the stored ``TrainSpec`` tables: sentences were not packed before the field existed."""


def config_from_stored(raw: dict, where: str = "the run's stored config") -> GridConfig:
    """The ``GridConfig`` whose ``to_dict()`` is ``raw`` (a run store's meta "config"): the inverse of
    ``GridConfig.to_dict``, so ``config_from_stored(c.to_dict()) == c``.

    A key a config stored by an older xdetox lacks takes the value it had then (``LEGACY_STORED``,
    ``LEGACY_STORED_TRAIN``), any other its default; ``resources`` and ``generator``, never stored,
    take their defaults. An unknown key or a value of the wrong type is one ``XdetoxInputError`` line.
    """
    if not isinstance(raw, dict):
        raise XdetoxInputError(f"{where}: not a table, got {raw!r}")
    _check_keys(raw, {f.name for f in fields(GridConfig)} - {"resources", "generator"}, where)
    values = {**LEGACY_STORED, **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}}
    try:
        if "models" in raw:
            values["models"] = tuple(_stored_spec(ModelSpec, m, f"{where} models") for m in raw["models"])
        if "train" in raw:
            values["train"] = _stored_train(raw["train"], f"{where} train")
        if "train_by_paradigm" in raw:
            values["train_by_paradigm"] = tuple((paradigm, _stored_train(table, f"{where} train.{paradigm}"))
                                                for paradigm, table in raw["train_by_paradigm"])
        if "decode" in raw:
            values["decode"] = _stored_spec(DecodeSpec, raw["decode"], f"{where} decode")
        if "evaluate" in raw:
            values["evaluate"] = GivenSpec.from_stored(raw["evaluate"], f"{where} evaluate")
        return GridConfig(**values)
    except (TypeError, ValueError) as err:  # a value of the wrong shape, or a spec refusing its value
        raise XdetoxInputError(str(err) if str(err).startswith(where) else f"{where}: {err}") from None


def _stored_train(raw, where: str) -> TrainSpec:
    """A stored ``TrainSpec`` table (``asdict``) with its ``lora`` table."""
    raw = dict(raw) if isinstance(raw, dict) else raw
    if isinstance(raw, dict) and "lora" in raw:
        raw["lora"] = _stored_spec(LoraSpec, raw["lora"], f"{where}.lora")
    return _stored_spec(TrainSpec, raw, where, LEGACY_STORED_TRAIN)


def _stored_spec(cls, raw, where: str, legacy: Mapping = {}):
    """``cls`` from a stored table of its fields; JSON's lists back to the specs' tuples."""
    if not isinstance(raw, dict):
        raise XdetoxInputError(f"{where}: not a table, got {raw!r}")
    _check_keys(raw, {f.name for f in fields(cls)}, where)
    return cls(**{**legacy, **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}})


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
