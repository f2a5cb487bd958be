"""The offline scorer's labelled texts: paradetox sentences and the bundled toxicity corpus,
normalised and cut as the model reads them, the deterministic held-out split and the weighted
training set (see the package docstring for what goes in and what stays out)."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np

from xdetox.data import load_bundled
from xdetox.scorers.offline.config import OfflineScorerConfig
from xdetox.scorers.offline.deobfuscate import deobfuscate
from xdetox.text import normalize

TOXICITY_LANGS: tuple[str, ...] = ("en", "es", "de", "zh", "ar", "hi", "ru", "am")
"""The languages of the bundled toxicity corpus (no uk)."""


@dataclass(frozen=True)
class LabelledText:
    """One normalised text with its toxicity label (1 toxic, 0 not)."""

    text: str
    label: int
    lang: str
    source: str


def model_input(text: str, config: OfflineScorerConfig) -> str:
    """What the model reads of a text: normalised, cut to ``max_chars``, then deobfuscated when
    the config says so (idempotent: a training text, already normalised and cut, passes through
    the same steps as a text to score)."""
    out = normalize(text)[: config.max_chars]
    return deobfuscate(out) if config.deobfuscate else out


def heldout_hash(text: str) -> float:
    """Position of a normalised text in [0, 1): held out when below the fraction."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def hash_slice(rows: list[LabelledText], low: float, high: float, per_lang: int) -> list[LabelledText]:
    """The rows whose ``heldout_hash`` lies in [low, high), at most ``per_lang`` per language of
    ``TOXICITY_LANGS`` (in hash order, languages in that order): a fixed sample of a fixed slice."""
    by_lang: dict[str, list[tuple[float, LabelledText]]] = {lang: [] for lang in TOXICITY_LANGS}
    for row in rows:
        if row.lang in by_lang and low <= (position := heldout_hash(row.text)) < high:
            by_lang[row.lang].append((position, row))
    return [row for mine in by_lang.values()
            for _, row in sorted(mine, key=lambda pair: pair[0])[:per_lang]]


def paradetox_rows(split: str, max_chars: int | None = None) -> list[LabelledText]:
    """The bundled paradetox split as labelled texts (toxic 1, neutral 0).

    Texts are normalised and cut to ``max_chars``.
    """
    rows = []
    for pair in load_bundled().pairs:
        if pair.split == split:
            for text, label, side in ((pair.toxic, 1, "toxic"), (pair.neutral, 0, "neutral")):
                rows.append(LabelledText(normalize(text)[:max_chars], label, pair.lang,
                                         f"paradetox/{side}"))
    return rows


def toxicity_corpus(
    drop_sources: tuple[str, ...] = (), max_chars: int | None = None
) -> list[LabelledText]:
    """The bundled toxicity corpus, normalised, cut to ``max_chars`` and cleaned.

    Cutting comes first, so two long texts with the same first ``max_chars`` characters
    count as one text (what the model sees).  Leaves out rows whose ``source`` starts with
    one of ``drop_sources``, empty texts, texts equal to any paradetox sentence (either split,
    any language), texts seen with both labels, and repeated texts (kept once).
    """
    paradetox = {
        normalize(text)[:max_chars] for pair in load_bundled().pairs for text in (pair.toxic, pair.neutral)
    }
    root = files("xdetox").joinpath("resources", "toxicity")
    rows: list[LabelledText] = []
    for lang in TOXICITY_LANGS:
        seen: dict[str, LabelledText] = {}
        conflicting: set[str] = set()
        with gzip.open(root.joinpath(f"{lang}.jsonl.gz").open("rb"), "rt", encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                source = str(record["source"])
                if drop_sources and source.startswith(drop_sources):
                    continue
                text = normalize(str(record["text"]))[:max_chars]
                if not text or text in paradetox:
                    continue
                label = int(record["label"])
                if text in seen and seen[text].label != label:
                    conflicting.add(text)
                seen.setdefault(text, LabelledText(text, label, lang, source))
        rows.extend(row for text, row in seen.items() if text not in conflicting)
    return rows


def split_heldout(
    rows: list[LabelledText], fraction: float
) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train part, held-out part), chosen by ``heldout_hash`` of the normalised text."""
    train, heldout = [], []
    for row in rows:
        (heldout if heldout_hash(row.text) < fraction else train).append(row)
    return train, heldout


def augmentation_rows(max_chars: int | None, version: int | None = None) -> list[LabelledText]:
    """The written training augmentation (``xdetox.scorers.augment``; ``version`` None: the latest) as
    labelled texts, normalised and cut to ``max_chars``; ``source`` is ``augment/<functionality>``."""
    from xdetox.scorers.augment import LATEST, SOURCE_PREFIX, augmentation_cases

    return [LabelledText(normalize(case.text)[:max_chars], int(case.toxic), case.lang,
                         f"{SOURCE_PREFIX}{case.functionality}")
            for case in augmentation_cases(version=LATEST if version is None else version)]


@dataclass
class TrainingSet:
    """Texts (normalised, truncated), labels and sample weights for the classifier."""

    texts: list[str]
    labels: np.ndarray
    weights: np.ndarray
    langs: list[str]
    sources: list[str] = field(default_factory=list)


def training_set(config: OfflineScorerConfig) -> TrainingSet:
    """paradetox train + the corpus minus its held-out part (+ the written augmentation when
    ``augment_weight`` > 0), weighted as configured, as the model reads them (``model_input``)."""
    paradetox = paradetox_rows("train", config.max_chars)
    corpus, _ = split_heldout(toxicity_corpus(config.drop_sources, config.max_chars),
                              config.heldout_fraction)
    if config.max_rows_per_lang is not None:
        kept: list[LabelledText] = []
        for lang in TOXICITY_LANGS:
            mine = sorted((r for r in corpus if r.lang == lang), key=lambda r: heldout_hash(r.text))
            kept.extend(mine[: config.max_rows_per_lang])
        corpus = kept
    counts = {lang: sum(r.lang == lang for r in corpus) for lang in TOXICITY_LANGS}
    weights = [config.paradetox_weight] * len(paradetox)
    for row in corpus:
        weights.append(config.lang_weight / counts[row.lang] if config.lang_weight else 1.0)
    rows = paradetox + corpus
    if config.augment_weight > 0:
        augmentation = augmentation_rows(config.max_chars)
        rows += augmentation
        weights += [config.augment_weight] * len(augmentation)
    return TrainingSet(
        texts=[model_input(r.text, config) for r in rows],
        labels=np.array([r.label for r in rows], dtype=np.int64),
        weights=np.array(weights, dtype=np.float64),
        langs=[r.lang for r in rows],
        sources=[r.source for r in rows],
    )
