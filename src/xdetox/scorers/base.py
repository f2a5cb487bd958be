"""What every scorer is: the ``Scorer`` protocol, its kinds, and the input checks they share.

A *scorer* has a ``name``, the ``supported_languages`` it claims, a ``kind`` (what its
numbers measure, one of ``SCORER_KINDS``) and ``score(texts, lang) -> list[float]``; an
optional ``batch_size`` tells the grid how many scores to commit at a time (and
``score_in_chunks`` how many texts to score at once); an optional ``progress``
attribute, set by the grid from its own ``progress``, lets a slow scorer draw a bar
over its inner batches (``ppl:``).

* ``toxicity``: a probability in [0, 1] that the text is toxic (offline, perspective, hf:...);
* ``fluency``: the perplexity of the text under a fixed reference model (ppl:<model>);
* ``language``: 1.0 when the text is written in the expected language, else 0.0 (lang-fidelity);
* ``relevance``: how much the text's likelihood gains from its prompt, in nats per token
  (relevance:<model>). Such a scorer sets ``needs_prompts`` and takes ``score(texts, lang, prompts)``.

Scorer classes declare ``kind`` as a class attribute, so the registry knows it without
building the scorer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.text import is_silent

SCORER_KINDS = ("toxicity", "fluency", "language", "relevance")

DEFAULT_TOXICITY_SCORER = "offline-tuned"
"""The toxicity scorer a run, ``xdetox score`` and ``xdetox scorer`` use when none is named: the
bundled scorer with the best validation figures (docs/scorers.md). It is trained on first use
(about 20 minutes on one core) and cached."""


@runtime_checkable
class Scorer(Protocol):
    """Anything that maps texts of one language to one number each (see ``kind``)."""

    name: str
    supported_languages: frozenset[str]
    kind: str

    def score(self, texts: list[str], lang: str) -> list[float]:
        """One value per text; ``lang`` is the expected language."""
        ...


def check_input(scorer: Scorer, texts: list[str], lang: str) -> None:
    """``XdetoxInputError`` for a language the scorer does not support, TypeError for a non-string."""
    if lang not in scorer.supported_languages:
        raise XdetoxInputError(
            f"scorer {scorer.name!r} does not support language {lang!r}; "
            f"supported: {', '.join(in_lang_order(scorer.supported_languages))}"
        )
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"score() needs strings, got {type(text).__name__}")


def score_in_chunks(scorer: Scorer, texts: list[str], lang: str) -> Iterator[list[tuple[str, float | None]]]:
    """``(text, value)`` for each of ``texts``, one chunk of ``scorer.batch_size`` (default 256) at a
    time; the value is None for a silent text (``text.is_silent``), which no scorer scores."""
    chunk = getattr(scorer, "batch_size", 256)
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        written = [t for t in part if not is_silent(t)]
        values = iter(scorer.score(written, lang) if written else [])
        yield [(text, None if is_silent(text) else next(values)) for text in part]


def in_lang_order(langs: Iterable[str]) -> list[str]:
    """LANGS order first, then the others alphabetically."""
    return sorted(set(langs), key=lambda lang: (LANGS.index(lang) if lang in LANGS else len(LANGS), lang))


def log_progress(progress: bool, message: str) -> None:
    """One ``[xdetox score]`` line on stderr when ``progress`` (training and caching news)."""
    if progress:
        print(f"[xdetox score] {message}", file=sys.stderr, flush=True)
