"""Parallel toxic -> neutral corpus: the bundled data, user data, splits and prompt sets.

The bundled corpus is textdetox/multilingual_paradetox (OpenRAIL++), 9 languages,
400 pairs each, with the fixed split of the reference study: the first 300 pairs
of a language are ``train``, the last 100 ``test``.

A user corpus (``--data``) is a JSONL, CSV or Parquet file, a directory saved by
``datasets`` (``Dataset.save_to_disk``: ``load_from_disk`` reads it) or a hub dataset id
(``org/name``, loaded with ``datasets.load_dataset`` where the hub is reachable or the
dataset is in the local cache; else one ``ServiceUnavailable`` line). Its columns are
``lang``, ``toxic``, ``neutral`` and optionally ``id`` and ``split`` (``train``/``test``);
a ``datasets`` dict whose splits are named ``train``/``test`` (or language codes) gives the
``split`` (or ``lang``) column a table lacks. Without a ``split`` column the last quarter
of each language's rows (in file order) is ``test``, the rest ``train`` -- the 300/100
ratio of the bundled data. ``lang``, ``toxic`` and ``neutral`` must be non-empty strings;
every mistake is one ``XdetoxInputError`` that names the file, the row and its line.

A *prompt-only* set has no ``neutral`` column at all: toxic prompts to measure a model on
(``xdetox eval``), nothing to train on (``Corpus.prompt_only``; the plan refuses training
paradigms on it). Without a ``split`` column every row of a prompt-only set is ``test``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd

from xdetox._io import content_digest, first_line
from xdetox.errors import ServiceUnavailable, XdetoxInputError, refuse_repeats

LANGS: tuple[str, ...] = ("en", "es", "de", "zh", "ar", "hi", "uk", "ru", "am")
LANG_NAMES: dict[str, str] = {
    "en": "English", "es": "Spanish", "de": "German", "zh": "Chinese", "ar": "Arabic",
    "hi": "Hindi", "uk": "Ukrainian", "ru": "Russian", "am": "Amharic",
}
SPLITS: tuple[str, ...] = ("train", "test")
PROMPT_SETS: tuple[str, ...] = ("train_toxic", "test_toxic", "test_neutral")
REQUIRED_COLUMNS: tuple[str, ...] = ("lang", "toxic", "neutral")
FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
"""A hub dataset id: ``name`` or ``org/name`` (a value that is no file or directory here)."""


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
    def prompt_only(self) -> bool:
        """Toxic prompts without neutral rewrites (the data had no ``neutral`` column): nothing to train on."""
        return bool(self.pairs) and not any(p.neutral for p in self.pairs)

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
    each checked and each once (a list is a set: ``errors.refuse_repeats``); ``flag`` names the option in the
    messages."""
    if isinstance(value, str):
        if value == "all":
            return LANGS
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise XdetoxInputError(f"{flag} takes 'all', comma-separated language codes or a list of them, got {value!r}")
    if not value:
        raise XdetoxInputError(f"{flag} needs at least one language code")
    refuse_repeats(flag, value)
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
    """The bundled corpus when ``path`` is None, else the user's file, ``datasets`` directory or hub id."""
    if path is None:
        return load_bundled()
    return load_user(path)


def data_ref(value: str | Path, base: Path | None = None) -> str:
    """What a config keeps of ``--data``: the absolute path of a file or directory (relative to ``base``),
    or a hub dataset id as given (``is_hub_id``)."""
    path = Path(base or ".") / Path(value).expanduser()
    return str(value) if not path.exists() and is_hub_id(str(value)) else str(path.resolve())


def is_hub_id(value: str) -> bool:
    """Whether ``value``, which names no file or directory here, reads as a hub dataset id, not a path."""
    return (HUB_ID.fullmatch(value) is not None and not value.lower().endswith(FILE_SUFFIXES)
            and not Path(value).expanduser().exists())


def load_user(path: str | Path) -> Corpus:
    """A JSONL, CSV or Parquet file, a ``datasets`` directory or a hub dataset id; every mistake is one
    ``XdetoxInputError`` naming the file and line (or row)."""
    if isinstance(path, str) and is_hub_id(path):
        return _validate_table(_hub_rows(path), name=path)
    path = Path(path)
    if path.is_dir():
        return _validate_table(_dataset_rows(path), name=str(path))
    if not path.is_file():
        raise XdetoxInputError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise XdetoxInputError(f"data file {path} must end in .jsonl, .csv or .parquet (or be a datasets directory)")
    if suffix == ".parquet":
        return _validate_table(_parquet_rows(path), name=str(path))
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise XdetoxInputError(f"cannot parse data file {path}: not UTF-8 text at byte offset {err.start}") from None
    if suffix == ".csv":
        columns, rows = _csv_rows(text, path)
        return _validate(rows, name=str(path), columns=columns)
    return _validate(_jsonl_rows(text, path), name=str(path))


def _parquet_rows(path: Path) -> tuple[list[tuple[None, dict]], list[str]]:
    """(None, row) of each row of a Parquet file (rows have no line), and its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise XdetoxInputError(f"cannot parse data file {path}: {first_line(err)}") from None
    return [(None, row) for row in table.to_pylist()], list(table.column_names)


def _dataset_rows(path: Path) -> tuple[list[tuple[None, dict]], list[str]]:
    """The rows of a directory ``datasets`` saved (``save_to_disk``: a ``Dataset`` or a ``DatasetDict``)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise XdetoxInputError(f"--data {path} is a directory but not a saved datasets dataset"
                               f" (datasets.load_from_disk: {first_line(err)})") from None
    return _datasets_table(loaded)


def _hub_rows(dataset_id: str) -> tuple[list[tuple[None, dict]], list[str]]:
    """The rows of a hub dataset (every split), from the hub or, offline, the local datasets cache."""
    import datasets

    from xdetox.hub import hub_offline

    offline = hub_offline()
    if offline:  # read when datasets was imported: the probe's answer too
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        loaded = datasets.load_dataset(dataset_id)
    except (OSError, ValueError) as err:
        if offline:
            raise ServiceUnavailable(f"--data {dataset_id!r} is no file or directory here, and as a hub dataset id"
                                     f" it cannot be loaded: {offline} and the local datasets cache lacks it;"
                                     " pass a local file or directory") from None
        raise XdetoxInputError(f"cannot load the hub dataset {dataset_id!r}: {first_line(err)}") from None
    return _datasets_table(loaded)


def _datasets_table(loaded) -> tuple[list[tuple[None, dict]], list[str]]:
    """(None, row) per row and the columns of a ``datasets`` ``Dataset`` or ``DatasetDict`` (its splits in
    order; splits named train/test, or language codes, fill a missing ``split``, or ``lang``, column)."""
    parts = dict(loaded) if hasattr(loaded, "keys") else {None: loaded}
    columns = list(dict.fromkeys(c for part in parts.values() for c in part.column_names))
    names = [n for n in parts if n is not None]
    fill = next((col for col, known in (("split", SPLITS), ("lang", LANGS))
                 if names and col not in columns and all(n in known for n in names)), None)
    rows = [(None, {**row, **({fill: name} if fill else {})}) for name, part in parts.items() for row in part]
    return rows, columns + ([fill] if fill else [])


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


def _validate_table(table: tuple[list[tuple[None, dict]], list[str]], name: str) -> Corpus:
    """The corpus of a table's (rows, columns): Parquet, ``datasets``; a row is named by its number alone."""
    rows, columns = table
    return _validate(rows, name=name, columns=columns)


def _at(index: int, line: int | None) -> str:
    """Where a row is: ``row 3 (line 4)`` in a text file, ``row 3`` in a table."""
    return f"row {index}" if line is None else f"row {index} (line {line})"


def _validate(rows: list[tuple[int | None, dict]], name: str, columns: list[str] | None = None) -> Corpus:
    """The corpus of ``(line number, row)`` pairs (line None: a table's row); ``columns``: a CSV header or a
    table's columns (JSONL: every row's keys). No ``neutral`` column: a prompt-only set (``Corpus.prompt_only``)."""
    columns = list(columns or []) + [k for _, row in rows for k in row]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    prompt_only = missing == ["neutral"]  # toxic prompts alone
    if missing and not prompt_only:
        raise XdetoxInputError(f"{name}: missing column(s) {', '.join(missing)}")
    if not rows:
        raise XdetoxInputError(f"{name}: no rows")
    records = []
    for index, (line, row) in enumerate(rows, start=1):
        record = {"line": f"line {line}" if line is not None else f"row {index}"}
        for col in ("lang", "toxic") + (() if prompt_only else ("neutral",)):
            value = row.get(col)
            if value is not None and not isinstance(value, str):
                raise XdetoxInputError(f"{name}: {col!r} on {_at(index, line)} must be a string, got {value!r}")
            record[col] = (value or "").strip()
            if not record[col]:
                raise XdetoxInputError(
                    f"{name}: empty {col!r} on {_at(index, line)}; {col} must be a non-empty string")
        record["neutral"] = record.get("neutral", "")
        for col in ("id", "split"):
            if col not in columns:
                continue
            value = row.get(col)
            if value is None or isinstance(value, (bool, float, list, dict)):
                raise XdetoxInputError(f"{name}: {col!r} on {_at(index, line)} must be a string"
                                       f"{' or an integer' if col == 'id' else ''}, got {value!r}")
            record[col] = str(value) if col == "id" else str(value).strip()
        records.append(record)
    frame = pd.DataFrame(records)
    for lang, line in zip(frame["lang"], frame["line"]):
        if lang not in LANGS:
            raise XdetoxInputError(
                f"{name}: unknown language code {lang!r} ({line}); supported: {', '.join(LANGS)}")
    if "id" in frame.columns:
        dup = frame[frame["id"].duplicated()]
        if len(dup):
            raise XdetoxInputError(f"{name}: duplicate id {dup['id'].iloc[0]!r} ({dup['line'].iloc[0]})")
    else:
        frame["id"] = frame["lang"] + "-" + frame.groupby("lang").cumcount().map("{:03d}".format)
    if "split" in frame.columns:
        bad = frame[~frame["split"].isin(SPLITS)]
        if len(bad):
            raise XdetoxInputError(
                f"{name}: unknown split {bad['split'].iloc[0]!r} ({bad['line'].iloc[0]}); use train or test")
    elif prompt_only:  # nothing to train on: every prompt is a test prompt
        frame["split"] = "test"
    else:
        position = frame.groupby("lang").cumcount()
        size = frame.groupby("lang")["lang"].transform("size")
        frame["split"] = ["test" if pos >= n - n // 4 else "train" for pos, n in zip(position, size)]
    for lang in [] if prompt_only else sorted(set(frame["lang"])):
        if not ((frame["lang"] == lang) & (frame["split"] == "train")).any():
            raise XdetoxInputError(f"{name}: language {lang!r} has no train rows")
    pairs = tuple(
        Pair(str(r.id), r.lang, r.split, r.toxic, r.neutral) for r in frame.itertuples(index=False)
    )
    return Corpus(pairs=pairs, name=name)
