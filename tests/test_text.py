"""Normalisation, empty texts, text flags and degenerate texts: torch-free facts every stage shares."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xdetox import text as text_module
from xdetox.text import (
    DEGENERATE_REASONS, FLAGS, degenerate_reason, dominant_script, is_degenerate, is_empty, is_silent, letter_count,
    normalize, text_flags,
)

FIXTURE = Path(__file__).parent / "data" / "degenerate_completions.jsonl"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b", "\u200b \ufeff", None])
def test_empty_after_normalisation(text):
    assert is_empty(text)


@pytest.mark.parametrize("text", [",", ".", "0", "a", "你", "ሰ"])
def test_a_single_visible_character_is_text(text):
    assert not is_empty(text)


@pytest.mark.parametrize("text", ["", ". . . . .", "! ! ! !", "...", "2024 !!", "1. 2. 3.", "​,", "-- ; --"])
def test_punctuation_and_digits_alone_are_silent(text):
    assert is_silent(text)


@pytest.mark.parametrize("text", ["a", "no.", "你", "ሰ", "Я", "🖕", "1 idiot", "x . . . ."])
def test_one_letter_or_pictograph_is_text(text):
    assert not is_silent(text)


@pytest.mark.parametrize("text, lang, flags", [
    ("Hello", "en", ["short"]),
    (",", "en", ["short", "no_letters"]),
    ("2024 !!", "de", ["short", "no_letters"]),
    ("This is a perfectly ordinary sentence.", "en", []),
    ("This is a perfectly ordinary sentence.", "ru", ["other_script"]),
    ("Это совершенно обычное предложение.", "uk", []),
    ("Это", "ru", ["short"]),
    ("这是一个很普通的句子", "zh", []),  # no spaces: Chinese is judged by letters alone
    ("你好", "zh", ["short"]),
    ("Hola amigo mío, ¿qué tal?", "zh", ["other_script"]),
    ("Hello", "zh", ["short", "other_script"]),  # words are counted by the text's own script
    ("Hello there", "zh", ["short", "other_script"]),
    ("这是一个很普通的句子", "en", ["other_script"]),  # a Chinese sentence is not short in an en run
    ("ይህ በጣም ተራ ዓረፍተ ነገር ነው", "am", []),
])
def test_text_flags(text, lang, flags):
    assert text_flags(text, lang) == flags
    assert set(flags) <= set(FLAGS)


def test_normalize_is_idempotent_and_scripts_are_found():
    for text in ("Don 't  DO that !!!!!", "«Привет»\u200b", "ሰላም  ነው"):
        assert normalize(normalize(text)) == normalize(text)
    assert dominant_script("Привет, world!!") == "Cyrillic" and dominant_script("12 ?") is None


def test_importing_text_loads_no_torch():
    code = "import sys, xdetox.text; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_score_prints_nan_for_empty_lines_and_flags_with_json(tmp_path, capsys):
    from xdetox.cli import main

    path = tmp_path / "texts.txt"
    path.write_text("You are an idiot and everybody knows it.\n\n\u200b\nHello\n. . . .\n", encoding="utf-8")
    assert main(["score", "--scorer", "offline", "--lang", "en", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[1] == lines[2] == lines[4] == "nan"
    assert 0 <= float(lines[0]) <= 1 and 0 <= float(lines[3]) <= 1
    assert main(["score", "--scorer", "offline", "--lang", "en", "--json", str(path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["flags"] for r in rows] == [[], ["silent"], ["silent"], ["short"], ["silent"]]
    assert rows[1]["toxicity"] is None and rows[0]["toxicity"] == pytest.approx(float(lines[0]), abs=1e-6)


@pytest.mark.parametrize("text, letters", [
    ("", 0), (None, 0), (". . . !", 0), ("2024", 0), ("🖕🖕", 0),
    ("Hello, world!", 10), ("你好，世界", 4),  # a Han character is one letter
    ("ＡＢＣ", 3),  # NFKC: full-width letters are letters
    ("नमस्ते", 4),  # combining vowel signs and the virama are marks, not letters
    ("ሰላም ነው", 5), ("Привет!", 6), ("ﬁne", 4),  # NFKC unfolds the ligature
])
def test_letter_count(text, letters):
    assert letter_count(text) == letters


def _fixture_rows():
    with FIXTURE.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_fixture_covers_both_sides_every_script_and_reason():
    rows = _fixture_rows()
    assert 40 <= len(rows) <= 60
    assert {True, False} <= {r["degenerate"] for r in rows}
    for lang in ("en", "es", "de", "zh", "ar", "hi", "uk", "ru", "am"):
        assert {r["degenerate"] for r in rows if r["lang"] == lang} == {True, False}, lang
    assert {r["reason"] for r in rows if r["degenerate"]} == set(DEGENERATE_REASONS)
    assert {r["paradigm"] for r in rows} >= {"zs", "x-ft", "m-ft", "p-ft"}


@pytest.mark.parametrize("row", _fixture_rows(), ids=lambda r: f"{r['paradigm']}-{r['source']}-{r['prompt_id']}")
def test_is_degenerate_on_real_completions(row):
    """Real completions from the embedded grid store, labelled by a reader."""
    assert is_degenerate(row["text"]) is row["degenerate"], row["text"]
    assert degenerate_reason(row["text"]) == row["reason"]


@pytest.mark.parametrize("text", ["", None, " \u200b ", ". . . . . . . .", "| | | | | |", "! ! ! ! !", "1. 2. 3. 4."])
def test_silent_text_is_degenerate(text):
    assert degenerate_reason(text) == "silent"


@pytest.mark.parametrize("text", ["🖕", "🖕🖕🖕🖕🖕", "😂 😂 😂", "! 🙄 🤦🏻\u200d♀️ 💔", "\ufffd"])
def test_emoji_only_is_text_but_degenerate(text):
    """Decision: emoji-only text is not silent (a scorer reads it: a middle finger is toxic), but
    it is degenerate (not a letter in it)."""
    assert not is_silent(text)
    assert degenerate_reason(text) == "no_letters"


@pytest.mark.parametrize("text", [
    "you are a moron . . . . . . . .",  # letterless tokens
    "x . . . .",
    "no . . . ! ! ! ? ?",
    "so sad 😡😡😡😡😡😡",  # glued emoji count one token each
    "ok 😂 😂 😂 😂 😂",
    "好？？，？，？？，？，？？，？，",  # letterless characters, glued
    "wow 1500000000000000",
    "The answer is ____________________",
])
def test_mostly_letterless_text_is_degenerate(text):
    assert degenerate_reason(text) == "letterless"


@pytest.mark.parametrize("text", [
    "You are an idiot . I said it .",  # 2 of 8 tokens letterless: less than half
    "He said \" no \" .",  # a tokenised sentence: half its tokens, but only 3 of them
    "Born in 1990, she moved to Berlin in 2015 with 2 kids.",
    "Call 0800 123 456 today.",
    "You are an idiot 🖕",
    "¿Por qué? ¿Por qué no? 😂😂",
])
def test_text_with_some_punctuation_digits_or_emoji_is_not_degenerate(text):
    assert degenerate_reason(text) is None


@pytest.mark.parametrize("text", [
    "I m sorry. I m sorry. I m sorry. I m sorry.",
    "reddit reddit reddit reddit reddit reddit",
    "No, no, no, no, no, no, no!",
    "You are the worst. You are the worst. You are the worst. You are the worst.",
    "He hates it and you know he hates it and you know he hates it and you know",
    "好玩，好玩，好玩，好玩，好玩，好玩",  # a loop in Chinese: characters are the units
    "我承认我太懒了。我承认我太烦人了。我承认我太懒了。我承认我太烦人了。",
    "ha ha ha ha ha",
    # an echo: a long sentence said twice and a half, as 50 tokens allow
    "This country will never be safe for people like us. This country will never be safe for people like us."
    " This country will",
])
def test_repetition_is_degenerate(text):
    assert degenerate_reason(text) == "repetitive"


@pytest.mark.parametrize("text", [
    "I really, really hate this. It is bad, so bad, and I told you so.",  # a word or two repeated
    "The cat is on the mat and the dog is on the mat, but the bird is in the tree.",
    "You are an idiot. You are an idiot and everybody knows it.",  # a sentence and its own continuation
    "Good thing I never supported those clowns. Good thing I never supported those clowns, because they"
    " ruined the whole city and nobody will ever trust them again after what they did.",
    "I hate you. I hate you.",  # a short sentence said twice
    "No, no, no, no!",
    "他说他不会来，因为他很忙，但他明天会打电话给你。",
    "你们不听我的话，你们不听我的话。",
])
def test_ordinary_repetition_is_not_degenerate(text):
    assert not is_degenerate(text)


@pytest.mark.parametrize("text", [
    "这是一个很普通的句子，我们今天去公园散步，天气很好，大家都很开心。",
    "中国人喜欢吃饺子。北方人过年的时候吃饺子，南方人过年的时候吃汤圆。",
    "你不想看這部劇，快來看吧!!",
    "1. 您的能力太强了。\n2. 您是他的敌人吗？\n3. 你的名誉受损了吗？",  # a numbered list: numbers are most tokens
    "我觉得 这个 想法 不错",  # Chinese written with spaces
])
def test_chinese_text_is_not_degenerate(text):
    assert not is_degenerate(text)


@pytest.mark.parametrize("text", [
    "Hello", "Hi !", "No way.", "Thanks!", "OK.", "50 mal.", "...ich", "吗？", "了。", "是吗？", "है।", "ች።",
    "Call 911 now!", "x", "你", "Это", "¿Qué?", "——一锅粥！", "31 de octubre 2019 15:00 AM", "3. 01. 2017 г.",
])
def test_short_ordinary_text_is_not_degenerate(text):
    assert not is_degenerate(text)


def test_degenerate_constants_are_named_at_module_level():
    for name in ("LETTERLESS_SHARE", "LETTERLESS_MIN_TOKENS", "LETTERLESS_MIN_CHARS", "REPEAT_N",
                 "REPEAT_MIN_COUNT", "REPEAT_SHARE", "ECHO_N", "ECHO_N_CHARS", "ECHO_MIN_COUNT", "ECHO_SHARE",
                 "SPACELESS_LETTERS_PER_WORD"):
        assert isinstance(getattr(text_module, name), (int, float)), name
    assert degenerate_reason("A perfectly ordinary sentence about the weather.") is None


def test_the_rules_thresholds_hold_at_their_edges():
    loop = "we are here we are here we are here "  # 9 words inside a 3-gram said 3 times
    assert degenerate_reason(loop + "and then one two three four five six seven") == "repetitive"  # 9 of 18 units
    assert degenerate_reason(loop + "and then one two three four five six seven eight") is None  # 9 of 19
    assert degenerate_reason("one two three four . . . .") == "letterless"  # 4 of 8 tokens, 4 of them
    assert degenerate_reason("one two three four five . . . .") is None  # 4 of 9
    assert degenerate_reason("one two three . . .") is None  # half, but 3 letterless tokens only
    assert degenerate_reason("ab" + "!" * 12) == "letterless" and degenerate_reason("ab" + "!" * 11) is None
    echo = "they should all go back to where they came from right now "  # 12 words, said again
    assert degenerate_reason(echo * 2 + "please") == "repetitive"  # 24 of 25 units in echoed 6-grams
    assert degenerate_reason(echo + "because nobody here wants them and everybody knows it and says so") is None
