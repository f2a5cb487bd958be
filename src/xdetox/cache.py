"""Where xdetox keeps what it builds once and reuses: ``$XDG_CACHE_HOME/xdetox``
(default ``~/.cache/xdetox``), overridable with ``XDETOX_CACHE``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from xdetox._io import atomic_write


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("XDETOX_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "xdetox"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
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
