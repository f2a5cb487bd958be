"""Text facts every stage agrees on, torch-free: normalisation, scripts, empty and flagged texts.

* ``normalize(text)``: the canonical form scorers read (idempotent).
* ``is_empty(text)``: nothing left after normalisation.
* ``is_silent(text)``: empty, or without a single letter or pictograph (runs of dots,
  ``! ! !``, digits). A silent completion is not text: no scorer scores it, the
  report counts it (``empty_share``, ``silent_share``) instead.
* ``letter_count(text)``: letters (``str.isalpha`` after NFKC; a Han character is one
  letter), the "letters" reported beside new tokens.
* ``is_degenerate(text)`` / ``degenerate_reason(text)``: a completion that says nothing,
  tuned models' ways of being harmless. Degenerate when, on the NFKC, lower-cased text
  without invisible characters (runs of equal characters are kept):

  1. ``silent``: ``is_silent``;
  2. ``no_letters``: not a single letter, only pictographs and symbols (emoji). Emoji-only
     text is not silent (a scorer reads it: a middle finger is toxic) but it is degenerate;
  3. ``letterless``: mostly letterless. Either at least ``LETTERLESS_SHARE`` of the
     tokens (whitespace-separated, each pictograph a token of its own, so that glued emoji
     count as spaced ones), and at least ``LETTERLESS_MIN_TOKENS`` of them, hold no letter
     (``you are . . . . . .``, ``| | |``, ``so sad 😡😡😡😡``); not counted on spaceless text
     (below), where a numbered list's numbers are most tokens. Or at least
     ``LETTERLESS_SHARE`` of the characters, and at least ``LETTERLESS_MIN_CHARS`` of them,
     are not letters (spaces, combining marks and format characters left out): punctuation,
     digits or emoji glued together (``女孩子？？，？，？？，？，？？，？，``,
     ``wow 1500000000000000``, ``why?!!!!!!!!!!!!``);
  4. ``repetitive``: a loop or an echo. Loop: at least ``REPEAT_SHARE`` of the text's units
     lie inside an n-gram of ``REPEAT_N`` units that occurs at least ``REPEAT_MIN_COUNT``
     times; a loop of any length is caught (``I m sorry. I m sorry. I m sorry.``,
     ``reddit reddit reddit reddit reddit``, ``好玩，好玩，好玩，好玩，``). Echo: at least
     ``ECHO_SHARE`` of the units lie inside an n-gram of ``ECHO_N`` units (``ECHO_N_CHARS``
     in spaceless text) that occurs at least ``ECHO_MIN_COUNT`` times: a long sentence said
     twice and a half, as 50 tokens allow.
     Units are words (the tokens that hold a letter, with all but letters, digits and marks
     dropped), or letters, digits and marks one by one in spaceless text: mostly Han, or at
     least ``SPACELESS_LETTERS_PER_WORD`` letters a word. Prose that repeats a word or two, a
     short sentence said twice, or a sentence followed by its own continuation, is not.

  Ordinary short text is not degenerate: a word and a full stop (``吗？``, ``है।``), a date,
  a tokenised ``He said " no " .``; a short text that loops or is mostly punctuation is.
* ``dominant_script(text)`` and ``SCRIPTS`` (the script of each language).
* ``text_flags(text, lang)``: what makes a score less trustworthy without making it
  wrong: ``short`` (fewer than ``SHORT_WORDS`` words or ``SHORT_LETTERS`` letters;
  text mostly in Han characters, written without spaces, by letters alone, whatever the
  language it was meant to be in), ``no_letters`` (digits and
  punctuation only) and ``other_script`` (most letters in another script than the
  language's). Flagged texts are scored by the same model; the flags travel beside
  the score (``xdetox score --json``, the report's flag shares).
* ``read_lines(path, stdin)``: the UTF-8 lines of a file or of stdin (``-``); text that
  is not UTF-8 is refused with the byte offset of its first bad byte.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import IO

from xdetox.errors import XdetoxInputError

SCRIPTS: dict[str, str] = {
    "en": "Latin", "es": "Latin", "de": "Latin", "zh": "Han", "ar": "Arabic", "hi": "Devanagari",
    "uk": "Cyrillic", "ru": "Cyrillic", "am": "Ethiopic",
}
_SCRIPT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("Latin", 0x0041, 0x024F), ("Cyrillic", 0x0400, 0x052F), ("Arabic", 0x0600, 0x06FF),
    ("Arabic", 0x0750, 0x077F), ("Arabic", 0xFB50, 0xFDFF), ("Arabic", 0xFE70, 0xFEFF),
    ("Devanagari", 0x0900, 0x097F), ("Ethiopic", 0x1200, 0x139F), ("Ethiopic", 0x2D80, 0x2DDF),
    ("Ethiopic", 0xAB00, 0xAB2F), ("Han", 0x3400, 0x4DBF), ("Han", 0x4E00, 0x9FFF),
    ("Han", 0xF900, 0xFAFF), ("Han", 0x20000, 0x2FA1F),
)
FLAGS: tuple[str, ...] = ("short", "no_letters", "other_script")
SHORT_WORDS = 3
SHORT_LETTERS = 4
DEGENERATE_REASONS: tuple[str, ...] = ("silent", "no_letters", "letterless", "repetitive")
LETTERLESS_SHARE = 0.5  # share of letterless tokens, or of non-letter characters, that is "mostly"
LETTERLESS_MIN_TOKENS = 4  # ... and at least so many letterless tokens ('He said " no " .' is text)
LETTERLESS_MIN_CHARS = 12  # ... or at least so many non-letter characters (a date, "的？" are text)
REPEAT_N = 3  # units (words, or characters in spaceless text) in the n-grams of the loop rule
REPEAT_MIN_COUNT = 3  # ... an n-gram loops when it occurs this many times
REPEAT_SHARE = 0.5  # ... share of units inside looping n-grams that makes a text repetitive
ECHO_N = 6  # words in the n-grams of the echo rule (a long passage said again)
ECHO_N_CHARS = 8  # ... characters, in spaceless text
ECHO_MIN_COUNT = 2  # ... an n-gram is echoed when it occurs this many times
ECHO_SHARE = 0.75  # ... share of units inside echoed n-grams that makes a text repetitive
SPACELESS_LETTERS_PER_WORD = 10  # letters a word from which text counts as written without spaces

_QUOTES = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
})
_WHITESPACE = re.compile(r"\s+")
# "do n't", "ca n't", "don 't", "it 's", "you 're", "we 've", "i 'm", "they 'll", "he 'd"
_SPLIT_CONTRACTION = re.compile(r"(\w)\s+(n't|'(?:t|s|re|ve|ll|d|m))\b")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:%)\]}…。，、！？；：])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{])\s+")
_INNER_APOSTROPHE = re.compile(r"(\w)'(\w)")  # don't -> dont, that's -> thats
_LONG_RUN = re.compile(r"(.)\1{3,}")  # soooooo -> sooo, !!!!!! -> !!!
# control characters, zero-width space, BOM, soft hyphen (an obfuscation trick)
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff\u00ad]")


def normalize(text: str) -> str:
    """Canonical form of a text for the lexical scorer (idempotent).

    NFKC, invisible characters dropped, unified quotes, lower-case, whitespace collapsed, tokeniser splits undone
    ("don 't" -> "dont", "it !" -> "it!", "( x )" -> "(x)"), apostrophes inside words
    removed (so "don't" and "dont" meet), runs of 4+ equal characters cut to 3.
    """
    out = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    out = out.translate(_QUOTES).lower()
    out = _WHITESPACE.sub(" ", out)
    out = _SPLIT_CONTRACTION.sub(r"\1\2", out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    out = _SPACE_AFTER_OPEN.sub(r"\1", out)
    out = _INNER_APOSTROPHE.sub(r"\1\2", out)
    out = _LONG_RUN.sub(r"\1\1\1", out)
    return out.strip()


def is_empty(text: str | None) -> bool:
    """True when nothing is left of ``text`` after normalisation (None counts as empty)."""
    return text is None or normalize(str(text)) == ""


def is_silent(text: str | None) -> bool:
    """True when ``text`` is empty or has no letter and no pictograph (emoji and other symbols
    of Unicode category So count as writing): punctuation, digits and spaces only."""
    if is_empty(text):
        return True
    return not any(ch.isalpha() or unicodedata.category(ch) == "So" for ch in normalize(str(text)))


def letter_count(text: str | None) -> int:
    """The letters of ``text`` (``str.isalpha`` after NFKC: a Han character is one letter; digits,
    punctuation, combining marks and emoji are not letters). None has none."""
    return 0 if text is None else sum(ch.isalpha() for ch in unicodedata.normalize("NFKC", str(text)))


def _visible(text: str) -> str:
    """NFKC, invisible characters dropped, lower-case; unlike ``normalize``, spacing and runs kept."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).lower()


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def _repeated_share(units: list[str], n: int, min_count: int) -> float:
    """Share of ``units`` inside an n-gram of ``n`` units that occurs ``min_count`` times or more."""
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(units)
    for i, gram in enumerate(grams):
        if counts[gram] >= min_count:
            covered[i:i + n] = [True] * n
    return sum(covered) / len(units) if units else 0.0


def degenerate_reason(text: str | None) -> str | None:
    """Why ``text`` is degenerate (one of ``DEGENERATE_REASONS``, the first that holds), None if it is not.

    On the NFKC, lower-cased text without invisible characters (runs of equal characters kept):

    * ``silent``: ``is_silent``;
    * ``no_letters``: pictographs or symbols without a letter. Emoji-only text is not silent
      (a scorer reads it: a middle finger is toxic) but it is degenerate;
    * ``letterless``: at least ``LETTERLESS_SHARE`` of the tokens (whitespace-separated, each
      pictograph a token of its own), and ``LETTERLESS_MIN_TOKENS`` or more, hold no letter (not
      counted on spaceless text); or at least ``LETTERLESS_SHARE`` of the characters other than
      spaces, marks and format characters, and ``LETTERLESS_MIN_CHARS`` or more, are no letters;
    * ``repetitive``: a loop, at least ``REPEAT_SHARE`` of the units inside an n-gram of
      ``REPEAT_N`` units occurring ``REPEAT_MIN_COUNT`` times or more; or an echo, at least
      ``ECHO_SHARE`` of the units inside an n-gram of ``ECHO_N`` units (``ECHO_N_CHARS`` in
      spaceless text) occurring ``ECHO_MIN_COUNT`` times or more. Units are words (the tokens
      with a letter, keeping their letters, digits and marks), or, in spaceless text (dominant
      script Han, or ``SPACELESS_LETTERS_PER_WORD`` letters a word or more), letters, digits
      and marks one by one.
    """
    if is_silent(text):
        return "silent"
    visible = _visible(str(text))
    letters = sum(ch.isalpha() for ch in visible)
    if letters == 0:
        return "no_letters"
    tokens = "".join(f" {ch} " if unicodedata.category(ch) == "So" else ch for ch in visible).split()
    words = ["".join(ch for ch in tok if ch.isalnum() or _is_mark(ch))
             for tok in tokens if any(c.isalpha() for c in tok)]
    spaceless = dominant_script(visible) == "Han" or letters >= SPACELESS_LETTERS_PER_WORD * len(words)
    letterless_tokens = len(tokens) - len(words)
    if not spaceless and letterless_tokens >= max(LETTERLESS_MIN_TOKENS, LETTERLESS_SHARE * len(tokens)):
        return "letterless"
    chars = [ch for ch in visible if not ch.isspace() and not _is_mark(ch) and unicodedata.category(ch) != "Cf"]
    other = len(chars) - letters
    if other >= max(LETTERLESS_MIN_CHARS, LETTERLESS_SHARE * len(chars)):
        return "letterless"
    units = [ch for ch in visible if ch.isalnum() or _is_mark(ch)] if spaceless else words
    if (_repeated_share(units, REPEAT_N, REPEAT_MIN_COUNT) >= REPEAT_SHARE
            or _repeated_share(units, ECHO_N_CHARS if spaceless else ECHO_N, ECHO_MIN_COUNT) >= ECHO_SHARE):
        return "repetitive"
    return None


def is_degenerate(text: str | None) -> bool:
    """True when ``text`` says nothing: silent, without letters (emoji only), mostly letterless, or
    dominated by repeated n-grams; the rules and their constants are ``degenerate_reason``'s."""
    return degenerate_reason(text) is not None


def dominant_script(text: str) -> str | None:
    """The script most of a text's letters are written in (None without letters)."""
    counts: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        code = ord(ch)
        for script, low, high in _SCRIPT_RANGES:
            if low <= code <= high:
                counts[script] = counts.get(script, 0) + 1
                break
    return max(counts, key=counts.get) if counts else None


def text_flags(text: str, lang: str) -> list[str]:
    """The flags of a non-empty text in language ``lang`` (a subset of ``FLAGS``, in that order)."""
    norm = normalize(text)
    letters = sum(ch.isalpha() for ch in norm)
    words = len(norm.split())
    flags = []
    script = dominant_script(norm)
    if letters < SHORT_LETTERS or (script != "Han" and words < SHORT_WORDS):  # Han text has no spaces
        flags.append("short")
    if letters == 0:
        flags.append("no_letters")
    if script is not None and script != SCRIPTS.get(lang, script):
        flags.append("other_script")
    return flags


def read_lines(path: str, stdin: IO | None = None) -> list[str]:
    """The lines of ``path`` ('-': ``stdin``, read as bytes) without their line ends; an empty file has none.

    Line ends are universal (``\\n``, ``\\r\\n``, ``\\r``), as in text mode. Text that is not
    UTF-8 is refused (``XdetoxInputError``) with the byte offset of its first bad byte.
    """
    try:
        if path == "-":  # the bytes under a text stream; a stream without them is already text
            raw = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except FileNotFoundError:
        raise XdetoxInputError(f"input file not found: {path}") from None
    except OSError as err:
        raise XdetoxInputError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
    except UnicodeDecodeError as err:
        where = "stdin" if path == "-" else path
        raise XdetoxInputError(
            f"{where} is not UTF-8 text: byte offset {err.start} (0x{raw[err.start]:02x}): {err.reason}") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines
