"""Tests of ``sentences:<toxicity scorer>`` (xdetox.scorers.sentences): a text as toxic as its most toxic
sentence, in every script of ours; the registry's checks of the name; the scorer's identity; ``xdetox score``
with it; and the shipped ``offline-tuned`` read both ways on an insult inside benign text."""

from __future__ import annotations

import pytest

from xdetox.cli import main
from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorers import SentenceMaxScorer, get_scorer, registry, split_sentences

INSULTS = ("idiot", "дурак", "ідіот", "白痴", "मूर्ख", "غبي", "ደደብ", "imbécil", "Idiot")


class Diluting:
    """A toxicity scorer that reads a whole text at once: the share of its words that are insults (an
    insult inside longer text is diluted). Records every batch it is given."""

    name = "diluting"
    kind = "toxicity"
    supported_languages = frozenset(LANGS) - {"uk"}

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, texts: list[str], lang: str) -> list[float]:
        self.calls.append(list(texts))
        return [sum(any(i in w for i in INSULTS) for w in t.split()) / max(len(t.split()), 1) for t in texts]


@pytest.fixture
def diluting(monkeypatch) -> Diluting:
    monkeypatch.setattr(registry, "SCORERS", dict(registry.SCORERS))
    monkeypatch.setattr(registry, "PREFLIGHT", dict(registry.PREFLIGHT))
    scorer = Diluting()
    registry.register_scorer("diluting", lambda: scorer)
    return scorer


# each: a short insult, then a longer benign sentence after the language's own sentence mark
TEXTS = {
    "en": "You are an idiot. I hope you have a very nice day with all of your family.",
    "es": "Eres un imbécil. Espero que tengas un muy buen día con toda tu familia.",
    "de": "Du Idiot. Ich wünsche dir einen sehr schönen Tag mit deiner ganzen Familie.",
    "ru": "Ты дурак! Я желаю тебе очень хорошего дня со всей твоей семьёй.",
    "zh": "你是 白痴。 我 希望 你 和 你 的 家人 度过 非常 美好 的 一天 。",
    "hi": "तुम मूर्ख हो। मुझे आशा है कि आपका दिन आपके पूरे परिवार के साथ बहुत अच्छा रहे।",
    "ar": "أنت غبي؟ أتمنى لك يوما سعيدا جدا مع كل أفراد عائلتك الكرام.",
    "am": "አንተ ደደብ ነህ። ከቤተሰብህ ሁሉ ጋር በጣም ጥሩ ቀን እንዲሆንልህ እመኛለሁ።",
}


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_a_text_is_as_toxic_as_its_worst_sentence(diluting, lang) -> None:
    text = TEXTS[lang]
    first, *rest = split_sentences(text, lang)
    assert rest, f"{lang}: no sentence boundary found in {text!r}"
    whole, = diluting.score([text], lang)
    worst, = diluting.score([first], lang)
    scorer = get_scorer("sentences:diluting")
    assert scorer.score([text], lang) == [worst]
    assert worst > whole > 0  # the insult, diluted by the whole text, is found again in its sentence


def test_silent_fragments_are_not_scored_and_one_call_scores_a_batch(diluting) -> None:
    scorer = get_scorer("sentences:diluting")
    diluting.calls.clear()
    texts = ["You are an idiot. ... !!! 123.", "No boundary here at all", "  Fine.  Thanks.  "]
    values = scorer.score(texts, "en")
    assert len(diluting.calls) == 1
    scored = diluting.calls[0]
    assert scored == ["You are an idiot.", "No boundary here at all", "Fine.", "Thanks."]
    assert values == [0.25, 0.0, 0.0]
    assert split_sentences("... !!!", "en") == ["... !!!"]  # nothing but silence: the text itself
    assert scorer.score([], "en") == []


def test_the_name_is_checked_before_any_work(diluting, monkeypatch) -> None:
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    for name, needle in [("sentences:", "write sentences:<toxicity scorer>"),
                         ("sentences:sentences:diluting", "write sentences:"),
                         ("sentences:lang-fidelity", "measures language, not toxicity"),
                         ("sentences:nope", "unknown scorer 'nope'"),
                         ("sentences:perspective", "PERSPECTIVE_API_KEY")]:
        with pytest.raises(XdetoxInputError, match=needle):
            registry.check_scorer(name)
    assert registry.scorer_kind("sentences:diluting") == "toxicity"
    assert registry.scorer_languages("sentences:diluting") == Diluting.supported_languages
    with pytest.raises(XdetoxInputError, match="does not support uk"):
        registry.check_languages("sentences:diluting", ["en", "uk"])
    with pytest.raises(XdetoxInputError, match="does not support language 'uk'"):
        get_scorer("sentences:diluting").score(["Ти ідіот."], "uk")


def test_identity_follows_the_scorer_it_wraps(diluting) -> None:
    inner = registry.scorer_identity("offline-tuned")
    assert inner and registry.scorer_identity("sentences:offline-tuned").endswith(":" + inner)
    assert registry.scorer_identity("sentences:diluting").endswith(":diluting")
    assert registry.scorer_identity("sentences:offline-tuned") != registry.scorer_identity("sentences:offline")


def test_cli_score_with_sentences(diluting, tmp_path, capsys) -> None:
    path = tmp_path / "t.txt"
    path.write_text("You are an idiot. I hope you have a very nice day.\nThanks.\n")
    assert main(["score", "--scorer", "sentences:diluting", "--lang", "en", str(path)]) == 0
    assert [float(v) for v in capsys.readouterr().out.split()] == [0.25, 0.0]
    assert main(["score", "--scorer", "sentences:lang-fidelity", "--lang", "en", str(path)]) == 2
    assert "not toxicity" in capsys.readouterr().err


def test_shipped_scorer_finds_an_insult_inside_benign_text() -> None:
    """offline-tuned reads an insult inside a longer completion as the text around it; its sentences: form
    gives the completion the insult's own score."""
    insult = "You're a disgrace. I'm not your friend."
    text = (insult + " I hope you have a wonderful day with your family and that everything goes well for you"
            " at work tomorrow, and that the weather stays nice for the picnic.")
    whole = get_scorer("offline-tuned")
    by_sentence = get_scorer("sentences:offline-tuned")
    assert isinstance(by_sentence, SentenceMaxScorer)
    alone, diluted = whole.score([insult, text], "en")
    worst = max(whole.score(split_sentences(insult, "en"), "en"))
    assert alone > 0.5 > diluted
    assert by_sentence.score([text], "en")[0] == pytest.approx(worst) and worst > 0.5


def test_a_grid_session_wraps_the_scorer_it_already_holds(diluting) -> None:
    """A run scoring X and sentences:X keeps one X in memory: the session's sentences:X wraps its own X."""
    from xdetox.grid import Session

    built = []

    class Counted(Diluting):
        def __init__(self) -> None:
            super().__init__()
            built.append(self)

    registry.register_scorer("counted", Counted)
    session = Session()
    whole = session.scorer("counted")
    by_sentence = session.scorer("sentences:counted")
    assert isinstance(by_sentence, SentenceMaxScorer) and by_sentence.inner is whole and len(built) == 1
    assert session.scorer("sentences:counted") is by_sentence
    assert by_sentence.score([TEXTS["en"]], "en") == [0.25]
    fresh = Session()  # sentences:X first: X is built once and kept for X too
    assert fresh.scorer("sentences:counted").inner is fresh.scorer("counted") and len(built) == 2
    with pytest.raises(XdetoxInputError, match="not toxicity"):
        Session().scorer("sentences:lang-fidelity")
