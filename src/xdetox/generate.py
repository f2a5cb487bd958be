"""Sampling completions for prompts: template, decoding spec, batched generation.

Determinism: prompts are split into batches by a rule that depends on the
prompts alone (stable sort by token length, then fixed-size chunks), and each
batch is sampled under its own seed, derived from (evaluation key, batch
index). A batch therefore gives the same completions whether it runs first,
last, after a crash, or on another worker (same hardware and library versions).

Decoding a causal LM drops a row from the batch (and from its KV cache) as soon
as it has written its end token: most completions end long before
``max_new_tokens``, and a finished row would otherwise cost a full forward step
until the longest row of its batch ends. The sampler draws one uniform number per
*original* row at every step, so dropping rows does not change what the others
draw: ``Generator.generate_batch`` gives the same tokens as transformers'
``generate`` with the same ``NucleusSampler`` (tested), only faster.

With CUDA and vLLM installed, ``VLLMGenerator`` does the same job (same
``Completion`` rows): the base model is loaded once and every adapter is a LoRA
request on it. ``choose_generator`` decides; on a CPU the vLLM generator is
skipped with a message.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import record_function
from transformers import DynamicCache, LogitsProcessorList

from xdetox.data import Prompt
from xdetox.specs import GENERATORS, TEMPLATE, Completion, DecodeSpec  # noqa: F401 (re-exported)


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
    samples depend on its seed alone, not on global RNG state. Each step draws one
    uniform number per row of the original batch and picks the token by inverse CDF
    over the kept set, so a row's draw does not depend on which other rows are still
    being decoded.
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

    def draw(self, scores: torch.Tensor, rows: torch.Tensor | None = None, n_rows: int | None = None) -> torch.Tensor:
        """One sampled token id per row of ``scores``.

        ``rows`` are the rows' indices in the original batch of ``n_rows`` rows (default:
        every row, in order); one uniform number is drawn for every original row.
        """
        idx, probs = self.kept(scores)
        uniform = torch.rand(scores.shape[0] if n_rows is None else n_rows, generator=self.rng,
                             dtype=torch.float64)
        if rows is not None:
            uniform = uniform[rows.cpu()]
        probs = probs.cpu()
        pick = (probs.double().cumsum(dim=-1) < uniform.unsqueeze(-1)).sum(dim=-1)
        pick = torch.minimum(pick, (probs > 0).sum(dim=-1) - 1)  # rounding at the top end of the CDF
        return idx.gather(-1, pick.to(idx.device).unsqueeze(-1)).squeeze(-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """As a transformers logits processor: the drawn token scores 0, every other -inf."""
        token = self.draw(scores)
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(-1, token.unsqueeze(-1), 0.0)


def completions_of(batch: Batch, decode: DecodeSpec, new_tokens: Sequence[Sequence[int]], tokenizer,
                   stop: set[int]) -> list[Completion]:
    """Completion rows from the new token ids of each row (prompt-major: prompt i's samples adjacent).

    A completion ends before its first stop token.
    """
    completions = []
    for row, tokens in enumerate(new_tokens):
        tokens = list(tokens)
        n = next((i for i, t in enumerate(tokens) if t in stop), len(tokens))
        prompt = batch.prompts[row // decode.samples_per_prompt]
        completions.append(Completion(
            prompt_id=prompt.id,
            sample=row % decode.samples_per_prompt,
            prompt=decode.render(prompt.text),
            text=tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(),
            n_tokens=n,
        ))
    return completions


def stop_ids(tokenizer, generation_config) -> set[int]:
    """Token ids that end a completion: EOS (all of the generation config's) and padding."""
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos_ids = getattr(generation_config, "eos_token_id", None)
    stop.update(eos_ids if isinstance(eos_ids, list) else [eos_ids])
    return {t for t in stop if t is not None}


class Generator:
    """Batched, left-padded sampling with an HF causal or seq2seq LM (adapter chosen by the caller)."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        _contiguous_lm_head(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers 5 renames the forward argument of the KV cache, model by model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def generate_batch(self, batch: Batch, decode: DecodeSpec, seed: int) -> list[Completion]:
        texts = [decode.render(p.text) for p in batch.prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.model.device)
        if decode.samples_per_prompt > 1:  # prompt-major rows: prompt i's samples are adjacent
            enc = {k: v.repeat_interleave(decode.samples_per_prompt, dim=0) for k, v in enc.items()}
        sampler = NucleusSampler(decode.temperature, decode.top_p, decode.top_k, seed)
        stop = self.stop_ids()
        if self.model.config.is_encoder_decoder:  # returns the decoder start token + the new tokens
            new = self.hf_generate(enc, sampler, decode.max_new_tokens)[:, 1:].tolist()
        else:
            new = self.decode_rows(enc["input_ids"], enc["attention_mask"], sampler, decode.max_new_tokens, stop)
        return completions_of(batch, decode, new, self.tokenizer, stop)

    def stop_ids(self) -> set[int]:
        return stop_ids(self.tokenizer, self.model.generation_config)

    def hf_generate(self, enc, sampler: NucleusSampler, max_new_tokens: int) -> torch.Tensor:
        """transformers' ``generate`` with the sampler as the only logits processor (rows never leave)."""
        return self.model.generate(
            **enc,
            do_sample=False,  # the sampler draws; greedy decoding just takes its token
            logits_processor=LogitsProcessorList([sampler]),
            temperature=None, top_p=None, top_k=None,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def decode_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampler: NucleusSampler,
                    max_new_tokens: int, stop: set[int]) -> list[list[int]]:
        """Sample up to ``max_new_tokens`` per left-padded row; a row leaves the batch at its stop token.

        The steps of transformers' ``generate`` for a causal LM (positions from the
        attention mask, a dynamic KV cache, logits of the last position only), except
        that finished rows are removed from the batch and from the cache.
        """
        n_rows = input_ids.shape[0]
        tokens: list[list[int]] = [[] for _ in range(n_rows)]
        rows = torch.arange(n_rows, device=input_ids.device)  # original index of each live row
        stop_ids = torch.tensor(sorted(stop), device=input_ids.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = {self._cache_arg: DynamicCache(config=self.model.config)}
        with record_function("xdetox::prefill"):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **cache)
        for step in range(max_new_tokens):
            with record_function("xdetox::sample"):
                token = sampler.draw(out.logits[:, -1, :], rows, n_rows)
            for row, value in zip(rows.tolist(), token.tolist()):
                tokens[row].append(value)
            live = ~torch.isin(token, stop_ids)
            if step == max_new_tokens - 1 or not bool(live.any()):
                break
            if not bool(live.all()):
                with record_function("xdetox::drop_finished"):
                    keep = live.nonzero().squeeze(-1)
                    cache[self._cache_arg].batch_select_indices(keep)
                    rows, token, attention_mask, positions = rows[keep], token[keep], attention_mask[keep], positions[keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], dim=-1)
            positions = positions[:, -1:] + 1
            with record_function("xdetox::decode_step"):
                out = self.model(input_ids=token.unsqueeze(-1), attention_mask=attention_mask, position_ids=positions,
                                 use_cache=True, **cache)
        return tokens

    def generate(self, prompts: list[Prompt], decode: DecodeSpec, seed: int) -> list[Completion]:
        """All prompts, batch by batch; batch i is sampled with derive_seed(seed, i)."""
        return [c for _, cs in self.iter_batches(prompts, decode, seed) for c in cs]

    def iter_batches(
        self, prompts: list[Prompt], decode: DecodeSpec, seed: int, skip: set[int] = frozenset()
    ) -> Iterator[tuple[Batch, list[Completion]]]:
        for batch in make_batches(prompts, self.tokenizer, decode):
            if batch.index not in skip:
                yield batch, self.generate_batch(batch, decode, derive_seed(seed, batch.index))


def choose_generator(requested: str, seq2seq: bool = False,
                     warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> str:
    """"transformers" or "vllm" for a generator setting ("auto", "transformers" or "vllm").

    vLLM needs a CUDA device, the ``vllm`` package and a decoder-only model; "auto"
    takes it when all three are there. An explicit "vllm" that cannot run falls
    back to transformers and says why through ``warn``.
    """
    if requested not in GENERATORS:
        raise ValueError(f"unknown generator {requested!r}; choose from {', '.join(GENERATORS)}")
    if requested == "transformers":
        return requested
    reason = None
    if seq2seq:
        reason = "encoder-decoder models are generated with transformers"
    elif not torch.cuda.is_available():
        reason = "no CUDA device (vLLM runs on GPUs)"
    elif importlib.util.find_spec("vllm") is None:
        reason = "the vllm package is not installed (pip install 'xdetox[vllm]')"
    if reason is None:
        return "vllm"
    if requested == "vllm":
        warn(f"xdetox: vllm generator skipped: {reason}; generating with transformers")
    return "transformers"


class VLLMGenerator:
    """Sampling with vLLM: one engine per base model, each adapter a LoRA request (multi-LoRA).

    Same prompts, template, decoding values and ``Completion`` rows as ``Generator``;
    each prompt is sampled with its own seed, derived from its batch's seed and its
    place in the batch. vLLM's kernels and sampler differ from transformers', so the
    completions differ from ``Generator``'s (same distribution, other draws).
    """

    def __init__(self, model_path: str, tokenizer, max_lora_rank: int = 16, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.5, generation_config=None):
        from vllm import LLM

        self.tokenizer = tokenizer
        self.stop = stop_ids(tokenizer, generation_config)
        # Leave GPU memory to the training of the next adapter (same process, same GPU).
        self.llm = LLM(model=model_path, tokenizer=model_path, dtype=dtype, enable_lora=True,
                       max_lora_rank=max_lora_rank, gpu_memory_utilization=gpu_memory_utilization, seed=0)
        self._lora_ids: dict[str, int] = {}

    def lora_request(self, name: str, path: Path):
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        return LoRARequest(name, lora_id, str(path))

    def sampling_params(self, decode: DecodeSpec, seed: int):
        from vllm import SamplingParams

        return SamplingParams(n=decode.samples_per_prompt, temperature=decode.temperature, top_p=decode.top_p,
                              top_k=decode.top_k if decode.top_k > 0 else -1,
                              max_tokens=decode.max_new_tokens, seed=seed)

    def generate_batches(self, work: Sequence[tuple[Batch, int]], decode: DecodeSpec,
                         adapter: tuple[str, Path] | None = None) -> list[list[Completion]]:
        """Completions of each (batch, seed), in one vLLM call (continuous batching does the rest)."""
        prompts, params = [], []
        for batch, seed in work:
            for place, prompt in enumerate(batch.prompts):
                prompts.append(decode.render(prompt.text))
                params.append(self.sampling_params(decode, derive_seed(seed, place)))
        lora = None if adapter is None else self.lora_request(*adapter)
        outputs = iter(self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False))
        results = []
        for batch, _ in work:
            rows = [sample.token_ids for _ in batch.prompts for sample in next(outputs).outputs]
            results.append(completions_of(batch, decode, rows, self.tokenizer, self.stop))
        return results


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

