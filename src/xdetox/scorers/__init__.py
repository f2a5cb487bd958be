"""Scorers: turn texts of one language into one number each (toxicity, fluency, language, relevance).

Rooms:

* ``base``: the ``Scorer`` protocol (``name``, ``supported_languages``, a declared ``kind``,
  ``score(texts, lang)``), ``SCORER_KINDS``, the input checks every scorer shares and
  ``score_in_chunks`` (``xdetox score``: texts scored a batch at a time, silent ones left out);
* ``registry``: name -> scorer (``get_scorer``, ``check_scorer``, ``register_scorer``, the ``hf:``
  and ``ppl:`` families), ``scorer_languages``, ``check_languages``, ``scorer_kind``,
  ``scorer_identity`` and ``scorer_validation``;
* ``offline/``: ``offline``, the bundled lexical model (``config``, ``data``, ``model``, ``scorer``,
  ``evaluate``);
* ``semantic``: ``offline-semantic``, the lexical model stacked with a multilingual-e5 head;
* ``perspective``: ``perspective``, Google's Perspective API (``PerspectiveError`` after retries);
* ``hf_classifier``: ``hf:<model>[#<label>]``, a local Hugging Face sequence classifier;
* ``perplexity``: ``ppl:<model>``, perplexity under a fixed causal LM (fluency);
* ``relevance``: ``relevance:<model>``, how much a completion gains from its prompt under a fixed
  causal LM (needs the prompts: runs only);
* ``lang_fidelity``: ``lang-fidelity``, whether a text is in its target language;
* ``sentences``: ``sentences:<toxicity scorer>``, a text as toxic as its most toxic sentence;
* ``validation``: the figures every toxicity scorer is read with, per language (cached).

The names below are importable from ``xdetox.scorers`` itself; each is loaded from its room on
first use, so importing one room (say ``xdetox.scorers.registry``) does not load the others'
libraries.  Reference perplexity and embedding analysis are not scorers: ``xdetox.analysis``.
"""

from __future__ import annotations

import importlib

ROOMS: dict[str, tuple[str, ...]] = {
    "base": ("SCORER_KINDS", "Scorer", "check_input", "score_in_chunks"),
    "registry": ("PREFIXES", "PREFLIGHT", "SCORERS", "check_languages", "check_scorer", "get_scorer",
                 "register_scorer", "scorer_identity", "scorer_kind", "scorer_languages", "scorer_validation"),
    "offline.config": ("OfflineScorerConfig",),
    "offline.data": ("TOXICITY_LANGS", "LabelledText", "TrainingSet", "heldout_hash", "paradetox_rows",
                     "split_heldout", "toxicity_corpus", "training_set"),
    "offline.model": ("CompactTfidfVectorizer", "NBScaler", "build_pipeline"),
    "offline.scorer": ("OfflineScorer",),
    "offline.evaluate": ("evaluate_offline", "format_auc_table", "format_validation"),
    "semantic": ("SemanticScorer", "SemanticScorerConfig"),
    "perspective": ("PERSPECTIVE_KEY_ENV", "PERSPECTIVE_LANGUAGES", "PerspectiveError", "PerspectiveScorer",
                    "PerspectiveSettings", "RateLimiter"),
    "hf_classifier": ("HF_PREFIX", "HFScorer", "HFScorerSpec", "toxic_label_index"),
    "perplexity": ("PPL_PREFIX", "PerplexityScorer"),  # the function perplexity: from the room (same name)
    "lang_fidelity": ("LanguageFidelityScorer",),
    "relevance": ("RELEVANCE_PREFIX", "RelevanceScorer"),
    "sentences": ("SENTENCES_PREFIX", "SentenceMaxScorer", "inner_scorer_name", "split_sentences"),
    "validation": ("validate",),
}
"""Room -> the public names it offers through the package."""
_HOME = {name: room for room, names in ROOMS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    """The public name ``name``, imported from its room on first use (PEP 562)."""
    room = _HOME.get(name)
    if room is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{room}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
