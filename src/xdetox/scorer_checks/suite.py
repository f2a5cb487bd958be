"""The behavioural suite's cases: templates, building, loading and writing the shipped JSONL.

* ``load_suite(langs)``: the shipped cases (``resources/scorer_checks/<lang>.jsonl``).
* ``build_suite(templates)``: regenerate the cases from ``resources/scorer_checks/templates.json``
  (templates with placeholders, word lists, deterministic fill); the shipped files are exactly
  ``build_suite(load_templates())`` and a test keeps it that way.
* ``write_suite(cases, directory)`` and ``main`` (``python -m xdetox.scorer_checks build``):
  rewrite the shipped files from the templates.

Template syntax (see ``resources/scorer_checks/README.md``): ``{list}``, ``{list.field}`` (an item
of a list of objects) and ``{list:transform}`` / ``{list.field:transform}`` (``transforms``).  One
index per list name: two placeholders naming the same list get the same item; a list defined as
``"@other"`` is an independent copy of list ``other``.  A template's fills are all combinations of
its lists' items, ordered so that the lists advance in step (the longest list's index i, every
other list at (i + shift) mod its length, shift 0 first), so the first fills already use every
item; a fill whose transform leaves the word unchanged is skipped.  The fills of the j-th template
of a group start at its fill j (rotation), the templates are taken round-robin, texts already used
in the language are dropped, and the group is cut at ``max_per_group``.  ``{"other_languages":
"list"}`` takes that list from every other language, in language order.  No randomness anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorer_checks.transforms import TRANSFORMS
from xdetox.scorers.base import in_lang_order

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

def build_suite(templates: Mapping[str, Any], functionalities: Sequence[str] | None = None) -> list[Case]:
    """The cases that ``templates`` (the parsed ``templates.json``) generate, in language order.

    ``functionalities``: the groups the templates declare and define, a subset of
    ``FUNCTIONALITIES`` in that order (default: all of them, as the suite has); the
    training set of ``resources/scorer_train`` uses a subset.
    Deterministic: no randomness, so the shipped files can be compared with it.
    """
    wanted = FUNCTIONALITIES if functionalities is None else tuple(functionalities)
    unknown = [f for f in wanted if f not in FUNCTIONALITIES]
    if unknown or list(wanted) != [f for f in FUNCTIONALITIES if f in wanted]:
        raise ValueError(f"functionalities {list(wanted)} must be a subset of {list(FUNCTIONALITIES)}, in that order")
    declared = {f["name"]: bool(f["toxic"]) for f in templates["functionalities"]}
    if tuple(declared) != wanted:
        raise ValueError(f"templates declare functionalities {list(declared)}, expected {list(wanted)}")
    for name, toxic in declared.items():
        if toxic != (name in TOXIC_FUNCTIONALITIES):
            raise ValueError(f"templates label {name!r} toxic={toxic}, the code says otherwise")
    default_max = int(templates.get("max_per_group", 50))
    common = templates.get("common_lists", {})
    languages = templates["languages"]
    order = in_lang_order(languages)
    lists = {lang: _resolve_lists(common, languages[lang].get("lists", {}), lang) for lang in order}
    cases: list[Case] = []
    for lang in order:
        groups = languages[lang]["groups"]
        missing = [f for f in wanted if f not in groups]
        extra = [f for f in groups if f not in wanted]
        if missing or extra:
            raise ValueError(f"{lang}: groups missing {missing}, unknown {extra}")
        seen: set[str] = set()
        for func in wanted:
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


def load_templates(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed ``templates.json`` shipped with the package, or the templates file at ``path``
    (a path or an ``importlib.resources`` file, e.g. the training set's)."""
    source = _resource_root().joinpath(TEMPLATES_FILE) if path is None else path
    if isinstance(source, str):
        source = Path(source)
    return json.loads(source.read_text(encoding="utf-8"))


def suite_langs(langs: Iterable[str] | None) -> list[str]:
    """``langs`` (a code, codes, or None: all 9) once each, in language order; ``XdetoxInputError``
    for a language the suite has no cases for."""
    if langs is None:
        return list(LANGS)
    if isinstance(langs, str):
        langs = [langs]
    wanted = list(dict.fromkeys(langs))
    unknown = [lang for lang in wanted if lang not in LANGS]
    if unknown:
        raise XdetoxInputError(f"no scorer checks for {', '.join(unknown)}; known: {', '.join(LANGS)}")
    return in_lang_order(wanted)


def case_to_json(case: Case) -> str:
    return json.dumps({"id": case.id, "functionality": case.functionality, "toxic": case.toxic,
                       "text": case.text}, ensure_ascii=False)


def load_suite(langs: Iterable[str] | None = None) -> list[Case]:
    """The shipped cases of ``langs`` (default: all 9), in language then functionality order."""
    cases: list[Case] = []
    root = _resource_root()
    for lang in suite_langs(langs):
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
    for lang in in_lang_order(c.lang for c in cases):
        path = Path(directory) / f"{lang}.jsonl"
        path.write_text("".join(case_to_json(c) + "\n" for c in cases if c.lang == lang), encoding="utf-8")
        written.append(path)
    return written


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
    out = Path(args.out) if args.out else Path(__file__).parents[1].joinpath(*RESOURCE_DIR)
    for path in write_suite(build_suite(load_templates()), out):
        print(path)
    return 0

