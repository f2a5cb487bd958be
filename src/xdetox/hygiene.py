"""Text normalisation of the toxic/neutral rows before fine-tuning and prompting.

The bundled rows carry tokeniser spacing (``that s shit logic .``, ``है |``,
``هذا ؟``) that a fine-tuned model learns to imitate. ``clean(text, lang, "v1")``
undoes it with a few conservative rules; ``"none"`` keeps the text byte for byte.

Rules of ``v1``, in the order they run (docs/text-normalisation.md has the why):

1. URLs (``http://...``, ``https://...``, ``www....``) are set aside and put back
   untouched at the end; whitespace runs (line breaks too) become one space.
2. Hindi only: a Latin ``|`` is the danda and becomes ``।`` (``||`` -> ``।।``).
3. A space before a mark -- ``. , ? ! ; : …``, the Arabic ``، ؛ ؟``, the danda
   ``।``, the Ethiopic ``። ፣ ፤ ፥ ፦ ፧ ፨ ፡`` and the full-width CJK marks -- is removed
   when the run of marks ends the text or is followed by a space, a quote, a
   closing bracket or an emoji (``word .`` -> ``word.``, ``up ? ? ?`` -> ``up???``).
4. A run of marks glued to the next word gets its space behind it instead
   (``то ,что`` -> ``то, что``, ``اقوال .حددنا`` -> ``اقوال. حددنا``), except a lone
   ``:`` or ``;`` (``:D``, ``;P``), a lone mark before a digit (``.5``, ``,000``) and
   a lone ``.`` before a Latin word that is not capitalised (``.com``, ``.NET``).
   Emoticons keep their space (``:)``, ``;(``, ``:-d``, ``._.``), and so does ``,,``,
   which the rows type as a quotation mark.
5. English only: tokenised clitics are joined (``it 's`` ``do n't`` ``don 't``
   ``we 're`` ``i 've`` ``you 'll`` ``he 'd`` ``i 'm``), dropped apostrophes are
   restored after the few words where the reading is certain (``i m`` ``don t``
   ``it s`` ``you re`` ``i ll`` ``they ve`` ``i d``), and a standalone ``i`` is ``I``.
6. A period after ``?`` or ``!`` at the very end is dropped (``right ? .`` -> ``right?``).
7. Spaces just inside brackets and quotes go: ``( x )`` -> ``(x)``, ``[ x ]`` ->
   ``[x]``, ``" x "`` -> ``"x"`` (a straight-quote pair that opens after a space),
   ``« x »`` -> ``«x»``, and the space after ``„``, ``¿`` or ``¡``.
8. Cased scripts only (never zh, ar, hi, am): the first letter of the text, after any
   opening quotes, brackets or ``¿ ¡``, is upper-cased if it has a one-letter capital.

Each rule is idempotent, so ``clean(clean(x)) == clean(x)``; a non-empty text never
comes back empty (a text of only whitespace is returned as it is).
"""

from __future__ import annotations

import re
from dataclasses import replace

from xdetox.data import Corpus
from xdetox.errors import XdetoxInputError

TEXT_NORMALISATIONS: tuple[str, ...] = ("none", "v1")
DEFAULT_TEXT_NORMALISATION = "v1"

UNCASED_LANGS = frozenset({"zh", "ar", "hi", "am"})

# Marks that attach to the word before them.
_ARABIC = "،؛؟"
_DANDA = "।"
_ETHIOPIC = "።፣፤፥፦፧፨፡"
_CJK = "，。！？；：、"
MARKS = ".,?!;:…" + _ARABIC + _DANDA + _ETHIOPIC + _CJK

_M = re.escape(MARKS)
_URL = re.compile(r"(?:https?://|www\.)\S+?(?=[)\]}>\"'.,;:!?…]*(?:\s|$))", re.IGNORECASE)
_URL_SLOT = re.compile(r"\x00(\d+)\x00")
_SPACED_MARKS = re.compile(rf"\s+([{_M}]++)(?=(.?.?))")
_LOW_QUOTE = re.compile(",,(?!,)")
_CLOSING_QUOTES = "\"'”’»“"
_EMOTICON_NEXT = "_(-/\\*|\x00"  # ``._.`` ``:-d`` ``:(`` ``:/`` ``:*`` ``:|``; \x00: a parked URL
_FINAL_DOT = re.compile(r"([?!])\s*\.$")
_BRACKETS = (re.compile(r"\(\s*([^()]*?)\s*\)"), re.compile(r"\[\s*([^\[\]]*?)\s*\]"))
_QUOTES = re.compile(r'(^|\s)"\s*([^"]*?)\s*"(?!\w)')
_OPENERS = ((re.compile(r"([«„¿¡])\s+"), r"\1"), (re.compile(r"\s+»"), "»"))
_SPACES = re.compile(r"\s+")
_FIRST = re.compile(r"^([\"'“‘«„(\[¿¡*]*)(\w)")

# English: tokenised clitics (with the apostrophe) join any word before them.
_EN_CLITIC = re.compile(r"(?<=\w) (['’](?:s|re|ve|ll|d|m)|n['’]t)(?![\w'’])", re.IGNORECASE)
_EN_NT = re.compile(r"\b((?:do|does|did|is|are|was|were|have|has|had|could|would|should"
                    r"|must|need|ca|wo|ai)n) ['’]?(t)(?![\w'’])", re.IGNORECASE)
# English: dropped apostrophes, restored only after words where the reading is certain.
_EN_DROPPED = (
    (r"i", "m"),
    (r"i|you|he|she|we|they|it|that|there|who|what|this", "ll"),
    (r"you|we|they|who|what", "re"),
    (r"i|you|we|they|could|would|should|might|must|who", "ve"),
    (r"i|you|he|she|we|they", "d"),
    (r"it|that|what|there|here|he|she|who|where|how|let", "s"),
)
_EN_DROPPED_RE = tuple(
    re.compile(rf"(?<![\w'’.])({words}) ({clitic})(?![\w'’])", re.IGNORECASE)
    for words, clitic in _EN_DROPPED
)
_EN_I = re.compile(r"(?<![\w'’.-])i(?=['’](?:m|ll|ve|d)(?![\w'’])|(?![\w'’-]|\.\w))")


def check_text_normalisation(version: str) -> str:
    """``version`` if it is a known text normalisation, else a one-line XdetoxInputError."""
    if version not in TEXT_NORMALISATIONS:
        raise XdetoxInputError(
            f"unknown text normalisation {version!r}; choose one of {', '.join(TEXT_NORMALISATIONS)}")
    return version


def clean(text: str, lang: str, version: str = DEFAULT_TEXT_NORMALISATION) -> str:
    """``text`` normalised by ``version``: ``none`` returns it as it is, ``v1`` applies the rules above."""
    check_text_normalisation(version)
    if version == "none":
        return text
    urls: list[str] = []

    def _park(match: re.Match) -> str:
        urls.append(match.group())
        return f"\x00{len(urls) - 1}\x00"

    parked = _URL.sub(_park, text) if "\x00" not in text else text  # NUL marks a parked URL
    out = _SPACES.sub(" ", parked).strip()
    if lang == "hi":
        out = out.replace("|", _DANDA)
    out = _attach_all_marks(out)
    if lang == "en":
        out = _english(out)
    out = _FINAL_DOT.sub(r"\1", out)
    out = _inner_spaces(out)
    out = _SPACES.sub(" ", out).strip()
    if lang not in UNCASED_LANGS:
        out = _capitalise(out)
    if urls:
        out = _URL_SLOT.sub(lambda m: urls[int(m.group(1))], out)
    return out or text


def clean_corpus(corpus: Corpus, version: str = DEFAULT_TEXT_NORMALISATION) -> Corpus:
    """``corpus`` with every pair's ``toxic`` and ``neutral`` cleaned (same ids, langs, splits, order).

    ``none``, or a corpus that already went through ``version``, returns the very same object;
    otherwise the name gains `` · text v1`` and ``text_normalisation`` says the version.
    """
    check_text_normalisation(version)
    if version == "none" or corpus.text_normalisation == version:
        return corpus
    pairs = tuple(
        replace(p, toxic=clean(p.toxic, p.lang, version), neutral=clean(p.neutral, p.lang, version))
        for p in corpus.pairs
    )
    return replace(corpus, pairs=pairs, name=f"{corpus.name} · text {version}", text_normalisation=version)


def _english(text: str) -> str:
    """Join tokenised clitics, restore certain dropped apostrophes, write ``i`` as ``I``."""
    text = _EN_NT.sub(r"\1'\2", text)
    text = _EN_CLITIC.sub(r"\1", text)
    for pattern in _EN_DROPPED_RE:
        text = pattern.sub(r"\1'\2", text)
    return _EN_I.sub("I", text)


def _attach_all_marks(text: str) -> str:
    """Rules 3 and 4, repeated until nothing changes (``a ,, ,`` needs two rounds)."""
    while (attached := _SPACED_MARKS.sub(_attach_marks, text)) != text:
        text = attached
    return text


def _attach_marks(match: re.Match) -> str:
    """A spaced run of marks: joined to the word before, moved in front of the next word, or kept."""
    marks, after = match.group(1), match.group(2)
    nxt = after[:1]
    if _LOW_QUOTE.match(marks):  # ``,,`` is a typed low quotation mark, not two commas
        return match.group()
    if not nxt or nxt == " " or nxt in _CLOSING_QUOTES:  # ``word .`` ``word ."``
        return marks
    emoticon = marks[-1] in ":;"
    if nxt in ")]":  # ``word .)`` joins; ``:)`` is an emoticon
        return match.group() if emoticon else marks
    if not nxt.isalnum():  # ``word !😂`` joins; ``._.`` ``:-d`` ``:(`` stay
        return match.group() if nxt in _EMOTICON_NEXT else marks
    # Glued to the next word: the space moves behind the marks, unless that would break an
    # emoticon (``:D`` ``;P``), a number (``.5`` ``,000``) or a Latin token (``.com`` ``.NET``).
    if len(marks) == 1 and (emoticon or nxt.isdigit()):
        return match.group()
    if marks == "." and nxt < "\u0250" and not (nxt.isupper() and after[1:].islower()):
        return match.group()
    return marks + " "


def _inner_spaces(text: str) -> str:
    """Drop the spaces just inside brackets, straight-quote pairs and guillemets, and after ``„ ¿ ¡``."""
    for pattern in _BRACKETS:
        text = pattern.sub(lambda m: m.group()[0] + m.group(1) + m.group()[-1], text)
    text = _QUOTES.sub(r'\1"\2"', text)
    for pattern, repl in _OPENERS:
        text = pattern.sub(repl, text)
    return text


def _capitalise(text: str) -> str:
    """Upper-case the first letter (after opening quotes/brackets) when it has a one-letter upper case."""
    match = _FIRST.match(text)
    if not match:
        return text
    letter = match.group(2)
    upper = letter.upper()
    if letter == upper or len(upper) != 1 or not letter.isalpha():
        return text
    return match.group(1) + upper + text[match.end():]
