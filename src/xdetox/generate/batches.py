"""Prompts -> batches, new token ids -> ``Completion`` rows, and the interface every generator implements.

Prompts are split into batches by a rule that depends on the prompts alone (stable
sort by token length, then fixed-size chunks), so a batch is the same whichever
backend samples it, and whether it runs first, last or after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from xdetox.data import Prompt
from xdetox.specs import Completion, DecodeSpec


@dataclass(frozen=True)
class Batch:
    index: int
    prompts: tuple[Prompt, ...]


class BatchGenerator(Protocol):
    """What the grid samples with: the transformers ``Generator`` (``hf``) and the ``VLLMGenerator`` (``vllm``).

    The model (and adapter) is chosen when the generator is made; ``generate_batches``
    samples each (batch, seed) of ``work`` and yields its completions, in order, as soon
    as they are sampled, so a caller can commit every batch as it comes.
    """

    def generate_batches(self, work: Iterable[tuple[Batch, int]], decode: DecodeSpec) -> Iterator[list[Completion]]:
        ...


def make_batches(prompts: list[Prompt], tokenizer, decode: DecodeSpec) -> list[Batch]:
    """Bucket prompts of similar length together (less padding), in a fixed order."""
    lengths = [len(tokenizer(decode.render(p.text, tokenizer), add_special_tokens=decode.add_special_tokens).input_ids)
               for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], prompts[i].id))
    size = max(1, decode.batch_size // max(1, decode.samples_per_prompt))
    return [
        Batch(b, tuple(prompts[i] for i in order[start:start + size]))
        for b, start in enumerate(range(0, len(order), size))
    ]


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
            prompt=decode.render(prompt.text, tokenizer),
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
