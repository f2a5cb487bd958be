"""Parallel toxic -> neutral corpus: the bundled data, user data, splits and prompt sets.

The bundled corpus is textdetox/multilingual_paradetox (OpenRAIL++), 9 languages,
400 pairs each, with the fixed split of the reference study: the first 300 pairs
of a language are ``train``, the last 100 ``test``.

A user corpus (``--data PATH``) is JSONL or CSV with the columns ``lang``,
``toxic``, ``neutral`` and optionally ``id`` and ``split`` (``train``/``test``).
Without a ``split`` column the last quarter of each language's rows (in file
order) is ``test``, the rest ``train`` -- the 300/100 ratio of the bundled data.
``lang``, ``toxic`` and ``neutral`` must be non-empty strings; every mistake in a
file is one ``XdetoxInputError`` that names the file, the row and its line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd

from xdetox._io import content_digest
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
    """A validated parallel corpus; ``name`` says where it came from, ``text_normalisation`` which
    version of ``xdetox.hygiene`` its texts went through (``none``: as loaded)."""

    pairs: tuple[Pair, ...]
    name: str
    text_normalisation: str = "none"

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


def parse_langs(value: str | list[str] | tuple[str, ...], flag: str = "--targets") -> tuple[str, ...]:
    """Language codes from ``"all"``, a comma-separated string (``"en,de"``) or a sequence of codes,
    each checked; ``flag`` names the option in the message when none is given."""
    if isinstance(value, str):
        if value == "all":
            return LANGS
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise XdetoxInputError(f"{flag} takes 'all', comma-separated language codes or a list of them, got {value!r}")
    if not value:
        raise XdetoxInputError(f"{flag} needs at least one language code")
    return tuple(check_langs(list(value)))


def load_bundled() -> Corpus:
    """The bundled 9-language corpus with its fixed 300/100 split."""
    root = files("xdetox").joinpath("resources", "paradetox")
    rows: list[tuple[int, dict]] = []
    for lang in LANGS:
        text = root.joinpath(f"{lang}.jsonl").read_text(encoding="utf-8")
        rows.extend(_jsonl_rows(text, f"{lang}.jsonl"))
    return _validate(rows, name="multilingual_paradetox (bundled)")


def load(path: str | Path | None = None) -> Corpus:
    """The bundled corpus when ``path`` is None, else the user's JSONL or CSV file."""
    if path is None:
        return load_bundled()
    return load_user(path)


def load_user(path: str | Path) -> Corpus:
    """A JSONL or CSV corpus; every mistake is one ``XdetoxInputError`` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise XdetoxInputError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise XdetoxInputError(f"data file {path} must end in .jsonl or .csv")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise XdetoxInputError(f"cannot parse data file {path}: not UTF-8 text at byte offset {err.start}") from None
    if suffix == ".csv":
        columns, rows = _csv_rows(text, path)
        return _validate(rows, name=str(path), columns=columns)
    return _validate(_jsonl_rows(text, path), name=str(path))


def _jsonl_rows(text: str, path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise XdetoxInputError(f"cannot parse data file {path}: line {number}: {err.msg}") from None
        if not isinstance(row, dict):
            raise XdetoxInputError(f"{path}: line {number} is not a JSON object")
        rows.append((number, row))
    return rows


def _csv_rows(text: str, path: str | Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header's columns and (first line number, row) of each CSV record after it."""
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=_EXTRA)
    rows = []
    first = 2
    try:
        for row in reader:
            if row.get(_EXTRA):
                raise XdetoxInputError(f"cannot parse data file {path}: line {first}: more fields than the"
                                       f" header's {len(reader.fieldnames)}")
            # a short row's missing fields are absent, as in a JSONL row without them
            rows.append((first, {k: v for k, v in row.items() if v is not None}))
            first = reader.line_num + 1
    except csv.Error as err:
        raise XdetoxInputError(f"cannot parse data file {path}: line {reader.line_num}: {err}") from None
    return list(reader.fieldnames or []), rows


_EXTRA = "\0extra"  # DictReader's key for the fields of a row longer than the header


def _validate(rows: list[tuple[int, dict]], name: str, columns: list[str] | None = None) -> Corpus:
    """The corpus of ``(line number, row)`` pairs; ``columns``: a CSV header (JSONL: every row's keys)."""
    columns = list(columns or []) + [k for _, row in rows for k in row]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise XdetoxInputError(f"{name}: missing column(s) {', '.join(missing)}")
    if not rows:
        raise XdetoxInputError(f"{name}: no rows")
    records = []
    for index, (line, row) in enumerate(rows, start=1):
        record = {"line": line}
        for col in ("lang", "toxic", "neutral"):
            value = row.get(col)
            if value is not None and not isinstance(value, str):
                raise XdetoxInputError(
                    f"{name}: {col!r} on row {index} (line {line}) must be a string, got {value!r}")
            record[col] = (value or "").strip()
            if not record[col]:
                raise XdetoxInputError(
                    f"{name}: empty {col!r} on row {index} (line {line}); {col} must be a non-empty string")
        for col in ("id", "split"):
            if col not in columns:
                continue
            value = row.get(col)
            if value is None or isinstance(value, (bool, float, list, dict)):
                raise XdetoxInputError(f"{name}: {col!r} on row {index} (line {line}) must be a string"
                                       f"{' or an integer' if col == 'id' else ''}, got {value!r}")
            record[col] = str(value) if col == "id" else str(value).strip()
        records.append(record)
    frame = pd.DataFrame(records)
    for lang, line in zip(frame["lang"], frame["line"]):
        if lang not in LANGS:
            raise XdetoxInputError(
                f"{name}: unknown language code {lang!r} (line {line}); supported: {', '.join(LANGS)}")
    if "id" in frame.columns:
        dup = frame[frame["id"].duplicated()]
        if len(dup):
            raise XdetoxInputError(f"{name}: duplicate id {dup['id'].iloc[0]!r} (line {dup['line'].iloc[0]})")
    else:
        frame["id"] = frame["lang"] + "-" + frame.groupby("lang").cumcount().map("{:03d}".format)
    if "split" in frame.columns:
        bad = frame[~frame["split"].isin(SPLITS)]
        if len(bad):
            raise XdetoxInputError(
                f"{name}: unknown split {bad['split'].iloc[0]!r} (line {bad['line'].iloc[0]}); use train or test")
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
