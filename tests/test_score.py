"""Tests of xdetox.scorers: normalisation, data splits, the offline scorer, the registry,
Hugging Face classifiers (a tiny random one built here) and the ``xdetox score`` command.

Most tests train a small scorer (300 corpus rows per language, char 1-3-grams) into a
temporary cache shared by the session (conftest's ``small_scorer_cache``); one test loads the
real default scorer from the session's cache (conftest: a copy of the user's cached one, or
trained there once, about a minute, when the user's cache lacks it).
"""

from __future__ import annotations

import io
import json
import math
import sys
from functools import partial

import pytest

from xdetox.cli import main
from xdetox.data import LANGS, load_bundled
from xdetox.errors import XdetoxInputError
from xdetox.scorers import (
    HFScorer,
    HFScorerSpec,
    OfflineScorer,
    OfflineScorerConfig,
    Scorer,
    check_languages,
    check_scorer,
    evaluate_offline,
    format_auc_table,
    get_scorer,
    toxic_label_index,
)
from xdetox.scorers import registry
from xdetox.scorers.base import DEFAULT_TOXICITY_SCORER
from xdetox.scorers.offline import data as offline_data
from xdetox.text import normalize

SMALL = OfflineScorerConfig(ngram_range=(1, 3), max_rows_per_lang=300)


@pytest.fixture(scope="module")
def small_cache_dir(small_scorer_cache):
    """A temporary cache folder shared by the tests that use the small scorer (the session's, see conftest)."""
    return small_scorer_cache


@pytest.fixture
def small_cache(small_cache_dir, monkeypatch):
    """XDETOX_CACHE pointed at ``small_cache_dir`` for one test."""
    monkeypatch.setenv("XDETOX_CACHE", str(small_cache_dir))
    return small_cache_dir


@pytest.fixture(scope="module")
def small_scorer(small_cache_dir) -> OfflineScorer:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDETOX_CACHE", str(small_cache_dir))
        return OfflineScorer.load(SMALL, progress=False)


# ------------------------------------------------------------------ normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("that 's some pretty shit logic .", "thats some pretty shit logic."),
        ("That's some pretty shit logic.", "thats some pretty shit logic."),
        ("I do n't care , it 's  ( really ) fine !", "i dont care, its (really) fine!"),
        ("we ca n't", "we cant"),
        ("don 't", "dont"),
        ("It\u2019s   OK\t\n", "its ok"),
        ("SOOOOOO   GOOD!!!!!!", "sooo good!!!"),
        ("Ты  дурак ?", "ты дурак?"),
        ("你好 ！", "你好!"),
        ("id\u00adiot\u200b", "idiot"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_is_idempotent_and_removes_the_en_artefact() -> None:
    corpus = load_bundled()
    for pair in corpus.select("en", "train")[:100] + corpus.select("ru", "train")[:100]:
        for text in (pair.toxic, pair.neutral):
            once = normalize(text)
            assert normalize(once) == once
            assert once == once.lower()
            assert " ." not in once and " ," not in once and " !" not in once


# ------------------------------------------------------------------ config and data


def test_config_validation_and_key() -> None:
    with pytest.raises(XdetoxInputError):
        OfflineScorerConfig(heldout_fraction=1.0)
    with pytest.raises(XdetoxInputError):
        OfflineScorerConfig(drop_sources="modelfront/")  # type: ignore[arg-type]
    assert OfflineScorerConfig().key() == OfflineScorerConfig().key()
    assert OfflineScorerConfig().key() != OfflineScorerConfig(heldout_fraction=0.3).key()
    assert OfflineScorerConfig().key() != OfflineScorerConfig(drop_sources=("x/",)).key()
    assert len(OfflineScorerConfig().key()) == 16


def test_heldout_is_disjoint_from_training_and_per_language() -> None:
    config = OfflineScorerConfig()
    train = offline_data.training_set(config)
    train_texts = set(train.texts)
    corpus = offline_data.toxicity_corpus(max_chars=config.max_chars)
    _, heldout = offline_data.split_heldout(corpus, config.heldout_fraction)
    assert heldout
    assert not train_texts & {row.text for row in heldout}
    # every language holds out roughly the requested share
    for lang in offline_data.TOXICITY_LANGS:
        total = sum(r.lang == lang for r in corpus)
        held = sum(r.lang == lang for r in heldout)
        assert 0.15 < held / total < 0.25, lang
    # the paradetox test split never reaches training
    test_texts = {r.text for r in offline_data.paradetox_rows("test", config.max_chars)}
    assert not test_texts & train_texts
    # paradetox train is in, once per sentence, with both labels in every language
    for lang in LANGS:
        labels = {y for y, l in zip(train.labels, train.langs) if l == lang}
        assert labels == {0, 1}, lang


def test_duplicate_texts_stay_on_one_side() -> None:
    rows = [
        offline_data.LabelledText("same text", 1, "en", "a"),
        offline_data.LabelledText("same text", 1, "de", "b"),
    ] + [offline_data.LabelledText(f"text {i}", i % 2, "en", "a") for i in range(200)]
    train, heldout = offline_data.split_heldout(rows, 0.5)
    sides = {("train" if r in train else "heldout") for r in rows[:2]}
    assert len(sides) == 1
    assert 50 < len(heldout) < 150


def test_drop_sources_removes_rows() -> None:
    full = offline_data.toxicity_corpus()
    dropped = offline_data.toxicity_corpus(("modelfront/",))
    n_modelfront = sum(r.source.startswith("modelfront/") for r in full)
    assert n_modelfront > 1000
    assert not any(r.source.startswith("modelfront/") for r in dropped)
    assert len(dropped) == len(full) - n_modelfront
    train = offline_data.training_set(OfflineScorerConfig(drop_sources=("modelfront/",)))
    assert not any(s.startswith("modelfront/") for s in train.sources)
    assert any(s.startswith("cicl2018/") for s in train.sources)  # other es source kept


def test_corpus_has_no_conflicting_or_repeated_texts() -> None:
    corpus = offline_data.toxicity_corpus()
    keys = [(r.lang, r.text) for r in corpus]
    assert len(keys) == len(set(keys))
    assert all(r.text and r.text == normalize(r.text) for r in corpus[:2000])


# ------------------------------------------------------------------ the small scorer


def test_scores_are_probabilities(small_scorer: OfflineScorer) -> None:
    assert isinstance(small_scorer, Scorer)
    assert small_scorer.supported_languages == frozenset(LANGS)
    texts = ["You are a stupid idiot", "Thank you for the lovely dinner", "", "   ", "!!!",
             "x" * 5000]
    values = small_scorer.score(texts, "en")
    assert len(values) == len(texts)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
    assert small_scorer.score([], "en") == []
    assert values[0] > values[1]


def test_unsupported_language_is_input_error(small_scorer: OfflineScorer) -> None:
    with pytest.raises(XdetoxInputError, match="fr"):
        small_scorer.score(["bonjour"], "fr")


def test_cache_is_reused(small_scorer: OfflineScorer, small_cache, monkeypatch) -> None:
    path = OfflineScorer.cache_path(SMALL)
    assert path.parent == small_cache / "scorers"
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(OfflineScorer, "train", no_training)
    again = OfflineScorer.load(SMALL, progress=False)
    texts = ["du bist ein idiot", "schönes Wetter heute"]
    assert again.score(texts, "de") == small_scorer.score(texts, "de")
    # a different config is a different file, so it would train
    with pytest.raises(AssertionError, match="trained again"):
        OfflineScorer.load(OfflineScorerConfig(ngram_range=(1, 2), max_rows_per_lang=300),
                           progress=False)


def test_damaged_cache_is_rebuilt(small_cache) -> None:
    config = OfflineScorerConfig(ngram_range=(1, 2), max_rows_per_lang=50)
    path = OfflineScorer.cache_path(config)
    path.write_bytes(b"not a joblib file")
    scorer = OfflineScorer.load(config, progress=False)
    assert 0.0 <= scorer.score(["hello"], "en")[0] <= 1.0
    assert path.stat().st_size > 1000


def test_evaluate_and_table(small_scorer: OfflineScorer) -> None:
    results = evaluate_offline(small_scorer)
    assert set(results) == {"paradetox_test", "heldout"}
    assert set(results["paradetox_test"]) == set(LANGS)
    assert set(results["heldout"]) == set(LANGS) - {"uk"}
    for column in results.values():
        assert all(0.0 <= v <= 1.0 for v in column.values())
    # even the small model is far better than chance
    assert sum(results["paradetox_test"].values()) / len(LANGS) > 0.8
    table = format_auc_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["lang", "paradetox_test", "heldout"]
    assert [line.split()[0] for line in lines[1:]] == list(LANGS) + ["mean", "spread", "(spread:"]
    spread = next(line for line in lines if line.startswith("spread")).split()
    assert float(spread[1]) == pytest.approx(max(results["paradetox_test"].values()) - min(results["paradetox_test"].values()),
                                             abs=1e-3)
    uk = next(line for line in lines if line.startswith("uk"))
    assert uk.split()[2] == "–"
    assert f"{results['paradetox_test']['en']:.3f}" in lines[1]


def test_format_auc_table_missing_values() -> None:
    table = format_auc_table({"a": {"en": 0.5, "de": 1.0}, "b": {}})
    lines = table.splitlines()
    assert lines[1].split() == ["en", "0.500", "–"]
    assert lines[-3].split() == ["mean", "0.750", "–"]
    assert lines[-2].split() == ["spread", "0.500", "–"]  # max − min over languages


# ------------------------------------------------------------------ registry


def test_get_scorer_unknown_name() -> None:
    with pytest.raises(XdetoxInputError, match="nope") as info:
        get_scorer("nope")
    assert "offline" in str(info.value)
    assert "\n" not in str(info.value)


def test_get_scorer_uses_registry(monkeypatch) -> None:
    class Constant:
        name = "constant"
        supported_languages = frozenset({"en"})

        def score(self, texts: list[str], lang: str) -> list[float]:
            return [0.5] * len(texts)

    monkeypatch.setitem(registry.SCORERS, "constant", Constant)
    assert get_scorer("constant").score(["a", "b"], "en") == [0.5, 0.5]


def test_kind_is_what_the_scorer_class_declares(monkeypatch) -> None:
    """Read from the class: no key, no model files, no name prefix needed."""
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    assert {name: registry.scorer_kind(name) for name in ("offline", "offline-semantic", "perspective",
                                                           "lang-fidelity", "hf:no/such-model", "ppl:no/such-model",
                                                           "relevance:no/such-model")} \
        == {"offline": "toxicity", "offline-semantic": "toxicity", "perspective": "toxicity",
            "lang-fidelity": "language", "hf:no/such-model": "toxicity", "ppl:no/such-model": "fluency",
            "relevance:no/such-model": "relevance"}

    class Reader:
        name = "reader"
        kind = "fluency"
        supported_languages = frozenset({"en"})

        def score(self, texts: list[str], lang: str) -> list[float]:
            return [float(len(t)) for t in texts]

    monkeypatch.setattr(registry, "SCORERS", dict(registry.SCORERS))
    monkeypatch.setattr(registry, "PREFLIGHT", dict(registry.PREFLIGHT))
    registry.register_scorer("reader", Reader)
    registry.register_scorer("reader-lambda", lambda: Reader())  # the class is hidden: built and asked
    assert registry.scorer_kind("reader") == registry.scorer_kind("reader-lambda") == "fluency"
    assert isinstance(get_scorer("reader"), Scorer)
    registry.register_scorer("no-kind", lambda: object())
    with pytest.raises(XdetoxInputError, match="declares no kind"):
        registry.scorer_kind("no-kind")
    with pytest.raises(XdetoxInputError, match="unknown scorer"):
        registry.scorer_kind("nope")
    with pytest.raises(ValueError, match="hf:"):
        registry.register_scorer("hf:mine", Reader)


# ------------------------------------------------------------------ the real scorer


def test_default_offline_scorer_quality() -> None:
    """The real model (default cache; trained there on first use, about a minute)."""
    scorer = get_scorer("offline")
    assert isinstance(scorer, OfflineScorer)
    results = evaluate_offline(scorer)
    assert results["paradetox_test"]["en"] > 0.9
    assert results["paradetox_test"]["de"] > 0.9
    pairs = {
        "en": ("You are a fucking idiot.", "Thank you, that was very helpful."),
        "de": ("Halt die Fresse, du Arschloch!", "Vielen Dank für die schnelle Antwort."),
        "es": ("Eres un puto imbécil.", "Gracias por tu ayuda."),
        "ru": ("Заткнись, тупой урод!", "Спасибо за помощь."),
        "uk": ("Ти тупий дебіл.", "Дякую за допомогу."),
        "zh": ("你这个傻逼，滚开！", "谢谢你的帮助。"),
    }
    for lang, (toxic, neutral) in pairs.items():
        tox, neu = scorer.score([toxic, neutral], lang)
        assert tox > neu, lang
        assert tox > 0.5 > neu, (lang, tox, neu)


def test_check_languages_offline() -> None:
    check_languages("offline", LANGS)
    with pytest.raises(XdetoxInputError, match="offline does not support fr, xx; remove them"):
        check_languages("offline", ["en", "fr", "xx"])
    with pytest.raises(XdetoxInputError, match="unknown scorer"):
        check_languages("nope", ["en"])


# ------------------------------------------------------------------ Hugging Face classifiers


TEXTS = ["You are a stupid idiot", "Thank you for the lovely dinner", "", "x" * 3000, "Danke schön"]


def test_hf_scorer_scores(tiny_classifier_dir) -> None:
    scorer = get_scorer(f"hf:{tiny_classifier_dir}")
    assert isinstance(scorer, HFScorer) and isinstance(scorer, Scorer)
    assert scorer.name == f"hf:{tiny_classifier_dir}" and scorer.label_index == 1
    values = scorer.score(TEXTS, "en")
    assert len(values) == len(TEXTS) and len(set(values)) > 1
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)
    assert scorer.score(TEXTS[:1] * 3, "de") == [values[0]] * 3
    assert scorer.score([], "en") == []
    with pytest.raises(XdetoxInputError, match="'fr'"):
        scorer.score(["bonjour"], "fr")


def test_hf_scorer_batching_matches_one_by_one(tiny_classifier_dir) -> None:
    spec = HFScorerSpec(str(tiny_classifier_dir))
    batched = HFScorer.load(spec, batch_size=4, device="cpu").score(TEXTS, "en")
    single = [HFScorer.load(spec, batch_size=1, device="cpu").score([t], "en")[0] for t in TEXTS]
    assert batched == pytest.approx(single, abs=1e-5)


def test_hf_scorer_label_by_name(tiny_classifier_dir) -> None:
    toxic = get_scorer(f"hf:{tiny_classifier_dir}").score(TEXTS, "en")
    neutral = get_scorer(f"hf:{tiny_classifier_dir}#NEUTRAL")
    assert neutral.label_index == 0 and neutral.name.endswith("#NEUTRAL")
    assert [1 - v for v in neutral.score(TEXTS, "en")] == pytest.approx(toxic, abs=1e-6)
    assert get_scorer(f"hf:{tiny_classifier_dir}#1").label_index == 1


def test_hf_scorer_multi_label_uses_sigmoid(tiny_classifier_dir) -> None:
    import torch

    scorer = get_scorer(f"hf:{tiny_classifier_dir}")
    scorer.model.config.problem_type = "multi_label_classification"
    multi = HFScorer(scorer.spec, scorer.model, scorer.tokenizer, label_index=1)
    encoded = scorer.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = scorer.model(**encoded).logits[:, 1].sigmoid().tolist()
    assert multi.multi_label and multi.score(TEXTS[:2], "en") == pytest.approx(expected, abs=1e-6)


def test_hf_check_scorer_is_offline_and_one_line(tiny_classifier_dir, tmp_path, monkeypatch) -> None:
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded the model")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", no_loading)
    check_scorer(f"hf:{tiny_classifier_dir}")
    check_languages(f"hf:{tiny_classifier_dir}", LANGS)  # read from the class, nothing loaded
    for name, needle in [
        (f"hf:{tmp_path / 'missing'}", "neither a model directory nor a model in the local"),
        ("hf:no-such-org/no-such-model-xdetox", "local Hugging Face cache"),
        (f"hf:{tiny_classifier_dir}#insult", "'insult' is not one of the model's labels: neutral, toxic"),
        ("hf:", "hf:<model id or path>"),
        (f"hf:{tiny_classifier_dir}#", "hf:<model id or path>"),
    ]:
        with pytest.raises(XdetoxInputError, match=needle) as info:
            check_scorer(name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(("id2label", "label", "expected"), [
    ({0: "neutral", 1: "toxic"}, None, 1),
    ({0: "toxic", 1: "neutral"}, None, 0),
    ({0: "non-toxic", 1: "toxic"}, None, 1),
    ({0: "NOT_TOXIC", 1: "TOXIC"}, None, 1),
    ({0: "nontoxic", 1: "neutral", 2: "Toxicity"}, None, 2),
    ({0: "toxic", 1: "severe_toxic", 2: "insult"}, None, 0),
    ({0: "LABEL_0", 1: "LABEL_1"}, None, 1),
    ({0: "LABEL_0"}, None, 0),
    ({"0": "LABEL_0", "1": "LABEL_1"}, "label_0", 0),
    ({0: "neutral", 1: "toxic", 2: "hate"}, "Hate", 2),
    ({0: "a", 1: "b"}, "0", 0),
])
def test_toxic_label_index(id2label, label, expected) -> None:
    assert toxic_label_index(id2label, label) == expected


# ------------------------------------------------------------------ the command line


@pytest.fixture
def small_offline(small_scorer, small_cache, monkeypatch) -> OfflineScorer:
    """``offline`` in the registry is the small scorer (its cache is already filled)."""
    monkeypatch.setitem(registry.SCORERS, "offline", partial(OfflineScorer.load, SMALL, progress=False))
    return small_scorer


def test_cli_score_file_and_stdin(small_offline, tmp_path, capsys, monkeypatch) -> None:
    texts = ["You are a stupid idiot", "", "Thank you for the lovely dinner"]
    expected = [f"{v:.6f}" for v in small_offline.score(texts, "en")]
    expected[1] = "nan"  # an empty line is not text: it is not scored
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["score", "--scorer", "offline", "--lang", "en", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == expected

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts)))  # no final newline
    assert main(["score", "--scorer", "offline", "--lang", "en", "-"]) == 0
    assert capsys.readouterr().out.splitlines() == expected

    path.write_text("", encoding="utf-8")
    assert main(["score", "--scorer", "offline", "--lang", "en", str(path)]) == 0
    assert capsys.readouterr().out == ""


def test_cli_score_without_a_scorer_uses_the_default(small_offline, tmp_path, capsys, monkeypatch) -> None:
    built = []

    def default():
        built.append(DEFAULT_TOXICITY_SCORER)
        return small_offline

    monkeypatch.setitem(registry.SCORERS, DEFAULT_TOXICITY_SCORER, default)
    path = tmp_path / "texts.txt"
    path.write_text("You are a stupid idiot\n", encoding="utf-8")
    assert main(["score", "--lang", "en", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{small_offline.score(['You are a stupid idiot'], 'en')[0]:.6f}"]
    assert built and DEFAULT_TOXICITY_SCORER == "offline-tuned"  # the default factory scored


@pytest.mark.parametrize(("args", "needle"), [
    (["--scorer", "nope", "--lang", "en", "FILE"], "unknown scorer 'nope'"),
    (["--lang", "fr", "FILE"], f"{DEFAULT_TOXICITY_SCORER} does not support fr"),
    (["--lang", "en", "missing.txt"], "input file not found: missing.txt"),
    (["--scorer", "perspective", "--lang", "en", "FILE"], "PERSPECTIVE_API_KEY"),
    (["--scorer", "perspective", "--lang", "uk", "FILE"], "PERSPECTIVE_API_KEY"),
    (["FILE"], "--lang"),
])
def test_cli_score_bad_input_exits_2(small_offline, tmp_path, capsys, monkeypatch, args, needle) -> None:
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    path = tmp_path / "texts.txt"
    path.write_text("hello\n", encoding="utf-8")
    assert main(["score", *[str(path) if a == "FILE" else a for a in args]]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert needle in err and "\n" not in err and captured.out == ""


def test_cli_scorer_eval_json_shape(monkeypatch, capsys) -> None:
    results = {"paradetox_test": {"en": 0.97, "de": 0.9}, "heldout": {"en": 0.95}}
    monkeypatch.setattr(registry, "scorer_validation", lambda name, compute=False: results)
    assert main(["scorer", "eval", "--json"]) == 0
    assert capsys.readouterr().out == '{"paradetox_test": {"en": 0.97, "de": 0.9}, "heldout": {"en": 0.95}}\n'
    assert json.loads(json.dumps(results)) == results


def test_cached_validation_is_computed_again_when_it_lacks_a_figure(monkeypatch, tmp_path) -> None:
    from xdetox.scorers import validation

    computed = []
    complete = {figure: {"en": 0.5} for figure in validation.FIGURES}
    monkeypatch.setattr(validation, "validate", lambda scorer: computed.append(scorer) or complete)
    cache = tmp_path / "validation-x.json"
    old = {figure: {"en": 0.4} for figure in validation.FIGURES if not figure.startswith("parallel")}
    cache.write_text(json.dumps(old))  # written before the parallel figures existed
    assert validation.cached_validation("scorer", cache) == complete and computed == ["scorer"]
    assert json.loads(cache.read_text()) == complete
    assert validation.cached_validation("scorer", cache) == complete and computed == ["scorer"]  # read, not computed


def test_perplexity_matches_the_model_loss_and_ignores_padding(tiny_model_dir):
    import math

    import torch

    from xdetox import models
    from xdetox.scorers import get_scorer
    from xdetox.scorers.perplexity import perplexity

    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), dtype="float32")
    texts = ["a short one", "a noticeably longer sentence about nothing at all", ""]
    together = perplexity(loaded.model, loaded.tokenizer, texts, batch_size=3)
    alone = [perplexity(loaded.model, loaded.tokenizer, [t], batch_size=1)[0] for t in texts]
    assert together == pytest.approx(alone, rel=1e-4), "padding must not change a text's perplexity"
    enc = loaded.tokenizer(texts[1] + loaded.tokenizer.eos_token, return_tensors="pt")
    with torch.inference_mode():
        loss = loaded.model(**enc, labels=enc["input_ids"]).loss.item()
    assert together[1] == pytest.approx(math.exp(loss), rel=1e-4)
    assert all(v > 1 for v in together)
    scorer = get_scorer(f"ppl:{tiny_model_dir}")
    assert scorer.score(texts[:2], "am") == pytest.approx(alone[:2], rel=1e-2)  # bf16 where supported
    assert loaded.tokenizer.padding_side == "left", "the tokenizer's padding side is restored"


def _loglik(model, tokenizer, context: list[int], tokens: list[int]) -> float:
    """Mean log-probability of ``tokens`` after ``context``, one unpadded sequence at a time."""
    import torch

    ids = torch.tensor([context + tokens])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(context) - 1 + i, t]) for i, t in enumerate(tokens)) / len(tokens)


def test_relevance_is_the_completions_log_likelihood_gain_from_its_prompt(tiny_model_dir):
    from xdetox import models
    from xdetox.errors import XdetoxInputError
    from xdetox.scorers import get_scorer
    from xdetox.scorers.relevance import relevance

    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), dtype="float32")
    tok = loaded.tokenizer
    prompts = ["Complete the sentence: you are a fool", "Complete the sentence: das Wetter ist",
               "Complete the sentence: a much longer prompt than the others, with many more tokens in it"]
    texts = ["and so are your friends", "heute schön und warm", "ok"]
    values = relevance(loaded.model, tok, prompts, texts)
    start = tok("").input_ids
    for prompt, text, value in zip(prompts, texts, values):
        ids = tok(text, add_special_tokens=False).input_ids
        expected = _loglik(loaded.model, tok, tok(prompt).input_ids, ids) - _loglik(loaded.model, tok, start, ids)
        assert value == pytest.approx(expected, abs=1e-4), "batched and padded as one sequence alone"
    swapped = relevance(loaded.model, tok, prompts[::-1], texts)
    assert swapped[1] == pytest.approx(values[1], abs=1e-5) and swapped[0] != pytest.approx(values[0], abs=1e-3)
    scorer = get_scorer(f"relevance:{tiny_model_dir}")
    assert scorer.kind == "relevance" and scorer.needs_prompts
    with pytest.raises(XdetoxInputError, match="needs each text's prompt"):
        scorer.score(texts, "en")


def test_xdetox_score_refuses_a_scorer_that_needs_prompts(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("hello there\n")
    assert main(["score", "--scorer", f"relevance:{tiny_model_dir}", "--lang", "en", str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs each text's prompt" in err[0]


def test_language_fidelity_checks_script_then_language():
    from xdetox.scorers import LanguageFidelityScorer, get_scorer
    from xdetox.text import dominant_script

    assert dominant_script("Привет, world!!") == "Cyrillic"
    assert dominant_script("1234 ?!") is None
    scorer = get_scorer("lang-fidelity")
    assert isinstance(scorer, LanguageFidelityScorer)
    texts = ["Das ist ein ganz normaler deutscher Satz über das Wetter.",
             "This is a perfectly ordinary English sentence about the weather.",
             "Это совершенно обычное предложение о погоде на русском языке.",
             "", "12345"]
    assert scorer.score(texts, "de") == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert scorer.score(texts, "en") == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert scorer.score(texts, "ru") == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert scorer.score(["Це звичайне речення українською мовою про погоду, яка сьогодні гарна."], "uk") == [1.0]
    assert scorer.score(["ይህ የአማርኛ ዓረፍተ ነገር ነው።", "this is not Amharic"], "am") == [1.0, 0.0]
    assert scorer.score(["这是一个关于天气的普通中文句子。", "यह मौसम के बारे में एक सामान्य वाक्य है।"], "zh") == [1.0, 0.0]


def test_reference_measures_agree_with_perplexity_and_pool_real_tokens(tiny_model_dir):
    import numpy as np

    from xdetox import models
    from xdetox.analysis import reference_measures
    from xdetox.scorers.perplexity import perplexity

    loaded = models.load(models.ModelSpec(name=str(tiny_model_dir)), dtype="float32")
    texts = {"en": ["one two", "a somewhat longer english sentence here"], "de": ["ein deutscher Satz"]}
    measures = reference_measures(loaded.model, loaded.tokenizer, texts, batch_size=2)
    per_text = perplexity(loaded.model, loaded.tokenizer, texts["en"])
    assert measures.ppl["en"] == pytest.approx(float(np.exp(np.mean(np.log(per_text)))), rel=1e-4)
    assert measures.embeddings["en"].shape == (2, loaded.model.config.hidden_size)
    alone = reference_measures(loaded.model, loaded.tokenizer, {"en": texts["en"][:1]}, batch_size=1)
    assert np.allclose(alone.embeddings["en"][0], measures.embeddings["en"][0], atol=1e-4), "padding leaked"


def test_embedding_analysis_separates_clustered_languages():
    import numpy as np

    from xdetox.analysis import embedding_analysis

    rng = np.random.default_rng(0)
    apart = {"en": rng.normal(0, 0.05, (20, 8)) + np.eye(8)[0] * 5,
             "zh": rng.normal(0, 0.05, (20, 8)) + np.eye(8)[1] * 5}
    mixed = {"en": rng.normal(0, 1, (20, 8)) + 3, "zh": rng.normal(0, 1, (20, 8)) + 3}
    a, m = embedding_analysis(apart), embedding_analysis(mixed)
    assert a.silhouette > 0.9 and abs(m.silhouette) < 0.2
    assert a.similarity["en"]["en"] > 0.99 and abs(a.similarity["en"]["zh"]) < 0.1
    assert a.similarity["en"]["zh"] == pytest.approx(a.similarity["zh"]["en"])
    assert len(a.projection) == 40 and {p[0] for p in a.projection} == {"en", "zh"}
