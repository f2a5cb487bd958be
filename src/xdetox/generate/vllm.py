"""The vLLM backend: ``choose_generator`` (transformers or vLLM) and ``VLLMGenerator``.

With CUDA and vLLM installed, ``VLLMGenerator`` does the transformers
``Generator``'s job (same ``Completion`` rows): the base model is loaded once and
every adapter is a LoRA request on it (``with_adapter``). On a CPU, or without the
``vllm`` package, ``choose_generator`` falls back to transformers, with a message
when vLLM was asked for by name. ``vllm`` is imported only when an engine is built.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from xdetox.generate.batches import Batch, completions_of, stop_ids
from xdetox.generate.sampler import derive_seed
from xdetox.specs import GENERATORS, Completion, DecodeSpec

CHUNK = 64  # batches per vLLM call: each call's batches are yielded (and committed) together


def choose_generator(requested: str, seq2seq: bool = False,
                     warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> str:
    """"transformers" or "vllm" for a generator setting ("auto", "transformers" or "vllm").

    vLLM needs a CUDA device, the ``vllm`` package and a decoder-only model; "auto"
    takes it when all three are there. An explicit "vllm" that cannot run falls
    back to transformers and says why through ``warn``.
    """
    import torch

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
                 gpu_memory_utilization: float = 0.5, generation_config=None, chunk: int = CHUNK):
        from vllm import LLM

        self.tokenizer = tokenizer
        self.stop = stop_ids(tokenizer, generation_config)
        self.chunk = chunk
        self.max_lora_rank = max_lora_rank  # the largest LoRA rank the engine takes
        self.adapter: tuple[str, Path] | None = None  # (name, folder) of the LoRA adapter; None: the base model
        # Leave GPU memory to the training of the next adapter (same process, same GPU).
        self.llm = LLM(model=model_path, tokenizer=model_path, dtype=dtype, enable_lora=True,
                       max_lora_rank=max_lora_rank, gpu_memory_utilization=gpu_memory_utilization, seed=0)
        self._lora_ids: dict[str, int] = {}

    def with_adapter(self, name: str, path: Path) -> VLLMGenerator:
        """This engine, sampling with the LoRA adapter saved at ``path`` (the engine and adapter ids are shared)."""
        bound = copy.copy(self)
        bound.adapter = (name, Path(path))
        return bound

    def lora_request(self, name: str, path: Path):
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        return LoRARequest(name, lora_id, str(path))

    def sampling_params(self, decode: DecodeSpec, seed: int):
        from vllm import SamplingParams

        return SamplingParams(n=decode.samples_per_prompt, temperature=decode.temperature, top_p=decode.top_p,
                              top_k=decode.top_k if decode.top_k > 0 else -1,
                              max_tokens=decode.max_new_tokens, seed=seed)

    def generate_batches(self, work: Iterable[tuple[Batch, int]], decode: DecodeSpec) -> Iterator[list[Completion]]:
        """Completions of each (batch, seed), one vLLM call per ``chunk`` batches (vLLM batches within a call)."""
        work = list(work)
        lora = None if self.adapter is None else self.lora_request(*self.adapter)
        for start in range(0, len(work), self.chunk):
            yield from self._generate_chunk(work[start:start + self.chunk], decode, lora)

    def _generate_chunk(self, work: Sequence[tuple[Batch, int]], decode: DecodeSpec, lora) -> list[list[Completion]]:
        prompts, params = [], []
        for batch, seed in work:
            for place, prompt in enumerate(batch.prompts):
                text = decode.render(prompt.text, self.tokenizer)  # a chat template brings its own special tokens
                prompts.append(text if decode.add_special_tokens else
                               {"prompt_token_ids": self.tokenizer(text, add_special_tokens=False).input_ids})
                params.append(self.sampling_params(decode, derive_seed(seed, place)))
        outputs = iter(self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False))
        results = []
        for batch, _ in work:
            rows = [sample.token_ids for _ in batch.prompts for sample in next(outputs).outputs]
            results.append(completions_of(batch, decode, rows, self.tokenizer, self.stop))
        return results
