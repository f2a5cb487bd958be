"""Behavioural checks for toxicity scorers, in the spirit of CheckList (Ribeiro et al., 2020).

Every toxicity number of the project is read through a scorer, so the scorers get their own
functional test suite: short, hand-templated cases in each of the 9 languages, grouped by
*functionality* (what the case tests), each group either all benign or all toxic.

* ``load_suite(langs)``: the shipped cases (``resources/scorer_checks/<lang>.jsonl``).
* ``build_suite(templates)``: regenerate the cases from ``resources/scorer_checks/templates.json``
  (templates with placeholders, word lists, deterministic fill); the shipped files are exactly
  ``build_suite(load_templates())`` and a test keeps it that way.
* ``run_checks(scorer, langs)``: score every case, accuracy at threshold 0.5 (score >= 0.5 means
  toxic) and ROC-AUC per language, per functionality and overall; JSON-serialisable.
* ``format_checks(result)``: the same as plain-text tables.

``python -m xdetox.scorer_checks run [--scorer offline] [--langs en,de] [--json OUT]`` prints the
tables; ``python -m xdetox.scorer_checks build`` rewrites the shipped JSONL files from the templates.

Template syntax (see ``resources/scorer_checks/README.md``): ``{list}``, ``{list.field}`` (an item
of a list of objects) and ``{list:transform}`` / ``{list.field:transform}``.  One index per list
name: two placeholders naming the same list get the same item; a list defined as ``"@other"``
is an independent copy of list ``other``.  A template's fills are all combinations of its lists'
items, ordered so that the lists advance in step (the longest list's index i, every other list at
(i + shift) mod its length, shift 0 first), so the first fills already use every item; a fill whose
transform leaves the word unchanged is skipped.  The fills of the j-th template of a group start at
its fill j (rotation), the templates are taken round-robin, texts already used in the language are
dropped, and the group is cut at ``max_per_group``.  ``{"other_languages": "list"}`` takes that list
from every other language, in language order.  No randomness anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from xdetox.data import LANG_NAMES, LANGS
from xdetox.errors import XdetoxInputError

FUNCTIONALITIES: tuple[str, ...] = (
    "punctuation_only",
    "digits",
    "greeting",
    "short_benign_phrase",
    "benign_other_language",
    "identity_neutral",
    "negated_insult",
    "quoted_insult",
    "profanity_untargeted",
    "direct_insult",
    "slur",
    "threat",
    "dehumanisation",
    "obfuscated_insult",
)
"""Functionality groups, in report order: benign groups first, then toxic ones."""

TOXIC_FUNCTIONALITIES: frozenset[str] = frozenset({
    "profanity_untargeted", "direct_insult", "slur", "threat", "dehumanisation", "obfuscated_insult",
})
"""Groups whose every case is labelled toxic; all other groups are benign."""

BENIGN_SHORT: frozenset[str] = frozenset({"punctuation_only", "digits", "greeting", "short_benign_phrase"})
"""Benign short-text groups: what a model says when it says almost nothing."""

THRESHOLD = 0.5
"""A score >= THRESHOLD counts as a toxic verdict."""

MIN_CASES = 40
"""Fewest cases per (language, functionality), except the ones in MIN_CASES_EXCEPTIONS."""

MIN_CASES_EXCEPTIONS: Mapping[tuple[str, str], int] = {}
"""(lang, functionality) -> documented smaller minimum; empty: every group reaches MIN_CASES."""

RESOURCE_DIR = ("resources", "scorer_checks")
TEMPLATES_FILE = "templates.json"


@dataclass(frozen=True)
class Case:
    """One check: a text, the language it belongs to, what it tests and its expected label."""

    lang: str
    functionality: str
    text: str
    toxic: bool
    id: str


# --------------------------------------------------------------------------- transforms

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


# --------------------------------------------------------------------------- generation

_PLACEHOLDER = re.compile(r"\{(?P<list>[A-Za-z_][A-Za-z0-9_]*)(?:\.(?P<field>[A-Za-z0-9_]+))?"
                          r"(?::(?P<transform>[A-Za-z_]+))?\}")


def _resolve_lists(common: Mapping[str, Any], own: Mapping[str, Any], where: str) -> dict[str, list]:
    merged = {**common, **own}
    out: dict[str, list] = {}
    for name, value in merged.items():
        seen = {name}
        while isinstance(value, str) and value.startswith("@"):
            target = value[1:]
            if target in seen or target not in merged:
                raise ValueError(f"{where}: list {name!r} is a bad alias ({value!r})")
            seen.add(target)
            value = merged[target]
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}: list {name!r} must be a non-empty list")
        out[name] = value
    return out


def _fill(item: Any, field: str | None, where: str) -> str:
    if field is None:
        if not isinstance(item, str):
            raise ValueError(f"{where}: item {item!r} needs a field (use {{list.field}})")
        return item
    if not isinstance(item, Mapping) or field not in item:
        raise ValueError(f"{where}: item {item!r} has no field {field!r}")
    return item[field]


def expand_template(template: str, lists: Mapping[str, list], where: str = "template") -> list[str]:
    """Every fill of ``template``, first fills varying every slot (see the module docstring)."""
    slots = list(_PLACEHOLDER.finditer(template))
    names = list(dict.fromkeys(m["list"] for m in slots))
    for name in names:
        if name not in lists:
            raise ValueError(f"{where}: unknown list {name!r} in {template!r}")
    for m in slots:
        if m["transform"] and m["transform"] not in TRANSFORMS:
            raise ValueError(f"{where}: unknown transform {m['transform']!r} in {template!r}")
    leftover = _PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ValueError(f"{where}: malformed placeholder in {template!r}")
    sizes = [len(lists[n]) for n in names]
    lead = max(range(len(names)), key=lambda i: (sizes[i], -i)) if names else 0

    def order(idx: tuple[int, ...]) -> tuple:
        # shifts of every other list against the longest one, then the longest one's index:
        # the first fills walk all lists in step, so every item comes early.
        shifts = tuple((idx[i] - idx[lead]) % sizes[i] for i in range(len(names)) if i != lead)
        return shifts + idx[lead:lead + 1]

    combos = sorted(itertools.product(*(range(size) for size in sizes)), key=order)
    out = []
    for idx in combos:
        chosen = dict(zip(names, idx))
        noop = False

        def sub(m: re.Match, chosen=chosen) -> str:
            nonlocal noop
            text = _fill(lists[m["list"]][chosen[m["list"]]], m["field"], where)
            if not m["transform"]:
                return text
            changed = TRANSFORMS[m["transform"]](text)
            noop = noop or changed == text
            return changed

        text = _PLACEHOLDER.sub(sub, template)
        if noop:  # the obfuscation left the word as it was: not an obfuscated case, skip it
            continue
        if template.startswith("{") and text[:1].islower():
            text = text[0].upper() + text[1:]
        out.append(" ".join(text.split()))
    return out


def _language_order(langs: Iterable[str]) -> list[str]:
    return sorted(set(langs), key=lambda lang: (LANGS.index(lang) if lang in LANGS else len(LANGS), lang))


def build_suite(templates: Mapping[str, Any]) -> list[Case]:
    """The cases that ``templates`` (the parsed ``templates.json``) generate, in language order.

    Deterministic: no randomness, so the shipped files can be compared with it.
    """
    declared = {f["name"]: bool(f["toxic"]) for f in templates["functionalities"]}
    if tuple(declared) != FUNCTIONALITIES:
        raise ValueError(f"templates declare functionalities {list(declared)}, expected {list(FUNCTIONALITIES)}")
    for name, toxic in declared.items():
        if toxic != (name in TOXIC_FUNCTIONALITIES):
            raise ValueError(f"templates label {name!r} toxic={toxic}, the code says otherwise")
    default_max = int(templates.get("max_per_group", 50))
    common = templates.get("common_lists", {})
    languages = templates["languages"]
    order = _language_order(languages)
    lists = {lang: _resolve_lists(common, languages[lang].get("lists", {}), lang) for lang in order}
    cases: list[Case] = []
    for lang in order:
        groups = languages[lang]["groups"]
        missing = [f for f in FUNCTIONALITIES if f not in groups]
        extra = [f for f in groups if f not in FUNCTIONALITIES]
        if missing or extra:
            raise ValueError(f"{lang}: groups missing {missing}, unknown {extra}")
        seen: set[str] = set()
        for func in FUNCTIONALITIES:
            spec = groups[func]
            if isinstance(spec, list):
                spec = {"templates": spec}
            where = f"{lang}/{func}"
            limit = int(spec.get("max", default_max))
            streams: list[list[str]] = []
            for template in spec["templates"]:
                if isinstance(template, Mapping):
                    source = template["other_languages"]
                    stream = []
                    for other in order:
                        if other != lang:
                            if source not in lists[other]:
                                raise ValueError(f"{where}: language {other} has no list {source!r}")
                            stream.extend(lists[other][source])
                    streams.append(stream)
                else:
                    stream = expand_template(template, lists[lang], where)
                    if stream:  # template j starts at its fill j: the templates of a group spread over the lists
                        shift = len(streams) % len(stream)
                        stream = stream[shift:] + stream[:shift]
                    streams.append(stream)
            texts: list[str] = []
            for round_ in itertools.count():
                if len(texts) >= limit or all(round_ >= len(s) for s in streams):
                    break
                for stream in streams:
                    if round_ < len(stream) and len(texts) < limit:
                        text = stream[round_]
                        if text and text not in seen:
                            seen.add(text)
                            texts.append(text)
            for i, text in enumerate(texts):
                cases.append(Case(lang=lang, functionality=func, text=text,
                                  toxic=func in TOXIC_FUNCTIONALITIES, id=f"{lang}-{func}-{i:03d}"))
    return cases


# --------------------------------------------------------------------------- files

def _resource_root():
    return files("xdetox").joinpath(*RESOURCE_DIR)


def load_templates() -> dict[str, Any]:
    """The parsed ``templates.json`` shipped with the package."""
    return json.loads(_resource_root().joinpath(TEMPLATES_FILE).read_text(encoding="utf-8"))


def _check_langs(langs: Iterable[str] | None) -> list[str]:
    if langs is None:
        return list(LANGS)
    if isinstance(langs, str):
        langs = [langs]
    wanted = list(dict.fromkeys(langs))
    unknown = [lang for lang in wanted if lang not in LANGS]
    if unknown:
        raise XdetoxInputError(f"no scorer checks for {', '.join(unknown)}; known: {', '.join(LANGS)}")
    return _language_order(wanted)


def case_to_json(case: Case) -> str:
    return json.dumps({"id": case.id, "functionality": case.functionality, "toxic": case.toxic,
                       "text": case.text}, ensure_ascii=False)


def load_suite(langs: Iterable[str] | None = None) -> list[Case]:
    """The shipped cases of ``langs`` (default: all 9), in language then functionality order."""
    cases: list[Case] = []
    root = _resource_root()
    for lang in _check_langs(langs):
        text = root.joinpath(f"{lang}.jsonl").read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                cases.append(Case(lang=lang, functionality=row["functionality"], text=row["text"],
                                  toxic=bool(row["toxic"]), id=row["id"]))
    return cases


def write_suite(cases: Sequence[Case], directory: Path) -> list[Path]:
    """Write ``cases`` as one ``<lang>.jsonl`` per language into ``directory``."""
    written = []
    for lang in _language_order(c.lang for c in cases):
        path = Path(directory) / f"{lang}.jsonl"
        path.write_text("".join(case_to_json(c) + "\n" for c in cases if c.lang == lang), encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------- running

def _accuracy(scores: Sequence[float], labels: Sequence[bool]) -> float:
    right = sum((s >= THRESHOLD) == y for s, y in zip(scores, labels))
    return right / len(scores) if scores else float("nan")


def _auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(y) for y in labels], list(scores)))


def _summary(scores: Sequence[float], labels: Sequence[bool], funcs: Sequence[str]) -> dict[str, Any]:
    by_func: dict[str, dict[str, Any]] = {}
    for func in FUNCTIONALITIES:
        idx = [i for i, f in enumerate(funcs) if f == func]
        if not idx:
            continue
        s = [scores[i] for i in idx]
        y = [labels[i] for i in idx]
        by_func[func] = {"n": len(idx), "accuracy": _accuracy(s, y), "mean_score": sum(s) / len(s),
                         "toxic": func in TOXIC_FUNCTIONALITIES}
    return {"n": len(scores), "accuracy": _accuracy(scores, labels), "auc": _auc(scores, labels),
            "by_functionality": by_func}


def run_checks(scorer: Any, langs: Iterable[str] | None = None, batch_size: int = 256,
               cases: Sequence[Case] | None = None) -> dict[str, Any]:
    """Score the suite (or ``cases``) with ``scorer`` and summarise it (see the module docstring).

    Languages missing from ``scorer.supported_languages`` are not scored and are listed under
    ``"skipped"``.  ``overall`` pools every scored case; ``benign_short_accuracy`` is the accuracy
    on the BENIGN_SHORT groups of each language.
    """
    if batch_size < 1:
        raise XdetoxInputError("batch_size must be at least 1")
    if cases is None:
        cases = load_suite(langs)
    elif langs is not None:
        wanted = set(_check_langs(langs))
        cases = [c for c in cases if c.lang in wanted]
    supported = frozenset(getattr(scorer, "supported_languages", LANGS))
    name = getattr(scorer, "name", type(scorer).__name__)
    result: dict[str, Any] = {"scorer": str(name), "threshold": THRESHOLD, "languages": {},
                              "skipped": [], "overall": {}, "benign_short_accuracy": {}}
    all_scores: list[float] = []
    all_labels: list[bool] = []
    all_funcs: list[str] = []
    for lang in _language_order(c.lang for c in cases):
        if lang not in supported:
            result["skipped"].append(lang)
            continue
        mine = [c for c in cases if c.lang == lang]
        scores: list[float] = []
        for start in range(0, len(mine), batch_size):
            batch = [c.text for c in mine[start:start + batch_size]]
            got = [float(s) for s in scorer.score(batch, lang)]
            if len(got) != len(batch):
                raise ValueError(f"scorer {name!r} returned {len(got)} scores for {len(batch)} texts")
            if any(not math.isfinite(s) for s in got):
                raise ValueError(f"scorer {name!r} returned a non-finite score for {lang}")
            scores.extend(got)
        labels = [c.toxic for c in mine]
        funcs = [c.functionality for c in mine]
        result["languages"][lang] = _summary(scores, labels, funcs)
        short = [(s, y) for s, y, f in zip(scores, labels, funcs) if f in BENIGN_SHORT]
        if short:
            result["benign_short_accuracy"][lang] = _accuracy([s for s, _ in short], [y for _, y in short])
        all_scores += scores
        all_labels += labels
        all_funcs += funcs
    if all_scores:
        result["overall"] = _summary(all_scores, all_labels, all_funcs)
    else:
        result["overall"] = {"n": 0, "accuracy": None, "auc": None, "by_functionality": {}}
    return result


def weakest_functionalities(result: Mapping[str, Any], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` functionalities with the lowest pooled accuracy, worst first."""
    by_func = result.get("overall", {}).get("by_functionality", {})
    ranked = sorted(by_func.items(), key=lambda kv: (kv[1]["accuracy"], FUNCTIONALITIES.index(kv[0])))
    return [(func, stats["accuracy"]) for func, stats in ranked[:k]]


def _fmt(value: float | None) -> str:
    return "   -" if value is None else f"{value:.3f}"


def format_checks(result: Mapping[str, Any]) -> str:
    """Plain-text tables: one per language (functionality, n, label, accuracy, mean score)."""
    lines = [f"scorer checks: {result['scorer']} (toxic when score >= {result.get('threshold', THRESHOLD)})"]
    width = max(len(f) for f in FUNCTIONALITIES)
    for lang, stats in result["languages"].items():
        lines.append("")
        lines.append(f"[{lang}] {LANG_NAMES.get(lang, lang)}")
        lines.append(f"  {'functionality':<{width}}  {'n':>4}  {'label':<6}  {'acc':>5}  {'mean':>5}")
        for func, row in stats["by_functionality"].items():
            label = "toxic" if row["toxic"] else "benign"
            lines.append(f"  {func:<{width}}  {row['n']:>4}  {label:<6}  {_fmt(row['accuracy'])}  "
                         f"{_fmt(row['mean_score'])}")
        short = result.get("benign_short_accuracy", {}).get(lang)
        lines.append(f"  {lang}: n={stats['n']} accuracy={_fmt(stats['accuracy'])} auc={_fmt(stats['auc'])} "
                     f"benign_short_accuracy={_fmt(short)}")
    overall = result.get("overall", {})
    lines.append("")
    if result.get("skipped"):
        lines.append(f"skipped (not supported by the scorer): {', '.join(result['skipped'])}")
    weakest = ", ".join(f"{f} {a:.3f}" for f, a in weakest_functionalities(result))
    lines.append(f"overall: n={overall.get('n', 0)} accuracy={_fmt(overall.get('accuracy'))} "
                 f"auc={_fmt(overall.get('auc'))}" + (f"; weakest: {weakest}" if weakest else ""))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xdetox.scorer_checks build [--out DIR]``: regenerate the shipped suite from its templates.

    Running the suite is ``xdetox scorer check`` (the command line of every other scorer tool).
    """
    parser = argparse.ArgumentParser(prog="python -m xdetox.scorer_checks",
                                     description="Regenerate the behavioural suite for toxicity scorers.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="regenerate the shipped JSONL files from templates.json")
    build.add_argument("--out", default=None, help="directory (default: the package's resources)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(__file__).parent.joinpath(*RESOURCE_DIR)
    for path in write_suite(build_suite(load_templates()), out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
