"""Scorer names -> scorers: the registry, the ``hf:``, ``ppl:`` and ``relevance:`` families, and what a name tells.

* ``"offline"``: the bundled lexical model (``scorers.offline``; every LANGS language);
* ``"offline-lexical"``: the first version of that model (``LEXICAL_V1``: no deobfuscation, no
  written augmentation), kept so that runs scored with it can be re-scored and compared;
* ``"offline-semantic"``: the lexical model stacked with a sentence-embedding head
  (``scorers.semantic``);
* ``"offline-tuned"``: the default: multilingual-e5-small with a shipped LoRA adapter, unit and
  per-language calibration (``scorers.tuned``);
* ``"perspective"``: Google's Perspective API (``scorers.perspective``; key from
  ``PERSPECTIVE_API_KEY``; not uk or am);
* ``"lang-fidelity"``: whether a text is written in its target language (``scorers.lang_fidelity``);
* ``"hf:<model id or path>[#<label>]"``: any local Hugging Face sequence classifier
  (``scorers.hf_classifier``);
* ``"ppl:<model>"``: perplexity under a fixed causal LM (``scorers.perplexity``);
* ``"relevance:<model>"``: how much a completion's likelihood under a fixed causal LM gains from
  its prompt (``scorers.relevance``; runs only: it needs the prompts);
* ``"sentences:<toxicity scorer>"``: a text as toxic as its most toxic sentence under that scorer
  (``scorers.sentences``);
* anything added with ``register_scorer``.

``check_scorer(name)`` refuses a bad name, a missing key or model before any work;
``check_languages(name, targets)`` the targets a scorer cannot score.  ``scorer_kind`` and
``scorer_languages`` read what the scorer's class declares, without building it.
``scorer_identity`` names the model behind a name, ``scorer_validation`` its cached figures.

Importing this room loads neither torch nor scikit-learn: every scorer imports its heavy
libraries when it is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from importlib.metadata import version

from xdetox.cache import cache_dir
from xdetox.errors import XdetoxInputError
from xdetox.scorers.base import SCORER_KINDS, Scorer
from xdetox.scorers.hf_classifier import HF_PREFIX, HFScorer
from xdetox.scorers.lang_fidelity import LanguageFidelityScorer
from xdetox.scorers.offline.config import LEXICAL_V1, OfflineScorerConfig
from xdetox.scorers.offline.scorer import OfflineScorer
from xdetox.scorers.perplexity import PPL_PREFIX, PerplexityScorer
from xdetox.scorers.perspective import PerspectiveScorer, PerspectiveSettings
from xdetox.scorers.relevance import RELEVANCE_PREFIX, RelevanceScorer
from xdetox.scorers.sentences import SENTENCES_PREFIX, SPLIT_VERSION, SentenceMaxScorer, inner_scorer_name
from xdetox.scorers.semantic import SemanticScorer, SemanticScorerConfig
from xdetox.scorers.tuned import TunedScorer, model_digest, shipped_dir, shipped_validation
from xdetox.scorers.validation import cached_validation, validate

SCORERS: dict[str, Callable[[], Scorer]] = {
    "offline": OfflineScorer.load,
    "offline-lexical": partial(OfflineScorer.load, LEXICAL_V1),
    "offline-semantic": SemanticScorer.load,
    "offline-tuned": TunedScorer.load,
    "perspective": PerspectiveScorer.from_env,
    "lang-fidelity": LanguageFidelityScorer,
}
"""Scorer name -> zero-argument factory (``register_scorer`` adds one).  ``hf:...`` and ``ppl:...``
(and ``relevance:...``) names are not listed: ``PREFIXES`` builds them."""

PREFLIGHT: dict[str, Callable[[], object]] = {
    "perspective": PerspectiveSettings.from_env,
}
"""Scorer name -> cheap check that ``check_scorer`` runs (raises ``XdetoxInputError``)."""

PREFIXES: dict[str, type] = {
    HF_PREFIX: HFScorer,
    PPL_PREFIX: PerplexityScorer,
    RELEVANCE_PREFIX: RelevanceScorer,
}
"""Name prefix -> the scorer class of every name with it; ``cls.checked_factory(name)`` checks
the name offline and returns its factory. (``sentences:`` names wrap another scorer: ``check_scorer``
builds them.)"""


def register_scorer(name: str, factory: Callable[[], Scorer],
                    preflight: Callable[[], object] | None = None) -> None:
    """Make ``get_scorer(name)`` call ``factory()``; ``preflight``, if given, is what ``check_scorer``
    runs first (it raises ``XdetoxInputError`` when the scorer cannot work here).

    The class behind ``factory`` (a class, a classmethod of one, or a ``functools.partial`` of
    either) should declare ``kind`` and ``supported_languages``; otherwise the scorer is built
    to learn them.
    """
    if not name or name.startswith((*PREFIXES, SENTENCES_PREFIX)):
        raise ValueError(f"cannot register scorer {name!r}: names starting with {', '.join(PREFIXES)} or "
                         f"{SENTENCES_PREFIX} are built by their family")
    SCORERS[name] = factory
    if preflight is None:
        PREFLIGHT.pop(name, None)
    else:
        PREFLIGHT[name] = preflight


def check_scorer(name: str) -> Callable[[], Scorer]:
    """The factory for ``name``, after the checks that need no loading; ``XdetoxInputError`` if bad.

    Checks: the name is registered, or an ``hf:`` name whose model and label exist offline, or a
    ``ppl:`` or ``relevance:`` name whose model is found, or a ``sentences:`` name that wraps a toxicity
    scorer that passes these checks; the registered preflight (the perspective key) passes.
    """
    if name.startswith(SENTENCES_PREFIX):
        inner = inner_scorer_name(name)
        inner_factory = check_scorer(inner)
        if (kind := scorer_kind(inner)) != "toxicity":
            raise XdetoxInputError(f"bad scorer {name!r}: {inner!r} measures {kind}, not toxicity")
        return partial(_sentence_max, name, inner_factory)
    for prefix, cls in PREFIXES.items():
        if name.startswith(prefix):
            return cls.checked_factory(name)
    factory = SCORERS.get(name)
    if factory is None:
        raise _unknown(name)
    if name in PREFLIGHT:
        PREFLIGHT[name]()
    return factory


def _sentence_max(name: str, inner_factory: Callable[[], Scorer]) -> SentenceMaxScorer:
    return SentenceMaxScorer(name, inner_factory())


def get_scorer(name: str) -> Scorer:
    """The scorer registered under ``name``; ``XdetoxInputError`` if there is none."""
    return check_scorer(name)()


def _unknown(name: str) -> XdetoxInputError:
    return XdetoxInputError(
        f"unknown scorer {name!r}; known scorers: {', '.join(sorted(SCORERS))}, "
        f"{HF_PREFIX}<model id or path>[#<label>], {PPL_PREFIX}<model> (perplexity), "
        f"{RELEVANCE_PREFIX}<model> (prompt relevance), {SENTENCES_PREFIX}<toxicity scorer> (most toxic sentence)"
    )


def _declaring_class(name: str) -> object:
    """The class behind scorer ``name``, found without checking or building anything: its
    family's class, or the class behind its registered factory (the factory itself when that is
    a plain function)."""
    if name.startswith(SENTENCES_PREFIX):
        return SentenceMaxScorer
    for prefix, cls in PREFIXES.items():
        if name.startswith(prefix):
            return cls
    factory = SCORERS.get(name)
    if factory is None:
        raise _unknown(name)
    target = getattr(factory, "func", factory)  # unwrap functools.partial
    return getattr(target, "__self__", target)  # a classmethod's class, or the class itself


def scorer_languages(name: str) -> frozenset[str]:
    """The languages scorer ``name`` accepts (after ``check_scorer``).

    Read from the ``supported_languages`` its class declares; otherwise the scorer is built and asked.
    """
    factory = check_scorer(name)
    if name.startswith(SENTENCES_PREFIX):
        return scorer_languages(inner_scorer_name(name))
    declared = getattr(_declaring_class(name), "supported_languages", None)
    if not isinstance(declared, (set, frozenset)):
        declared = factory().supported_languages
    return frozenset(declared)


def check_languages(scorer_name: str, targets: Iterable[str]) -> None:
    """``XdetoxInputError`` naming every target that scorer ``scorer_name`` cannot score."""
    supported = scorer_languages(scorer_name)
    unsupported = [lang for lang in dict.fromkeys(targets) if lang not in supported]
    if unsupported:
        raise XdetoxInputError(
            f"{scorer_name} does not support {', '.join(unsupported)}; "
            "remove them from targets or use another scorer"
        )


def scorer_kind(name: str) -> str:
    """What scorer ``name`` measures: the ``kind`` its class declares (one of ``SCORER_KINDS``).

    Needs no key and no model files (a finished run's report reads it anywhere); a scorer whose
    factory hides its class is built and asked.
    """
    kind = getattr(_declaring_class(name), "kind", None)
    if not isinstance(kind, str):
        kind = getattr(get_scorer(name), "kind", None)
    if kind not in SCORER_KINDS:
        raise XdetoxInputError(f"scorer {name!r} declares no kind; give its class kind = one of "
                               f"{', '.join(SCORER_KINDS)}")
    return kind


@lru_cache(maxsize=None)
def scorer_identity(name: str) -> str | None:
    """What a run records beside a scorer's scores: the model behind the name (None: the name says all).

    ``offline``, ``offline-lexical`` and ``offline-semantic`` are trained here, so their identity is their
    cache key (config, bundled data, format, library versions); ``offline-tuned`` ships its files, so its
    identity is their hash; ``sentences:X``'s is the splitter's version and ``X``'s identity: a run
    resumed after the model changed rescores instead of mixing two instruments in one column.
    """
    if name == "offline":
        return f"offline-lexical-{OfflineScorerConfig().key()}"
    if name == "offline-lexical":
        return f"offline-lexical-{LEXICAL_V1.key()}"
    if name == "offline-semantic":
        return f"offline-semantic-{SemanticScorerConfig().key()}"
    if name == "offline-tuned":
        return f"offline-tuned-{model_digest(shipped_dir())}"
    if name.startswith(SENTENCES_PREFIX):
        inner = inner_scorer_name(name)
        return f"sentences-{SPLIT_VERSION}-sentencex-{version('sentencex')}:{scorer_identity(inner) or inner}"
    return None


def scorer_validation(name: str, compute: bool = False) -> dict[str, dict[str, float]] | None:
    """A toxicity scorer's validation figures (``xdetox.scorers.validation``), per language.

    Cached per model identity: ``compute=False`` only reads that cache (None when the figures
    were never computed on this machine, or the scorer has no fixed identity); ``compute=True``
    computes and caches them (minutes: every paradetox test pair, the validation slice and the
    behavioural suite are scored).
    """
    if name == "offline-tuned" and (shipped := shipped_validation()) is not None:
        return shipped  # measured on the shipped files themselves when they were written
    identity = scorer_identity(name)
    if identity is None:
        return validate(get_scorer(name)) if compute else None
    path = cache_dir("scorers") / f"validation-{identity}.json"
    if not compute:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return cached_validation(get_scorer(name), path)
