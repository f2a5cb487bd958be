"""Sampling completions for prompts: template, decoding spec, batched generation.

Determinism: prompts are split into batches by a rule that depends on the
prompts alone (stable sort by token length, then fixed-size chunks), and each
batch is sampled under its own seed, derived from (evaluation key, batch
index). A batch therefore gives the same completions whether it runs first,
last, after a crash, or on another worker (same hardware and library versions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from transformers import LogitsProcessorList, TopPLogitsWarper

from xdetox.data import Prompt

TEMPLATE = "Complete the sentence: {toxic}"


@dataclass(frozen=True)
class DecodeSpec:
    """How completions are sampled (reference values by default)."""

    template: str = TEMPLATE
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0 = no top-k cut: plain nucleus sampling, as the protocol states
    max_new_tokens: int = 50
    samples_per_prompt: int = 1
    batch_size: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self, text: str) -> str:
        return self.template.format(toxic=text)


@dataclass(frozen=True)
class Completion:
    prompt_id: str
    sample: int
    prompt: str
    text: str
    n_tokens: int


@dataclass(frozen=True)
class Batch:
    index: int
    prompts: tuple[Prompt, ...]


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any JSON-able parts: independent of global RNG state."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def make_batches(prompts: list[Prompt], tokenizer, decode: DecodeSpec) -> list[Batch]:
    """Bucket prompts of similar length together (less padding), in a fixed order."""
    lengths = [len(tokenizer(decode.render(p.text)).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], prompts[i].id))
    size = max(1, decode.batch_size // max(1, decode.samples_per_prompt))
    return [
        Batch(b, tuple(prompts[i] for i in order[start:start + size]))
        for b, start in enumerate(range(0, len(order), size))
    ]


class NucleusFilter:
    """Top-p filtering equal to transformers' ``TopPLogitsWarper``, without sorting the vocabulary.

    A token is kept iff the probability mass of the tokens ranked above it is below
    ``top_p``. The nucleus almost always lies among the few hundred most likely tokens,
    so only the ``k`` best are ranked (``torch.topk`` is a partial selection); when a
    row's top-``k`` mass falls short of ``top_p`` the batch goes to transformers' own
    full-sort warper, so the kept set is the same either way.
    """

    def __init__(self, top_p: float, k: int = 256):
        self.top_p = top_p
        self.k = k
        self._full = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return scores
        k = min(self.k, scores.shape[-1])
        probs = scores.float().softmax(dim=-1)
        top_probs, top_idx = probs.topk(k, dim=-1)
        if bool((top_probs.sum(dim=-1) < self.top_p).any()):
            return self._full(input_ids, scores)
        mass_above = top_probs.cumsum(dim=-1) - top_probs
        keep = mass_above < self.top_p
        keep[:, 0] = True
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top_idx, keep)
        return scores.masked_fill(~kept, -float("inf"))


class Generator:
    """Batched, left-padded sampling with an HF causal LM (adapter chosen by the caller)."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"

    @torch.inference_mode()
    def generate_batch(self, batch: Batch, decode: DecodeSpec, seed: int) -> list[Completion]:
        texts = [decode.render(p.text) for p in batch.prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.model.device)
        torch.manual_seed(seed)
        out = self.model.generate(
            **enc,
            do_sample=True,
            temperature=decode.temperature,
            top_p=1.0,  # applied by NucleusFilter, after temperature as in transformers
            top_k=decode.top_k,
            logits_processor=LogitsProcessorList([NucleusFilter(decode.top_p)]),
            max_new_tokens=decode.max_new_tokens,
            num_return_sequences=decode.samples_per_prompt,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1]:]
        stop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        eos_ids = self.model.generation_config.eos_token_id
        stop.update(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        completions = []
        for row, tokens in enumerate(new.tolist()):
            n = next((i for i, t in enumerate(tokens) if t in stop), len(tokens))
            prompt = batch.prompts[row // decode.samples_per_prompt]
            completions.append(Completion(
                prompt_id=prompt.id,
                sample=row % decode.samples_per_prompt,
                prompt=texts[row // decode.samples_per_prompt],
                text=self.tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(),
                n_tokens=n,
            ))
        return completions

    def generate(self, prompts: list[Prompt], decode: DecodeSpec, seed: int) -> list[Completion]:
        """All prompts, batch by batch; batch i is sampled with derive_seed(seed, i)."""
        return [c for _, cs in self.iter_batches(prompts, decode, seed) for c in cs]

    def iter_batches(
        self, prompts: list[Prompt], decode: DecodeSpec, seed: int, skip: set[int] = frozenset()
    ) -> Iterator[tuple[Batch, list[Completion]]]:
        for batch in make_batches(prompts, self.tokenizer, decode):
            if batch.index not in skip:
                yield batch, self.generate_batch(batch, decode, derive_seed(seed, batch.index))
