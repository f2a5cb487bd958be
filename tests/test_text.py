"""Normalisation, empty texts and text flags: torch-free facts every stage shares."""

import json
import subprocess
import sys

import pytest

from xdetox.text import FLAGS, dominant_script, is_empty, is_silent, normalize, text_flags


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
