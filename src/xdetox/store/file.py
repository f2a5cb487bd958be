"""A store file before and while SQLite uses it: ``check_store_file`` (is it a whole SQLite database?),
``readonly_uri`` (how ``Store(path, readonly=True)`` opens it without writing), ``check_tables`` (the xdetox
tables and schema), ``check_intact`` (are its pages whole? ``PRAGMA quick_check`` when an existing store is
opened; ``integrity``, ``damaged``) and ``store_error`` (what an SQLite error met while using it means).

Reading 100 header bytes writes nothing, so a file that is empty, foreign or truncated is
refused (``XdetoxInputError`` naming it) and left exactly as it was. A file whose header is whole but
whose pages are damaged (overwritten, a disk fault) is refused the same way, naming the first line of
``PRAGMA integrity_check``, before anything is read from it or written to it. A full disk met while
writing it is an ``OSError`` (``ENOSPC``) naming it: the transaction is rolled back, the store stays
consistent, and the same command resumes once there is room (the CLI exits 3).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path

from xdetox.errors import XdetoxInputError

SQLITE_FULL, SQLITE_BUSY, SQLITE_LOCKED = sqlite3.SQLITE_FULL, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED

SQLITE_HEADER = b"SQLite format 3\x00"


def check_store_file(path: Path) -> None:
    """``XdetoxInputError`` unless ``path`` is a whole SQLite file: read its header only, write nothing.

    Refuses a file that is empty, not an SQLite database, or shorter than the pages its
    header counts (truncated). The tables are checked once SQLite has opened it.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(100)
    except OSError as err:
        raise XdetoxInputError(f"cannot read the store {path}: {err.strerror or err}") from None
    if size == 0:
        raise XdetoxInputError(f"{path} is an empty file, not an xdetox store")
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        raise XdetoxInputError(f"{path} is not an xdetox store (not an SQLite database)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and size < pages * page_size:  # the header's page count is valid
        raise XdetoxInputError(f"{path} is truncated ({size} of {pages * page_size} bytes): not a usable xdetox store")


def readonly_uri(path: Path) -> str:
    """SQLite read-only URI; ``immutable`` when no ``-wal`` file exists (nothing uncheckpointed, no writer)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    if not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


def check_tables(conn: sqlite3.Connection, path: Path, required: tuple[str, ...], schema: int) -> None:
    """``XdetoxInputError`` unless the opened store holds the ``required`` tables and a schema version up to
    ``schema`` (a store written by a newer xdetox is refused, not misread)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in required if t not in names]
    if missing:
        tables = f"{', '.join(missing)} table" + ("s" if len(missing) > 1 else "")
        raise XdetoxInputError(f"{path} is not an xdetox store (no {tables})")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    version = json.loads(row[0]) if row else schema
    if not isinstance(version, int) or version > schema:
        raise XdetoxInputError(f"{path} is an xdetox store of schema {version!r}; this xdetox reads up to {schema}")


def check_intact(conn: sqlite3.Connection, path: Path) -> None:
    """``XdetoxInputError`` naming ``path`` and the first line of ``PRAGMA integrity_check`` unless
    ``PRAGMA quick_check`` (reads every page, writes nothing; 0.1 s for 50 MB) finds the store whole."""
    try:
        first = conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError:  # too damaged to check: integrity_check says how
        first = None
    if first is None or first[0] != "ok":
        raise damaged(path)


def integrity(path: Path) -> str:
    """The first line of ``PRAGMA integrity_check`` ("ok": whole), run on a read-only connection of its own
    (nothing written); the error's text where the file is too damaged to check."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=60)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchmany(1)
        finally:
            conn.close()
        return str(rows[0][0]).splitlines()[0] if rows else "no answer"
    except sqlite3.DatabaseError as err:
        return str(err) or type(err).__name__


def damaged(path: Path, first: str | None = None, untouched: bool = True) -> XdetoxInputError:
    """The one-line refusal of a damaged store: its path and ``first``, the first line of its integrity check
    (``integrity``, run when not given); ``untouched``: found before anything was written to it (on
    opening), which the line says."""
    first = integrity(path) if first is None else first
    written = "; nothing was written to it" if untouched else ""
    return XdetoxInputError(f"the store {path} is damaged (integrity_check: {first}){written}: restore it from a copy")


def store_error(path: Path, err: BaseException) -> Exception | None:
    """What an error met while using the store at ``path`` means, or None when it is not SQLite's (or
    SQLite's but the store is whole and not busy: a bug, left as it is).

    An ``sqlite3.DatabaseError`` (or pandas' ``DatabaseError`` raised from one): a full disk is an
    ``OSError`` (``ENOSPC``) naming the store; a store another process holds locked is an
    ``XdetoxInputError`` saying so; else, when ``PRAGMA integrity_check`` finds damage, ``damaged(path)``."""
    cause = err if isinstance(err, sqlite3.DatabaseError) else err.__cause__
    if not isinstance(cause, sqlite3.DatabaseError) or not path.is_file():
        return None
    code = (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    if code == SQLITE_FULL:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return XdetoxInputError(f"the store {path} is locked by another process ({cause}); wait for it to finish")
    first = integrity(path)
    return None if first == "ok" else damaged(path, first, untouched=False)
