"""Text facts every stage agrees on, torch-free: normalisation, scripts, empty and flagged texts.

* ``normalize(text)``: the canonical form scorers read (idempotent).
* ``is_empty(text)``: nothing left after normalisation.
* ``is_silent(text)``: empty, or without a single letter or pictograph (runs of dots,
  ``! ! !``, digits). A silent completion is not text: no scorer scores it, the
  report counts it (``empty_share``, ``silent_share``) instead.
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
