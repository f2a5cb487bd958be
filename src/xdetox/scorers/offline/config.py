"""What the offline scorer is trained on, and how: ``OfflineScorerConfig``; its ``key()`` names
the cache file and, through ``scorers.registry.scorer_identity``, the model a run scored with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib.resources import files

from xdetox.errors import XdetoxInputError

FORMAT_VERSION = 3
"""Bump when the training procedure changes: old caches then miss, and runs scored with the old
model score again.  (A cache whose pickled classes moved fails to load and is rebuilt in place.)"""


LEGACY_DEFAULTS = {"deobfuscate": False, "augment_weight": 0.0}
"""Fields added after the first model, at the value that reproduces it: a config with these
values has the key it had before they existed, so ``LEXICAL_V1`` still names the cache and the
scorer identity runs recorded with the first model."""


@dataclass(frozen=True)
class OfflineScorerConfig:
    """What the offline scorer is trained on, and how.  ``key()`` names its cache file."""

    drop_sources: tuple[str, ...] = ()
    """Prefixes of the corpus ``source`` field to leave out, e.g. ``"modelfront/"``."""
    heldout_fraction: float = 0.2
    """Share of each language's corpus texts kept out of training for ``evaluate_offline``."""
    ngram_range: tuple[int, int] = (1, 5)
    min_df: int = 2
    max_chars: int = 1000
    nb_alpha: float = 1.0
    """Smoothing of the naive-Bayes log-count ratios."""
    C: float = 3.0
    """Inverse L2 strength of the logistic regression."""
    paradetox_weight: float = 20.0
    """Sample weight of one paradetox train sentence."""
    lang_weight: float = 10_000.0
    """Total sample weight of one language's corpus rows (0: every row weighs 1)."""
    max_rows_per_lang: int | None = None
    """Keep at most this many corpus training rows per language (for quick tests)."""
    deobfuscate: bool = True
    """Undo spread-out, leet, look-alike and stretched spellings before the model reads a text
    (``deobfuscate``), at training and at scoring time."""
    augment_weight: float = 0.0
    """Sample weight of one row of the written training augmentation (``xdetox.scorers.augment``:
    threats, dehumanisation, negated and quoted insults, greetings...); 0 leaves it out."""

    def __post_init__(self) -> None:
        if isinstance(self.drop_sources, str):
            raise XdetoxInputError("drop_sources must be a tuple of prefixes, not one string")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise XdetoxInputError(
                f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}"
            )
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise XdetoxInputError(f"bad ngram_range {self.ngram_range}")
        if self.max_rows_per_lang is not None and self.max_rows_per_lang < 1:
            raise XdetoxInputError("max_rows_per_lang must be at least 1")
        if self.augment_weight < 0:
            raise XdetoxInputError(f"augment_weight must be at least 0, got {self.augment_weight}")

    def key(self) -> str:
        """16 hex digits over this config, the bundled data (and the augmentation it trains on), the format
        and sklearn."""
        import sklearn

        config = asdict(self)
        for name, legacy in LEGACY_DEFAULTS.items():  # fields added later: absent at their old value
            if config[name] == legacy:
                del config[name]
        fields = {"config": config, "data": data_digest(), "format": FORMAT_VERSION, "sklearn": sklearn.__version__}
        if self.augment_weight > 0:  # trained on the written augmentation: its cases are part of the data
            from xdetox.scorers.augment import augmentation_digest

            fields["augment"] = augmentation_digest()
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def data_digest() -> str:
    """sha256 over the bundled paradetox and toxicity files (their bytes)."""
    digest = hashlib.sha256()
    root = files("xdetox").joinpath("resources")
    for folder in ("paradetox", "toxicity"):
        for entry in sorted(root.joinpath(folder).iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".jsonl", ".jsonl.gz")):
                digest.update(entry.name.encode())
                digest.update(entry.read_bytes())
    return digest.hexdigest()


LEXICAL_V1 = OfflineScorerConfig(deobfuscate=False, augment_weight=0.0)
"""The first offline model (the ``offline-lexical`` scorer): no deobfuscation, no augmentation."""
