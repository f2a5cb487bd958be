"""xdetox: cross-lingual detoxification of multilingual LLMs by supervised fine-tuning.

The Python API (``xdetox.api``): ``xdetox.run(...)`` runs or resumes a config and returns a ``Run``;
``xdetox.evaluate(model, ...)`` measures a given model or adapter (``xdetox eval``) and returns its ``Run``;
``xdetox.open_run(path)`` opens a finished run directory as a ``Run`` (typed config, summary, pandas
frames). They are imported on first use, so ``import xdetox`` stays fast and loads no model code.
"""

from xdetox.errors import XdetoxInputError

__version__ = "0.1.0"
__all__ = ["Run", "XdetoxInputError", "__version__", "evaluate", "open_run", "run"]

LAZY = frozenset({"Run", "evaluate", "open_run", "run"})
"""The names this package takes from ``xdetox.api`` when they are first used."""


def __getattr__(name: str):
    """``run``, ``evaluate``, ``open_run`` and ``Run``, from ``xdetox.api`` on first use."""
    if name in LAZY:
        from xdetox import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xdetox' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | LAZY)
