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
from transformers import LogitsProcessorList

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


class NucleusSampler:
    """Temperature + top-k + top-p sampling as a logits processor, without touching the whole vocabulary.

    The distribution is exactly transformers' (temperature, then top-k, then top-p,
    then a draw from the renormalised kept set), but a draw needs only the ``k``
    most likely tokens: ``torch.topk`` is a partial selection and the row's
    normaliser is one ``logsumexp``. A row whose top-``k`` mass falls short of
    ``top_p`` (a very flat distribution) is ranked in full instead, so the kept set
    is the same either way. The drawn token gets score 0 and every other ``-inf``,
    so the caller decodes greedily (``do_sample=False``) and never runs
    transformers' full-vocabulary sort and multinomial (which dominated sampling
    time with Gemma 3's 262k vocabulary).

    Random numbers come from the processor's own ``torch.Generator``: a batch's
    samples depend on its seed alone, not on global RNG state.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int = 0, seed: int = 0, k: int = 512):
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.k = top_k if top_k > 0 else k
        self.rng = torch.Generator().manual_seed(seed)

    def kept(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate token ids, their renormalised probabilities; 0 where top-p drops them)."""
        z = scores.float() / self.temperature
        k = min(self.k, z.shape[-1])
        if self.top_k > 0:
            top_z, top_idx = z.topk(k, dim=-1)
            probs = top_z.softmax(dim=-1)  # top-k first: the rest of the vocabulary is gone
        else:
            probs, top_idx = z.softmax(dim=-1).topk(k, dim=-1)  # fused softmax: cheaper than logsumexp
        if self.top_p < 1.0:
            short = probs.sum(dim=-1) < self.top_p
            if bool(short.any()):  # the nucleus reaches past the top k: rank those rows in full
                full_z, full_idx = z[short].sort(dim=-1, descending=True)
                full_probs = full_z.softmax(dim=-1)
                width = int(((full_probs.cumsum(-1) - full_probs) < self.top_p).sum(-1).max())
                width = max(width, k)
                pad = width - k
                top_idx = torch.nn.functional.pad(top_idx, (0, pad))
                probs = torch.nn.functional.pad(probs, (0, pad))
                top_idx[short] = full_idx[:, :width]
                probs[short] = full_probs[:, :width]
            keep = (probs.cumsum(dim=-1) - probs) < self.top_p
            keep[:, 0] = True
            probs = probs * keep
        return top_idx, probs / probs.sum(dim=-1, keepdim=True)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        idx, probs = self.kept(scores)
        pick = torch.multinomial(probs.cpu(), 1, generator=self.rng).to(idx.device)
        token = idx.gather(-1, pick)
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(-1, token, 0.0)


class Generator:
    """Batched, left-padded sampling with an HF causal or seq2seq LM (adapter chosen by the caller)."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        _contiguous_lm_head(model)

    @torch.inference_mode()
    def generate_batch(self, batch: Batch, decode: DecodeSpec, seed: int) -> list[Completion]:
        texts = [decode.render(p.text) for p in batch.prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.model.device)
        if decode.samples_per_prompt > 1:  # prompt-major rows: prompt i's samples are adjacent
            enc = {k: v.repeat_interleave(decode.samples_per_prompt, dim=0) for k, v in enc.items()}
        sampler = NucleusSampler(decode.temperature, decode.top_p, decode.top_k, seed)
        out = self.model.generate(
            **enc,
            do_sample=False,  # the sampler draws; greedy decoding just takes its token
            logits_processor=LogitsProcessorList([sampler]),
            temperature=None, top_p=None, top_k=None,
            max_new_tokens=decode.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        # A causal LM returns prompt + new tokens; an encoder-decoder returns the decoder
        # start token + new tokens.
        new = out[:, 1:] if self.model.config.is_encoder_decoder else out[:, enc["input_ids"].shape[1]:]
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


def _contiguous_lm_head(model) -> None:
    """Feed the output projection contiguous hidden states (once per model).

    At the prefill step the model slices the last position out of the hidden states,
    a non-contiguous view. Behind a PEFT wrapper, ``F.linear`` on that view took a
    batched-matmul path that materialised the 262k-row embedding once per row of
    the batch (16 x 640 x 262144 bf16 = 5 GB copied per batch, 3x slower LoRA
    generation); a contiguous input takes the plain matrix-multiply path.
    """
    head = model.get_output_embeddings()
    if head is None or getattr(head, "_xdetox_contiguous", False):
        return
    head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    head._xdetox_contiguous = True

