"""The offline scorer's model: TF-IDF character n-grams, naive-Bayes scaling, logistic regression.

The classes here are pickled into the scorer's cache file, so they stay importable under this
module's name (moving them means one retraining of a cached model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from xdetox.scorers.offline.config import OfflineScorerConfig

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


class NBScaler(BaseEstimator, TransformerMixin):
    """Scale each feature column by its naive-Bayes log-count ratio (the "NB" of NB-LR).

    ``fit(X, y, sample_weight)`` learns ``r = log((p / |p|_1) / (q / |q|_1))`` with
    ``p``/``q`` the weighted feature sums of the toxic/non-toxic rows plus ``alpha``;
    ``transform(X)`` returns ``X * r`` (sparse).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X, y, sample_weight: np.ndarray | None = None) -> NBScaler:  # noqa: N803
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        pos = np.asarray(X[y == 1].T @ w[y == 1]).ravel() + self.alpha
        neg = np.asarray(X[y == 0].T @ w[y == 0]).ravel() + self.alpha
        self.ratio_ = np.log((pos / pos.sum()) / (neg / neg.sum())).astype(np.float32)
        return self

    def transform(self, X):  # noqa: N803
        return X.multiply(self.ratio_).tocsr()


class CompactTfidfVectorizer(TfidfVectorizer):
    """A ``TfidfVectorizer`` whose pickle holds the vocabulary as one string.

    joblib unpickles in pure Python, which takes about a second for a dict of 700k
    n-grams; one NUL-joined string loads at once and the dict is rebuilt in ~0.2 s.
    (``normalize`` removes NUL, so no n-gram contains it.)
    """

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            ordered = sorted(vocabulary, key=vocabulary.__getitem__)
            state["_vocabulary_joined"] = "\0".join(ordered)
        state.pop("stop_words_", None)  # every pruned n-gram: large and not needed
        return state

    def __setstate__(self, state: dict) -> None:
        joined = state.pop("_vocabulary_joined", None)
        super().__setstate__(state)
        if joined is not None:
            self.vocabulary_ = {gram: i for i, gram in enumerate(joined.split("\0"))}


def build_pipeline(config: OfflineScorerConfig) -> Pipeline:
    """The untrained scikit-learn pipeline: TF-IDF char n-grams -> NB scaling -> LR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", CompactTfidfVectorizer(
            analyzer="char_wb", ngram_range=config.ngram_range, min_df=config.min_df,
            sublinear_tf=True, lowercase=False, dtype=np.float32,
        )),
        ("nb", NBScaler(alpha=config.nb_alpha)),
        ("lr", LogisticRegression(C=config.C, solver="liblinear")),
    ])
