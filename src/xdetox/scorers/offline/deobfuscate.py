"""Undo the common ways round a word filter before the lexical model reads a text.

``deobfuscate(normalized_text)`` runs after ``xdetox.text.normalize`` (lower-case, NFKC) at
training and at scoring time alike, so the model sees one spelling of a word however it
was disguised:

* letters spread out with spaces or separators (``f u c k``, ``i.d.i.o.t``, ``傻 逼``,
  ``क मी ना``): a run of three or more single letters (a base letter with its combining
  marks; in Devanagari a conjunct) joined by one separator each is written as one word;
* digits and symbols standing for Latin letters inside a Latin word (``1d10t``, ``sh!t``,
  ``n4l4y4k``): mapped back when they stand between letters or in two places of the word
  (``5pm``, ``covid19``, ``mp3`` stay as they are);
* Latin look-alikes inside a Cyrillic word (``cвoлoчь``, ``пpидypok``) and Cyrillic look-alikes
  inside a Latin word: mapped to the script all the word's other letters can be mapped into;
* the Arabic stretching mark tatweel (``غـبـي``) and letters stretched by repetition
  (``idiooooot``, ``ደደብብብብ``): removed, or cut to one letter when repeated three times or more.

Masked letters (``id*ot``), dropped letters (``idot``) and romanised text (``ya 7mar``) are
left as they are: there is nothing to map back, the character n-grams of the rest carry
what is left.  Plain text passes through unchanged except for runs of three or more equal
letters.
"""

from __future__ import annotations

import regex

_SEPARATORS = r"[.\-_·•|/+]"
# a letter cluster: a letter, its combining marks, and (Devanagari) conjuncts joined by a virama
_CLUSTER = r"(?:\p{L}\p{M}*(?:\u094d\p{L}\p{M}*)*)"
_SPREAD_SPACES = regex.compile(rf"(?<![\p{{L}}\p{{M}}])({_CLUSTER}(?: {_CLUSTER}){{2,}})(?![\p{{L}}\p{{M}}])")
_SPREAD_SEPARATORS = regex.compile(
    rf"(?<![\p{{L}}\p{{M}}])({_CLUSTER}(?:{_SEPARATORS}{_CLUSTER}){{2,}})(?![\p{{L}}\p{{M}}])")
_LETTER_RUN = regex.compile(r"(\p{L}\p{M}*)\1{2,}")
_MARK_RUN = regex.compile(r"(\p{M})\1+")  # a vowel sign written twice or more
_TATWEEL = "\u0640"
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s", "!": "i"})
_LATIN_WORD_WITH_LEET = regex.compile(r"(?<![\p{L}\p{M}\d@$!])[\p{Latin}\d@$!]*\p{Latin}[\p{Latin}\d@$!]*")
_TO_CYRILLIC = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "y": "у", "x": "х",
                              "k": "к", "i": "і", "b": "в", "h": "н", "m": "м", "t": "т"})
_TO_LATIN = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
                           "к": "k", "і": "i"})
_TO_CYRILLIC_CHARS = {chr(c) for c in _TO_CYRILLIC}
_TO_LATIN_CHARS = {chr(c) for c in _TO_LATIN}
_MIXED_WORD = regex.compile(r"[\p{Latin}\p{Cyrillic}]+")


def _join(match: regex.Match) -> str:
    return regex.sub(rf"(?: |{_SEPARATORS})", "", match.group(1))


def _unleet(match: regex.Match) -> str:
    word = match.group(0)
    core = word.rstrip("!")  # a trailing "!" is punctuation, not an "i"
    groups = list(regex.finditer(r"[\d@$!]+", core))
    inside = any(0 < g.start() and g.end() < len(core) for g in groups)
    if not inside and len(groups) < 2:  # "5pm", "covid19", "mp3": a number beside a word
        return word
    return core.translate(_LEET) + word[len(core):]


def _one_script(match: regex.Match) -> str:
    """A word mixing Latin and Cyrillic letters, written in the script its other letters can all
    be mapped into (Cyrillic first: look-alikes hide Cyrillic insults more often)."""
    word = match.group(0)
    latin = set(regex.findall(r"\p{Latin}", word))
    cyrillic = set(regex.findall(r"\p{Cyrillic}", word))
    if not latin or not cyrillic:
        return word
    if all(ch in _TO_CYRILLIC_CHARS for ch in latin):
        return word.translate(_TO_CYRILLIC)
    if all(ch in _TO_LATIN_CHARS for ch in cyrillic):
        return word.translate(_TO_LATIN)
    return word


def deobfuscate(text: str) -> str:
    """The text with spread-out, leet, look-alike and stretched spellings undone (see the module)."""
    out = text.replace(_TATWEEL, "")
    out = _SPREAD_SEPARATORS.sub(_join, out)
    out = _LATIN_WORD_WITH_LEET.sub(_unleet, out)
    out = _SPREAD_SPACES.sub(_join, out)
    out = _SPREAD_SEPARATORS.sub(_join, out)
    out = _MIXED_WORD.sub(_one_script, out)
    out = _MARK_RUN.sub(r"\1", out)
    return _LETTER_RUN.sub(r"\1", out)
