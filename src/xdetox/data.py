"""Parallel toxic -> neutral corpus: the bundled data, user data, splits and prompt sets.

The bundled corpus is textdetox/multilingual_paradetox (OpenRAIL++), 9 languages,
400 pairs each, with the fixed split of the reference study: the first 300 pairs
of a language are ``train``, the last 100 ``test``.

A user corpus (``--data PATH``) is JSONL or CSV with the columns ``lang``,
``toxic``, ``neutral`` and optionally ``id`` and ``split`` (``train``/``test``).
Without a ``split`` column the last quarter of each language's rows (in file
order) is ``test``, the rest ``train`` -- the 300/100 ratio of the bundled data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd

from xdetox._io import content_digest, first_line
from xdetox.errors import XdetoxInputError

LANGS: tuple[str, ...] = ("en", "es", "de", "zh", "ar", "hi", "uk", "ru", "am")
LANG_NAMES: dict[str, str] = {
    "en": "English", "es": "Spanish", "de": "German", "zh": "Chinese", "ar": "Arabic",
    "hi": "Hindi", "uk": "Ukrainian", "ru": "Russian", "am": "Amharic",
}
SPLITS: tuple[str, ...] = ("train", "test")
PROMPT_SETS: tuple[str, ...] = ("train_toxic", "test_toxic", "test_neutral")
REQUIRED_COLUMNS: tuple[str, ...] = ("lang", "toxic", "neutral")


@dataclass(frozen=True)
class Pair:
    """One toxic sentence and its neutral rewrite."""

    id: str
    lang: str
    split: str
    toxic: str
    neutral: str


@dataclass(frozen=True)
class Prompt:
    """One evaluation prompt: the raw sentence, before any template is applied."""

    id: str
    lang: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """A validated parallel corpus; ``name`` says where it came from."""

    pairs: tuple[Pair, ...]
    name: str

    @property
    def langs(self) -> list[str]:
        present = {p.lang for p in self.pairs}
        return [lang for lang in LANGS if lang in present]

    def select(self, lang: str, split: str) -> list[Pair]:
        return [p for p in self.pairs if p.lang == lang and p.split == split]

    def prompts(self, lang: str, prompt_set: str) -> list[Prompt]:
        """Prompt set ``train_toxic``, ``test_toxic`` or ``test_neutral`` of one language."""
        if prompt_set not in PROMPT_SETS:
            raise XdetoxInputError(
                f"unknown split {prompt_set!r}; choose one of {', '.join(PROMPT_SETS)}"
            )
        split, side = prompt_set.split("_")
        return [Prompt(p.id, p.lang, getattr(p, side)) for p in self.select(lang, split)]

    def digest(self, lang: str | None = None) -> str:
        """sha256 of the pairs (of one language, or all): the data part of a content key."""
        rows = [p.__dict__ for p in self.pairs if lang is None or p.lang == lang]
        return content_digest(rows, ensure_ascii=False)


def check_langs(langs: list[str], available: list[str] | None = None) -> list[str]:
    """Validate language codes (and, if given, that the corpus has them)."""
    for lang in langs:
        if lang not in LANGS:
            raise XdetoxInputError(
                f"unknown language code {lang!r}; supported: {', '.join(LANGS)}"
            )
        if available is not None and lang not in available:
            raise XdetoxInputError(
                f"language {lang!r} is not in the data (it has: {', '.join(available)})"
            )
    return langs


def load_bundled() -> Corpus:
    """The bundled 9-language corpus with its fixed 300/100 split."""
    root = files("xdetox").joinpath("resources", "paradetox")
    rows: list[dict] = []
    for lang in LANGS:
        text = root.joinpath(f"{lang}.jsonl").read_text(encoding="utf-8")
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return _validate(pd.DataFrame(rows), name="multilingual_paradetox (bundled)")


def load(path: str | Path | None = None) -> Corpus:
    """The bundled corpus when ``path`` is None, else the user's JSONL or CSV file."""
    if path is None:
        return load_bundled()
    return load_user(path)


def load_user(path: str | Path) -> Corpus:
    path = Path(path)
    if not path.is_file():
        raise XdetoxInputError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise XdetoxInputError(f"data file {path} must end in .jsonl or .csv")
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, XdetoxInputError):
            raise
        raise XdetoxInputError(f"cannot parse data file {path}: {first_line(err)}") from None
    return _validate(frame, name=str(path))


def _validate(frame: pd.DataFrame, name: str) -> Corpus:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise XdetoxInputError(f"{name}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise XdetoxInputError(f"{name}: no rows")
    frame = frame.copy()
    for col in ("lang", "toxic", "neutral"):
        frame[col] = frame[col].map(lambda v: "" if v is None or v != v else str(v).strip())
        empty = frame.index[frame[col] == ""]
        if len(empty):
            raise XdetoxInputError(f"{name}: empty {col!r} on row {int(empty[0]) + 1}")
    check_langs(sorted(set(frame["lang"]), key=str))
    if "id" in frame.columns:
        frame["id"] = frame["id"].astype(str)
        dup = frame["id"][frame["id"].duplicated()]
        if len(dup):
            raise XdetoxInputError(f"{name}: duplicate id {dup.iloc[0]!r}")
    else:
        frame["id"] = frame["lang"] + "-" + frame.groupby("lang").cumcount().map("{:03d}".format)
    if "split" in frame.columns:
        frame["split"] = frame["split"].astype(str).str.strip()
        bad = sorted(set(frame["split"]) - set(SPLITS))
        if bad:
            raise XdetoxInputError(f"{name}: unknown split {bad[0]!r}; use train or test")
    else:
        position = frame.groupby("lang").cumcount()
        size = frame.groupby("lang")["lang"].transform("size")
        frame["split"] = ["test" if pos >= n - n // 4 else "train" for pos, n in zip(position, size)]
    for lang in sorted(set(frame["lang"])):
        if not ((frame["lang"] == lang) & (frame["split"] == "train")).any():
            raise XdetoxInputError(f"{name}: language {lang!r} has no train rows")
    pairs = tuple(
        Pair(str(r.id), r.lang, r.split, r.toxic, r.neutral) for r in frame.itertuples(index=False)
    )
    return Corpus(pairs=pairs, name=name)
