"""``lang-fidelity``: whether each completion is written in its target language (1.0 or 0.0).

lingua-language-detector is imported when the scorer is built, not when this room is.
"""

from __future__ import annotations

from xdetox.data import LANGS
from xdetox.scorers.base import check_input
from xdetox.text import SCRIPTS, dominant_script


class LanguageFidelityScorer:
    """``lang-fidelity``: 1.0 when a completion is written in the target language, else 0.0.

    First the script: the dominant script of the text's letters must be the target's
    (Amharic is decided by Ethiopic script alone: the detector has no Amharic model).
    Then, for targets that share a script (en/es/de Latin, uk/ru Cyrillic) and the
    rest, lingua-language-detector must pick the target among the eight languages it
    knows of ours. A text without letters scores 0. The mean over completions is the
    share written in the target language.
    """

    name = "lang-fidelity"
    kind = "language"
    supported_languages: frozenset[str] = frozenset(LANGS)
    batch_size = 512

    def __init__(self) -> None:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        known = [lang for lang in LANGS if lang != "am"]
        self._codes = {Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())): c for c in known}
        self._detector = LanguageDetectorBuilder.from_languages(*self._codes).build()

    def score(self, texts: list[str], lang: str) -> list[float]:
        check_input(self, texts, lang)
        scripts = [dominant_script(t) for t in texts]
        ask = [i for i, script in enumerate(scripts) if script == SCRIPTS[lang] and lang != "am"]
        detected = self._detector.detect_languages_in_parallel_of([texts[i] for i in ask])
        verdict = {i: self._codes.get(d) == lang for i, d in zip(ask, detected)}
        return [float(verdict.get(i, lang == "am" and script == "Ethiopic")) for i, script in enumerate(scripts)]

