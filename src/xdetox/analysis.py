"""What a model (base or base + adapter) does with the reference sentences of each language.

* ``reference_measures``: per language, the geometric-mean perplexity of its reference
  sentences and their mean-pooled last hidden states, from one forward pass per batch
  (``xdetox.scorers.perplexity.scored_batches``; torch is imported only then), with a
  "reference measures" bar over the texts when asked;
* ``embedding_analysis``: how separated the languages are in that representation space:
  silhouette by language, the mean cosine similarity between language groups and a 2-D PCA
  projection (scikit-learn, imported when it runs).

Not a scorer: the grid stores these as a setting's measures (``ppl_ref``, ``silhouette``,
``similarity``, ``projection``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from xdetox.scorers.perplexity import LOGIT_ROWS, scored_batches


@dataclass(frozen=True)
class ReferenceMeasures:
    """What one model (base or base + adapter) does with the reference sentences of each language."""

    ppl: dict[str, float]  # geometric mean perplexity of the sentences, per language
    embeddings: dict[str, np.ndarray]  # mean-pooled last hidden state, one row per sentence


def reference_measures(model, tokenizer, texts_by_lang: Mapping[str, list[str]],
                       batch_size: int = LOGIT_ROWS, max_length: int = 256,
                       progress: bool = False) -> ReferenceMeasures:
    """One forward pass per batch gives both: per-sentence perplexity and mean-pooled hidden states.

    Perplexity per language is the geometric mean over its sentences (as ``perplexity``);
    the embedding is the mean of the last layer's hidden states over the text's real
    (non-padding) tokens. ``progress``: a bar over all the texts, the language as postfix
    (``position=1``: under a run's "settings" bar).
    """
    ppl: dict[str, float] = {}
    embeddings: dict[str, np.ndarray] = {}
    bar = tqdm(total=sum(len(texts) for texts in texts_by_lang.values()), desc="reference measures",
               unit="text", disable=not progress, leave=False, position=1)
    for lang, texts in texts_by_lang.items():
        bar.set_postfix_str(lang)
        batches = []
        for nll, emb in scored_batches(model, tokenizer, texts, batch_size, max_length, pooled=True):
            batches.append((nll, emb))
            bar.update(len(nll))
        ppl[lang] = float(np.exp(np.mean([v for nll, _ in batches for v in nll])))
        embeddings[lang] = np.concatenate([emb for _, emb in batches])
    bar.close()
    return ReferenceMeasures(ppl, embeddings)


@dataclass(frozen=True)
class EmbeddingAnalysis:
    """How separated the languages are in a model's representation space.

    A measure the sentences cannot give (too few of them, one language) is None, and ``not_computed``
    says why, by measure name: a run of one prompt finishes with its report saying so."""

    silhouette: float | None  # silhouette score of the sentences grouped by language (cosine distance)
    similarity: dict[str, dict[str, float]]  # mean cosine similarity between language groups
    projection: list[tuple[str, float, float]] | None  # (language, x, y): 2-D PCA of the embeddings
    not_computed: dict[str, str] = field(default_factory=dict)  # measure name -> why it was not computed


def embedding_analysis(embeddings: Mapping[str, np.ndarray], seed: int = 0) -> EmbeddingAnalysis:
    """Silhouette by language, language-confusion matrix and a 2-D projection (scikit-learn).

    The silhouette needs at least two languages and more sentences than languages (scikit-learn's
    2 <= labels <= sentences - 1); the projection at least two sentences and two dimensions. Where
    they are missing the measure is None and ``not_computed`` names the reason, never an error."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import normalize as l2_normalize

    langs = list(embeddings)
    matrix = np.concatenate([embeddings[lang] for lang in langs])
    labels = np.concatenate([[lang] * len(embeddings[lang]) for lang in langs])
    unit = l2_normalize(matrix)
    n, dims = matrix.shape
    not_computed = {}
    silhouette = None
    if len(langs) < 2:
        not_computed["silhouette"] = f"one language ({langs[0]}): a silhouette compares two or more"
    elif n <= len(langs):
        not_computed["silhouette"] = (f"{n} sentences in {len(langs)} languages: a silhouette needs more sentences"
                                      " than languages")
    else:
        silhouette = float(silhouette_score(matrix, labels, metric="cosine"))
    centred = {lang: unit[labels == lang] for lang in langs}
    similarity = {a: {b: float((centred[a] @ centred[b].T).mean()) for b in langs} for a in langs}
    projection = None
    if min(n, dims) < 2:
        not_computed["projection"] = (f"{n} sentence{'s' if n != 1 else ''} of {dims} dimensions: a 2-D projection"
                                      " needs at least 2 of each")
    else:
        points = PCA(n_components=2, random_state=seed).fit_transform(unit)
        projection = [(str(lang), float(x), float(y)) for lang, (x, y) in zip(labels, points)]
    return EmbeddingAnalysis(silhouette, similarity, projection, not_computed)
