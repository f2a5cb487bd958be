"""offline-tuned: multilingual-e5-small with a LoRA adapter, unit and per-language calibration, shipped as files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.scorers import registry, tuned, tuned_train
from xdetox.scorers.offline.data import paradetox_rows

SMALL = tuned.TunedScorerConfig(
    rows={"head_rows_per_lang": 6, "calibration_rows_per_lang": 12, "paradetox_pairs_per_lang": 8,
          "augment_per_group": 4, "lexical": {"ngram_range": (1, 3), "max_rows_per_lang": 200}},
    epochs=1, batch_size=16, learning_rate=2e-3, max_tokens=32, lexical_bits=12,
)


@pytest.fixture(scope="module")
def small_trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned") / "scorer"
    scorer = tuned_train.train(out, SMALL, progress=False, validate=False)
    return out, scorer


def test_training_writes_small_files_that_load_to_the_same_scores(small_trained):
    out, scorer = small_trained
    assert sorted(p.name for p in out.iterdir()) == sorted(tuned.FILES)
    assert sum(p.stat().st_size for p in out.iterdir()) < 5e6
    loaded = tuned.TunedScorer.load(out, progress=False)
    texts = [r.text for r in paradetox_rows("test", 400) if r.lang == "de"][:40]
    scores = np.array(loaded.score(texts, "de"))
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(scores, scorer.score(texts, "de"))  # what was calibrated is what is written
    assert loaded.identity == scorer.identity == f"offline-tuned-{tuned.model_digest(out)}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 0 and manifest["format"] == tuned.FORMAT_VERSION
    calibration = json.loads((out / "calibration.json").read_text())
    assert sorted(calibration["languages"]) == sorted(tuned.LANGS)
    assert len(calibration["combiner"]["coef"]) == 5  # both logits, short, and short times each


def test_training_moves_only_the_adapter_the_unit_and_the_lexical_weights(small_trained):
    from xdetox.scorers import e5

    out, scorer = small_trained
    from safetensors.numpy import load_file

    adapter = load_file(str(out / "weights.safetensors"))
    assert {"head.weight", "head.bias", "lexical.idf", "lexical.weight"} <= set(adapter)
    assert adapter["lexical.weight"].shape == (2 ** 12,)
    lora = [name for name in adapter if "lora_" in name]
    assert len(lora) == 12 * 6 * 2  # A and B of every linear layer of the 12 blocks
    assert all(adapter[name].dtype == np.float16 for name in adapter)
    base = e5.bert_model(e5.read_image()).state_dict()
    merged = scorer.encoder.bert.state_dict()
    frozen = "embeddings.word_embeddings.weight"
    assert np.array_equal(merged[frozen].numpy(), base[frozen].numpy())
    query = "encoder.layer.0.attention.self.query.weight"
    assert not np.allclose(merged[query].numpy(), base[query].numpy())  # the adapter is merged in


def test_a_changed_file_is_another_identity(small_trained, tmp_path):
    import shutil

    out, scorer = small_trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    calibration = json.loads((copy / "calibration.json").read_text())
    calibration["languages"]["en"][1] += 0.5
    (copy / "calibration.json").write_text(json.dumps(calibration))
    assert tuned.model_digest(copy) != tuned.model_digest(out)
    moved = tuned.TunedScorer.load(copy, progress=False)
    assert moved.score(["you idiot"], "en")[0] > scorer.score(["you idiot"], "en")[0]
    assert moved.score(["you idiot"], "de") == scorer.score(["you idiot"], "de")  # per language


def test_training_refuses_a_directory_that_is_not_a_scorer(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(XdetoxInputError, match="not an offline-tuned scorer's directory"):
        tuned_train.train(tmp_path, SMALL, progress=False, validate=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(XdetoxInputError, match="is a file, not a directory"):  # refused before any training
        tuned_train.train(blocker / "scorer", SMALL, progress=False, validate=False)
    with pytest.raises(XdetoxInputError, match="missing weights.safetensors"):
        tuned.TunedScorer.load(tmp_path)


def test_fine_tuning_writes_nothing_to_stdout(capsys):
    """``xdetox scorer train`` may be piped: its progress goes to stderr."""
    encoder = tuned.TunedEncoder(SMALL)
    encoder.fit(["you idiot", "thank you", "shut up, moron", "good morning"] * 4, [1, 0, 1, 0] * 4,
                [1.0] * 16, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "loss" in captured.err


def test_language_weights_give_every_language_the_same_share():
    langs = ["en"] * 30 + ["uk"] * 10
    weights = tuned_train.language_weights(langs)
    assert weights[:30].sum() == pytest.approx(weights[30:].sum()) and weights.mean() == pytest.approx(1.0)


def test_calibration_gives_each_class_half_the_weight_in_every_language():
    rng = np.random.default_rng(0)
    logits = np.r_[rng.normal(-2, 1, 90), rng.normal(2, 1, 10), rng.normal(-1, 1, 50), rng.normal(1, 1, 50)]
    labels = np.r_[np.zeros(90), np.ones(10), np.zeros(50), np.ones(50)].astype(int)
    langs = ["en"] * 100 + ["de"] * 100
    per = tuned_train.fit_calibration(logits, labels, langs, np.ones(200))
    # balanced classes: the boundary sits between the classes, not pushed by en's 9:1 prior
    assert abs(per["en"][1] / per["en"][0]) < 0.6 and abs(per["de"][1] / per["de"][0]) < 0.6
    assert sorted(per) == ["de", "en"]


def test_config_is_checked_where_it_is_born():
    with pytest.raises(XdetoxInputError, match="epochs"):
        tuned.TunedScorerConfig(epochs=0)
    with pytest.raises(XdetoxInputError, match="max_tokens"):
        tuned.TunedScorerConfig(max_tokens=2)
    with pytest.raises(XdetoxInputError, match="head_rows_per_lang"):
        tuned.TunedScorerConfig(rows={"head_rows_per_lang": 0})
    with pytest.raises(XdetoxInputError, match="calibration_rows"):
        tuned.TunedScorerConfig(calibration_rows="isotonic")
    with pytest.raises(XdetoxInputError, match="lexical_bits"):
        tuned.TunedScorerConfig(lexical_bits=40)
    with pytest.raises(XdetoxInputError, match="seed"):
        tuned.TunedScorerConfig(seed=-1)


def test_the_shipped_model_is_small_loads_fast_and_is_validated_as_itself():
    shipped = tuned.shipped_dir()
    assert sum((shipped / name).stat().st_size for name in tuned.FILES) < 5e6
    assert registry.scorer_identity("offline-tuned") == f"offline-tuned-{tuned.model_digest(shipped)}"
    scorer = registry.get_scorer("offline-tuned")
    assert scorer.identity == registry.scorer_identity("offline-tuned")
    figures = registry.scorer_validation("offline-tuned")
    assert figures == tuned.shipped_validation()
    from xdetox.scorers.validation import PARALLEL_FIGURES

    assert all(len(figures[name]) == 9 for name in ("pairwise", "behavioural", *PARALLEL_FIGURES))
    # the figures are this model's: pairwise accuracy on two languages, computed again here
    test = paradetox_rows("test", 1000)
    for lang in ("en", "am"):
        toxic = [r.text for r in test if r.lang == lang and r.label == 1]
        neutral = [r.text for r in test if r.lang == lang and r.label == 0]
        t, n = np.array(scorer.score(toxic, lang)), np.array(scorer.score(neutral, lang))
        pairwise = float(np.mean((t > n) + 0.5 * (t == n)))
        assert pairwise == pytest.approx(figures["pairwise"][lang], abs=0.02)  # bf16 / fp32 kernels may differ
    # and the later parallel sets' means (written after this model was chosen), on two languages
    from xdetox.scorer_checks.parallel import load_parallel, run_parallel

    for which in (2, 3):
        again = run_parallel(scorer, ["es", "uk"], cases=load_parallel(which))
        for kind in ("benign", "toxic"):
            shipped = {lang: figures[f"parallel{which}_{kind}"][lang] for lang in ("es", "uk")}
            assert again[f"{kind}_mean"] == pytest.approx(shipped, abs=0.03)
    assert set(figures["intervals"]) == set(PARALLEL_FIGURES)
    assert all(0 <= low < high <= 1 for low, high in figures["intervals"].values())


def test_registry_knows_the_tuned_scorer_without_building_it():
    assert registry.scorer_kind("offline-tuned") == "toxicity"
    assert "offline-tuned" in registry.SCORERS
    assert registry.scorer_languages("offline-tuned") == frozenset(tuned.LANGS)


def test_an_earlier_encoder_view_is_reused_only_with_the_same_encoder_settings(small_trained, tmp_path):
    from dataclasses import replace

    from safetensors.numpy import load_file

    out, _ = small_trained
    again = tuned_train.train(tmp_path / "again", replace(SMALL, combiner_augment_weight=1.0), progress=False,
                              validate=False, adapter_from=out)
    before, after = load_file(str(out / "weights.safetensors")), load_file(str(tmp_path / "again" / "weights.safetensors"))
    assert all(np.array_equal(before[k], after[k]) for k in before if not k.startswith("lexical."))
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["encoder_from"] == str(out)
    assert again.identity != tuned.TunedScorer.load(out, progress=False).identity  # another combiner
    with pytest.raises(XdetoxInputError, match="other settings"):
        tuned_train.train(tmp_path / "other", replace(SMALL, seed=1), progress=False, validate=False, adapter_from=out)
    assert not (tmp_path / "other").exists()


def test_a_shrunk_calibration_pulls_a_steep_language_towards_the_pooled_map():
    """Calibration cases that separate almost perfectly give a language a steep map; shrinkage pulls it towards
    the map of all languages pooled, the more the stronger, and 0 is each language's own map (as shipped)."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(200)].astype(int)
    soft = np.r_[rng.normal(-1, 1.5, 200), rng.normal(1, 1.5, 200)]  # overlapping classes: a gentle map
    sharp = np.r_[rng.normal(-4, 0.5, 200), rng.normal(1, 0.5, 200)]  # separated: a steep map
    logits, langs = np.r_[soft, sharp], ["en"] * 400 + ["uk"] * 400
    labels2, weights = np.r_[labels, labels], np.ones(800)
    own = tuned_train.fit_calibration(logits, labels2, langs, weights)
    assert own == tuned_train.fit_calibration(logits, labels2, langs, weights, shrinkage=0.0)
    slopes = [tuned_train.fit_calibration(logits, labels2, langs, weights, shrinkage=s)["uk"][0]
              for s in (0.001, 0.01, 1.0)]
    pooled = tuned_train._platt(logits, labels2, weights)[0]
    assert own["uk"][0] > slopes[0] > slopes[1] > slopes[2] > pooled * 0.8  # steep, then ever closer to pooled
    assert abs(slopes[2] - pooled) < 0.1 * abs(own["uk"][0] - pooled)
    with pytest.raises(XdetoxInputError, match="calibration_shrinkage must be at least 0"):
        tuned.TunedScorerConfig(calibration_shrinkage=-1)
