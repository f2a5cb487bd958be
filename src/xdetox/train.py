"""Paradigms -> training texts -> a LoRA adapter on disk.

The reference objective (``neutral-lm``) fine-tunes the model as a plain causal
LM on the *neutral* rewrites of the training pairs; the toxic side is never
shown to the model. Paradigms choose which pairs:

- ``zs``   zero-shot: no training;
- ``x-ft`` cross-lingual: the train split of one source language.

Adapters are saved in PEFT format (``PeftModel.from_pretrained`` loads them)
with ``xdetox_adapter.json`` beside them: base model, data hash, every
hyper-parameter and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xdetox.data import Corpus, check_langs
from xdetox.errors import XdetoxInputError
from xdetox.models import ModelSpec

PARADIGMS = ("zs", "x-ft")
OBJECTIVES = ("neutral-lm",)
METADATA = "xdetox_adapter.json"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings; defaults are the reference values."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainSpec:
    """One training setting: which data, which objective, which optimiser."""

    paradigm: str = "x-ft"
    source: str | None = "en"
    objective: str = "neutral-lm"
    lora: LoraSpec = field(default_factory=LoraSpec)
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 8
    max_length: int = 128
    seed: int = 42

    def __post_init__(self):
        if self.paradigm not in PARADIGMS:
            raise XdetoxInputError(f"unknown paradigm {self.paradigm!r}; choose one of {', '.join(PARADIGMS)}")
        if self.objective not in OBJECTIVES:
            raise XdetoxInputError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.paradigm == "x-ft":
            if self.source is None:
                raise XdetoxInputError("x-ft needs a source language")
            check_langs([self.source])
        if self.epochs < 1:
            raise XdetoxInputError(f"--epochs must be at least 1, got {self.epochs}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return self.paradigm if self.paradigm == "zs" else f"{self.paradigm}:{self.source}"


def training_texts(spec: TrainSpec, corpus: Corpus) -> list[str]:
    """The texts the objective trains on, in a fixed order."""
    if spec.paradigm == "zs":
        return []
    check_langs([spec.source], corpus.langs)
    return corpus.train_neutrals(spec.source)


def adapter_key(model: ModelSpec, spec: TrainSpec, texts: list[str]) -> str:
    """Content key: the same base model, setting and data always give the same key."""
    blob = json.dumps(
        {"model": model.to_dict(), "train": spec.to_dict(), "data": _digest(texts)},
        sort_keys=True,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def train_adapter(
    model_spec: ModelSpec, spec: TrainSpec, corpus: Corpus, out_dir: Path, progress: bool = True
) -> Path:
    """LoRA-SFT the base model on the setting's texts; save the adapter to ``out_dir``.

    Nothing appears at ``out_dir`` until training has finished: the adapter is
    written to a temporary sibling folder and renamed into place.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from xdetox import models

    texts = training_texts(spec, corpus)
    if not texts:
        raise XdetoxInputError(f"{spec.label}: no training texts")
    loaded = models.load(model_spec, for_training=True)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=list(spec.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        config = SFTConfig(
            output_dir=str(work / "trainer"),
            num_train_epochs=spec.epochs,
            per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            max_length=spec.max_length,
            dataset_text_field="text",
            packing=False,
            seed=spec.seed,
            data_seed=spec.seed,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            gradient_checkpointing=False,
            disable_tqdm=not progress,
            use_cpu=not torch.cuda.is_available(),
            bf16=loaded.dtype == torch.bfloat16,
        )
        trainer = SFTTrainer(
            model=loaded.model,
            args=config,
            train_dataset=Dataset.from_dict({"text": texts}),
            processing_class=tokenizer,
            peft_config=lora,
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        adapter = work / "adapter"
        trainer.model.save_pretrained(adapter)
        n_tokens = sum(len(tokenizer(t).input_ids) + 1 for t in texts) * spec.epochs
        meta = {
            "base_model": model_spec.to_dict(),
            "base_model_path": loaded.path,
            "train": spec.to_dict(),
            "data_hash": _digest(texts),
            "n_texts": len(texts),
            "train_loss": result.training_loss,
            "train_seconds": round(seconds, 2),
            "train_tokens": n_tokens,
            "key": adapter_key(model_spec, spec, texts),
        }
        (adapter / METADATA).write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(adapter, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def read_metadata(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / METADATA).read_text())
