"""The stacked offline scorer (lexical + multilingual-e5 head), its validation figures and run safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.scorers import registry, semantic, validation
from xdetox.scorers.offline.data import heldout_hash

SMALL = semantic.SemanticScorerConfig(
    head_rows_per_lang=10, calibration_rows_per_lang=20, paradetox_pairs_per_lang=10, augment_per_group=3,
    lexical={"ngram_range": (1, 3), "max_rows_per_lang": 300},
)


@pytest.fixture(scope="module")
def small_semantic(small_scorer_cache):
    """Trained in the session's small-scorer cache, whose lexical model (SMALL's ``lexical``, the small scorer
    of tests/test_score.py) is trained there once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDETOX_CACHE", str(small_scorer_cache))
        first = semantic.SemanticScorer.load(SMALL, progress=False)
        again = semantic.SemanticScorer.load(SMALL, progress=False)  # from the cache
        return first, again


def test_embeddings_are_normalised_and_independent_of_batch_order():
    texts = ["Hello there.", "Ты дурак.", "这是一个句子。", "ሰላም ነው", "x " * 200]
    together = semantic.embed(texts)
    assert together.shape == (5, 384)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-3)
    alone = np.vstack([semantic.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert semantic.embed([]).shape == (0, 384)


def test_stacked_scorer_scores_probabilities_and_ranks_insults_above_rewrites(small_semantic):
    scorer, cached = small_semantic
    toxic = ["You are a stupid idiot and everybody hates you.", "Du bist ein verdammter Idiot."]
    neutral = ["You are wrong and people disagree with you.", "Du liegst leider falsch."]
    for lang, t, n in (("en", toxic[0], neutral[0]), ("de", toxic[1], neutral[1])):
        values = scorer.score([t, n], lang)
        assert all(0.0 <= v <= 1.0 for v in values)
        assert values[0] > values[1], lang
    assert cached.score(toxic, "en") == pytest.approx(scorer.score(toxic, "en"))
    assert scorer.score([], "en") == []
    with pytest.raises(XdetoxInputError, match="does not support"):
        scorer.score(["x"], "fr")
    assert scorer.combiner.coef_.shape == (1, 5)


def test_combiner_features_and_calibration_rows_stay_out_of_validation():
    clipped = semantic.combiner_features(np.array([0.999, 0.999]), np.array([0.5, 0.5]), np.array([False, True]),
                                         short_lexical_clip=3.0)
    assert clipped[0, 0] == pytest.approx(np.log(999), rel=1e-3)  # a longer text keeps its lexical logit
    assert clipped[1, 0] == pytest.approx(3.0) and clipped[1, 3] == pytest.approx(3.0)  # a short one is bounded
    f = semantic.combiner_features(np.array([0.5, 0.9]), np.array([0.5, 0.1]), np.array([False, True]))
    assert f.shape == (2, 5) and f[0].tolist() == pytest.approx([0, 0, 0, 0, 0], abs=1e-9)
    assert f[1, 2] == 1 and f[1, 3] == pytest.approx(f[1, 0]) and f[1, 4] == pytest.approx(f[1, 1])
    low, high = semantic.CALIBRATION_SLICE
    v_low, v_high = validation.VALIDATION_SLICE
    assert high <= v_low or v_high <= low, "calibration and validation slices must not overlap"
    head, calibration, augment_calibration = semantic.training_rows(SMALL)
    assert all(low <= heldout_hash(r.text) < high for r in calibration)
    a_low, a_high = SMALL.augment_calibration  # the head never sees the augmentation that calibrates
    assert augment_calibration and all(a_low <= heldout_hash(r.text) < a_high for r in augment_calibration)
    assert not {r.text for r in augment_calibration} & {r.text for r in head}
    assert {r.source for r in head if r.source.startswith("augment/")}  # the rest trains the head
    held = {r.text for r in validation.validation_rows(max_per_lang=50)}
    assert not held & {r.text for r in head} and not held & {r.text for r in calibration}


def test_hash_slice_is_a_fixed_sample_of_a_fixed_slice():
    from xdetox.scorers.offline.data import TOXICITY_LANGS, LabelledText, hash_slice

    rows = [LabelledText(f"text {i} {lang}", i % 2, lang, "test") for lang in ("en", "de", "uk") for i in range(400)]
    picked = hash_slice(rows, 0.2, 0.7, per_lang=50)
    assert all(0.2 <= heldout_hash(r.text) < 0.7 for r in picked)
    assert [r.lang for r in picked] == ["en"] * 50 + ["de"] * 50, "per language in TOXICITY_LANGS order, capped"
    assert "uk" not in TOXICITY_LANGS
    en = [heldout_hash(r.text) for r in picked if r.lang == "en"]
    assert en == sorted(en) and en == sorted(heldout_hash(r.text) for r in rows if r.lang == "en"
                                             and 0.2 <= heldout_hash(r.text) < 0.7)[:50]
    assert hash_slice(rows[::-1], 0.2, 0.7, per_lang=50) == picked, "the input order does not matter"


def test_expected_calibration_error_known_values():
    assert validation.expected_calibration_error(np.array([0.05, 0.95]), np.array([0, 1])) == pytest.approx(0.05)
    assert validation.expected_calibration_error(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)


def test_validate_gives_every_figure_per_language(small_semantic, monkeypatch):
    scorer, _ = small_semantic
    from xdetox import scorer_checks

    few = [c for c in scorer_checks.load_suite(["en", "uk"]) if c.id.endswith(("000", "001"))]
    monkeypatch.setattr(scorer_checks, "load_suite", lambda langs=None: [c for c in few if c.lang in langs])
    results = validation.validate(scorer, langs=["en", "uk"], max_per_lang=40)
    assert set(results) == {*validation.FIGURES, "intervals"}
    assert set(results["paradetox_test"]) == set(results["pairwise"]) == {"en", "uk"}
    assert set(results["parallel2_benign"]) == {"en", "uk"}
    for figure, (low, high) in results["intervals"].items():  # the spread of two languages' means, resampled
        assert low <= high and low <= np.ptp(list(results[figure].values())) + 0.05, figure
    assert set(results["heldout"]) == {"en"}  # no Ukrainian corpus
    for figure in ("paradetox_test", "pairwise", "behavioural", "ece"):
        assert all(0 <= v <= 1 for v in results[figure].values()), figure
    json.dumps(results, allow_nan=False)


def test_identity_names_the_model_and_a_changed_scorer_rescores_a_run(tmp_path, monkeypatch):
    from xdetox import grid
    from xdetox.store import Store

    assert registry.scorer_identity("offline").startswith("offline-lexical-")
    assert registry.scorer_identity("offline-semantic").startswith("offline-semantic-")
    assert registry.scorer_identity("lang-fidelity") is None
    with Store(tmp_path / "s.sqlite") as store:
        store.add_scores("offline", [("e", "p1", 0, 0.3)])  # an old run: scored before identities were kept
        store.add_scores("offline|length-matched", [("e", "p1", 0, 0.2)])
        store.add_scores("lang-fidelity", [("e", "p1", 0, 1.0)])
        grid.check_scorer_identity(store, "offline")
        assert not store.has_scores("offline") and not store.has_scores("offline|length-matched")
        assert store.has_scores("lang-fidelity")
        store.add_scores("offline", [("e", "p1", 0, 0.4)])
        grid.check_scorer_identity(store, "offline")  # same model: kept
        assert store.has_scores("offline")
        monkeypatch.setattr(registry, "scorer_identity", lambda name: "offline-lexical-other")
        grid.check_scorer_identity(store, "offline")  # the model changed: dropped
        assert not store.has_scores("offline")


def test_offline_semantic_keeps_the_short_rule_its_combiner_was_fitted_with():
    texts, langs = ["Hello", "这是一个很普通的句子", "Hi there", "你好", "A whole sentence here."], ["zh", "en", "en", "zh", "en"]
    assert semantic.fitted_short_mask(texts, langs).tolist() == [False, True, True, True, False]
    assert semantic.short_mask(texts, langs).tolist() == [True, False, True, True, False]  # text_flags' rule

