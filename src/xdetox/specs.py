"""The specs of a run: frozen, hashable dataclasses that say what to load, train and sample.

Torch-free (no torch or transformers import), so the grid, the store, the report and
the CLI can read and validate them without loading any model code. Each spec checks
its values in ``__post_init__`` and raises ``XdetoxInputError`` with one line saying
what is wrong.

- ``ModelSpec``: which model to load, and how (``models`` loads it);
- ``DecodeSpec`` and the generation ``TEMPLATE``, its bounds ``MAX_NEW_TOKENS``, ``MAX_SAMPLES_PER_PROMPT``
  and ``MAX_BATCH_SIZE`` (training batches too); ``Completion``, one sampled row
  (``generate`` samples them, ``store`` keeps them); ``GENERATORS``;
- ``LoraSpec`` and ``TrainSpec``: the paradigms (``PARADIGMS``), objectives
  (``OBJECTIVES``, ``REWRITE_TEMPLATE``) and optimiser settings (``train`` uses
  them); ``end_token_trained``: whether a setting's loss covers the end token;
  ``PARADIGM_LABELS``: how the report names each paradigm;
- ``check_config_tables``: a config file's tables are tables (the grid reads their values).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from xdetox.data import LANGS, check_langs
from xdetox.errors import XdetoxInputError

EMBEDDED = "embedded"
EMBEDDED_NAME = "google/gemma-3-270m (GGUF Q4_K_M, dequantised)"
DTYPES = ("auto", "bfloat16", "float32", "float16")
QUANTIZATIONS = (None, "nf4")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load, and how."""

    name: str = EMBEDDED
    dtype: str = "auto"
    trust_remote_code: bool = False
    quantization: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise XdetoxInputError(f"a model name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise XdetoxInputError(f"trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        if self.dtype not in DTYPES:
            raise XdetoxInputError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.quantization not in QUANTIZATIONS:
            raise XdetoxInputError(f"unknown quantization {self.quantization!r}; choose nf4 or leave it out")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def display_name(self) -> str:
        return EMBEDDED_NAME if self.name == EMBEDDED else self.name


TEMPLATE = "Complete the sentence: {toxic}"
GENERATORS = ("auto", "transformers", "vllm")
MAX_NEW_TOKENS = 8192
"""The largest token budget a completion may have (the reference's is 50): a larger one is a typo, not a plan."""
MAX_SAMPLES_PER_PROMPT = 1000
"""The most completions per prompt (the reference samples 1; toxicity-probability studies 25)."""
MAX_BATCH_SIZE = 4096
"""The largest generation or training batch (sequences at once); beyond it no machine's memory holds one."""


@dataclass(frozen=True)
class DecodeSpec:
    """How completions are sampled (reference values by default).

    Bounded above as well as below: ``max_new_tokens`` <= ``MAX_NEW_TOKENS``, ``samples_per_prompt`` <=
    ``MAX_SAMPLES_PER_PROMPT``, ``batch_size`` <= ``MAX_BATCH_SIZE`` (a value beyond is refused, naming
    the bound). Whether a prompt and its budget fit the model's context is checked once the model is
    known (``grid.limits``)."""

    template: str = TEMPLATE
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0 = no top-k cut: plain nucleus sampling, as the protocol states
    max_new_tokens: int = 50
    samples_per_prompt: int = 1
    batch_size: int = 16
    chat_template: bool = False  # each rendered prompt wrapped in the tokenizer's chat template (instruct models)

    def __post_init__(self):
        def number(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if not number(self.temperature) or self.temperature <= 0:
            raise XdetoxInputError(f"temperature must be a finite number above 0, got {self.temperature!r}")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            raise XdetoxInputError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        for name, least in (("top_k", 0), ("max_new_tokens", 1), ("samples_per_prompt", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise XdetoxInputError(f"{name} must be an integer of at least {least}, got {value!r}")
        for name, most in (("max_new_tokens", MAX_NEW_TOKENS), ("samples_per_prompt", MAX_SAMPLES_PER_PROMPT),
                           ("batch_size", MAX_BATCH_SIZE)):
            _at_most(name, getattr(self, name), most)
        if not isinstance(self.template, str) or "{toxic}" not in self.template:
            raise XdetoxInputError(f"the template must contain {{toxic}}, got {self.template!r}")
        if not isinstance(self.chat_template, bool):
            raise XdetoxInputError(f"chat_template must be true or false, got {self.chat_template!r}")

    def to_dict(self) -> dict:
        """Every field; ``chat_template`` only when set (added later: the content keys of plain prompts stay)."""
        fields = asdict(self)
        if not self.chat_template:
            del fields["chat_template"]
        return fields

    def render(self, text: str, tokenizer=None) -> str:
        """The prompt of ``text``: the template filled in, wrapped in ``tokenizer``'s chat template (as the one
        user turn, with the generation prompt) when ``chat_template``; encode it with ``add_special_tokens``."""
        prompt = self.template.format(toxic=text)
        if not self.chat_template:
            return prompt
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)

    @property
    def add_special_tokens(self) -> bool:
        """Whether encoding a rendered prompt adds the tokenizer's special tokens (a chat template has its own)."""
        return not self.chat_template


@dataclass(frozen=True)
class Completion:
    """One sampled completion of a prompt: its text without the end token, and its new tokens."""

    prompt_id: str
    sample: int
    prompt: str
    text: str
    n_tokens: int


# Known paradigms in report order; the report sorts an unknown one after these, by name.
# "eval": a given model or adapter, measured as it is (``xdetox eval``; ``GridConfig.evaluate`` says which).
PARADIGMS = ("zs", "x-ft", "p-ft", "m-ft", "dpo", "eval")
PARADIGM_LABELS = {"zs": "ZS", "x-ft": "X-FT", "p-ft": "P-FT", "m-ft": "M-FT", "dpo": "DPO", "eval": "Eval"}
UNTRAINED = ("zs", "eval")  # the paradigms that train nothing
OBJECTIVES = ("neutral-lm", "rewrite")
MAX_SEED = 2**32 - 1  # numpy.random.seed's bound (transformers.set_seed calls it), inside torch's and SQLite's
REWRITE_TEMPLATE = "Rewrite the following text so that it is not toxic: {toxic}\nRewrite:"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings; defaults are the reference values.

    ``target_modules`` names the attention projections of Llama/Gemma-style
    models; for a model that has none of them (mT5: q/k/v/o, BLOOM:
    query_key_value) peft's own default for the architecture is used.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise XdetoxInputError(f"LoRA r must be an integer of at least 1, got {self.r!r}")
        if not _positive_number(self.alpha):
            raise XdetoxInputError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0 <= self.dropout < 1):
            raise XdetoxInputError(f"LoRA dropout must be a number in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class TrainSpec:
    """One training setting: which data, which objective, which optimiser, which seed.

    ``batch_size`` is bounded by ``MAX_BATCH_SIZE`` and ``seed`` by ``MAX_SEED``; ``max_length`` must fit the
    model's context, checked once the model is known (``grid.limits``)."""

    paradigm: str = "x-ft"
    source: str | None = "en"
    percent: int | None = None
    pool: tuple[str, ...] = LANGS
    objective: str = "neutral-lm"
    lora: LoraSpec = field(default_factory=LoraSpec)
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 2  # sequences per step: 2 x 4 sentences, the tokens of the reference's 8 x 1 sentence
    gradient_accumulation_steps: int = 1
    max_length: int = 256  # tokens; 4 packed Amharic sentences reach 188
    seed: int = 42
    dpo_beta: float = 0.1
    prompt_template: str = TEMPLATE  # DPO prompts: the generation template
    # Opt-in: batches of similar length (transformers' LengthGroupedSampler) instead of random ones, so
    # little padding is computed (1.35x faster on a CPU); other batches than the reference's, so other
    # adapters. Supervised objectives only (DPO's tokenised pairs have no single length).
    group_by_length: bool = False
    # neutral-lm only: how many neutral sentences of one language make one training sequence, joined as running
    # text (a seeded grouping per language), so the model sees what follows a finished sentence. 1 is the
    # reference's one sentence per sequence; other objectives and paradigms always take 1. The default 4 (with
    # batch 2: the same optimiser steps and tokens per step as 1 x 8) keeps X-FT from en writing as much as ZS on
    # every measured target, where 1 x 8 left it more degenerate (docs/measures.md, "Training text").
    sentences_per_sequence: int = 4

    def __post_init__(self):
        if self.paradigm not in PARADIGMS:
            raise XdetoxInputError(f"unknown paradigm {self.paradigm!r}; choose one of {', '.join(PARADIGMS)}")
        if self.objective not in OBJECTIVES:
            raise XdetoxInputError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.paradigm in ("x-ft", "dpo"):
            if self.source is None:
                raise XdetoxInputError(f"{self.paradigm} needs a source language")
            check_langs([self.source])
        if self.paradigm == "p-ft" and (self.percent is None or not 0 < self.percent <= 100):
            raise XdetoxInputError(f"p-ft needs a percent in (0, 100], got {self.percent}")
        if self.paradigm in ("p-ft", "m-ft"):
            if not self.pool:
                raise XdetoxInputError(f"{self.paradigm} needs at least one pooled language")
            check_langs(list(self.pool))
        elif tuple(self.pool) != LANGS:
            # The pool means nothing to ZS, X-FT and DPO: one canonical value, so that equal training
            # has one content key (`xdetox run`'s X-FT from en is the grid's, and --reuse finds it).
            object.__setattr__(self, "pool", LANGS)
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "max_length", "sentences_per_sequence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise XdetoxInputError(f"{name} must be an integer of at least 1, got {value!r}")
        _at_most("batch_size", self.batch_size, MAX_BATCH_SIZE)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise XdetoxInputError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise XdetoxInputError(f"seed must be between 0 and {MAX_SEED} (what numpy's and torch's seeding and the"
                                   f" store accept), got {self.seed}")
        if not _positive_number(self.learning_rate):
            raise XdetoxInputError(f"learning rate must be a positive number, got {self.learning_rate!r}")
        if not _positive_number(self.dpo_beta):
            raise XdetoxInputError(f"dpo_beta must be a positive number, got {self.dpo_beta!r}")
        if not isinstance(self.group_by_length, bool):
            raise XdetoxInputError(f"group_by_length must be true or false, got {self.group_by_length!r}")
        if self.paradigm == "dpo" or self.objective != "neutral-lm":
            # one canonical value where sentences are not packed, so equal training keeps one content key
            object.__setattr__(self, "sentences_per_sequence", 1)
        if self.group_by_length and self.paradigm == "dpo":
            raise XdetoxInputError("group_by_length applies to supervised training, not dpo "
                                   "(with it in [train], set group_by_length = false in [train.dpo])")

    def to_dict(self) -> dict:
        """Every field, except ``group_by_length`` and ``sentences_per_sequence`` at their reference values
        (False, 1): added after adapters were keyed by this dict, they leave those content keys as they were."""
        fields = asdict(self)
        if not self.group_by_length:
            del fields["group_by_length"]
        if self.sentences_per_sequence == 1:
            del fields["sentences_per_sequence"]
        return fields

    @property
    def label(self) -> str:
        if self.paradigm in ("x-ft", "dpo"):
            return f"{self.paradigm}:{self.source}"
        if self.paradigm == "p-ft":
            return f"p-ft:{self.percent}%"
        return self.paradigm


CONFIG_TABLES = ("train", "decode", "resources")


def check_config_tables(raw: dict, where: str) -> None:
    """A config's tables are tables and its ``data`` a path, before any value is read from them."""
    for key in CONFIG_TABLES:
        if key in raw and not isinstance(raw[key], dict):
            raise XdetoxInputError(f"{where}: {key} must be a table ([{key}]), got {raw[key]!r}")
    train = raw.get("train", {})
    for name, table in [("train", train)] + [(f"train.{p}", train.get(p)) for p in PARADIGMS]:
        if isinstance(table, dict) and "lora" in table and not isinstance(table["lora"], dict):
            raise XdetoxInputError(f"{where}: {name}.lora must be a table ([{name}.lora]), got {table['lora']!r}")
    if raw.get("data") is not None and not isinstance(raw["data"], str):
        raise XdetoxInputError(f"{where}: data must be a file path, got {raw['data']!r}")


def _at_most(name: str, value: int, most: int) -> None:
    """Refuse a (checked) integer above its documented bound, naming the bound."""
    if value > most:
        raise XdetoxInputError(f"{name} must be at most {most} (xdetox's bound), got {value}")


def _positive_number(value) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def end_token_trained(paradigm: str, objective: str) -> bool:
    """Whether a setting's loss covers the end-of-text token (``neutral-lm``: never; rewrite and DPO: yes)."""
    return paradigm == "dpo" or objective == "rewrite"
