"""The transformers backend: ``Generator``, batched sampling with an HF causal or seq2seq LM.

Decoding a causal LM drops a row from the batch (and from its KV cache) as soon
as it has written its end token: most completions end long before
``max_new_tokens``, and a finished row would otherwise cost a full forward step
until the longest row of its batch ends. The sampler draws one uniform number per
*original* row at every step, so dropping rows does not change what the others
draw: ``Generator.generate_batch`` gives the same tokens as transformers'
``generate`` with the same ``NucleusSampler`` (tested), only faster.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator

import torch
from torch.profiler import record_function
from transformers import DynamicCache, LogitsProcessorList

from xdetox.data import Prompt
from xdetox.generate.batches import Batch, completions_of, make_batches, stop_ids
from xdetox.generate.sampler import NucleusSampler, derive_seed
from xdetox.prepack import prepacked
from xdetox.specs import Completion, DecodeSpec


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
        texts = [decode.render(p.text, self.tokenizer) for p in batch.prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True,
                             add_special_tokens=decode.add_special_tokens).to(self.model.device)
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

    def generate_batches(self, work: Iterable[tuple[Batch, int]], decode: DecodeSpec) -> Iterator[list[Completion]]:
        """Completions of each (batch, seed), one batch at a time (the ``BatchGenerator`` interface).

        The model's large linear layers multiply with prepacked weights meanwhile
        (``xdetox.prepack``: in bf16 only where that gives the same outputs bit for bit, in fp32
        within its stated tolerance).
        """
        with prepacked(self.model):
            for batch, seed in work:
                yield self.generate_batch(batch, decode, seed)

    def generate(self, prompts: list[Prompt], decode: DecodeSpec, seed: int) -> list[Completion]:
        """All prompts, batch by batch; batch i is sampled with derive_seed(seed, i)."""
        work = [(batch, derive_seed(seed, batch.index)) for batch in make_batches(prompts, self.tokenizer, decode)]
        return [c for completions in self.generate_batches(work, decode) for c in completions]


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

