"""The lexical model in a form that ships: hashed character n-grams, one weight vector.

The ``offline`` scorer's pipeline (TF-IDF character n-grams, naive-Bayes scaling, logistic regression)
keeps a vocabulary of some 700k n-grams: an 18 MB cache file, trained on first use. Hashing the
n-grams into ``2**bits`` buckets (scikit-learn's ``HashingVectorizer``) drops the vocabulary; the
naive-Bayes ratio folds into the regression's weights, so the whole model is the buckets' inverse
document frequencies, one weight per bucket and a bias: 1 MB in fp16 at 18 bits. It is trained on
the same rows with the same weights as ``offline`` (``offline.data.training_set``) and reads a
text the same way (sublinear term frequency times idf, L2-normalised). Measured against the
vocabulary model (``xdetox scorer eval``'s figures, the lexical model alone): pairwise accuracy
within 0.04, held-out AUC within 0.05 (zh lowest: hashing collides Han n-grams most).
"""

from __future__ import annotations

import numpy as np

DEFAULT_BITS = 18


def _vectorizer(bits: int, ngram_range: tuple[int, int]):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="char_wb", ngram_range=tuple(ngram_range), lowercase=False,
                             n_features=2 ** bits, alternate_sign=False, norm=None, dtype=np.float32)


def _tf(vectorizer, texts: list[str]):
    counts = vectorizer.transform(texts).tocsr()
    counts.data = 1 + np.log(counts.data)
    return counts


class HashedLexical:
    """``logits(prepared texts)``; ``fit`` learns ``idf``, ``weight`` and ``bias`` from weighted rows."""

    def __init__(self, idf: np.ndarray, weight: np.ndarray, bias: float, bits: int = DEFAULT_BITS,
                 ngram_range: tuple[int, int] = (1, 5)) -> None:
        if len(idf) != 2 ** bits or len(weight) != 2 ** bits:
            raise ValueError(f"hashed lexical model: {len(idf)} / {len(weight)} buckets, expected 2**{bits}")
        self.idf, self.weight = np.asarray(idf, np.float32), np.asarray(weight, np.float32)
        self.bias, self.bits, self.ngram_range = float(bias), bits, tuple(ngram_range)
        self._vectorizer = _vectorizer(bits, self.ngram_range)

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, weights: np.ndarray, bits: int = DEFAULT_BITS,
            ngram_range: tuple[int, int] = (1, 5), nb_alpha: float = 1.0, C: float = 3.0) -> HashedLexical:  # noqa: N803
        """TF-IDF over hashed n-grams, naive-Bayes scaling and a logistic regression (liblinear), folded."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import normalize

        from xdetox.scorers.offline.model import NBScaler

        tf = _tf(_vectorizer(bits, ngram_range), texts)
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = (np.log((1 + tf.shape[0]) / (1 + df)) + 1).astype(np.float32)  # scikit-learn's smooth idf
        features = normalize(tf.multiply(idf).tocsr())
        nb = NBScaler(nb_alpha).fit(features, labels, sample_weight=weights)
        lr = LogisticRegression(C=C, solver="liblinear").fit(nb.transform(features), labels, sample_weight=weights)
        return cls(idf, lr.coef_[0] * nb.ratio_, float(lr.intercept_[0]), bits, ngram_range)

    def logits(self, prepared: list[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        if not prepared:
            return np.zeros(0)
        return normalize(_tf(self._vectorizer, prepared).multiply(self.idf).tocsr()) @ self.weight + self.bias

    def tensors(self) -> dict[str, np.ndarray]:
        """What is written (fp16): the idf and the folded weight per bucket; the bias goes to the manifest."""
        return {"lexical.idf": self.idf.astype(np.float16), "lexical.weight": self.weight.astype(np.float16)}
