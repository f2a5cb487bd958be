"""``OfflineScorer``: the bundled-data lexical toxicity model, trained once and cached.

Importing this room loads no scikit-learn: training imports the model room, and loading the
cache file imports it through the pickle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from xdetox.cache import cache_dir, load_or_build
from xdetox.data import LANGS
from xdetox.scorers.base import check_input, log_progress
from xdetox.scorers.offline.config import OfflineScorerConfig
from xdetox.scorers.offline.data import model_input, training_set

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


class OfflineScorer:
    """The bundled-data lexical toxicity model (see ``xdetox.scorers.offline``)."""

    name = "offline"
    kind = "toxicity"
    supported_languages: frozenset[str] = frozenset(LANGS)

    def __init__(self, config: OfflineScorerConfig, pipeline: Pipeline,
                 train_seconds: float) -> None:
        self.config = config
        self.pipeline = pipeline
        self.train_seconds = train_seconds

    @staticmethod
    def cache_path(config: OfflineScorerConfig) -> Path:
        return cache_dir("scorers") / f"offline-{config.key()}.joblib"

    @classmethod
    def train(cls, config: OfflineScorerConfig = OfflineScorerConfig(),
              progress: bool = True) -> OfflineScorer:
        """Train a fresh scorer (no cache involved)."""
        start = time.perf_counter()
        log_progress(progress, "preparing training data (paradetox train + toxicity corpus)")
        data = training_set(config)
        log_progress(progress, f"fitting on {len(data.texts):,} texts (about half a minute on 2 cores)")
        from xdetox.scorers.offline.model import build_pipeline

        pipeline = build_pipeline(config)
        pipeline.fit(data.texts, data.labels, nb__sample_weight=data.weights,
                     lr__sample_weight=data.weights)
        seconds = time.perf_counter() - start
        log_progress(progress, f"trained in {seconds:.0f} s")
        return cls(config, pipeline, seconds)

    @classmethod
    def load(cls, config: OfflineScorerConfig = OfflineScorerConfig(),
             progress: bool = True) -> OfflineScorer:
        """The cached scorer for ``config``; trained and cached on first use."""

        def build() -> dict:
            scorer = cls.train(config, progress=progress)
            return {"pipeline": scorer.pipeline, "train_seconds": scorer.train_seconds, "config": asdict(config)}

        state = load_or_build(cls.cache_path(config), build, lambda message: log_progress(progress, message))
        return cls(config, state["pipeline"], state["train_seconds"])

    def prepare(self, texts: Iterable[str]) -> list[str]:
        """What the model reads: normalised text, cut to ``max_chars``, deobfuscated (``model_input``)."""
        return [model_input(text, self.config) for text in texts]

    def score(self, texts: list[str], lang: str) -> list[float]:
        """Toxicity probability of each text; ``lang`` is checked but not a feature."""
        check_input(self, texts, lang)
        if not texts:
            return []
        probs = self.pipeline.predict_proba(self.prepare(texts))[:, 1]
        return [float(p) for p in probs]
