"""Paradigms -> training examples -> a LoRA adapter on disk.

Paradigms choose which parallel pairs a setting trains on:

- ``zs``   zero-shot: no training;
- ``x-ft`` cross-lingual: the train split of one source language;
- ``p-ft`` percentage: ``percent`` % of every pooled language's train pairs, a
  seeded choice per language (a fixed permutation per (seed, language), so the
  10 % set is inside the 20 % set, which is inside the 30 % set);
- ``m-ft`` multilingual: every pooled language's train pairs;
- ``dpo``  direct preference optimisation (TRL) on one source language: prompt =
  the toxic sentence in the generation template, chosen = its neutral rewrite,
  rejected = the toxic sentence itself.

Objectives say what a supervised (non-DPO) example looks like:

- ``neutral-lm`` (the reference): the model learns the *neutral* sentences as
  plain text; the toxic side is never shown. The loss covers the sentence's own
  tokens and never an end-of-text token or padding, as in the reference scripts
  (pad = EOS with ``DataCollatorForLanguageModeling(mlm=False)``, which turns
  every pad position into label -100): a model taught "a finished sentence is
  followed by the end" stops writing after the prompt, and a completion that is
  never written looks detoxified without being so. For an encoder-decoder model
  the encoder input is empty and the decoder learns the neutral text, likewise
  without its end token.
- ``rewrite``: instruction format, toxic sentence in ``REWRITE_TEMPLATE`` ->
  neutral rewrite, loss on the rewrite only; the rewrite ends with the end
  token (a rewrite has to end). DPO keeps the end token on chosen and rejected.

``end_token_trained(spec.paradigm, spec.objective)`` says which; the adapter metadata records it.

Causal LMs train ``neutral-lm`` through transformers' ``Trainer`` (as the reference;
``xdetox.neutral_lm``'s subclass runs the LM head over labelled positions only),
``rewrite`` and DPO through TRL (``SFTTrainer``, ``DPOTrainer``); encoder-decoder
models (mT5-style) through ``Seq2SeqTrainer``; all share the examples, the LoRA
config, saving and metadata (which names the trainer). Adapters are saved in PEFT
format with ``xdetox_adapter.json`` beside them (base model, data hash, every
hyper-parameter, seed, loss, time) and appear on disk only when complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from xdetox._io import content_digest, content_key
from xdetox.data import Corpus, Pair, check_langs
from xdetox.errors import XdetoxInputError
from xdetox.specs import (  # noqa: F401 (OBJECTIVES, PARADIGMS, LoraSpec: re-exported)
    OBJECTIVES,
    PARADIGMS,
    REWRITE_TEMPLATE,
    LoraSpec,
    ModelSpec,
    TrainSpec,
    end_token_trained,
)

METADATA = "xdetox_adapter.json"


@dataclass(frozen=True)
class Example:
    """One training example. ``rejected`` is set for DPO only."""

    prompt: str
    completion: str
    rejected: str | None = None


def training_pairs(spec: TrainSpec, corpus: Corpus) -> list[Pair]:
    """The parallel pairs a setting trains on, in a fixed order."""
    if spec.paradigm in ("zs", "eval"):  # untrained: ZS, and a given model or adapter
        return []
    if spec.paradigm in ("x-ft", "dpo"):
        check_langs([spec.source], corpus.langs)
        return corpus.select(spec.source, "train")
    check_langs(list(spec.pool), corpus.langs)
    pairs = []
    for lang in spec.pool:
        train = corpus.select(lang, "train")
        if spec.paradigm == "p-ft":
            order = list(range(len(train)))
            random.Random(f"p-ft:{spec.seed}:{lang}").shuffle(order)
            take = max(1, round(len(train) * spec.percent / 100))
            train = [train[i] for i in sorted(order[:take])]
        pairs.extend(train)
    return pairs


def training_examples(spec: TrainSpec, corpus: Corpus) -> list[Example]:
    """Pairs -> examples for the setting's objective (or DPO triples)."""
    pairs = training_pairs(spec, corpus)
    if spec.paradigm == "dpo":
        return [Example(spec.prompt_template.format(toxic=p.toxic), p.neutral, p.toxic) for p in pairs]
    if spec.objective == "rewrite":
        return [Example(REWRITE_TEMPLATE.format(toxic=p.toxic), p.neutral) for p in pairs]
    return [Example("", text) for text in running_text(pairs, spec.sentences_per_sequence, spec.seed)]


def running_text(pairs: list[Pair], per_sequence: int, seed: int) -> list[str]:
    """The neutral sentences as training sequences of ``per_sequence`` sentences each, joined by a space.

    1: one sentence per sequence, in the pairs' order (the reference). Above 1, each language's sentences
    are put in a seeded order (``random.Random(f"pack:{seed}:{lang}")``) and cut into runs of
    ``per_sequence`` (the last run of a language may be shorter); languages are never mixed in a sequence,
    and the sequences keep the languages' order of first appearance.
    """
    if per_sequence == 1:
        return [p.neutral for p in pairs]
    by_lang: dict[str, list[str]] = {}
    for pair in pairs:
        by_lang.setdefault(pair.lang, []).append(pair.neutral)
    sequences = []
    for lang, texts in by_lang.items():
        random.Random(f"pack:{seed}:{lang}").shuffle(texts)
        sequences.extend(" ".join(texts[i:i + per_sequence]) for i in range(0, len(texts), per_sequence))
    return sequences


def adapter_key(model: ModelSpec, spec: TrainSpec, examples: list[Example], text_normalisation: str = "none") -> str:
    """Content key: the same base model, setting, data and text normalisation always give the same key
    (``none``, the data as loaded, adds nothing: the keys of runs from before normalisation existed)."""
    parts = {"model": model.to_dict(), "train": spec.to_dict(), "data": data_digest(examples)}
    if text_normalisation != "none":
        parts["text"] = text_normalisation
    return content_key(parts)


def data_digest(examples: list[Example]) -> str:
    """sha256 of the examples, in their order (the adapter metadata's ``data_hash``)."""
    return content_digest([asdict(e) for e in examples], sort_keys=False, ensure_ascii=False)


def train_adapter(
    model_spec: ModelSpec, spec: TrainSpec, corpus: Corpus, out_dir: Path, progress: bool = True
) -> Path:
    """Train the setting's LoRA adapter and save it to ``out_dir``.

    Nothing appears at ``out_dir`` until training has finished: the adapter is
    written to a temporary sibling folder and renamed into place.
    """
    from xdetox import models

    examples = training_examples(spec, corpus)
    if not examples:
        raise XdetoxInputError(f"{spec.label}: no training examples")
    loaded = models.load(model_spec, for_training=True)
    if loaded.seq2seq and spec.paradigm == "dpo":
        raise XdetoxInputError(f"{model_spec.name}: dpo is supported for decoder-only models only")
    loaded.tokenizer.padding_side = "right"
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        trainer = make_trainer(loaded, spec, examples, work / "trainer", progress)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        adapter = work / "adapter"
        trainer.model.save_pretrained(adapter)
        meta = {
            "base_model": model_spec.to_dict(),
            "base_model_path": loaded.path,
            "train": spec.to_dict(),
            "data_hash": data_digest(examples),
            "n_examples": len(examples),
            "train_loss": result.training_loss,
            "end_token_trained": end_token_trained(spec.paradigm, spec.objective),
            "trainer": f"{type(trainer).__module__.split('.')[0]}.{type(trainer).__name__}",
            "train_seconds": round(seconds, 2),
            "train_tokens": _count_tokens(loaded.tokenizer, examples) * spec.epochs,
            "text_normalisation": corpus.text_normalisation,
            "key": adapter_key(model_spec, spec, examples, corpus.text_normalisation),
        }
        (adapter / METADATA).write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(adapter, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def make_trainer(loaded, spec: TrainSpec, examples: list[Example], work: Path, progress: bool = False):
    """The library trainer for this model kind and paradigm, ready to ``train()``.

    Prints nothing of its own (transformers' bar and its metrics printer removed); with
    ``progress``, the bar of ``progress_callback``.
    """
    from transformers import PrinterCallback

    trainer = _library_trainer(loaded, spec, examples, work)
    trainer.remove_callback(PrinterCallback)  # prints the final metrics dict on stdout, --quiet or not
    if progress:
        trainer.add_callback(progress_callback(trainer, f"train {spec.label}"))
    return trainer


def progress_callback(trainer, desc: str, position: int = 1):
    """A transformers ``TrainerCallback``: one tqdm bar over ``trainer``'s optimizer steps, the loss as postfix.

    The loss shown is the step's, summed over its gradient-accumulation micro-batches as the
    trainer would log it: what this trainer's ``training_step`` returns, read as it passes
    (the value is not touched, nor the logging strategy, so training is unchanged).
    ``leave=False``, ``position=1``: under a run's "settings" bar, gone when done.
    """
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    losses: list = []
    training_step = trainer.training_step

    def recording_step(*args, **kwargs):
        loss = training_step(*args, **kwargs)
        losses.append(loss)
        return loss

    trainer.training_step = recording_step

    class StepBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", leave=False, position=position)

        def on_step_end(self, args, state, control, **kwargs):
            if losses:
                self.bar.set_postfix_str(f"loss={sum(float(v) for v in losses):.4g}")  # drawn now: a step is slow
                losses.clear()
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return StepBar()


def _library_trainer(loaded, spec: TrainSpec, examples: list[Example], work: Path):
    import torch
    from datasets import Dataset

    common = dict(
        output_dir=str(work),
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate,
        seed=spec.seed,
        data_seed=spec.seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length" if spec.group_by_length else "random",
        disable_tqdm=True,  # the bar, if any, is progress_callback's
        use_cpu=not torch.cuda.is_available(),
        bf16=loaded.dtype == torch.bfloat16,
        fp16=loaded.dtype == torch.float16,
    )
    lora = _lora_config(loaded, spec)
    if spec.paradigm == "dpo":
        from trl import DPOConfig, DPOTrainer

        data = Dataset.from_list([
            {"prompt": e.prompt, "chosen": " " + e.completion, "rejected": " " + e.rejected} for e in examples
        ])
        config = DPOConfig(**common, beta=spec.dpo_beta, max_length=spec.max_length)
        return DPOTrainer(
            model=loaded.model, args=config, train_dataset=data,
            processing_class=loaded.tokenizer, peft_config=lora,
        )
    if loaded.seq2seq:
        from peft import get_peft_model
        from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

        tok = loaded.tokenizer
        stop = _stop_ids(loaded) if not end_token_trained(spec.paradigm, spec.objective) else set()

        def encode(e: Example) -> dict:
            enc = tok(e.prompt, truncation=True, max_length=spec.max_length)
            labels = tok(text_target=e.completion, truncation=True, max_length=spec.max_length).input_ids
            enc["labels"] = [t for t in labels if t not in stop]
            return enc

        data = Dataset.from_list([encode(e) for e in examples])
        model = get_peft_model(loaded.model, lora)
        return Seq2SeqTrainer(
            model=model, args=Seq2SeqTrainingArguments(**common), train_dataset=data,
            data_collator=DataCollatorForSeq2Seq(tok, model=model),
        )
    if spec.objective == "neutral-lm":
        # The reference's recipe: plain text through transformers' Trainer, labels = the input ids with
        # every padding position -100 (DataCollatorForLanguageModeling(mlm=False)), the token-mean loss.
        # TRL's SFTTrainer computes the same loss through a chunked fp32 LM head that on a CPU scores
        # every padding position too and takes ~80 % of a step; NeutralLMTrainer runs the LM head over
        # the labelled positions only: 3.9x TRL's examples/s (xdetox.neutral_lm says how it was measured).
        from peft import get_peft_model
        from transformers import TrainingArguments, set_seed

        from xdetox.neutral_lm import NeutralLMTrainer

        data = Dataset.from_dict({"input_ids": neutral_lm_ids(loaded, examples, spec.max_length)})
        set_seed(spec.seed)  # before the adapter's random initialisation, as SFTTrainer does
        return NeutralLMTrainer(
            model=get_peft_model(loaded.model, lora), args=TrainingArguments(**common), train_dataset=data,
            data_collator=neutral_lm_collator(loaded.tokenizer),
        )
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": e.prompt, "completion": " " + e.completion} for e in examples])
    config = SFTConfig(**common, max_length=spec.max_length, packing=False, dataset_text_field="text")
    return SFTTrainer(
        model=loaded.model, args=config, train_dataset=data,
        processing_class=loaded.tokenizer, peft_config=lora,
    )


def neutral_lm_ids(loaded, examples: list[Example], max_length: int) -> list[list[int]]:
    """Token ids of each neutral sentence (BOS kept, if the tokenizer adds one), without any stop token.

    Stop tokens are those that end a completion at generation time (EOS, padding, the
    generation config's end tokens); a tokenizer that appends EOS itself loses it here.
    """
    stop = _stop_ids(loaded)
    ids = loaded.tokenizer([e.completion for e in examples], truncation=True, max_length=max_length).input_ids
    return [[t for t in row if t not in stop] for row in ids]


def neutral_lm_collator(tokenizer):
    """The reference's batches: ids padded (right), labels = ids with every padding position -100."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def _stop_ids(loaded) -> set[int]:
    from xdetox.generate import stop_ids

    stop = stop_ids(loaded.tokenizer, loaded.model.generation_config)
    return stop - {loaded.tokenizer.bos_token_id}


def _lora_config(loaded, spec: TrainSpec):
    from peft import LoraConfig

    names = {name.rsplit(".", 1)[-1] for name, _ in loaded.model.named_modules()}
    wanted = [m for m in spec.lora.target_modules if m in names]
    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=wanted or None,  # None: peft's default for this architecture
        task_type="SEQ_2_SEQ_LM" if loaded.seq2seq else "CAUSAL_LM",
    )


def _count_tokens(tokenizer, examples: list[Example]) -> int:
    return sum(len(tokenizer(e.prompt + " " + e.completion).input_ids) + 1 for e in examples)


def read_metadata(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / METADATA).read_text())
