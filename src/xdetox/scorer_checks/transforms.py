"""Obfuscations a scorer-check template may apply to a filled word: ``{insult:spaced}`` (``TRANSFORMS``).

Each works on user-perceived characters (a base character with its combining marks; in
Devanagari, a conjunct joined by a virama), so an obfuscated word stays readable in every
script of the suite. A transform that leaves a word unchanged makes no case (``suite``).
"""

from __future__ import annotations

import unicodedata

_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5",
                       "A": "4", "E": "3", "I": "1", "O": "0", "S": "5"})
# Cyrillic letters written with their Latin look-alikes (a common way round word filters)
_HOMOGLYPH = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "к": "k", "і": "i",
    "А": "A", "Е": "E", "О": "O", "Р": "P", "С": "C", "У": "Y", "Х": "X", "К": "K", "І": "I",
})
_VOWELS = set("aeiouyáéíóúäöüаеёиоуыэюяіїєاوي")
# Arabic letters that do not join to the next letter: no tatweel after them
_ARABIC_NON_JOINING = set("اأإآدذرزوؤةىءـ")
_TATWEEL = "\u0640"
_VIRAMA = {"\u094d"}  # Devanagari: a virama binds the next consonant into the same akshara


def _clusters(word: str) -> list[str]:
    """User-perceived characters: a base character with its combining marks (and, in
    Devanagari, a conjunct joined by a virama).  Spaces are kept as their own cluster."""
    out: list[str] = []
    for ch in word:
        joins = bool(out) and (
            unicodedata.category(ch).startswith("M")
            or out[-1][-1] in _VIRAMA
            or ch in "\u200c\u200d"
        )
        if joins:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _letters(word: str) -> list[int]:
    """Indices of the clusters of ``word`` that are not spaces."""
    return [i for i, c in enumerate(_clusters(word)) if not c.isspace()]


def _t_spaced(word: str) -> str:
    return " ".join(c for c in _clusters(word) if not c.isspace())


def _t_dotted(word: str) -> str:
    return ".".join(c for c in _clusters(word) if not c.isspace())


def _t_dropped(word: str) -> str:
    """Drop the middle letter (``idiot`` -> ``idot``); words of under 4 letters are kept."""
    cl, idx = _clusters(word), _letters(word)
    if len(idx) < 4:
        return word
    del cl[idx[len(idx) // 2]]
    return "".join(cl)


def _t_starred(word: str) -> str:
    """Mask the middle letter with ``*`` (``idiot`` -> ``id*ot``, ``傻逼`` -> ``傻*``)."""
    cl, idx = _clusters(word), _letters(word)
    if len(idx) < 2:
        return word
    cl[idx[len(idx) // 2]] = "*"
    return "".join(cl)


def _t_repeated(word: str) -> str:
    """Stretch the last word: its last vowel after the first letter (``idiot`` -> ``idiooooot``,
    ``حقير`` -> ``حقييييير``), else its last letter (``كلب`` -> ``كلببببب``), or, when that letter
    carries a vowel sign, the sign (``कमीना`` -> ``कमीनााााा``)."""
    words = word.split(" ")
    cl = _clusters(words[-1])
    if not cl:
        return word
    vowels = [i for i in range(1, len(cl)) if cl[i][0].lower() in _VOWELS]
    if vowels:
        cl[vowels[-1]] = cl[vowels[-1]] * 5
    elif len(cl[-1]) > 1 and "\u093e" <= cl[-1][-1] <= "\u094c":  # a Devanagari vowel sign
        cl[-1] = cl[-1] + cl[-1][-1] * 4
    else:
        cl[-1] = cl[-1] * 5
    words[-1] = "".join(cl)
    return " ".join(words)


def _t_leet(word: str) -> str:
    return word.translate(_LEET)


def _t_homoglyph(word: str) -> str:
    return word.translate(_HOMOGLYPH)


def _t_tatweel(word: str) -> str:
    """Arabic: stretch the word with tatweel (kashida) after every joining letter."""
    out = []
    chars = list(word)
    for i, ch in enumerate(chars):
        out.append(ch)
        nxt = chars[i + 1] if i + 1 < len(chars) else ""
        if nxt and not nxt.isspace() and not ch.isspace() and ch not in _ARABIC_NON_JOINING \
                and unicodedata.category(nxt).startswith("L"):
            out.append(_TATWEEL)
    return "".join(out)


def _t_upper(word: str) -> str:
    return word.upper()


TRANSFORMS = {
    "spaced": _t_spaced,
    "dotted": _t_dotted,
    "dropped": _t_dropped,
    "starred": _t_starred,
    "repeated": _t_repeated,
    "leet": _t_leet,
    "homoglyph": _t_homoglyph,
    "tatweel": _t_tatweel,
    "upper": _t_upper,
}
"""Obfuscations a template may apply to a filled word: ``{insult:spaced}``."""
