"""Where xdetox keeps what it builds once and reuses: ``$XDG_CACHE_HOME/xdetox``
(default ``~/.cache/xdetox``), overridable with ``XDETOX_CACHE``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from xdetox._io import atomic_write
from xdetox.errors import XdetoxInputError


def cache_root() -> tuple[Path, str]:
    """The cache's directory (not created) and the name of what chose it (``XDETOX_CACHE``,
    ``XDG_CACHE_HOME`` or ``~/.cache``), for messages."""
    root = os.environ.get("XDETOX_CACHE")
    if root:
        return Path(root), "XDETOX_CACHE"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "xdetox", "XDG_CACHE_HOME" if xdg else "the cache"


def cache_dir(*parts: str) -> Path:
    """The cache's sub-directory ``parts``, created if needed; one that cannot be is one ``XdetoxInputError``
    line naming it and the cause (set ``XDETOX_CACHE`` to a writable directory)."""
    base, what = cache_root()
    path = base.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise XdetoxInputError(f"{what} {base}: cannot create {path}: {err.strerror or err}; set XDETOX_CACHE to a"
                               " writable directory") from None
    return path


def load_or_build(path: Path, build: Callable[[], dict], log: Callable[[str], None]) -> dict:
    """The state pickled at ``path`` (joblib), or ``build()``'s, written there first.

    A foreign or damaged file is reported through ``log`` and rebuilt. The new file is
    written atomically (``atomic_write``, mode 0644), so a reader never sees half of it.
    """
    import joblib

    if path.is_file():
        try:
            return joblib.load(path)
        except Exception as err:  # a foreign or damaged file: rebuild it
            log(f"ignoring unreadable cache {path.name}: {err}")
    state = build()
    atomic_write(path, lambda tmp: joblib.dump(state, tmp))
    log(f"cached at {path}")
    return state
