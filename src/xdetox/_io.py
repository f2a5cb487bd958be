"""Helpers every room shares: atomic file writes, content keys and file digests, error lines, quiet libraries.

Standard library only (no torch, no pandas), so torch-free rooms can use it.

- ``atomic_write``: a file appears whole or not at all (temporary sibling, fsync, rename).
- ``content_digest`` / ``content_key``: sha256 of a value's JSON form, the content keys
  of settings, evaluations, adapters and scorer caches. A resumed run finds its old
  rows by these keys, so their bytes never change: keys sorted, ASCII escapes, and
  ``str`` for what JSON cannot write.
- ``file_sha256``: the digest of a file's bytes (adapters recorded in a run).
- ``first_line``: an exception as one line, for one-line error messages.
- ``check_writable_dir``: a directory that is (or can be made) writable, checked without creating anything.
- ``quiet_libraries``: transformers' and datasets' logs and progress bars off.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xdetox.errors import XdetoxInputError


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it onto ``path``.

    The file is readable by all (mode 0644). If ``write`` (or anything after it) fails,
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; what xdetox writes is meant to be read
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def canonical_json(obj: object, *, sort_keys: bool = True, ensure_ascii: bool = True) -> bytes:
    """The bytes a content key hashes: ``json.dumps`` (``str`` for anything JSON cannot write), UTF-8."""
    return json.dumps(obj, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=str).encode()


def content_digest(obj: object, *, sort_keys: bool = True, ensure_ascii: bool = True) -> str:
    """sha256 (64 hex digits) of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj, sort_keys=sort_keys, ensure_ascii=ensure_ascii)).hexdigest()


def content_key(obj: object) -> str:
    """A 16-hex-digit content key: the same value always gives the same key."""
    return content_digest(obj)[:16]


def file_sha256(path: str | Path) -> str:
    """sha256 (64 hex digits) of a file's bytes, read a block at a time."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_writable_dir(path: str | Path, what: str, exists: bool = False) -> None:
    """``XdetoxInputError`` (one line naming ``what`` -- ``--out``, ``XDETOX_CACHE``, ``TMPDIR`` --, the path and
    the cause) unless ``path`` is a directory this process can write in, or (unless ``exists``) can be created
    as one: its nearest existing ancestor is a directory that takes a file. Creates nothing: the probe is an
    unnamed temporary file (``O_TMPFILE``) in that directory."""
    path = Path(path)
    existing = path
    if exists and not path.exists():
        raise XdetoxInputError(f"{what} {path}: no such directory")
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or below a file: look further up
            if existing.parent == existing:
                raise XdetoxInputError(f"{what} {path}: no existing directory above it") from None
            existing = existing.parent
        except OSError as err:
            raise XdetoxInputError(f"{what} {path}: cannot use {existing}: {err.strerror or err}") from None
    if not stat.S_ISDIR(mode):
        raise XdetoxInputError(f"{what} {path} exists and is not a directory" if existing == path
                               else f"{what} {path}: {existing} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise XdetoxInputError(f"{what} {path}: cannot write in {existing}: {err.strerror or err}") from None


def quiet_libraries() -> None:
    """Silence warnings and transformers' and datasets' logs and progress bars (if installed)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
