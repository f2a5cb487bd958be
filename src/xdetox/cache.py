"""Where xdetox keeps what it builds once and reuses: ``$XDG_CACHE_HOME/xdetox``
(default ``~/.cache/xdetox``), overridable with ``XDETOX_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path


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
