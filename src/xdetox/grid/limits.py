"""What must fit a model's context, checked before anything is created: ``check_context``.

A model reads at most its context (``context_length``: ``max_position_embeddings`` or its
equivalent in the model's config) tokens at once. Before a run directory exists, for each model of
the plan (each model that samples: an eval setting's given one too), every prompt it will complete is
rendered in the decoding template and tokenized as the generator tokenizes it, and the longest one plus
``max_new_tokens`` must fit that context; each tuned setting's training ``max_length`` must fit it too.

A prompt that does not fit is **refused, never truncated**: one ``XdetoxInputError`` line naming the
data file, the row, the prompt's length in tokens and the context. A truncated prompt would be another
prompt than the data holds, and its completion would be scored as the continuation of a text the model
never saw whole; refusal is simpler and honest: shorten (or remove) the row, or lower ``max_new_tokens``.

Encoder-decoder models (relative positions, no fixed context) and configs that state no context are
not bounded here. Model code (transformers) is imported when the check runs.
"""

from __future__ import annotations

from xdetox.data import Corpus
from xdetox.errors import XdetoxInputError
from xdetox.grid.plan import Plan
from xdetox.specs import UNTRAINED, DecodeSpec, ModelSpec

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
"""The config attributes that state a decoder's context, in the order they are read."""


def context_length(config) -> int | None:
    """The number of positions a decoder-only model reads at once (``CONTEXT_KEYS``); None for an
    encoder-decoder model or a config that states none."""
    if getattr(config, "is_encoder_decoder", False):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in CONTEXT_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_context(plan: Plan, corpus: Corpus) -> None:
    """Refuse (one ``XdetoxInputError`` line) a plan whose longest prompt plus ``max_new_tokens``, or whose
    training ``max_length``, exceeds a model's context; see the module's docstring. ``corpus`` is the one
    the plan was made from (cleaned as its ``text_normalisation`` says)."""
    from transformers import AutoConfig, AutoTokenizer

    from xdetox import models

    config = plan.config
    for spec in dict.fromkeys(setting.generates_with for setting in plan.settings):  # each model that samples
        where = models.locate(spec)
        context = context_length(AutoConfig.from_pretrained(where, trust_remote_code=spec.trust_remote_code))
        if context is None:
            continue
        for paradigm in config.paradigms:
            train = config.train_for(paradigm)
            if paradigm not in UNTRAINED and train.max_length > context:
                raise XdetoxInputError(f"[train] max_length {train.max_length} ({paradigm}) exceeds the {context}-token"
                                       f" context of model {spec.name}; set max_length to at most {context}")
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=spec.trust_remote_code)
        prompts = {(e.target, e.split, pid) for e in plan.evaluations if e.setting.generates_with == spec
                   for pid in e.prompt_ids}
        longest = _longest_prompt(prompts, corpus, tokenizer, config.decode)
        if longest is not None:
            _check_prompt(*longest, corpus, config.data_path, spec, context, config.decode.max_new_tokens)


def _longest_prompt(prompts: set[tuple[str, str, str]], corpus: Corpus, tokenizer, decode: DecodeSpec
                    ) -> tuple[int, str, str] | None:
    """(tokens, prompt id, lang) of the longest prompt as the generator encodes it (``make_batches``), the
    first by id among equals."""
    texts = {}
    for target, split, pid in prompts:
        texts.setdefault((target, split), {p.id: p.text for p in corpus.prompts(target, split)})
    lengths = sorted((-len(tokenizer(decode.render(texts[(target, split)][pid], tokenizer),
                                     add_special_tokens=decode.add_special_tokens).input_ids), pid, target)
                     for target, split, pid in prompts)
    return (-lengths[0][0], lengths[0][1], lengths[0][2]) if lengths else None


def _check_prompt(tokens: int, pid: str, lang: str, corpus: Corpus, data_path: str | None, spec: ModelSpec,
                  context: int, budget: int) -> None:
    if tokens + budget <= context:
        return
    where = _row(corpus, data_path, pid, lang)
    if tokens >= context:
        raise XdetoxInputError(f"{where} is {tokens} tokens in the template, longer than the {context}-token context"
                               f" of model {spec.name}; shorten or remove that row (xdetox refuses, never truncates,"
                               " a prompt)")
    raise XdetoxInputError(f"{where} is {tokens} tokens in the template; with max_new_tokens {budget} it needs"
                           f" {tokens + budget} of the {context}-token context of model {spec.name}; lower"
                           f" max_new_tokens to at most {context - tokens} or shorten that row")


def _row(corpus: Corpus, data_path: str | None, pid: str, lang: str) -> str:
    """``<data file>: the prompt on row N (id ...)``: the row as data validation counts them (the file's
    records from 1); the bundled corpus by its language's file."""
    pairs = [p for p in corpus.pairs if data_path is not None or p.lang == lang]
    row = next(i for i, p in enumerate(pairs, start=1) if p.id == pid)
    name = data_path if data_path is not None else f"the bundled corpus's {lang}.jsonl"
    return f"{name}: the prompt on row {row} (id {pid})"
