"""``xdetox eval``'s options as a run's config (``EvalOptions``): a given model measured, nothing trained.

Torch-free. ``EvalOptions`` is to ``xdetox eval`` and ``xdetox.evaluate(...)`` what ``RunOptions`` is to
``xdetox run``: a field per flag with the CLI's defaults, and the ``GridConfig`` they make (``to_config``).
An eval is a run of the same machinery with the ``eval`` paradigm, whose setting samples with the given
model (``GridConfig.evaluate``: an HF id or directory, an ``xdetox export``, or a PEFT adapter on its base)
instead of training one:

- without ``baseline``: models = (the evaluated model,), paradigms = ("eval",): its toxicity per target,
  no reduction;
- with ``baseline`` (another model spec, the base for instance): models = (baseline,), paradigms =
  ("zs", "eval"): the baseline plays ZS, so the reduction, its interval, the length-matched pairs, the
  flags and the report are a run's, the model column being the baseline's name.

The prompts are the toxic prompts of each target (``split``, default test_toxic) in the run's template,
wrapped in the tokenizer's chat template with ``chat_template`` (part of every evaluation's content key).
No reference measures are taken (they need neutral sentences, which a prompt-only set lacks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from xdetox import data as data_mod
from xdetox.errors import XdetoxInputError
from xdetox.given import resolve_given
from xdetox.grid.config import GridConfig
from xdetox.grid.options import RunOptions, refuse_unknown_options, run_scorers
from xdetox.specs import DTYPES, DecodeSpec, ModelSpec, TrainSpec


def flag(default, text: str, **argparse_options):
    """An option with its command-line flag's help ``text`` (and type, action or metavar): ``xdetox eval`` adds a
    flag per option from these (``xdetox.cli``), so an option and its flag cannot part."""
    return field(default=default, metadata={"help": text, **argparse_options})


@dataclass(frozen=True)
class EvalOptions:
    """The options of ``xdetox eval``, one per flag (``--max-new-tokens`` is ``max_new_tokens``); those it
    shares with ``xdetox run`` take its defaults (``RunOptions``).

    ``model`` None: the base model an xdetox adapter records, else the embedded model; a ``model`` directory
    that is a PEFT adapter is that adapter on its recorded base. ``adapter``: a PEFT adapter directory on
    ``model``. ``baseline``: the model whose completions are ZS (None: no reduction).
    """

    model: str | None = flag(None, "HF model id, local directory or xdetox export (default: an --adapter's recorded"
                             " base, else 'embedded'); a PEFT adapter directory is read on its base")
    adapter: str | os.PathLike | None = flag(None, "a PEFT adapter directory to apply on --model", metavar="PATH")
    baseline: str | None = flag(None, "a model (e.g. the base) whose completions play ZS: reductions against it;"
                                      " default none", metavar="MODEL")
    data: str | os.PathLike | None = flag(None, "JSONL/CSV/Parquet file, datasets directory or hub dataset id with"
                                                " lang,toxic[,neutral,id,split] (default: bundled corpus)")
    targets: str | tuple[str, ...] = flag(RunOptions.targets, "comma-separated target languages, or 'all' (default)")
    split: str = flag(RunOptions.split, f"train_toxic, test_toxic or test_neutral (default {RunOptions.split})")
    limit: int | None = flag(RunOptions.limit, "use only the first N prompts per target", type=int)
    seed: int = flag(RunOptions.seed, f"sampling seed (default {RunOptions.seed})", type=int)
    text_normalisation: str = flag(RunOptions.text_normalisation, "how prompts are cleaned: none or v1 (default"
                                   f" {RunOptions.text_normalisation}; none: the data as shipped)")
    chat_template: bool = flag(False, "wrap each prompt in the tokenizer's chat template (instruction-tuned models)",
                               action="store_true")
    batch_size: int = flag(RunOptions.batch_size, f"generation batch size (default {RunOptions.batch_size})", type=int)
    max_new_tokens: int = flag(RunOptions.max_new_tokens, f"new tokens per completion (default"
                                                          f" {RunOptions.max_new_tokens})", type=int)
    temperature: float = flag(RunOptions.temperature, f"sampling temperature (default {RunOptions.temperature:g})",
                              type=float)
    top_p: float = flag(RunOptions.top_p, f"nucleus sampling top-p (default {RunOptions.top_p:g})", type=float)
    samples: int = flag(RunOptions.samples, f"completions per prompt (default {RunOptions.samples})", type=int)
    dtype: str = flag(RunOptions.dtype, f"{', '.join(DTYPES)} (default {RunOptions.dtype})")
    trust_remote_code: bool = flag(RunOptions.trust_remote_code, "let transformers run the models' own code",
                                   action="store_true")
    scorer: str = flag(RunOptions.scorer, f"toxicity scorer (default {RunOptions.scorer})")

    def __post_init__(self):
        """The values no spec checks; the rest are checked by the specs ``to_config`` builds."""
        if self.dtype not in DTYPES:
            raise XdetoxInputError(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.data is not None and not isinstance(self.data, (str, os.PathLike)):
            raise XdetoxInputError(f"--data must be a file or directory path or a hub dataset id, got {self.data!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)):
            raise XdetoxInputError(f"limit must be an integer, got {self.limit!r}")
        if self.baseline is not None and (not isinstance(self.baseline, str) or not self.baseline.strip()):
            raise XdetoxInputError(f"--baseline must be a model name or directory, got {self.baseline!r}")
        for name in ("chat_template", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise XdetoxInputError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> EvalOptions:
        """``EvalOptions`` from keyword options; a name that is no option of ``xdetox eval`` is one
        ``XdetoxInputError`` line naming it."""
        refuse_unknown_options(cls, options, "xdetox eval")
        return cls(**options)

    def to_config(self) -> GridConfig:
        """The run ``xdetox eval`` makes of these options; every file is checked (the adapter's digest taken)
        and a bad value is one ``XdetoxInputError`` line, before anything is written."""
        given = resolve_given(self.model, self.adapter, self.dtype, self.trust_remote_code)
        baseline = None if self.baseline is None else ModelSpec(
            name=self.baseline, dtype=self.dtype, trust_remote_code=self.trust_remote_code)
        decode = DecodeSpec(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                            samples_per_prompt=self.samples, batch_size=self.batch_size,
                            chat_template=self.chat_template)
        return GridConfig(
            name="eval", models=(baseline or given.model,), paradigms=("zs", "eval") if baseline else ("eval",),
            targets=data_mod.parse_langs(self.targets), splits=(self.split,), limit=self.limit, seeds=(self.seed,),
            scorers=run_scorers(self.scorer), train=TrainSpec(seed=self.seed), decode=decode,
            data_path=data_mod.data_ref(self.data) if self.data else None, measure_references=False,
            text_normalisation=self.text_normalisation, evaluate=given,
        )
