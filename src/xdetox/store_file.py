"""A store file before SQLite opens it: ``check_store_file`` (is it a whole SQLite database?) and
``readonly_uri`` (how ``Store(path, readonly=True)`` opens it without writing).

Reading 100 header bytes writes nothing, so a file that is empty, foreign or truncated is
refused (``XdetoxInputError`` naming it) and left exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

from xdetox.errors import XdetoxInputError

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
