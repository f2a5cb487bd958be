"""``xdetox run``'s options as a config (``RunOptions``) and its quick-run preset (``QUICK_RUN``).

Torch-free. ``RunOptions`` has a field per flag of ``xdetox run``, with the CLI's defaults, and builds the
``GridConfig`` they make (``to_config``): a one-source grid, ZS + X-FT from ``source`` on ``targets``. The CLI
and ``xdetox.run(**options)`` both build their config here, so a flag and a keyword cannot part.

``--quick`` (``quick=True``) is a preset, all or nothing: ``QUICK_RUN``'s options set for a first run of
minutes on a CPU (an option it sets, given beside it, is refused by ``refuse_with_quick``), the reference
measures skipped, and the run written to ``QUICK_OUT`` unless told otherwise (``RunOptions.default_out``).

``xdetox eval``'s options, which take their shared defaults from ``RunOptions``, are ``EvalOptions``
(``xdetox.grid.evaluate``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from xdetox import data as data_mod
from xdetox.errors import XdetoxInputError
from xdetox.grid.config import GridConfig
from xdetox.scorers.sentences import SENTENCES_PREFIX
from xdetox.specs import DTYPES, DecodeSpec, LoraSpec, ModelSpec, TrainSpec

QUICK_RUN = {"targets": "en,de", "limit": 20, "scorer": "offline-tuned", "epochs": 1}
"""The options ``xdetox run --quick`` (``xdetox.run(quick=True)``) sets: a first run of minutes on a CPU. Given
beside ``quick`` they are refused (``refuse_with_quick``). A quick run also skips the reference measures
(``GridConfig.measure_references``) and is named ``quick``, in ``QUICK_OUT`` unless told otherwise."""
QUICK_OUT = "runs/quick"
"""A quick run's directory by default: not the default run's ``runs/<timestamp>``; run again, it resumes."""
RUN_MEASURES = ("lang-fidelity",)
"""What ``xdetox run`` and ``xdetox eval`` measure beside their toxicity scorer: the share of completions written
in the target language (seconds for a default run), so a report gives the same-language reduction beside the raw
one — a tuned model often answers in another language than the base model does."""


REMOTE_SCORERS = ("perspective",)
"""Toxicity scorers behind a rate-limited API: ``xdetox run`` does not read them by sentence too (each sentence
would be a request of its own); a config can still name ``sentences:perspective``."""


def run_scorers(scorer: str) -> tuple[str, ...]:
    """The scorers of an ``xdetox run`` or ``xdetox eval``: its toxicity scorer, the same read by sentence
    (``sentences:<scorer>``: a completion as toxic as its most toxic sentence; not for ``REMOTE_SCORERS``),
    then ``RUN_MEASURES``."""
    by_sentence = () if scorer in REMOTE_SCORERS or scorer.startswith(SENTENCES_PREFIX) else (SENTENCES_PREFIX + scorer,)
    return tuple(dict.fromkeys((scorer, *by_sentence, *RUN_MEASURES)))


def refuse_unknown_options(cls: type, options: Mapping[str, object], command: str) -> None:
    """One ``XdetoxInputError`` line naming each key of ``options`` that is no field of dataclass ``cls``
    (the options of ``command``), with the nearest names."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        near = [m for name in unknown for m in difflib.get_close_matches(name, known, n=1)]
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise XdetoxInputError(f"unknown option(s) {', '.join(map(repr, unknown))} of {command}; {hint}"
                               f"known: {', '.join(known)}")


def refuse_with_quick(given: Iterable[str]) -> None:
    """One ``XdetoxInputError`` line when an option ``QUICK_RUN`` sets is among ``given`` (options given beside
    ``quick``): the preset is all or nothing, so a quick run is always the same run."""
    given = set(given)
    clash = [name for name in QUICK_RUN if name in given]
    if clash:
        preset = " ".join(f"--{name} {value}" for name, value in QUICK_RUN.items())
        raise XdetoxInputError(f"--quick sets {preset}: leave out {', '.join('--' + name for name in clash)},"
                               " or leave out --quick and give each option yourself")


@dataclass(frozen=True)
class RunOptions:
    """The options of ``xdetox run``, one per flag (``--lora-r`` is ``lora_r``), with the CLI's defaults,
    and the ``GridConfig`` they make (``to_config``): a one-source grid, ZS + X-FT from ``source`` on
    ``targets``. The CLI and ``xdetox.run(**options)`` both build their config here.

    ``targets``: ``"all"``, ``"en,de"`` or a sequence of codes. Every other value is checked by the spec
    it becomes, when ``to_config`` builds it.

    ``quick``: the preset ``QUICK_RUN`` (``--quick``), applied here, so its options hold the preset's values.
    One of them with a value other than its default or the preset's is refused here; ``from_mapping`` (and the
    CLI) refuse one given at all.
    """

    model: str = ModelSpec.name
    data: str | os.PathLike | None = None
    source: str = TrainSpec.source
    targets: str | tuple[str, ...] = "all"
    split: str = GridConfig.splits[0]
    limit: int | None = GridConfig.limit
    epochs: int = TrainSpec.epochs
    seed: int = TrainSpec.seed
    lr: float = TrainSpec.learning_rate
    lora_r: int = LoraSpec.r
    lora_alpha: int = LoraSpec.alpha
    lora_dropout: float = LoraSpec.dropout
    train_batch_size: int = TrainSpec.batch_size
    sentences_per_sequence: int = TrainSpec.sentences_per_sequence
    text_normalisation: str = GridConfig.text_normalisation
    batch_size: int = DecodeSpec.batch_size
    max_new_tokens: int = DecodeSpec.max_new_tokens
    temperature: float = DecodeSpec.temperature
    top_p: float = DecodeSpec.top_p
    samples: int = DecodeSpec.samples_per_prompt
    dtype: str = ModelSpec.dtype
    trust_remote_code: bool = ModelSpec.trust_remote_code
    scorer: str = GridConfig.scorers[0]
    no_zs: bool = False
    quick: bool = False

    def __post_init__(self):
        if self.quick is False:
            return
        if self.quick is not True:
            raise XdetoxInputError(f"quick must be true or false, got {self.quick!r}")
        refuse_with_quick(name for name, value in QUICK_RUN.items()
                          if getattr(self, name) not in (getattr(RunOptions, name), value))
        for name, value in QUICK_RUN.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> RunOptions:
        """``RunOptions`` from keyword options; a name that is no option of ``xdetox run`` is one
        ``XdetoxInputError`` line naming it."""
        refuse_unknown_options(cls, options, "xdetox run")
        if options.get("quick") is True:
            refuse_with_quick(options)
        return cls(**options)

    def default_out(self) -> str | None:
        """The run directory when none is given: ``QUICK_OUT`` for a quick run, else None (``runs/<timestamp>``)."""
        return QUICK_OUT if self.quick else None

    def to_config(self) -> GridConfig:
        """The grid ``xdetox run`` runs with these options; a bad value is one ``XdetoxInputError`` line."""
        if self.dtype not in DTYPES:
            raise XdetoxInputError(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.data is not None and not isinstance(self.data, (str, os.PathLike)):
            raise XdetoxInputError(f"--data must be a file path, got {self.data!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)):
            raise XdetoxInputError(f"limit must be an integer, got {self.limit!r}")
        if not isinstance(self.no_zs, bool):
            raise XdetoxInputError(f"no_zs must be true or false, got {self.no_zs!r}")
        train = TrainSpec(
            paradigm="x-ft", source=self.source, epochs=self.epochs, seed=self.seed, learning_rate=self.lr,
            batch_size=self.train_batch_size, sentences_per_sequence=self.sentences_per_sequence,
            lora=LoraSpec(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout),
        )
        decode = DecodeSpec(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
            samples_per_prompt=self.samples, batch_size=self.batch_size,
        )
        return GridConfig(
            name="quick" if self.quick else "run",
            models=(ModelSpec(name=self.model, dtype=self.dtype, trust_remote_code=self.trust_remote_code),),
            paradigms=("x-ft",) if self.no_zs else ("zs", "x-ft"),
            sources=(self.source,), targets=data_mod.parse_langs(self.targets), splits=(self.split,),
            limit=self.limit, seeds=(self.seed,), scorers=run_scorers(self.scorer), train=train, decode=decode,
            data_path=data_mod.data_ref(self.data) if self.data else None,
            text_normalisation=self.text_normalisation,
            measure_references=not self.quick,  # a quick run skips them (minutes of a default run's time)
        )

