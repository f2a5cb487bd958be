"""Sampling completions for prompts: template, decoding spec, batched generation.

Determinism: prompts are split into batches by a rule that depends on the
prompts alone (stable sort by token length, then fixed-size chunks), and each
batch is sampled under its own seed, derived from (evaluation key, batch
index). A batch therefore gives the same completions whether it runs first,
last, after a crash, or on another worker (same hardware and library versions).

Rooms:

- ``batches``: ``Batch``, ``make_batches`` (the batching rule), ``completions_of``
  (new token ids -> ``Completion`` rows), ``stop_ids``, and ``BatchGenerator``, the
  one interface both backends implement: ``generate_batches(work, decode)`` yields
  the completions of each (batch, seed) in order.
- ``sampler``: ``derive_seed`` and ``NucleusSampler`` (temperature, top-k, top-p over
  the top candidates only, from its own seeded RNG).
- ``hf``: ``Generator``, the transformers backend (a causal LM's finished rows leave
  the batch and its KV cache).
- ``vllm``: ``VLLMGenerator``, the vLLM backend (one engine per base model, each
  adapter a LoRA request), and ``choose_generator``, which picks the backend; on a
  CPU the vLLM generator is skipped with a message.
"""

from xdetox.generate.batches import Batch, BatchGenerator, completions_of, make_batches, stop_ids
from xdetox.generate.hf import Generator
from xdetox.generate.sampler import NucleusSampler, derive_seed
from xdetox.generate.vllm import VLLMGenerator, choose_generator
from xdetox.specs import GENERATORS, TEMPLATE, Completion, DecodeSpec

__all__ = [
    "GENERATORS", "TEMPLATE", "Batch", "BatchGenerator", "Completion", "DecodeSpec", "Generator", "NucleusSampler",
    "VLLMGenerator", "choose_generator", "completions_of", "derive_seed", "make_batches", "stop_ids",
]
