"""Text normalisation (xdetox.hygiene) on the real bundled rows of all 9 languages."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from xdetox.data import LANGS, load_bundled
from xdetox.errors import XdetoxInputError
from xdetox.hygiene import (
    DEFAULT_TEXT_NORMALISATION,
    TEXT_NORMALISATIONS,
    check_text_normalisation,
    clean,
    clean_corpus,
)


@pytest.fixture(scope="module")
def corpus():
    return load_bundled()


@pytest.fixture(scope="module")
def cleaned(corpus):
    return clean_corpus(corpus, "v1")


# (row id, field, shipped text, text after v1): real bundled rows, at least one per language.
BEFORE_AFTER = [
    ("en-000", "toxic",
     "that s some pretty shit logic .",
     "That's some pretty shit logic."),
    ("en-074", "neutral",
     "it 's just luck .",
     "It's just luck."),
    ("en-080", "neutral",
     "why is this not higher up ? ? ?",
     "Why is this not higher up???"),
    ("en-099", "neutral",
     "yes, who is the government to be involved in my education of my children? .",
     "Yes, who is the government to be involved in my education of my children?"),
    ("en-232", "neutral",
     "i d love to live there if it weren t for california cost of living .",
     "I'd love to live there if it weren't for california cost of living."),
    ("en-136", "toxic",
     'side - note , why the fuck does everything the us make have to be called " joint . "',
     'Side - note, why the fuck does everything the us make have to be called "joint."'),
    ("en-367", "toxic",
     "so i would really like it if people could stop acting like that 's why he got shot , it fucking isn 't .",
     "So I would really like it if people could stop acting like that's why he got shot, it fucking isn't."),
    ("es-017", "neutral",
     "Será puerta abierta ,no?",
     "Será puerta abierta, no?"),
    ("es-230", "neutral",
     "que frustración .",
     "Que frustración."),
    ("es-249", "neutral",
     "Los sinvergüenzas están empezando ... No seas irrespetuoso, rumana ...",
     "Los sinvergüenzas están empezando... No seas irrespetuoso, rumana..."),
    ("de-106", "neutral",
     "Du bist einfach nur noch fragwürdig . #Bundestag",
     "Du bist einfach nur noch fragwürdig. #Bundestag"),
    ("de-301", "neutral",
     'Trump - sprich Tramp. Wenn die Laien-Ministerin über Trump labert,. bleibt mir nur : " Lass den Trampel'
     ' quaken". Zu mehr ist sie meiner Meinung nach nicht geeignet.',
     'Trump - sprich Tramp. Wenn die Laien-Ministerin über Trump labert,. bleibt mir nur: "Lass den Trampel'
     ' quaken". Zu mehr ist sie meiner Meinung nach nicht geeignet.'),
    ("de-363", "toxic",
     "1. Mit ihr euch meine ich diese ganzen intoleranten voll mit hasserfüllten versagern ..2 . ich will mich"
     " nicht nach euren wünschen und Vorstellungen integrieren , punkt aus !",
     "1. Mit ihr euch meine ich diese ganzen intoleranten voll mit hasserfüllten versagern.. 2. ich will mich"
     " nicht nach euren wünschen und Vorstellungen integrieren, punkt aus!"),
    # zh: no tokenised spacing in the shipped rows, and no casing: v1 changes nothing.
    ("zh-002", "toxic",
     "??来啦，吃香蕉，小矮子",
     "??来啦，吃香蕉，小矮子"),
    ("zh-160", "toxic",
     "?的这种不像智人发言的极品脑瘫言论，每次都让我怀疑这是友军??，然而现实就是一次又一次地打我的脸?",
     "?的这种不像智人发言的极品脑瘫言论，每次都让我怀疑这是友军??，然而现实就是一次又一次地打我的脸?"),
    ("ar-098", "neutral",
     "الله لايوفق كل شخص له يد باللي صار ، حسبي الله عليكم",
     "الله لايوفق كل شخص له يد باللي صار، حسبي الله عليكم"),
    ("ar-165", "neutral",
     "اذا الدوري البرتغالي دوري مبتدئين دوريك وش ؟",
     "اذا الدوري البرتغالي دوري مبتدئين دوريك وش؟"),
    ("ar-382", "toxic",
     "الرجال افعال لا اقوال .حددنا الخط الاحمر وتركنا الكلام لقردوغان.من يتفق مع روسيا هو ا…",
     "الرجال افعال لا اقوال. حددنا الخط الاحمر وتركنا الكلام لقردوغان.من يتفق مع روسيا هو ا…"),
    ("hi-073", "neutral",
     "केजरीवाल अच्छा आदमी नहीं है | ऐसा मेरे मोहल्ले वाले लोग कह रहे थे ||",
     "केजरीवाल अच्छा आदमी नहीं है। ऐसा मेरे मोहल्ले वाले लोग कह रहे थे।।"),
    ("hi-008", "neutral",
     "आजम खान कुछ भी बोलता है । इस को उड़ा दो  ।",
     "आजम खान कुछ भी बोलता है। इस को उड़ा दो।"),
    ("hi-116", "neutral",
     "मुंह से कुछ भी बकवास बोल रही है ।|",
     "मुंह से कुछ भी बकवास बोल रही है।।"),
    ("uk-311", "neutral",
     "я за сьогодні вже 2 рази , руки реально нiзвiдки треба ростуть",
     "Я за сьогодні вже 2 рази, руки реально нiзвiдки треба ростуть"),
    ("uk-207", "toxic",
     "'П''яний друг каже: \" ніколи не трахай дівчат з економічного...\"'",
     "'П''яний друг каже: \"ніколи не трахай дівчат з економічного...\"'"),
    ("uk-236", "neutral",  # the emoticon keeps its space
     "сід каже що я ніяка :(",
     "Сід каже що я ніяка :("),
    ("ru-007", "neutral",
     "то ,что у нас президент ужасен и нелеп, виноват не народ, а та личность которая была президентом до него...",
     "То, что у нас президент ужасен и нелеп, виноват не народ, а та личность которая была президентом до него..."),
    ("ru-124", "toxic",
     "не брехай, убогий, 100 тыш пришло к белому ( не факт! жёлтому дому) в вашингтоне!",
     "Не брехай, убогий, 100 тыш пришло к белому (не факт! жёлтому дому) в вашингтоне!"),
    ("ru-074", "neutral",
     "ты эт сталина вспомни .он 14 миллионов своих убил..",
     "Ты эт сталина вспомни. он 14 миллионов своих убил.."),
    ("am-009", "neutral",
     "ትግራይ ለብቻ ነበር ? አምስት አገር ለአንድ ክልል ።",
     "ትግራይ ለብቻ ነበር? አምስት አገር ለአንድ ክልል።"),
    ("am-036", "neutral",
     "አቤት አሉላ እንዴት ነው የሚያጋንነው ፡፡ ምንድነው እንዲህ የሚያናግረው",
     "አቤት አሉላ እንዴት ነው የሚያጋንነው፡፡ ምንድነው እንዲህ የሚያናግረው"),
    ("am-009", "toxic",
     "አንተ ደደብ ለስት ነው እንዴ ትግራይን የገጠሙት ?አህያ ነህ አምስት አገር ለአንድ ክልል ቅማል ቅርፅ ነህ።",
     "አንተ ደደብ ለስት ነው እንዴ ትግራይን የገጠሙት? አህያ ነህ አምስት አገር ለአንድ ክልል ቅማል ቅርፅ ነህ።"),
]

# A space before a mark (the check of the docs page) and the emoticons v1 keeps as they are.
SPACE_BEFORE_MARK = re.compile(r"\s[.,?!;:…|।،؛؟።፣፤፥፦፧፨፡]")
EMOTICON = re.compile(r"\s(?:[:;]-?[()DdPpз]|\._\.)")
# What stays after v1, and why (docs/text-normalisation.md lists the same rows).
LEFT_TRAIN_NEUTRAL = {
    "de-104": "kommt .es -- a lone '.' glued to a lower-case Latin word (could be .es, .com)",
    "de-229": "PFAFFE ,, Im -- ',,' typed as a low quotation mark",
    "am-046": "ደገፊ :ቤተ -- a Latin ':' used as an Ethiopic word separator",
}
LEFT_TEST_TOXIC = {
    "en-338": "bullshit. | 39 -- a table remnant, not a danda outside Hindi",
    "de-384": "ÄNDERN ;AUF -- a lone ';' glued to a word (could be ;P, ;D)",
    "ru-374": "пиздец!!! ,,мудаки ,, -- ',,' typed as quotation marks",
}
EMOTICON_TRAIN_NEUTRAL = {"es-187", "de-024", "de-190", "ar-083", "uk-096", "uk-219", "uk-236", "uk-293", "ru-204"}
EMOTICON_TEST_TOXIC = {"es-334", "uk-334", "uk-361", "ru-327", "ru-331"}


def _stray(text: str) -> bool:
    return any(not EMOTICON.match(text, m.start()) for m in SPACE_BEFORE_MARK.finditer(text))


def _rows(corpus, split, field):
    return {p.id: getattr(p, field) for p in corpus.pairs if p.split == split}


def test_constants():
    assert TEXT_NORMALISATIONS == ("none", "v1")
    assert DEFAULT_TEXT_NORMALISATION == "v1"
    assert all(check_text_normalisation(v) == v for v in TEXT_NORMALISATIONS)


@pytest.mark.parametrize(("row_id", "field", "before", "after"), BEFORE_AFTER,
                         ids=[f"{r[0]}-{r[1]}" for r in BEFORE_AFTER])
def test_v1_before_after_on_real_rows(corpus, cleaned, row_id, field, before, after):
    pair = next(p for p in corpus.pairs if p.id == row_id)
    assert getattr(pair, field) == before  # the shipped text, byte for byte
    assert clean(before, pair.lang, "v1") == after
    assert getattr(next(p for p in cleaned.pairs if p.id == row_id), field) == after


def test_table_covers_every_language_and_zh_is_untouched(corpus, cleaned):
    langs = {row_id.split("-")[0] for row_id, *_ in BEFORE_AFTER}
    assert langs == set(LANGS)
    changed = {row_id.split("-")[0] for row_id, _, before, after in BEFORE_AFTER if before != after}
    assert changed == set(LANGS) - {"zh"}
    zh = [(p, q) for p, q in zip(corpus.pairs, cleaned.pairs) if p.lang == "zh"]
    assert len(zh) == 400 and all(p == q for p, q in zh)


def test_none_is_byte_identical_over_the_bundled_corpus(corpus):
    assert clean_corpus(corpus, "none") is corpus
    for p in corpus.pairs:
        for field in ("toxic", "neutral"):
            text = getattr(p, field)
            out = clean(text, p.lang, "none")
            assert out is text or out.encode("utf-8") == text.encode("utf-8")


def test_clean_corpus_keeps_ids_langs_splits_and_order(corpus, cleaned):
    assert cleaned.name == f"{corpus.name} · text v1"
    assert (corpus.text_normalisation, cleaned.text_normalisation) == ("none", "v1")
    assert clean_corpus(cleaned, "v1") is cleaned  # already v1: nothing to do
    assert [(p.id, p.lang, p.split) for p in cleaned.pairs] == [(p.id, p.lang, p.split) for p in corpus.pairs]
    for p, q in zip(corpus.pairs, cleaned.pairs):
        assert (q.toxic, q.neutral) == (clean(p.toxic, p.lang), clean(p.neutral, p.lang))
    assert clean_corpus(corpus) == cleaned  # v1 is the default


def test_v1_leaves_no_space_before_punctuation_in_train_neutrals(corpus, cleaned):
    before = _rows(corpus, "train", "neutral")
    after = _rows(cleaned, "train", "neutral")
    assert sum(bool(SPACE_BEFORE_MARK.search(t)) for t in before.values()) == 321
    assert {i for i, t in after.items() if _stray(t)} == set(LEFT_TRAIN_NEUTRAL)
    assert {i for i, t in after.items() if SPACE_BEFORE_MARK.search(t)} == \
        set(LEFT_TRAIN_NEUTRAL) | EMOTICON_TRAIN_NEUTRAL


def test_v1_leaves_no_space_before_punctuation_in_test_prompts(corpus, cleaned):
    before = _rows(corpus, "test", "toxic")
    after = _rows(cleaned, "test", "toxic")
    assert sum(bool(SPACE_BEFORE_MARK.search(t)) for t in before.values()) == 162
    assert {i for i, t in after.items() if _stray(t)} == set(LEFT_TEST_TOXIC)
    assert {i for i, t in after.items() if SPACE_BEFORE_MARK.search(t)} == \
        set(LEFT_TEST_TOXIC) | EMOTICON_TEST_TOXIC


def test_v1_is_idempotent_over_the_corpus(cleaned):
    for p in cleaned.pairs:
        assert clean(p.toxic, p.lang) == p.toxic
        assert clean(p.neutral, p.lang) == p.neutral


def test_non_empty_text_never_becomes_empty(corpus, cleaned):
    assert all(p.toxic and p.neutral for p in cleaned.pairs)
    for text in (" ", "   ", "\n", ".", " . ", "?", " ? . ", "( )", '" "', "|", "i"):
        for lang in LANGS:
            out = clean(text, lang)
            assert out, (text, lang)
            assert clean(out, lang) == out


@pytest.mark.parametrize("call", [
    lambda: check_text_normalisation("v2"),
    lambda: clean("text .", "en", "V1"),
    lambda: clean_corpus(load_bundled(), ""),
])
def test_unknown_version_is_one_line_input_error(call):
    with pytest.raises(XdetoxInputError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and "none, v1" in message


@pytest.mark.parametrize(("lang", "text", "expected"), [
    ("en", "e.g. it costs 3.5 or 1,000 dollars ...", "E.g. it costs 3.5 or 1,000 dollars..."),
    ("en", "see https://example.com/a?b=1 , ok .", "See https://example.com/a?b=1, ok."),
    ("en", "www.example.org/x , y", "www.example.org/x, y"),
    ("en", "http://x.com/i , i m here", "http://x.com/i, I'm here"),
    ("en", "it costs .5 and runs on .NET", "It costs .5 and runs on .NET"),
    ("en", "ok :) fine ;( sure :D meh :-d", "Ok :) fine ;( sure :D meh :-d"),
    ("en", "( see above ) , then [ stop ]", "(See above), then [stop]"),
    ("en", "he said \" hello \" and left", 'He said "hello" and left'),
    ("en", "i m sure you re right , they ll see", "I'm sure you're right, they'll see"),
    ("en", "do n't , can t , wo n't , it 's", "Don't, can't, won't, it's"),
    ("en", "in ny s history i just re watched it", "In ny s history I just re watched it"),
    ("en", "i.e. i know", "I.e. I know"),
    ("de", "ß ist ein Buchstabe", "ß ist ein Buchstabe"),
    ("es", "¿ qué pasa ?", "¿Qué pasa?"),
    ("ru", "« привет » , мир", "«Привет», мир"),
    ("hi", "यह सही है | है ना ?", "यह सही है। है ना?"),
    ("en", "a | b", "A | b"),
    ("ar", "هل انت هنا ؟ نعم ، هنا .", "هل انت هنا؟ نعم، هنا."),
    ("am", "ሰላም ነው ። እሺ ፣ ደህና", "ሰላም ነው። እሺ፣ ደህና"),
    ("zh", "abc 你好", "abc 你好"),
])
def test_v1_rules(lang, text, expected):
    assert clean(text, lang) == expected
    assert clean(expected, lang) == expected


def test_module_is_torch_free():
    code = "import sys, xdetox.hygiene; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
